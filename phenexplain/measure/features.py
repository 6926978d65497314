"""Per-object CellProfiler-style feature panel of crops, through cp-measure.

Each crop is segmented by `measure.crops.segment_crop` (Nuclei, Cells, Cytoplasm) and measured on
intensities scaled as that module says (uint8 / 255). Features are named as CellProfiler names
them, ``<Object>_<Category>_<Feature>[_<Channel>][_<parameters>]``, for example
``Nuclei_Intensity_MeanIntensity_DNA``, ``Cells_AreaShape_Area``,
``Cytoplasm_AreaShape_Zernike_2_0``, ``Nuclei_Texture_Contrast_DNA_3_00_256``,
``Cells_Granularity_3_NFkB`` or ``Cells_RadialDistribution_FracAtD_NFkB_2of4``. Positions in the
crop (centres, bounding-box corners, intensity-weighted centres) and moments that are undefined
or zero by definition are left out.

Panel families (`PANEL` is the default; `ALL_FAMILIES` adds radial Zernike moments):
- ``intensity``: intensity statistics, per channel;
- ``sizeshape``: area, perimeter, axes, moments, Feret diameters (shape only, no channel);
- ``zernike``: Zernike shape moments up to degree 9;
- ``texture``: Haralick features at scale 3 px, four directions, per channel;
- ``granularity``: granular spectrum (16 sizes), per channel;
- ``radial``: radial distribution (4 rings), per channel;
- ``radial_zernikes``: intensity-weighted Zernike magnitudes and phases, per channel.
Cost grows with objects x channels; pick families and objects to fit the time available.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache, partial

import numpy as np
import pandas as pd
from cp_measure.bulk import get_core_measurements

from phenexplain.config import NucleiParams
from phenexplain.errors import PhenexplainError
from phenexplain.measure.crops import (
    OBJECTS,
    CropObjects,
    Progress,
    check_crops,
    check_stains,
    map_crops,
    segment_crop,
    to_intensity,
)

PANEL = ("intensity", "sizeshape", "zernike", "texture", "granularity", "radial")
ALL_FAMILIES = (*PANEL, "radial_zernikes")
SHAPE_FAMILIES = {"sizeshape": ("sizeshape", "feret"), "zernike": ("zernike",)}
POSITIONAL = ("Center_", "BoundingBoxMinimum_", "BoundingBoxMaximum_", "Location_")
CONSTANT = {  # undefined (NaN) or zero for every object, by definition of the moments
    "NormalizedMoment_0_0",
    "NormalizedMoment_0_1",
    "NormalizedMoment_1_0",
    "CentralMoment_0_1",
    "CentralMoment_1_0",
}


def _name(obj: str, family: str, key: str, channel: str | None) -> str | None:
    """CellProfiler's name for cp-measure's `key` of `family`; None for a feature left out."""
    if key.startswith(POSITIONAL) or key in CONSTANT:
        return None
    if channel is None:
        return f"{obj}_AreaShape_{key}"
    if family == "texture":  # Contrast_3_00_256 -> Texture_Contrast_DNA_3_00_256
        feature, params = key.split("_", 1)
        return f"{obj}_Texture_{feature}_{channel}_{params}"
    if family in ("radial", "radial_zernikes"):  # RadialDistribution_FracAtD_1of4
        category, feature, params = key.split("_", 2)
        return f"{obj}_{category}_{feature}_{channel}_{params}"
    return f"{obj}_{key}_{channel}"  # Intensity_MeanIntensity, Granularity_1


def _functions(panel: Sequence[str]) -> list[tuple[str, Callable, bool]]:
    """(family, cp-measure function, measured per channel) for each family of `panel`."""
    unknown = sorted(set(panel) - set(ALL_FAMILIES))
    if unknown or not panel:
        raise PhenexplainError(f"unknown feature families {unknown}; choose from {ALL_FAMILIES}")
    core = get_core_measurements()
    core["radial"] = core["radial_distribution"]
    out = []
    for family in ALL_FAMILIES:  # a fixed order, so columns do not depend on the panel's order
        if family in panel:
            names = SHAPE_FAMILIES.get(family, (family,))
            out += [(family, core[name], family not in SHAPE_FAMILIES) for name in names]
    return out


def _measure_object(
    obj: str,
    labels: np.ndarray,
    image: np.ndarray,
    channels: Sequence[str],
    functions: list[tuple[str, Callable, bool]],
    rows: np.ndarray,
) -> dict[str, np.ndarray]:
    """Columns of one object kind, one entry per label in `rows` (NaN where it has no pixels).

    Shape functions get the first channel as `pixels`, which they do not use.
    """
    labels = np.where(np.isin(labels, rows), labels, 0)  # objects left out cost nothing
    ids = np.unique(labels[labels > 0])
    present = np.isin(rows, ids)
    where = np.searchsorted(ids, rows[present])
    columns: dict[str, np.ndarray] = {}
    for family, fn, per_channel in functions:
        for c, channel in enumerate(channels if per_channel else [None]):
            values = fn(labels, image[c if per_channel else 0]) if ids.size else {}
            for key, array in values.items():
                name = _name(obj, family, key, channel)
                if name is not None:
                    column = np.full(len(rows), np.nan)
                    column[present] = np.asarray(array, dtype=float)[where]
                    columns[name] = column
    return columns


def object_features(
    image: np.ndarray,
    channels: Sequence[str],
    objects: CropObjects,
    *,
    panel: Sequence[str] = PANEL,
    object_names: Sequence[str] = OBJECTS,
) -> pd.DataFrame:
    """Feature panel of one crop of intensities [C, H, W]: one row for its centre cell (none
    without one; see `measure.crops.centre_object`)."""
    functions = _functions(panel)
    rows = np.array([objects.centre] if objects.centre else [], dtype=np.int64)
    columns: dict[str, np.ndarray] = {"object": rows.astype(np.int64)}
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        # tiny or ring-shaped objects make some statistics undefined: they come out as NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        for obj in object_names:
            labels = objects.labels(obj)
            columns |= _measure_object(obj, labels, image, channels, functions, rows)
    return pd.DataFrame(columns)


@lru_cache(maxsize=32)
def _names(channels: tuple[str, ...], panel: tuple[str, ...], objects: tuple[str, ...]) -> list:
    """Columns of `object_features` on a reference disc (names do not depend on the image)."""
    yy, xx = np.mgrid[:48, :48]
    radius = np.hypot(yy - 24, xx - 24)
    nuclei = (radius < 8).astype(np.int32)
    cells = (radius < 16).astype(np.int32)
    shade = (1.0 - radius / 48).astype(np.float32)
    image = np.stack([shade * (0.3 + 0.6 * (c + 1) / len(channels)) for c in range(len(channels))])
    disc = CropObjects(nuclei, cells, None, centre=1)
    table = object_features(image, channels, disc, panel=panel, object_names=objects)
    return list(table.columns[1:])


def feature_names(
    channels: Sequence[str], panel: Sequence[str] = PANEL, objects: Sequence[str] = OBJECTS
) -> list[str]:
    """The feature columns `measure_crops` returns for these channels, panel and objects."""
    return list(_names(tuple(channels), tuple(panel), tuple(objects)))


def _feature_block(
    block: np.ndarray,
    start: int,
    stains: dict[str, str],
    panel: Sequence[str],
    object_names: Sequence[str],
    nuclei: NucleiParams | None,
) -> list[pd.DataFrame]:
    out = []
    for k, crop in enumerate(block):
        image = to_intensity(crop)
        objects = segment_crop(image, stains, nuclei=nuclei)
        table = object_features(
            image, list(stains), objects, panel=panel, object_names=object_names
        )
        out.append(table.assign(crop=start + k))
    return out


def measure_crops(
    crops: np.ndarray,
    channels: Sequence[str],
    stains: Mapping[str, str] | None = None,
    *,
    panel: Sequence[str] = PANEL,
    objects: Sequence[str] = OBJECTS,
    nuclei: NucleiParams | None = None,
    workers: int = 2,
    on_progress: Progress | None = None,
) -> pd.DataFrame:
    """Segment uint8 crops [N, C, H, W] and measure the panel: one row per centre cell.

    Columns: ``crop`` (position in `crops`), ``object`` (label in `segment_crop`'s images), then
    the features. `workers` processes share the crops; the result does not depend on it.
    """
    crops = check_crops(crops, channels)
    stains = check_stains(channels, stains)
    unknown = sorted(set(objects) - set(OBJECTS))
    if unknown or not objects:
        raise PhenexplainError(f"unknown objects {unknown}; choose from {OBJECTS}")
    _functions(panel)  # fail on a bad panel before starting workers
    fn = partial(
        _feature_block,
        stains=stains,
        panel=tuple(panel),
        object_names=tuple(objects),
        nuclei=nuclei,
    )
    columns = ["crop", "object", *feature_names(channels, panel, objects)]
    tables = [t for t in map_crops(fn, crops, workers, on_progress) if len(t)]
    if not tables:
        return pd.DataFrame(columns=columns)
    # an object kind with no pixels in a crop (a cytoplasm-less cell) leaves its columns out
    return pd.concat(tables, ignore_index=True).reindex(columns=columns)
