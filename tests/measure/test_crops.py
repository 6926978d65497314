"""Segmentation and assays on crops: known shapes, and the planted phenotypes of synthetic plates
recovered with the paper's statistics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from phenexplain.errors import PhenexplainError
from phenexplain.measure.crops import (
    CELL_EXPANSION_PX,
    channel_stains,
    measure_assays,
    segment_crop,
    to_intensity,
)
from phenexplain.measure.stats import welch_t_test


def _discs(size: int, centres: list[tuple[int, int]], radius: float) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return np.any([np.hypot(yy - y, xx - x) < radius for y, x in centres], axis=0)


def test_stains_from_channel_names():
    assert channel_stains(["DNA", "NFkB"]) == {"DNA": "dna", "NFkB": "nfkb"}
    assert channel_stains(["Hoechst", "actin", "X"], dna_channel="Hoechst") == {
        "Hoechst": "dna",
        "actin": "actin",
        "X": "other",
    }
    with pytest.raises(PhenexplainError, match="DNA channel"):
        channel_stains(["DNA"], dna_channel="DAPI")


def test_segmentation_of_known_discs_and_blank_crops():
    dna = np.where(_discs(96, [(48, 48), (48, 2)], 14), 200, 8).astype(np.uint8)
    objects = segment_crop(to_intensity(dna[None]), {"DNA": "dna"})
    assert objects.nuclei.max() == 2
    centre = objects.nuclei[48, 48]
    assert objects.centre == centre  # the disc at the crop centre, not the one the border cuts
    grown = np.pi * (14 + CELL_EXPANSION_PX) ** 2  # cells without a body stain: nuclei grown
    assert (objects.cells == centre).sum() == pytest.approx(grown, rel=0.03)
    assert not (objects.cytoplasm[objects.nuclei > 0]).any()
    assert objects.foreground is None
    rng = np.random.default_rng(0)
    noise = rng.normal(6, 3, (2, 64, 64)).clip(0, 255).astype(np.uint8)  # a dark, empty crop
    empty = segment_crop(to_intensity(noise), {"DNA": "dna", "Actin": "actin"})
    assert empty.nuclei.max() == 0 and empty.centre == 0
    assert not hasattr(empty, "interior")  # one cell per crop: nothing reads the interior nuclei
    cells, crops = measure_assays(np.zeros((2, 2, 32, 32), np.uint8), ["DNA", "Actin"], workers=1)
    assert cells.empty and list(crops["cell_count"]) == [0.0, 0.0]


def test_bad_input_says_what_to_change():
    crops = np.zeros((1, 2, 32, 32), np.uint8)
    with pytest.raises(PhenexplainError, match="uint8"):
        measure_assays(crops.astype(np.float32), ["DNA", "NFkB"])
    with pytest.raises(PhenexplainError, match="channels"):
        measure_assays(crops, ["DNA"])
    with pytest.raises(PhenexplainError, match="'dna'"):
        measure_assays(crops, ["A", "B"])
    with pytest.raises(PhenexplainError, match="workers"):
        measure_assays(crops, ["DNA", "NFkB"], workers=0)


def _by_condition(table: pd.DataFrame, manifest: pd.DataFrame) -> pd.DataFrame:
    return table.assign(condition=manifest["condition"].to_numpy()[table["crop"].to_numpy()])


def test_nfkb_ratio_rises_under_tnf_and_random_halves_do_not_differ(assay_crops):
    data = assay_crops("nfkb")
    cells, crops = measure_assays(data.images, data.channels, data.stains)
    cells = _by_condition(cells, data.manifest)
    assert set(crops.columns) >= {"crop", "cell_count", "centre_object", "nc_ratio"}
    assert "background_fraction" not in crops  # no cell-body stain in this assay: not measured
    assert not crops.isna().all().any() and not cells.isna().all().any()  # no all-NaN column
    ratio = cells["nc_ratio"].to_numpy()
    assert np.isfinite(ratio).mean() > 0.95  # NaN only where a cell has no cytoplasm ring
    log_ratio = np.log(np.where(ratio > 0, ratio, np.nan))
    tnf = log_ratio[cells.condition == "TNF"]
    control = log_ratio[cells.condition == "control"]
    assert np.nanmedian(tnf) > np.nanmedian(control) + np.log(2)
    # compared on a log scale: small bright debris give rare ratios of ~20 in control crops
    test = welch_t_test(tnf, control)
    assert test.difference > 0 and test.p < 0.01 and test.ci_low > 0 and test.cohens_d > 1.5
    halves = np.random.default_rng(0).permutation(len(control)) % 2
    same = welch_t_test(control[halves == 0], control[halves == 1])
    assert same.p > 0.01 and same.ci_low < 0 < same.ci_high


def test_golgi_spots_are_smaller_and_more_numerous_under_nocodazole(assay_crops):
    data = assay_crops("golgi")  # one cell per crop: the 2-well plate leaves p ~ 0.01
    _, crops = measure_assays(data.images, data.channels, data.stains)
    crops = _by_condition(crops, data.manifest)
    noco, dmso = crops[crops.condition == "nocodazole"], crops[crops.condition == "DMSO"]
    area = welch_t_test(noco["spot_area"], dmso["spot_area"])
    count = welch_t_test(noco["spot_count"], dmso["spot_count"])
    assert area.difference < 0 and area.p < 0.01
    assert count.difference > 0 and count.p < 0.01


def test_dose_contracts_cytoplasm_with_a_body_stain(assay_crops):
    data = assay_crops("dose", wells_per_condition=1, sites_per_well=2)
    assert data.stains == {"DNA": "dna", "Tubulin": "tubulin", "Actin": "actin"}
    cells, crops = measure_assays(data.images, data.channels, data.stains)
    cells, crops = _by_condition(cells, data.manifest), _by_condition(crops, data.manifest)
    high = cells.loc[cells.condition == "cytoD_10uM", "cytoplasm_area"]
    control = cells.loc[cells.condition == "DMSO", "cytoplasm_area"]
    assert welch_t_test(high, control).difference < 0 and welch_t_test(high, control).p < 0.01
    background = crops.groupby("condition")["background_fraction"].mean()
    assert background.between(0, 1).all() and background["cytoD_10uM"] > background["DMSO"]


def test_results_do_not_depend_on_workers(assay_crops):
    data = assay_crops("nfkb")
    images = data.images[:40]
    one = measure_assays(images, data.channels, data.stains, workers=1)
    seen = []
    two = measure_assays(
        images, data.channels, data.stains, workers=2, on_progress=lambda d, t: seen.append((d, t))
    )
    for a, b in zip(one, two, strict=True):
        pd.testing.assert_frame_equal(a, b)
    assert seen[-1] == (40, 40)
