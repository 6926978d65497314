"""One physical cell per crop: a crop is measured for its centre cell only (DESIGN.md, "Measuring
a phenotype"); crop-level assays stay per crop; a crop without a centre cell is counted."""

from __future__ import annotations

import numpy as np
import pytest

from phenexplain.measure.crops import centre_object, measure_assays
from phenexplain.measure.features import measure_crops

SIZE = 64
CENTRE, LEFT, RIGHT = (32, 32), (12, 12), (52, 14)


def _disc(centre: tuple[int, int], radius: float, size: int = SIZE) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return np.hypot(yy - centre[0], xx - centre[1]) < radius


def _three_cells() -> np.ndarray:
    """A DNA + NF-kB crop [2, 64, 64] of 3 nuclei; the centre one (radius 6) has a nuclear NF-kB
    of 200 in a cytoplasm of 100 (ratio 2), its two neighbours (radius 4) 50 in 100 (ratio 0.5)."""
    dna = np.zeros((SIZE, SIZE), np.uint8)
    nfkb = np.zeros((SIZE, SIZE), np.uint8)
    for centre, radius, nuclear in ((CENTRE, 6, 200), (LEFT, 4, 50), (RIGHT, 4, 50)):
        nfkb[_disc(centre, radius + 7)] = 100
        nfkb[_disc(centre, radius)] = nuclear
        dna[_disc(centre, radius)] = 200
    return np.stack([dna, nfkb])


def test_a_crop_with_three_nuclei_gives_one_row_describing_the_centre_cell():
    crop = _three_cells()
    cells, crops = measure_assays(crop[None], ["DNA", "NFkB"], workers=1)
    assert len(cells) == 1 and list(cells["crop"]) == [0]
    row = cells.iloc[0]
    area = _disc(CENTRE, 6).sum()  # 109 px; smoothing grows it by ~1 px of radius; neighbours 49
    assert row["nucleus_area"] == pytest.approx(area, rel=0.15)
    assert row["nc_ratio"] == pytest.approx(2.0, rel=0.05)  # not 0.5 (a neighbour), not a mean
    assert crops["cell_count"].iloc[0] == 3  # crop-level assays still count every nucleus
    assert crops["centre_object"].iloc[0] == row["object"]
    assert crops["nc_ratio"].iloc[0] == row["nc_ratio"]  # the crop's value is its centre cell's


def test_the_feature_panel_describes_the_centre_cell_only():
    table = measure_crops(_three_cells()[None], ["DNA", "NFkB"], panel=["sizeshape"], workers=1)
    assert len(table) == 1
    assert table["Nuclei_AreaShape_Area"].iloc[0] == pytest.approx(_disc(CENTRE, 6).sum(), rel=0.15)


def test_centre_object_prefers_the_nucleus_under_the_centre_then_a_near_centroid():
    labels = np.zeros((SIZE, SIZE), np.int32)
    labels[_disc(LEFT, 5)] = 1
    labels[_disc(CENTRE, 6)] = 2
    assert centre_object(labels) == 2
    off = np.zeros_like(labels)
    off[_disc((32, 37), 3)] = 1  # misses the centre pixels; its centroid is 4.5 px away
    off[_disc(LEFT, 5)] = 2
    assert centre_object(off) == 1
    far = np.zeros_like(labels)
    far[_disc(LEFT, 5)] = 1
    assert centre_object(far) == 0
    assert centre_object(np.zeros_like(labels)) == 0


def test_a_crop_without_a_centre_cell_is_counted_not_dropped():
    crop = _three_cells()
    crop[:, _disc(CENTRE, 14)] = 0  # remove the centre cell, keep its neighbours
    cells, crops = measure_assays(np.stack([crop, _three_cells()]), ["DNA", "NFkB"], workers=1)
    assert list(cells["crop"]) == [1]
    assert list(crops["crop"]) == [0, 1] and list(crops["cell_count"]) == [2, 3]
    assert list(crops["centre_object"] > 0) == [False, True]
    assert np.isnan(crops["nc_ratio"].iloc[0])


def test_real_crops_with_neighbours_give_at_most_one_row_per_crop(assay_crops):
    data = assay_crops("nfkb")
    cells, crops = measure_assays(data.images, data.channels, data.stains, workers=1)
    assert cells["crop"].is_unique
    assert len(crops) == len(data.images) and (crops["cell_count"] > 1).any()  # neighbours exist
    assert len(cells) == int((crops["centre_object"] > 0).sum())
    assert len(cells) >= 0.9 * len(crops)  # nucleus-centred crops: nearly all have a centre cell
