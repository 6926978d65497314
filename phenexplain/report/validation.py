"""Real and generated crops of one model, measured alike: what the verdict table is computed from.

`validate` samples real crops per condition (with their wells) and generates as many per
condition, both at the model's resolution, measures both enlarged back to the crop set's native
size (`analysis`), and, when the model runs below the native size, the same real crops at native
size for the resolution check (`resolution.resolution_check`). `phenexplain report` and
`phenexplain bench science` both call it, so the benchmark measures exactly what the report shows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from phenexplain.config import ReportParams
from phenexplain.data.cropset import CropSet
from phenexplain.nets import Generator
from phenexplain.report import analysis, resolution, verdicts
from phenexplain.training.data import downsample


@dataclass
class Validation:
    """The measured crops of one model on its crop set (small: at the model's resolution)."""

    real: analysis.Measurements  # with wells
    synthetic: analysis.Measurements
    check: pd.DataFrame | None  # resolution_check; None when the model runs at native size
    real_small: np.ndarray  # uint8 [N, C, R, R]
    real_names: np.ndarray
    fake_small: np.ndarray
    fake_names: np.ndarray
    factor: int  # native size / model resolution

    def verdict_table(self, control: str, seed: int) -> pd.DataFrame:
        """`verdicts.verdict_table` of these measurements, with the resolution check."""
        return verdicts.verdict_table(
            self.real, self.synthetic, control, seed=seed, resolution=self.check
        )


def validate(
    G: Generator,
    crops: CropSet,
    conditions: list[str],
    control: str,
    params: ReportParams,
    progress=None,
    synthetic: list[analysis.ConditionSample] | None = None,
) -> Validation:
    """Sample, generate and measure (see the module's docstring); `params` gives the numbers of
    crops per condition, the seed and the workers. `synthetic`: the conditions' generated and
    measured crops (`analysis.sample_condition`, in `conditions`' order) when they were made
    elsewhere, as the flow maps them over the conditions."""
    channels = crops.channels
    factor = crops.resolution // G.img_resolution
    index = analysis.sample_index(crops, conditions, params.real_per_condition, params.seed)
    real_images, real_names, real_wells = analysis.real_crops(crops, index)
    real_ids = analysis.crop_identifiers(crops, index)
    real_small = downsample(real_images, factor)
    real = analysis.measure(
        analysis.enlarge(real_small, factor), real_names, channels, params.workers, progress,
        wells=real_wells, ids=real_ids,
    )  # fmt: skip
    if synthetic is None:
        fake_small, fake_names = analysis.generate(
            G, conditions, params.synthetic_per_condition, params.seed
        )
        fake = analysis.measure(
            analysis.enlarge(fake_small, factor), fake_names, channels, params.workers, progress,
            ids=analysis.synthetic_identifiers(fake_names),
        )  # fmt: skip
    else:
        fake_small, fake_names, fake = analysis.join_samples(synthetic, conditions)
    check = None
    if factor > 1:  # the same real crops at native size: can the model's resolution carry it?
        native = analysis.measure(
            real_images, real_names, channels, params.workers, progress, wells=real_wells,
            ids=real_ids,
        )  # fmt: skip
        check = resolution.resolution_check(
            native, real, control, native_size=crops.resolution,
            resolution=G.img_resolution, seed=params.seed,
        )  # fmt: skip
    return Validation(real, fake, check, real_small, real_names, fake_small, fake_names, factor)
