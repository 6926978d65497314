"""Ingest scaling keeps the phenotype: no condition saturates, and crops measure what fields do.

The `nfkb` plate plants a nucleus/cytoplasm ratio of about 2.2 under TNF, so TNF nuclei are the
brightest NF-kB pixels of the plate. Each crop is compared with the raw 16-bit field it was cut
from, cell for cell: the crop's centre nucleus is nucleus ``i`` of ingest's segmentation of the
field (crop id ``<field>#<i>``), which is label ``i + 1`` of the same `segment_nuclei` call.
"""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pandas as pd
import pytest
import tifffile

from phenexplain.config import IngestParams
from phenexplain.data.cropset import CropSet
from phenexplain.data.cropset_files import read_info
from phenexplain.data.ingest import ingest
from phenexplain.data.nuclei import segment_nuclei
from phenexplain.measure.assays import measure_cells
from phenexplain.measure.crops import assay_crop, cropset_stains, segment_crop, to_intensity

SIZE = 64  # crops of 64 px keep most cells of a 512 x 640 field (border policy "skip")


def _params(**kw) -> IngestParams:
    base = dict(
        layout="manifest",
        channels=["DNA", "NFkB"],
        crop_size=SIZE,
        min_images_per_condition=2,
        workers=1,
    )
    return IngestParams(**{**base, **kw})


def _cells(src, out) -> pd.DataFrame:
    """One row per crop: condition, the centre cell's NF-kB ratio on the raw field and on the
    crop, and its nucleus's NF-kB pixels in the crop (count, at 255)."""
    cs = CropSet(out)
    stains = cropset_stains(cs)
    params = IngestParams.model_validate(read_info(out).params | {"workers": 1})
    rows = []
    for _, group in cs.manifest.reset_index().groupby("field_id"):
        files = group["files"].iat[0].split(";")
        raw = {ch: tifffile.imread(src / f) for ch, f in zip(cs.channels, files, strict=True)}
        labels = segment_nuclei(raw[params.dna_channel], **params.nuclei.model_dump())
        raw_ratio = measure_cells(raw, stains, labels)[0]["nc_ratio"]
        for _, row in group.iterrows():
            label = int(row["crop_id"].rsplit("#", 1)[1]) + 1
            crop = cs[int(row["index"])][0]
            image = to_intensity(crop)
            objects = segment_crop(image, stains)
            centre = int(objects.nuclei[SIZE // 2, SIZE // 2])
            cells, _ = assay_crop(image, stains, objects)
            crop_ratio = next((c["nc_ratio"] for c in cells if c["object"] == centre), np.nan)
            top, left = int(row["top"]), int(row["left"])
            nucleus = labels[top : top + SIZE, left : left + SIZE] == label
            nfkb = crop[cs.channels.index("NFkB")][nucleus]
            rows.append(
                {
                    "condition": row["condition"],
                    "raw": float(raw_ratio[label - 1]),
                    "crop": float(crop_ratio) if centre else np.nan,
                    "nuclear_px": nfkb.size,
                    "nuclear_255": int(np.count_nonzero(nfkb == 255)),
                }
            )
    return pd.DataFrame(rows)


def _geomean(values: pd.Series) -> float:
    return float(np.exp(np.log(values).mean()))


@pytest.fixture(scope="module")
def nfkb_cells(plate_factory, tmp_path_factory):
    src = plate_factory("nfkb")
    out = tmp_path_factory.mktemp("scaling") / "crops"
    ingest(src, out, _params())
    return src, out, _cells(src, out)


def test_tnf_nuclei_do_not_saturate(nfkb_cells):
    _, _, cells = nfkb_cells
    by = cells.groupby("condition")[["nuclear_255", "nuclear_px"]].sum()
    fraction = by["nuclear_255"] / by["nuclear_px"]
    assert by.loc["TNF", "nuclear_px"] > 20_000  # enough cells for a stable fraction
    assert fraction["TNF"] < 0.01, fraction.to_dict()
    assert fraction["control"] < 0.01, fraction.to_dict()


@pytest.mark.parametrize("condition", ["TNF", "control"])
def test_crop_ratio_matches_the_raw_field_of_the_same_cells(nfkb_cells, condition):
    _, _, cells = nfkb_cells
    same = cells[(cells["condition"] == condition) & (cells["raw"] > 0) & (cells["crop"] > 0)]
    assert len(same) >= 50  # cells measured on both sides
    raw, crop = _geomean(same["raw"]), _geomean(same["crop"])
    assert abs(crop / raw - 1) < 0.10, (condition, raw, crop)


def test_saturation_is_recorded_per_field_and_per_condition(nfkb_cells):
    _, out, _ = nfkb_cells
    qc = pd.read_parquet(out / "qc.parquet")
    columns = [f"Crops_FractionSaturated_{ch}" for ch in ("DNA", "NFkB")]
    assert set(columns) <= set(qc.columns)
    assert qc[columns].notna().all().all() and (qc[columns] >= 0).all().all()
    info = read_info(out)
    assert set(info.saturation) == {"TNF", "control"}
    for condition, per_channel in info.saturation.items():
        assert set(per_channel) == {"DNA", "NFkB"}
        assert 0 <= per_channel["NFkB"] < 0.01, (condition, per_channel)
    cs = CropSet(out)  # the recorded fraction is that of the crops' pixels
    tnf = np.stack([cs[i][0][1] for i in np.flatnonzero(cs.manifest["condition"] == "TNF")])
    assert info.saturation["TNF"]["NFkB"] == pytest.approx(np.mean(tnf == 255), abs=1e-9)


def test_a_saturating_scaling_is_reported_not_refused(plate_factory, tmp_path, caplog):
    """The display stretch (1st-99th percentile) saturates TNF nuclei: ingest still runs, warns
    in the log and in the Data Docs, and records the fraction."""
    from phenexplain.integrations.gx_validation import ingest_with_expectations

    out = tmp_path / "crops"
    with caplog.at_level(logging.WARNING, logger="phenexplain.data"):
        ingest_with_expectations(plate_factory("nfkb"), out, _params(percentiles=[1.0, 99.0]))
    assert read_info(out).saturation["TNF"]["NFkB"] > 0.01
    warned = [r.getMessage() for r in caplog.records if "saturated" in r.getMessage()]
    assert any("TNF" in m and "NFkB" in m for m in warned), warned
    pages = list((out / "report" / "data_docs" / "validations" / "crop_saturation").rglob("*.html"))
    assert len(pages) == 1
    page = pages[0].read_text()
    assert "Failed" in page and "TNF" in page and "NFkB" in page


def test_a_crop_set_recorded_before_saturation_still_opens(nfkb_cells, tmp_path):
    _, out, _ = nfkb_cells
    old = tmp_path / "old"
    shutil.copytree(out, old)
    info = json.loads((old / "cropset.json").read_text())
    del info["saturation"]
    (old / "cropset.json").write_text(json.dumps(info))
    assert read_info(old).saturation is None
    assert len(CropSet(old)) == len(CropSet(out))
