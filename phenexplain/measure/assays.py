"""Per-cell assay measurements on a fluorescence field, with scikit-image.

Features (named as the synthetic assays' ground truth names them):
- ``nucleus_area``: px^2 of each nucleus not touching the field border;
- ``nc_ratio``: background-subtracted mean marker intensity in the nucleus core (eroded 2 px)
  over that in a cytoplasm ring 2 to 6 px outside the nucleus;
- ``spot_count``, ``spot_area``: top-hat-detected spots assigned to the nearest nucleus (Otsu's
  threshold, but at least `SPOT_NOISE_Z` robust SDs above the top-hat's median: without the floor,
  Otsu cuts the noise of a cell without golgi into one spot of a thousand px^2);
- ``cytoplasm_area``: cell area (watershed from nuclei over the cell-body foreground) minus the
  nucleus area;
and per field ``cell_count`` (all nuclei) and ``background_fraction``. `measure_cells` works on any
image, a full field or a crop; `measure_field` keeps the cells whose nucleus is inside the field.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu
from skimage.measure import label, regionprops_table
from skimage.morphology import disk, white_tophat
from skimage.segmentation import clear_border, expand_labels, watershed

RING_INNER_PX = 2
RING_OUTER_PX = 6
SPOT_REACH_PX = 30
SPOT_NOISE_Z = 5.0  # spots stand this many robust SDs (1.4826 MAD) above the top-hat's median
BODY_STAINS = ("actin", "tubulin")  # the first channel with one of these stains outlines cells


def _background(image: np.ndarray, occupied: np.ndarray) -> float:
    free = image[~occupied]
    return float(np.median(free)) if free.size else float(np.percentile(image, 1))


def _per_label_mean(image: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    sums = np.bincount(labels.ravel(), weights=image.ravel(), minlength=n + 1)
    counts = np.bincount(labels.ravel(), minlength=n + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts


def nc_ratio(marker: np.ndarray, nuclei: np.ndarray) -> np.ndarray:
    """Nucleus/cytoplasm marker ratio per nucleus label 1..n (NaN where undefined)."""
    n = int(nuclei.max())
    image = marker.astype(np.float32)
    occupied = expand_labels(nuclei, 25) > 0
    bg = _background(image, occupied)
    core = np.where(ndimage.binary_erosion(nuclei > 0, iterations=RING_INNER_PX), nuclei, 0)
    outer = expand_labels(nuclei, RING_OUTER_PX)
    inner = expand_labels(nuclei, RING_INNER_PX)
    ring = np.where(inner > 0, 0, outer)
    nuc_mean = _per_label_mean(image - bg, core, n)[1:]
    ring_mean = _per_label_mean(image - bg, ring, n)[1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = nuc_mean / ring_mean
    ratio[~np.isfinite(ratio) | (ring_mean <= 0)] = np.nan
    return ratio


def spots(marker: np.ndarray, nuclei: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(spot count, mean spot area) per nucleus label 1..n; area NaN where a cell has no spot."""
    n = int(nuclei.max())
    smooth = ndimage.gaussian_filter(marker.astype(np.float32), 0.8)
    tophat = white_tophat(smooth, disk(6))
    territory = expand_labels(nuclei, SPOT_REACH_PX)
    values = tophat[territory > 0]
    if values.size == 0 or float(values.max()) == float(values.min()):
        return np.zeros(n), np.full(n, np.nan)
    median = float(np.median(values))
    noise = median + SPOT_NOISE_Z * 1.4826 * float(np.median(np.abs(values - median)))
    spot_labels = label(tophat > max(threshold_otsu(values), noise))
    props = regionprops_table(spot_labels, properties=("area", "centroid"))
    owner = territory[props["centroid-0"].astype(int), props["centroid-1"].astype(int)]
    keep = (owner > 0) & (props["area"] >= 3)
    count = np.bincount(owner[keep], minlength=n + 1)[1:]
    area_sum = np.bincount(owner[keep], weights=props["area"][keep], minlength=n + 1)[1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        return count.astype(float), np.where(count > 0, area_sum / count, np.nan)


def cell_bodies(body: np.ndarray, nuclei: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(cell labels [H, W], foreground mask [H, W]) from a cell-body stain seeded by nuclei."""
    smooth = ndimage.gaussian_filter(body.astype(np.float32), 2.0)
    foreground = (smooth > threshold_otsu(smooth)) | (nuclei > 0)
    cells = watershed(-smooth, nuclei, mask=foreground)
    return cells, foreground


def measure_cells(
    channels: dict[str, np.ndarray],
    stains: dict[str, str],
    nuclei: np.ndarray,
    bodies: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Per-nucleus feature arrays (entry i is label i + 1) and per-image values of one image.

    `channels` maps channel name to image [H, W]; `stains` maps channel name to its stain kind
    (``dna``, ``nfkb``, ``golgi``, ``actin``, ``tubulin``; other kinds are not measured); `nuclei`
    is a label image 1..n. `bodies` is `cell_bodies`' result on the first body-stain channel,
    when the caller already has it.
    """
    n = int(nuclei.max())
    area = np.bincount(nuclei.ravel(), minlength=n + 1)[1:].astype(float)
    columns: dict[str, np.ndarray] = {"nucleus_area": area}
    image = {"cell_count": float(len(np.unique(nuclei)) - 1)}
    for name, stain in stains.items():
        if stain == "nfkb":
            columns["nc_ratio"] = nc_ratio(channels[name], nuclei)
        elif stain == "golgi":
            columns["spot_count"], columns["spot_area"] = spots(channels[name], nuclei)
        elif stain in BODY_STAINS and "cytoplasm_area" not in columns:
            cells, foreground = bodies or cell_bodies(channels[name], nuclei)
            cell_area = np.bincount(cells.ravel(), minlength=n + 1)[1:].astype(float)
            columns["cytoplasm_area"] = cell_area - area
            image["background_fraction"] = float(1.0 - foreground.mean())
    return columns, image


def measure_field(
    channels: dict[str, np.ndarray], stains: dict[str, str], nuclei: np.ndarray
) -> tuple[list[dict], dict]:
    """Per-cell rows and per-field values for one field (see `measure_cells`).

    Cells whose nucleus touches the border are left out of the per-cell rows.
    """
    columns, field = measure_cells(channels, stains, nuclei)
    interior = np.unique(clear_border(nuclei))
    interior = interior[interior > 0]
    rows = [{k: float(v[i - 1]) for k, v in columns.items()} for i in interior]
    return rows, field
