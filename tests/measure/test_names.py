"""Plain names of the assays and of every CellProfiler-style feature the panel produces."""

from __future__ import annotations

import pandas as pd
import pytest

from phenexplain.data.synthetic.assays import ASSAYS
from phenexplain.errors import PhenexplainError
from phenexplain.measure.features import ALL_FAMILIES, feature_names
from phenexplain.measure.names import ASSAY_NAMES, describe, plain_name, with_names

CHANNELS = sorted({ch.name for make in ASSAYS.values() for ch in make().channels})


@pytest.fixture(scope="module")
def panel_names() -> list[str]:
    """Every feature name of the full panel over every channel of the synthetic assays."""
    return feature_names(CHANNELS, ALL_FAMILIES)


def test_every_panel_name_gets_its_own_plain_name(panel_names):
    plain = [plain_name(n) for n in panel_names]
    assert len(panel_names) > 1000
    assert not [n for n, p in zip(panel_names, plain, strict=True) if p == n or "_" in p]
    repeated = pd.Series(plain)[pd.Series(plain).duplicated(keep=False)]
    assert repeated.empty, sorted(set(repeated))[:5]


def test_plain_names_say_object_channel_and_parameters(panel_names):
    for name in panel_names:
        plain = describe(name).plain
        obj = {"Nuclei": "nucleus", "Cells": "cell", "Cytoplasm": "cytoplasm"}[name.split("_")[0]]
        assert obj in plain, (name, plain)
        if "_AreaShape_" not in name:  # everything else is measured on a channel
            assert any(ch in plain for ch in CHANNELS), (name, plain)


@pytest.mark.parametrize(
    ("name", "plain", "unit"),
    [
        ("Nuclei_Intensity_MeanIntensity_DNA", "mean DNA intensity in the nucleus", "uint8/255"),
        ("Cells_Texture_Contrast_NFkB_3_00_256",
         "NFkB texture contrast in the cell (scale 3 px, horizontal, 256 levels)", ""),
        ("Cytoplasm_AreaShape_Zernike_2_0", "Zernike shape moment (n=2, m=0) of the cytoplasm", ""),
        ("Cells_RadialDistribution_FracAtD_NFkB_2of4",
         "fraction of the NFkB intensity in ring 2 of 4 of the cell", "fraction"),
        ("Cells_Granularity_3_NFkB", "NFkB granularity in the cell (spectrum scale 3)",
         "% of intensity"),
        ("Nuclei_AreaShape_Area", "nucleus area (px^2)", "px^2"),  # the assay's own name
        ("Cells_AreaShape_Area", "area of the cell", "px^2"),
        ("Cells_Intensity_MeanIntensityEdge_Golgi", "mean Golgi intensity at the edge of the cell",
         "uint8/255"),
        ("log_nc_ratio", "nucleus/cytoplasm NF-kB ratio (log)", "ln(ratio)"),
    ],
)  # fmt: skip
def test_known_plain_names(name, plain, unit):
    assert (describe(name).plain, describe(name).unit) == (plain, unit)


def test_assays_have_both_names_and_a_name_that_is_no_feature_is_refused():
    for code, (plain, cellprofiler, _) in ASSAY_NAMES.items():
        assert describe(code).cellprofiler == cellprofiler and describe(cellprofiler).code == code
        assert plain != code
    with pytest.raises(PhenexplainError, match="not a CellProfiler-style"):
        describe("Vesicles_Intensity_MeanIntensity_DNA")


def test_with_names_puts_both_names_before_the_code_name():
    frame = pd.DataFrame({"feature": ["all", "spot_count", "Cells_AreaShape_Area"], "r": [1, 2, 3]})
    named = with_names(frame, others={"all": "all features"})
    assert list(named.columns) == ["feature_name", "cellprofiler_name", "feature", "r"]
    assert named["feature_name"].tolist() == ["all features", "Golgi spots per cell",
                                              "area of the cell"]  # fmt: skip
    assert named["cellprofiler_name"].tolist() == ["", "Cells_Children_GolgiSpots_Count",
                                                   "Cells_AreaShape_Area"]  # fmt: skip
