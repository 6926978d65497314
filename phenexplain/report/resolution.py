"""Resolution-aware assays: at which model resolution does an assay still measure its effect?

The assays' pixel parameters (nucleus smoothing and sizes, the cytoplasm ring, the golgi spot
sigma, top-hat radius and smallest spot, the cell expansion) are physical: pixels of the crop
set's native size, which are the fields' pixels (ingest cuts crops without rescaling). A crop at a
model's resolution R carries what is left after a box-downsampling by ``factor = native / R``; the
report enlarges it back to the native size before measuring (`analysis.enlarge`), so the
parameters hold at every R and areas stay in native px^2. What is lost is detail finer than
`factor` native pixels, and an assay whose structures are that small cannot be measured.

Two checks decide that an assay is measurable at R, both on real crops:

- the stated limit, `MAX_FACTOR`: the largest factor at which a sweep of the synthetic assays'
  real crops (128 px crops, plate seed 11, 6 wells x 2 sites per condition, up to 300 crops per
  condition) kept the sign of d and at least `MIN_KEPT` of |d| at native size. Measured
  (d native -> 64 / 32 / 16 / 8 px): golgi spot area -1.18 -> -1.04 / -0.61 / 0.01 / 0.12 (limit
  2: 64 px of 128); spot count 1.36 -> 1.33 / 1.15 / 1.03 / 0.69 (8); nfkb log ratio 3.63 ->
  4.20 / 4.76 / 5.15 / 2.22 (8); subtle nucleus area 0.68 -> 0.65 / 0.62 / 0.32 / -0.03 (4);
  dose (10 uM) cytoplasm area -0.56 -> -0.51 / -1.04 / -0.69 / -1.31 and subtle's -0.14 ->
  -0.11 / -0.16 / -0.02 (4); cell count -0.67 -> -0.67 / -0.62 / -0.61 / -0.73 (16);
  background fraction 1.22 -> 1.20 / 1.22 / 1.24 / 1.21 (16). `tests/report/test_resolution.py`
  re-runs the sweep;
- the data's own check (`resolution_check`): the same real crops measured at native size and at
  R; where the native effect is real (its CI excludes 0), a sign that flips or less than
  `MIN_KEPT` of |d| kept makes the assay not measurable at R on this crop set.

Below either limit the verdict is "not measurable at R px", and the report prints no number for it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from phenexplain.measure import effects
from phenexplain.report.analysis import Measurements, assay_names, assay_table, enlarge, measure
from phenexplain.training.data import downsample

MIN_KEPT = 0.7  # of |d| at native size, with its sign, for an assay to count as measurable
MAX_FACTOR = {  # native px per model px at which each assay is still measurable (see above)
    "log_nc_ratio": 8,
    "spot_count": 8,
    "spot_area": 2,
    "nucleus_area": 4,
    "cytoplasm_area": 4,
    "cell_count": 16,
    "background_fraction": 16,
}


def lowest_resolution(feature: str, native: int) -> int:
    """The lowest model resolution (px) at which `feature` is measurable on `native` px crops."""
    return max(1, native // MAX_FACTOR[feature])


def stated_measurable(feature: str, native: int, resolution: int) -> bool:
    """Whether the stated limit allows measuring `feature` at `resolution` on `native` px crops."""
    return resolution >= lowest_resolution(feature, native)


def at_resolution(images: np.ndarray, resolution: int) -> np.ndarray:
    """uint8 crops [N, C, S, S] as a model of `resolution` px sees them, enlarged back to S."""
    factor = images.shape[-1] // resolution
    return enlarge(downsample(images, factor), factor)


def well_effect(
    m: Measurements,
    feature: str,
    condition: str,
    control: str,
    rng,
    resamples: int = effects.DEFAULT_RESAMPLES,
) -> effects.EffectSize:
    """Cohen's d of `feature`, `condition` - `control` (the labels of `m`'s tables), CI by
    resampling wells."""
    table = assay_table(m, feature)
    return effects.effect_size_real(
        table[feature], table["condition"], table["well"], treated=condition, control=control,
        rng=rng, crops=table["crop"], resamples=resamples,
    )  # fmt: skip


def is_real(d: effects.EffectSize) -> bool:
    """A measurable d whose CI excludes 0."""
    return d.measurable and not d.ci_low <= 0 <= d.ci_high


def resolution_check(
    native: Measurements,
    at_model: Measurements,
    control: str,
    *,
    native_size: int,
    resolution: int,
    seed: int,
    resamples: int = effects.DEFAULT_RESAMPLES,
) -> pd.DataFrame:
    """Per (feature, condition vs control): d real at native size and at `resolution` (the same
    crops, both with wells), the share of d kept, and whether the feature is measurable there.

    Columns: feature, feature_name, cellprofiler_name, condition, resolution, native_size,
    lowest_resolution (the stated limit), d_native, d_native_ci_low, d_native_ci_high, d_model,
    kept (d_model / d_native), measurable, reason ("" when measurable).
    """
    rng = np.random.default_rng(seed)
    rows = []
    for feature in native.assays:
        table = assay_table(native, feature)
        if control not in set(table["condition"]):
            continue
        for condition in sorted(set(table["condition"]) - {control}):
            d_native = well_effect(native, feature, condition, control, rng, resamples)
            d_model = (
                well_effect(at_model, feature, condition, control, rng, resamples).d
                if feature in at_model.assays
                else np.nan
            )
            kept = d_model / d_native.d if d_native.d else np.nan
            lowest = lowest_resolution(feature, native_size)
            reason = ""
            if resolution < lowest:
                reason = (
                    f"the assay is measurable from {lowest} px on {native_size} px crops "
                    f"(at most {MAX_FACTOR[feature]} native px per model px)"
                )
            elif is_real(d_native) and not (np.isfinite(kept) and kept >= MIN_KEPT):
                reason = (
                    f"on these crops d real is {d_model:.3g} at {resolution} px against "
                    f"{d_native.d:.3g} at {native_size} px (needs the same sign and at least "
                    f"{MIN_KEPT:.0%} of it)"
                )
            plain, cp_name = assay_names(feature)
            rows.append({
                "feature": feature,
                "feature_name": plain,
                "cellprofiler_name": cp_name,
                "condition": condition,
                "resolution": resolution,
                "native_size": native_size,
                "lowest_resolution": lowest,
                "d_native": d_native.d,
                "d_native_ci_low": d_native.ci_low,
                "d_native_ci_high": d_native.ci_high,
                "d_model": d_model,
                "kept": kept,
                "measurable": not reason,
                "reason": reason,
            })  # fmt: skip
    return pd.DataFrame(rows)


def resolution_sweep(
    images: np.ndarray,
    names: np.ndarray,
    wells: np.ndarray,
    channels: list[str],
    control: str,
    resolutions: list[int],
    *,
    seed: int,
    workers: int = 2,
) -> pd.DataFrame:
    """`resolution_check` of real crops [N, C, S, S] at each of `resolutions` (px, dividing S),
    one table: the sweep that backs `MAX_FACTOR`."""
    size = images.shape[-1]
    native = measure(images, names, channels, workers, wells=wells)
    frames = []
    for resolution in resolutions:
        at_model = (
            native
            if resolution == size
            else measure(at_resolution(images, resolution), names, channels, workers, wells=wells)
        )
        frames.append(
            resolution_check(
                native, at_model, control, native_size=size, resolution=resolution, seed=seed
            )
        )
    return pd.concat(frames, ignore_index=True)
