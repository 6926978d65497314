"""The cp-measure feature panel: values on known shapes, CellProfiler names, panel subsets,
independence from the worker count, and the nfkb translocation seen through plain intensities."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from phenexplain.errors import PhenexplainError
from phenexplain.measure.crops import CELL_EXPANSION_PX
from phenexplain.measure.features import PANEL, feature_names, measure_crops
from phenexplain.measure.stats import welch_t_test

RADIUS = 20


def _disc_crop() -> np.ndarray:
    """One crop [1, 2, 96, 96]: a DNA disc of radius 20 at 200, a marker disc of radius 34 at 128."""
    yy, xx = np.mgrid[:96, :96]
    distance = np.hypot(yy - 47.5, xx - 47.5)
    dna = np.where(distance < RADIUS, 200, 10)
    marker = np.where(distance < RADIUS + 14, 128, 0)
    return np.stack([dna, marker]).astype(np.uint8)[None]


def test_known_disc_gives_its_area_perimeter_and_intensity():
    table = measure_crops(_disc_crop(), ["DNA", "NFkB"], workers=1)
    assert len(table) == 1 and table["crop"].item() == 0
    row = table.iloc[0]
    assert row["Nuclei_AreaShape_Area"] == pytest.approx(np.pi * RADIUS**2, rel=0.03)
    assert row["Nuclei_AreaShape_Perimeter"] == pytest.approx(2 * np.pi * RADIUS, rel=0.05)
    assert row["Nuclei_AreaShape_Eccentricity"] < 0.1
    assert row["Nuclei_Intensity_MeanIntensity_DNA"] == pytest.approx(200 / 255, rel=1e-6)
    assert row["Nuclei_Intensity_MeanIntensity_NFkB"] == pytest.approx(128 / 255, rel=1e-6)
    assert row["Nuclei_Intensity_StdIntensity_DNA"] == pytest.approx(0, abs=1e-6)
    grown = np.pi * (RADIUS + CELL_EXPANSION_PX) ** 2
    assert row["Cells_AreaShape_Area"] == pytest.approx(grown, rel=0.03)
    assert row["Cytoplasm_AreaShape_Area"] == (
        row["Cells_AreaShape_Area"] - row["Nuclei_AreaShape_Area"]
    )
    assert row["Cytoplasm_Intensity_MeanIntensity_NFkB"] == pytest.approx(128 / 255, rel=1e-6)
    assert row["Cytoplasm_Intensity_MeanIntensity_DNA"] == pytest.approx(10 / 255, rel=1e-6)


def test_cellprofiler_names_and_panel_subsets():
    names = feature_names(["DNA", "NFkB"])
    for name in (
        "Nuclei_Intensity_MeanIntensity_DNA",
        "Cells_AreaShape_Area",
        "Cells_AreaShape_MaxFeretDiameter",
        "Cytoplasm_AreaShape_Zernike_2_0",
        "Nuclei_Texture_Contrast_DNA_3_00_256",
        "Cells_Granularity_3_NFkB",
        "Cells_RadialDistribution_FracAtD_NFkB_2of4",
    ):
        assert name in names
    assert not [n for n in names if "Location" in n or "Center" in n or "NormalizedMoment_0_0" in n]
    assert len(names) == len(set(names)) > 800  # 867 with two channels
    small = measure_crops(
        _disc_crop(), ["DNA", "NFkB"], panel=["intensity"], objects=["Nuclei"], workers=1
    )
    assert list(small.columns[:2]) == ["crop", "object"]
    assert all(c.startswith("Nuclei_Intensity_") for c in small.columns[2:])
    assert list(small.columns[2:]) == feature_names(["DNA", "NFkB"], ["intensity"], ["Nuclei"])
    zernike = feature_names(["DNA"], ["radial_zernikes"], ["Cells"])
    assert "Cells_RadialDistribution_ZernikeMagnitude_DNA_2_0" in zernike
    assert PANEL == ("intensity", "sizeshape", "zernike", "texture", "granularity", "radial")
    with pytest.raises(PhenexplainError, match="families"):
        measure_crops(_disc_crop(), ["DNA", "NFkB"], panel=["haralick"])
    with pytest.raises(PhenexplainError, match="objects"):
        measure_crops(_disc_crop(), ["DNA", "NFkB"], objects=["Cell"])


def test_full_panel_on_real_crops_does_not_depend_on_workers(assay_crops):
    data = assay_crops("golgi", wells_per_condition=2, sites_per_well=2)
    images = data.images[:20]  # two blocks of crops, so two workers both get work
    one = measure_crops(images, data.channels, data.stains, workers=1)
    two = measure_crops(images, data.channels, data.stains, workers=2)
    pd.testing.assert_frame_equal(one, two)
    assert one["crop"].is_monotonic_increasing and one["crop"].nunique() > 15
    assert one.shape[1] == 2 + len(feature_names(data.channels))
    assert one["Nuclei_AreaShape_Area"].between(100, 700).mean() > 0.9  # planted 300 +- 60 px^2


def test_intensities_show_the_nfkb_translocation(assay_crops):
    data = assay_crops("nfkb")
    table = measure_crops(data.images, data.channels, data.stains, panel=["intensity"])
    condition = data.manifest["condition"].to_numpy()[table["crop"].to_numpy()]
    ratio = np.log(
        table["Nuclei_Intensity_MeanIntensity_NFkB"]
        / table["Cytoplasm_Intensity_MeanIntensity_NFkB"]
    )
    test = welch_t_test(ratio[condition == "TNF"], ratio[condition == "control"])
    assert test.difference > 0 and test.p < 1e-6
