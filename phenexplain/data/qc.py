"""Per-field quality control, named as CellProfiler's MeasureImageQuality names its measurements.

- ``ImageQuality_PowerLogLogSlope_<ch>``: slope of the radially averaged power spectrum in log-log
  axes; blur removes high frequencies and makes it more negative. The fit spans spatial
  frequencies up to 1/8 cycle per pixel: above that, fluorescence fields are dominated by the flat
  floor of shot and quantisation noise, which would hide the blur.
- ``ImageQuality_FocusScore_<ch>``: var(I) / mean(I), normalised variance; low when blurred
  or empty.
- ``ImageQuality_PercentMaximal_<ch>``: percent of pixels at the image's maximum; high when
  saturated (clipped) or blank.
- ``ImageQuality_{Mean,Std,Min,Max}Intensity_<ch>``: on the raw scale.

Flags are decided per plate with robust z-scores, (x - median) / (1.4826 MAD).
"""

from __future__ import annotations

import numpy as np
from scipy import fft

BLUR_CHANNEL_METRICS = ("PowerLogLogSlope", "FocusScore")


def power_log_log_slope(image: np.ndarray) -> float:
    """Slope of log(power) against log(spatial frequency), radially averaged."""
    x = image.astype(np.float32)
    x -= x.mean()
    power = np.abs(fft.rfft2(x)) ** 2
    h, w = x.shape
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    radius = np.sqrt(fy**2 + fx**2) * min(h, w)
    bins = radius.astype(np.int32).ravel()
    top = min(h, w) // 2
    fit_top = max(top // 4, 2)  # radius index min(h, w) / 8 = 1/8 cycle per pixel
    sums = np.bincount(bins, weights=power.ravel(), minlength=top + 1)[1 : top + 1]
    counts = np.bincount(bins, minlength=top + 1)[1 : top + 1]
    freq = np.arange(1, top + 1)
    keep = (counts > 0) & (sums > 0) & (freq <= fit_top)
    if keep.sum() < 2:
        return float("nan")
    freq = freq[keep]
    slope, _ = np.polyfit(np.log(freq), np.log(sums[keep] / counts[keep]), 1)
    return float(slope)


def focus_score(image: np.ndarray) -> float:
    """Normalised variance (CellProfiler's FocusScore)."""
    mean = float(image.mean())
    return float(image.var() / mean) if mean > 0 else 0.0


def percent_maximal(image: np.ndarray) -> float:
    return float(100.0 * np.count_nonzero(image == image.max()) / image.size)


def field_quality(field: np.ndarray, channels: list[str], blur_channel: str) -> dict[str, float]:
    """QC measurements of one field [C, H, W]; blur metrics (the costly ones) on `blur_channel`."""
    out: dict[str, float] = {}
    for name, plane in zip(channels, field, strict=True):
        out[f"ImageQuality_MeanIntensity_{name}"] = float(plane.mean())
        out[f"ImageQuality_StdIntensity_{name}"] = float(plane.std())
        out[f"ImageQuality_MinIntensity_{name}"] = float(plane.min())
        out[f"ImageQuality_MaxIntensity_{name}"] = float(plane.max())
        out[f"ImageQuality_PercentMaximal_{name}"] = percent_maximal(plane)
        if name == blur_channel:
            out[f"ImageQuality_PowerLogLogSlope_{name}"] = power_log_log_slope(plane)
            out[f"ImageQuality_FocusScore_{name}"] = focus_score(plane)
    return out


def robust_z(values: np.ndarray) -> np.ndarray:
    """(x - median) / (1.4826 MAD); zeros where the spread is zero or undefined."""
    values = np.asarray(values, dtype=float)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.zeros_like(values)
    median = np.median(finite)
    mad = 1.4826 * np.median(np.abs(finite - median))
    if mad == 0:
        return np.zeros_like(values)
    return (values - median) / mad
