"""Synthetic plates: format, determinism, and planted phenotypes recovered by measurement."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from scipy import stats

from phenexplain.data.nuclei import segment_nuclei
from phenexplain.data.synthetic import ASSAYS, generate_plates, get_assay
from phenexplain.data.synthetic.assays import SUBTLE_D
from phenexplain.errors import OutputExistsError, PhenexplainError
from phenexplain.measure.assays import measure_field
from tests.conftest import small_spec


def _rows(path: Path) -> list[dict]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _measure(root: Path) -> dict[str, dict[str, list]]:
    """Per condition: per-cell features and per-field values, measured from the TIFFs alone."""
    truth = json.loads((root / "ground_truth.json").read_text())
    stains = {ch["name"]: ch["stain"] for ch in truth["channels"]}
    out: dict[str, dict[str, list]] = {}
    for row in _rows(root / "metadata.csv"):
        images = {ch: tifffile.imread(root / row[f"path_{ch}"]) for ch in stains}
        cells, field = measure_field(images, stains, segment_nuclei(images["DNA"]))
        acc = out.setdefault(row["condition"], {})
        for cell in cells:
            for k, v in cell.items():
                acc.setdefault(k, []).append(v)
        for k, v in field.items():
            acc.setdefault(f"field_{k}", []).append(v)
    return out


def test_plate_layout_files_and_tiffs(plate_factory):
    root = plate_factory("nfkb")
    rows = _rows(root / "metadata.csv")
    assert len(rows) == 2 * 3 * 3
    assert set(rows[0]) >= {
        "plate",
        "well",
        "row",
        "column",
        "site",
        "condition",
        "path_DNA",
        "path_NFkB",
    }
    assert {r["condition"] for r in rows} == {"control", "TNF"}
    wells = {(r["well"], r["condition"]) for r in rows}
    assert len({w for w, _ in wells}) == len(wells) == 6  # one condition per well
    for row in rows[:4]:
        for ch in ("DNA", "NFkB"):
            path = root / row[f"path_{ch}"]
            assert (
                path.name
                == f"{row['plate']}_{row['well']}_s{row['site']}_w{1 if ch == 'DNA' else 2}.tif"
            )
            image = tifffile.imread(path)
            assert image.shape == (512, 640)
            assert image.dtype == np.uint16
            assert image.min() >= 50  # camera offset
            assert image.max() > (1000 if ch == "DNA" else 300)  # bright nuclei, visible marker
    truth = json.loads((root / "ground_truth.json").read_text())
    assert truth["control"] == "control"
    assert truth["conditions"]["TNF"]["expected_vs_control"] == {"nc_ratio": "up"}
    assert truth["conditions"]["TNF"]["changed_vs_control"] == {"nc_ratio": 2.2}
    assert not list(root.parent.glob(".plate.partial-*"))


def test_same_seed_same_bytes_regardless_of_workers(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    generate_plates(small_spec("golgi", wells_per_condition=1, sites_per_well=2, workers=1), a)
    generate_plates(small_spec("golgi", wells_per_condition=1, sites_per_well=2, workers=2), b)
    generate_plates(small_spec("golgi", wells_per_condition=1, sites_per_well=2, seed=8), c)
    assert _digest(a) == _digest(b)
    da, dc = _digest(a), _digest(c)
    tiffs = [k for k in da if k.endswith(".tif")]
    assert tiffs
    assert not (set(k for k in dc if k.endswith(".tif")) & set(tiffs))  # seed is in the plate name
    first_a = tifffile.imread(a / tiffs[0])
    first_c = tifffile.imread(next(c.rglob("*_s1_w1.tif")))
    assert not np.array_equal(first_a, first_c)


def test_ground_truth_cells_match_detected_nuclei(plate_factory):
    root = plate_factory("nfkb")
    truth = _rows(root / "ground_truth_cells.csv")
    row = _rows(root / "metadata.csv")[0]
    key = (row["plate"], row["well"], row["site"])
    centres = np.array(
        [
            [float(c["y"]), float(c["x"])]
            for c in truth
            if (c["plate"], c["well"], c["site"]) == key and c["centre_in_field"] == "True"
        ]
    )
    labels = segment_nuclei(tifffile.imread(root / row["path_DNA"]))
    hits = sum(labels[int(y), int(x)] > 0 for y, x in centres)
    assert len(centres) > 5
    assert hits / len(centres) > 0.9  # nearly every planted nucleus is found where it was put


def test_nfkb_ratio_rises_under_treatment(plate_factory):
    m = _measure(plate_factory("nfkb"))
    control, treated = np.array(m["control"]["nc_ratio"]), np.array(m["TNF"]["nc_ratio"])
    assert np.nanmedian(treated) > 2.5 * np.nanmedian(control)
    assert np.nanmedian(control) < 1.0 < np.nanmedian(treated)  # marker excluded, then nuclear


def test_golgi_spots_become_many_and_small(plate_factory):
    m = _measure(plate_factory("golgi"))
    assert np.median(m["nocodazole"]["spot_count"]) >= 3 * max(
        np.median(m["DMSO"]["spot_count"]), 1
    )
    assert np.nanmedian(m["nocodazole"]["spot_area"]) < 0.75 * np.nanmedian(m["DMSO"]["spot_area"])


def test_dose_effects_are_monotonic(plate_factory):
    root = plate_factory("dose", wells_per_condition=2, sites_per_well=3, height=768, width=1024)
    m = _measure(root)
    assay = get_assay("dose")
    doses = [c.concentration_um for c in assay.conditions]
    names = [c.name for c in assay.conditions]
    area = [np.median(m[n]["cytoplasm_area"]) for n in names]
    count = [np.mean(m[n]["field_cell_count"]) for n in names]
    assert stats.spearmanr(doses, area).statistic < -0.8
    assert stats.spearmanr(doses, count).statistic < -0.8
    assert area[-1] < 0.7 * area[0] and count[-1] < 0.6 * count[0]


def test_subtle_assay_planted_effect_size_is_recovered(plate_factory):
    root = plate_factory("subtle", seed=3, wells_per_condition=4, height=1024, width=1280)
    m = _measure(root)
    a, b = np.array(m["corrected"]["nucleus_area"]), np.array(m["mutant"]["nucleus_area"])
    assert len(a) > 500 and len(b) > 500
    pooled = np.sqrt(
        ((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2)
    )
    d = (b.mean() - a.mean()) / pooled
    assert abs(d - SUBTLE_D) <= 0.15, d


@pytest.mark.parametrize("assay", sorted(ASSAYS))
def test_every_assay_declares_a_control_and_an_expected_effect(assay):
    spec = get_assay(assay)
    truth = spec.ground_truth()
    assert truth["conditions"][spec.control]["is_control"]
    treated = [c for c in truth["conditions"].values() if not c["is_control"]]
    assert treated and all(c["expected_vs_control"] and c["changed_vs_control"] for c in treated)


def test_refuses_non_empty_output_and_overwrites_only_its_own(tmp_path):
    out = tmp_path / "plate"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    spec = small_spec("nfkb", wells_per_condition=1, sites_per_well=1, height=64, width=64)
    with pytest.raises(OutputExistsError, match="--overwrite"):
        generate_plates(spec, out)
    with pytest.raises(PhenexplainError, match="not written by phenexplain"):
        generate_plates(spec, out, overwrite=True)  # a folder of the user's is never replaced
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    ours = tmp_path / "ours"
    generate_plates(spec, ours)
    generate_plates(spec, ours, overwrite=True)
    assert (ours / "metadata.csv").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ours", "plate"]  # no staging, no old


def test_failure_midway_leaves_nothing_behind(tmp_path):
    def explode(done: int, total: int) -> None:
        if done == 2:
            raise RuntimeError("interrupted")

    spec = small_spec("nfkb", wells_per_condition=2, sites_per_well=2, height=64, width=64)
    with pytest.raises(RuntimeError):
        generate_plates(spec, tmp_path / "plate", on_field=explode)
    assert list(tmp_path.iterdir()) == []


def test_unknown_assay_and_bad_paths_raise_clear_errors(tmp_path):
    with pytest.raises(PhenexplainError, match="unknown assay 'bogus'; choose one of: dose, golgi"):
        get_assay("bogus")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    spec = small_spec("nfkb", height=64, width=64)
    with pytest.raises(PhenexplainError, match="is a file, not a folder"):
        generate_plates(spec, blocker / "out")
