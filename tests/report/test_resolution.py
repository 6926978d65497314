"""Resolution-aware assays: the stated limits hold on real crops, and the verdict respects them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from phenexplain.data.cropset import CropSet
from phenexplain.data.synthetic import get_assay
from phenexplain.report import analysis, resolution, verdicts

NATIVE = 128


def _sweep(assay_crops, assay: str, resolutions: list[int]) -> pd.DataFrame:
    crops = assay_crops(assay, NATIVE)
    cs = CropSet(crops.root)
    spec = get_assay(assay)
    images, names, wells = analysis.sample_real(cs, sorted(cs.conditions), 300, 0)
    return resolution.resolution_sweep(
        images, names, wells, cs.channels, spec.control, resolutions, seed=0
    )


def _planted(assay: str) -> set[tuple[str, str]]:
    """(feature, condition) pairs the assay plants, by the report's feature names."""
    rename = {"nc_ratio": "log_nc_ratio"}
    return {
        (rename.get(feature, feature), c.name)
        for c in get_assay(assay).conditions
        for feature in c.expected
    }


@pytest.fixture(scope="module")
def golgi_sweep(assay_crops):
    return _sweep(assay_crops, "golgi", [128, 64, 32])


def test_golgi_spot_area_is_measurable_at_64_px_and_not_at_32(golgi_sweep):
    area = golgi_sweep[golgi_sweep["feature"] == "spot_area"].set_index("resolution")
    assert area.loc[128, "d_native"] < 0 and area.loc[128, "d_native_ci_high"] < 0  # planted: down
    assert area.loc[64, "measurable"] and area.loc[64, "kept"] >= resolution.MIN_KEPT
    # at 32 px the data themselves lose it, before any stated limit: less than 70 % of d is left
    assert area.loc[32, "kept"] < resolution.MIN_KEPT
    assert not area.loc[32, "measurable"] and "measurable from 64 px" in area.loc[32, "reason"]
    count = golgi_sweep[golgi_sweep["feature"] == "spot_count"].set_index("resolution")
    assert count.loc[32, "measurable"] and count.loc[32, "kept"] >= resolution.MIN_KEPT


@pytest.mark.parametrize("assay", ["nfkb", "golgi", "subtle", "dose"])
def test_each_planted_assay_keeps_its_effect_down_to_its_stated_resolution(assay_crops, assay):
    planted = _planted(assay)
    lowest = sorted({resolution.lowest_resolution(f, NATIVE) for f, _ in planted})
    sweep = _sweep(assay_crops, assay, lowest)
    checked = 0
    for (feature, condition), rows in sweep.groupby(["feature", "condition"]):
        if (feature, condition) not in planted:
            continue
        row = rows.set_index("resolution").loc[resolution.lowest_resolution(feature, NATIVE)]
        if row["d_native_ci_low"] <= 0 <= row["d_native_ci_high"]:
            continue  # a dose too low to show on this small plate: nothing to keep
        assert row["measurable"], row["reason"]
        assert row["kept"] >= resolution.MIN_KEPT
        checked += 1
    assert checked >= 1


def _measurements(values: dict[str, np.ndarray], wells: np.ndarray) -> analysis.Measurements:
    n = len(wells)
    cells = pd.DataFrame({"crop": np.arange(n), "object": 1, "well": wells, **values})
    cells["condition"] = np.where(np.char.startswith(wells.astype(str), "t"), "drug", "ctrl")
    crops = cells[["crop", "condition", "well"]].assign(cell_count=1.0, centre_object=1)
    return analysis.Measurements(cells, crops, list(values))


def test_the_verdict_says_not_measurable_at_the_resolution_and_keeps_the_native_d():
    rng = np.random.default_rng(0)
    wells = np.repeat([f"{g}{i}" for g in "ct" for i in range(6)], 30)
    treated = np.char.startswith(wells.astype(str), "t")
    native = _measurements({"spot_area": rng.normal(0, 1, len(wells)) - 1.0 * treated}, wells)
    blurred = _measurements({"spot_area": rng.normal(0, 1, len(wells)) - 0.3 * treated}, wells)
    fake = analysis.Measurements(
        blurred.cells.drop(columns="well"), blurred.crops.drop(columns="well"), ["spot_area"]
    )
    # 64 px is allowed by the stated limit (2x of 128): only the data's own check can refuse it
    check = resolution.resolution_check(
        native, blurred, "ctrl", native_size=128, resolution=64, seed=0, resamples=300
    )
    row = check.iloc[0]
    assert not row["measurable"] and row["kept"] < resolution.MIN_KEPT
    assert "at 64 px against" in row["reason"]
    table = verdicts.verdict_table(blurred, fake, "ctrl", seed=0, resolution=check, resamples=300)
    assert table["verdict"].tolist() == ["not measurable at 64 px"]
    assert table["d_real_native"].iloc[0] == pytest.approx(row["d_native"])
    counts = verdicts.disagreements(table)
    assert counts["not_measurable"] == counts["below_resolution"] == 1
    # the same data at native size (no check): an ordinary verdict
    plain = verdicts.verdict_table(native, fake, "ctrl", seed=0, resamples=300)
    assert not plain["verdict"].iloc[0].startswith("not measurable at")
