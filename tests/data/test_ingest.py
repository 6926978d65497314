"""Ingest on fixtures the tests build: synthetic plates, planted defects, incremental plates."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from PIL import Image
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from phenexplain.config import IngestParams
from phenexplain.data.crops import centroids
from phenexplain.data.cropset import CropSet
from phenexplain.data.ingest import ingest
from phenexplain.data.nuclei import segment_nuclei
from phenexplain.data.readers import StructureError
from phenexplain.data.synthetic import generate_plates
from phenexplain.integrations.gx_validation import GXValidator
from tests.conftest import small_spec

NFKB = dict(layout="manifest", channels=["DNA", "NFkB"], dna_channel="DNA", workers=2)


def params(**kw) -> IngestParams:
    return IngestParams(**{**NFKB, "min_images_per_condition": 2, **kw})


@pytest.fixture
def validator():
    v = GXValidator()
    yield v
    v.close()


def _rows(path: Path) -> list[dict]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _write_rows(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }


def test_ingest_synthetic_plate_makes_a_verified_crop_set(plate_factory, tmp_path, validator):
    src = plate_factory("nfkb")
    out = tmp_path / "crops"
    summary = ingest(src, out, params(), validator=validator)
    cs = CropSet(out)
    assert summary.crops == len(cs) > 100 and summary.quarantined == 0
    assert cs.conditions == {"TNF": 0, "control": 1}
    image, label = cs[0]
    assert image.shape == (2, 128, 128) and image.dtype == np.uint8
    assert label == cs.conditions[cs.manifest["condition"].iat[0]]
    assert cs.verify() == []
    m = cs.manifest
    assert m["crop_id"].is_unique
    assert {"scale_low_DNA", "scale_high_NFkB", "checksum", "y", "x", "top", "left"} <= set(
        m.columns
    )
    assert (
        (m["top"] >= 0) & (m["top"] + 128 <= 512) & (m["left"] + 128 <= 640)
    ).all()  # skip policy
    assert (out / "report" / "data_docs" / "index.html").is_file()
    qc = pd.read_parquet(out / "qc.parquet")
    assert len(qc) == 18 and (qc["status"] == "ok").all()
    assert {
        "ImageQuality_PowerLogLogSlope_DNA",
        "ImageQuality_FocusScore_DNA",
        "ImageQuality_PercentMaximal_NFkB",
        "Count_Nuclei",
    } <= set(qc.columns)


def test_an_ingest_that_cuts_no_crop_says_so_and_writes_nothing(plate_factory, tmp_path):
    """Without the great-expectations validator too (the library install has none)."""
    src = plate_factory("nfkb")
    out = tmp_path / "crops"
    nuclei = {"smoothing": 1.5, "min_area": 10**7, "min_distance": 6}  # no nucleus is this big
    with pytest.raises(StructureError, match=r"no crops were produced from .*ingest\.nuclei"):
        ingest(src, out, params(nuclei=nuclei))
    assert not out.exists()


def test_scaling_is_recorded_and_invertible(plate_factory, tmp_path):
    src = plate_factory("nfkb")
    out = tmp_path / "crops"
    ingest(src, out, params(workers=1))
    cs = CropSet(out)
    row = cs.manifest.iloc[5]
    raw = tifffile.imread(src / row["files"].split(";")[1])[
        row["top"] : row["top"] + 128, row["left"] : row["left"] + 128
    ]
    lo, hi = row["scale_low_NFkB"], row["scale_high_NFkB"]
    restored = lo + cs[5][0][1].astype(float) / 255 * (hi - lo)
    inside = (raw > lo) & (raw < hi)
    assert np.abs(restored[inside] - raw[inside]).max() <= (hi - lo) / 255
    # the lowest 1st and the highest 99.99th percentile of the conditions' fields
    fields = pd.read_csv(src / "metadata.csv")
    q = [np.percentile(np.concatenate([tifffile.imread(src / p).ravel() for p in g["path_NFkB"]]), [1, 99.99])
         for _, g in fields.groupby("condition")]  # fmt: skip
    assert abs(min(low for low, _ in q) - lo) <= 1 and abs(max(high for _, high in q) - hi) <= 1


def test_same_input_same_crops_and_rerun_is_a_no_op(plate_factory, tmp_path):
    src = plate_factory("nfkb")
    a, b = tmp_path / "a", tmp_path / "b"
    ingest(src, a, params(workers=2))
    ingest(src, b, params(workers=1))
    ma, mb = pd.read_parquet(a / "manifest.parquet"), pd.read_parquet(b / "manifest.parquet")
    assert ma["checksum"].tolist() == mb["checksum"].tolist()
    before = _tree_digest(a)
    again = ingest(src, a, params())
    assert again.plates_added == [] and _tree_digest(a) == before


def test_adding_a_plate_adds_only_its_crops(tmp_path):
    src = tmp_path / "plates"
    generate_plates(small_spec("nfkb", plates=2, wells_per_condition=2, sites_per_well=2), src)
    rows = _rows(src / "metadata.csv")
    first = sorted({r["plate"] for r in rows})[0]
    _write_rows(src / "first.csv", [r for r in rows if r["plate"] == first])
    out = tmp_path / "crops"
    ingest(src / "first.csv", out, params())
    shard_before = {p.name: p.read_bytes() for p in (out / "images").iterdir()}
    n_before = len(CropSet(out))
    summary = ingest(src / "metadata.csv", out, params())
    assert summary.plates_added == sorted({r["plate"] for r in rows} - {first})
    assert summary.plates_kept == [first]
    after = {p.name: p.read_bytes() for p in (out / "images").iterdir()}
    assert all(after[name] == data for name, data in shard_before.items())  # untouched
    cs = CropSet(out)
    assert len(cs) == n_before + summary.crops and cs.verify() == []
    assert set(cs.manifest["plate"]) == {r["plate"] for r in rows}


def _inside(points: np.ndarray, margin: float) -> np.ndarray:
    """The (y, x) points at least `margin` px inside a 1024 x 1280 field."""
    y, x = points[:, 0], points[:, 1]
    return points[(y > margin) & (y < 1024 - margin) & (x > margin) & (x < 1280 - margin)]


def test_nuclei_match_ground_truth_positions(tmp_path):
    src = tmp_path / "plate"
    generate_plates(
        small_spec(
            "nfkb",
            wells_per_condition=1,
            sites_per_well=2,
            height=1024,
            width=1280,
            cells_per_mpx=50.0,
        ),
        src,
    )
    truth = _rows(src / "ground_truth_cells.csv")
    margin = 12
    tp = fp = fn = 0
    for row in _rows(src / "metadata.csv"):
        dna = tifffile.imread(src / row["path_DNA"])
        found = centroids(segment_nuclei(dna))
        planted = np.array(
            [
                [float(c["y"]), float(c["x"])]
                for c in truth
                if (c["well"], c["site"]) == (row["well"], row["site"])
            ]
        )
        found, planted = _inside(found, margin), _inside(planted, margin)
        dist = np.hypot(*(found[:, None, :] - planted[None, :, :]).transpose(2, 0, 1))
        r, c = linear_sum_assignment(dist)
        matched = int((dist[r, c] <= 6).sum())
        tp, fp, fn = tp + matched, fp + len(found) - matched, fn + len(planted) - matched
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    assert precision >= 0.9 and recall >= 0.9, (precision, recall)


def _save_png16(path: Path, array: np.ndarray) -> None:
    Image.fromarray(array.astype(np.uint16)).save(path)


def test_planted_defects_are_quarantined_with_reasons(plate_factory, tmp_path, validator):
    src = tmp_path / "plate"
    shutil.copytree(plate_factory("nfkb"), src)
    rows = _rows(src / "metadata.csv")
    corrupt, truncated, blank, saturated, blurred = rows[1], rows[4], rows[7], rows[10], rows[13]
    (src / corrupt["path_DNA"]).write_bytes(b"II*\x00" + bytes(range(256)) * 8)
    for ch in ("DNA", "NFkB"):
        png = Path(truncated[f"path_{ch}"]).with_suffix(".png")
        _save_png16(src / png, tifffile.imread(src / truncated[f"path_{ch}"]))
        truncated[f"path_{ch}"] = png.as_posix()
    data = (src / truncated["path_DNA"]).read_bytes()
    (src / truncated["path_DNA"]).write_bytes(data[: len(data) // 2])
    _write_rows(src / "metadata.csv", rows)
    for ch in ("DNA", "NFkB"):
        tifffile.imwrite(src / blank[f"path_{ch}"], np.full((512, 640), 100, np.uint16))
        image = tifffile.imread(src / saturated[f"path_{ch}"])
        image[100:200, 100:300] = 65535
        tifffile.imwrite(src / saturated[f"path_{ch}"], image)
        image = tifffile.imread(src / blurred[f"path_{ch}"]).astype(float)
        tifffile.imwrite(
            src / blurred[f"path_{ch}"], ndimage.gaussian_filter(image, 3).astype(np.uint16)
        )
    before = _tree_digest(src)

    out = tmp_path / "crops"
    summary = ingest(src, out, params(), validator=validator)
    quarantine = {r["field_id"]: r["reasons"] for r in _rows(out / "quarantine.csv")}
    key = lambda r: f"{r['plate']}_{r['well']}_s{r['site']}"  # noqa: E731
    assert set(quarantine) == {key(r) for r in (corrupt, truncated, blank, saturated, blurred)}
    assert quarantine[key(corrupt)].startswith("unreadable")
    assert quarantine[key(truncated)].startswith("unreadable")
    assert quarantine[key(blank)].startswith("blank field")
    assert quarantine[key(saturated)].startswith("saturated: DNA")
    assert quarantine[key(blurred)].startswith("blurred")
    assert summary.quarantined == 5 and summary.crops > 0
    assert set(CropSet(out).manifest["field_id"]).isdisjoint(quarantine)
    assert _tree_digest(src) == before  # nothing the user gave was touched


def test_missing_channel_file_fails_naming_the_file(plate_factory, tmp_path, validator):
    src = tmp_path / "plate"
    shutil.copytree(plate_factory("nfkb"), src)
    victim = src / _rows(src / "metadata.csv")[3]["path_NFkB"]
    victim.unlink()
    with pytest.raises(StructureError, match=f"do not exist: {victim}"):
        ingest(src, tmp_path / "crops", params(), validator=validator)
    assert not (tmp_path / "crops").exists()


def test_too_few_images_and_unknown_conditions_fail_the_run(plate_factory, tmp_path, validator):
    src = plate_factory("nfkb")
    with pytest.raises(StructureError, match=r"fewer than 50 usable images.*condition=TNF"):
        ingest(src, tmp_path / "a", params(min_images_per_condition=50), validator=validator)
    with pytest.raises(StructureError, match=r"unknown condition.*TNF"):
        ingest(src, tmp_path / "b", params(conditions=["control", "LPS"]), validator=GXValidator())
    with pytest.raises(
        StructureError, match=r"fewer than 2 usable images.*: usable_fields=0, condition=LPS"
    ):
        ingest(
            src,
            tmp_path / "c",
            params(conditions=["control", "TNF", "LPS"]),
            validator=GXValidator(),
        )
    assert not any((tmp_path / name).exists() for name in "abc")


def test_inconsistent_sizes_fail_naming_the_files(plate_factory, tmp_path, validator):
    src = tmp_path / "plate"
    shutil.copytree(plate_factory("nfkb"), src)
    row = _rows(src / "metadata.csv")[2]
    for ch in ("DNA", "NFkB"):
        tifffile.imwrite(src / row[f"path_{ch}"], tifffile.imread(src / row[f"path_{ch}"])[:256])
    with pytest.raises(StructureError, match=f"inconsistent image height.*{row['path_DNA']}"):
        ingest(src, tmp_path / "crops", params(), validator=validator)


def test_folders_of_precropped_pngs_are_kept_as_they_are(tmp_path, validator):
    rng = np.random.default_rng(0)
    src = tmp_path / "dataset"
    images = {}
    for cond in ("DMSO", "taxol"):
        (src / cond).mkdir(parents=True)
        for i in range(3):
            array = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
            Image.fromarray(array).save(src / cond / f"img{i}.png")
            images[f"{cond}/img{i}.png"] = array
    out = tmp_path / "crops"
    p = IngestParams(
        layout="folders",
        channels=["DNA", "Tubulin", "Actin"],
        dna_channel="DNA",
        precropped=True,
        min_images_per_condition=3,
        workers=1,
    )
    ingest(src, out, p, validator=validator)
    cs = CropSet(out)
    assert len(cs) == 6 and cs.resolution == 64 and cs.conditions == {"DMSO": 0, "taxol": 1}
    for i, field_id in enumerate(cs.manifest["field_id"]):
        assert np.array_equal(cs[i][0], np.moveaxis(images[field_id], -1, 0))


def test_illumination_correction_flattens_a_vignetted_plate(plate_factory, tmp_path):
    src = plate_factory("nfkb")
    out = tmp_path / "crops"
    ingest(src, out, params(illumination_correction=True))
    info = json.loads((out / "cropset.json").read_text())
    plate = next(iter(info["plates"].values()))
    profile = np.load(out / plate["illumination"])
    assert profile.shape == (2, 512, 640)
    assert abs(profile.mean() - 1) < 1e-3 and profile.min() < 0.95 < 1.02 < profile.max()
    assert CropSet(out).manifest["illumination_corrected"].all()
