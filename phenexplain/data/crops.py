"""Nucleus-centred crops and the intensity mapping to 8 bits.

Scaling: each channel of a 16-bit plate is mapped linearly from `low` to `high`, clipped, where
`low` is the lowest and `high` the highest of the conditions' own percentiles (1st and 99.99th by
default) over their good fields (`plate_scaling`). Taking the highest condition keeps the brightest
phenotype (TNF's nuclear NF-kB) below 255: a plate-wide 99th percentile, the paper's display
stretch, put three quarters of those pixels at 255 and capped the measured ratio. The (low, high)
pair is recorded per crop, so ``raw = low + u8 / 255 * (high - low)`` inverts it up to clipping and
rounding. 8-bit sources are already display-scaled and are kept as they are (low 0, high 255).

Border policy: a crop is a `size` x `size` window whose centre pixel is the nucleus centroid
rounded to the nearest pixel (top-left = centre - size // 2). With ``skip`` a nucleus whose window
leaves the field gives no crop; with ``pad`` the missing part is filled with zeros.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def centroids(labels: np.ndarray) -> np.ndarray:
    """Centroids [n, 2] (y, x) of labels 1..n."""
    n = int(labels.max())
    if n == 0:
        return np.zeros((0, 2))
    return np.asarray(ndimage.center_of_mass(labels > 0, labels, np.arange(1, n + 1)), dtype=float)


def percentiles_from_histogram(
    hist: np.ndarray, q: tuple[float, float] | list[float]
) -> tuple[float, float]:
    """The `q` percentiles (0-100) of the values whose counts are `hist` (bin i = value i)."""
    cdf = np.cumsum(hist, dtype=np.float64)
    if cdf[-1] == 0:
        return 0.0, 1.0
    low, high = (float(np.searchsorted(cdf, p / 100.0 * cdf[-1], side="left")) for p in q)
    return low, max(high, low + 1.0)


def plate_scaling(per_condition: list[tuple[float, float]]) -> tuple[float, float]:
    """(low, high) of one plate and channel from each condition's (low, high) percentiles: the
    lowest low and the highest high, so that no condition is clipped more than its percentiles."""
    assert per_condition, "a plate with good fields has at least one condition"
    low = min(lo for lo, _ in per_condition)
    high = max(hi for _, hi in per_condition)
    return low, max(high, low + 1.0)


def to_uint8(plane: np.ndarray, low: float, high: float) -> np.ndarray:
    """Linear map of [low, high] to [0, 255], clipped and rounded."""
    if plane.dtype == np.uint16 and float(low).is_integer():
        values = np.arange(65536, dtype=np.float32)
        lut = np.clip(np.rint((values - low) * (255.0 / (high - low))), 0, 255).astype(np.uint8)
        return lut[plane]
    scaled = (plane.astype(np.float32) - np.float32(low)) * np.float32(255.0 / (high - low))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def cut(
    field: np.ndarray, centres: np.ndarray, size: int, border: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Crops [n, C, size, size] around `centres` [m, 2]: (crops, kept indices, origins [n, 2])."""
    channels, height, width = field.shape
    half = size // 2
    crops, kept, origins = [], [], []
    for i, (cy, cx) in enumerate(centres):
        top, left = int(np.rint(cy)) - half, int(np.rint(cx)) - half
        inside = top >= 0 and left >= 0 and top + size <= height and left + size <= width
        if inside:
            crop = field[:, top : top + size, left : left + size]
        elif border == "pad":
            crop = np.zeros((channels, size, size), dtype=field.dtype)
            y0, x0 = max(top, 0), max(left, 0)
            y1, x1 = min(top + size, height), min(left + size, width)
            crop[:, y0 - top : y1 - top, x0 - left : x1 - left] = field[:, y0:y1, x0:x1]
        else:
            continue
        crops.append(crop)
        kept.append(i)
        origins.append((top, left))
    if not crops:
        return (
            np.zeros((0, channels, size, size), dtype=field.dtype),
            np.zeros(0, int),
            np.zeros((0, 2), int),
        )
    return np.stack(crops), np.asarray(kept), np.asarray(origins)


def illumination_function(mean_small: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A smooth multiplicative illumination profile [C, H, W] (mean 1 per channel).

    `mean_small` [C, h, w] is the plate's mean field, block-averaged; it is smoothed heavily
    (sigma = 1/8 of its size), brought back to full size and normalised per channel.
    """
    sigma = max(mean_small.shape[1:]) / 8.0
    out = []
    for plane in mean_small:
        smooth = ndimage.gaussian_filter(plane.astype(np.float64), sigma, mode="nearest")
        full = ndimage.zoom(smooth, (shape[0] / plane.shape[0], shape[1] / plane.shape[1]), order=1)
        full = full[: shape[0], : shape[1]]
        out.append(full / max(float(full.mean()), 1e-9))
    return np.maximum(np.stack(out), 0.05).astype(np.float32)


def block_mean(field: np.ndarray, block: int = 16) -> np.ndarray:
    """Block-averaged field [C, H // block, W // block] (edges trimmed)."""
    c, h, w = field.shape
    hb, wb = h // block, w // block
    trimmed = field[:, : hb * block, : wb * block].astype(np.float64)
    return trimmed.reshape(c, hb, block, wb, block).mean(axis=(2, 4))
