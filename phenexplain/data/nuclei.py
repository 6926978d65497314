"""Nucleus detection on a DNA channel: smoothing, global threshold, split of touching nuclei."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.feature import peak_local_max
from skimage.filters import threshold_otsu
from skimage.measure import label
from skimage.morphology import remove_small_objects
from skimage.segmentation import watershed


def segment_nuclei(
    dna: np.ndarray,
    *,
    smoothing: float = 1.5,
    min_area: int = 40,
    min_distance: int = 6,
) -> np.ndarray:
    """Label image [H, W] (int32, 0 = background) of the nuclei in a DNA field [H, W].

    Otsu's threshold on the Gaussian-smoothed image separates nuclei from background; holes are
    filled and objects smaller than `min_area` px dropped; touching nuclei are split by a watershed
    on the distance transform seeded at its maxima at least `min_distance` px apart.
    """
    if dna.ndim != 2:
        raise ValueError(f"expected one DNA channel [H, W], got shape {dna.shape}")
    smooth = ndimage.gaussian_filter(dna.astype(np.float32), smoothing)
    if float(smooth.max()) == float(smooth.min()):
        return np.zeros(dna.shape, dtype=np.int32)
    mask = ndimage.binary_fill_holes(smooth > threshold_otsu(smooth))
    mask = remove_small_objects(mask, max_size=min_area - 1)
    distance = ndimage.distance_transform_edt(mask)
    distance = ndimage.gaussian_filter(distance, 1.0)
    peaks = peak_local_max(distance, min_distance=min_distance, labels=label(mask), exclude_border=False)
    markers = np.zeros(dna.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return watershed(-distance, markers, mask=mask).astype(np.int32)
