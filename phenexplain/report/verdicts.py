"""The report's verdict table: per assay and condition, the real effect against the generated one.

DESIGN.md, "Measuring a phenotype": generated images have no wells, so real and synthetic are
compared by effect size (`measure.effects`). For each assay and each condition vs control:
d_real with a bootstrap CI resampling wells, d_synthetic with a bootstrap CI resampling images
(one generated crop, one image), their ratio with its CI, the verdict, and the real test with the
well as the unit (Welch's t on well means), with the cells, crops and wells behind them. Cell
assays are measured on the centre cell of each crop (one value per crop), crop assays per crop.

With a resolution check (`report.resolution.resolution_check`), d at the crop set's native size
stands beside d at the model's resolution, and an assay that the model's resolution cannot carry
gets the verdict "not measurable at R px" (its reason says which limit it failed).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from phenexplain.measure import effects
from phenexplain.report.analysis import CELL_ASSAYS, Measurements, assay_names, assay_table

DISAGREE = (effects.Verdict.INFLATED, effects.Verdict.DEFLATED, effects.Verdict.WRONG_SIGN)


def _effects(
    real: pd.DataFrame, fake: pd.DataFrame | None, assay, condition, control, rng, resamples, level
) -> tuple[effects.EffectSize, effects.EffectSize | None, effects.WellTest]:
    """(d_real, d_synthetic or None, well test) of one assay and condition."""
    d_real = effects.effect_size_real(
        real[assay], real["condition"], real["well"], treated=condition, control=control,
        rng=rng, crops=real["crop"], resamples=resamples, level=level,
    )  # fmt: skip
    test = effects.well_t_test(
        real[assay], real["condition"], real["well"], treated=condition, control=control,
        crops=real["crop"], level=level,
    )  # fmt: skip
    d_fake = None
    if fake is not None and {condition, control} <= set(fake["condition"]):
        d_fake = effects.effect_size_synthetic(
            fake[assay], fake["condition"], treated=condition, control=control, rng=rng,
            images=fake["crop"], resamples=resamples, level=level,
        )  # fmt: skip
    return d_real, d_fake, test


NOT_MEASURABLE = str(effects.Verdict.NOT_MEASURABLE)
BELOW_RESOLUTION = f"{NOT_MEASURABLE} at "  # + "R px": the model's resolution cannot carry it


def below_resolution(verdict) -> bool:
    """Whether a verdict says the model's resolution cannot carry the assay."""
    return str(verdict).startswith(BELOW_RESOLUTION)


def _row(assay, condition, control, d_real, d_fake, test, check: dict | None) -> dict:
    plain, cp_name = assay_names(assay)
    if d_fake is None:
        ratio = effects.EffectRatio(np.nan, np.nan, np.nan, d_real.level)
        verdict, reason = effects.Verdict.NOT_MEASURABLE, "not measured on the generated crops"
    else:
        ratio = effects.effect_ratio(d_real, d_fake)
        verdict, reason = effects.verdict(d_real, d_fake, ratio)
    shown = str(verdict)
    if check is not None and not check["measurable"]:
        shown, reason = f"{BELOW_RESOLUTION}{check['resolution']} px", check["reason"]
    nan = float("nan")
    check = check or {}
    counts = d_real.counts
    return {
        "feature_name": plain,
        "cellprofiler_name": cp_name,
        "feature": assay,
        "measured_on": "centre cell" if assay in CELL_ASSAYS else "crop",
        "condition": condition,
        "control": control,
        "d_real": d_real.d,
        "d_real_ci_low": d_real.ci_low,
        "d_real_ci_high": d_real.ci_high,
        "d_synthetic": nan if d_fake is None else d_fake.d,
        "d_synthetic_ci_low": nan if d_fake is None else d_fake.ci_low,
        "d_synthetic_ci_high": nan if d_fake is None else d_fake.ci_high,
        "ratio": ratio.ratio,
        "ratio_ci_low": ratio.ci_low,
        "ratio_ci_high": ratio.ci_high,
        "verdict": shown,
        "verdict_reason": reason,
        "resolution": check.get("resolution"),
        "lowest_resolution": check.get("lowest_resolution"),
        "d_real_native": check.get("d_native", nan),
        "d_real_native_ci_low": check.get("d_native_ci_low", nan),
        "d_real_native_ci_high": check.get("d_native_ci_high", nan),
        "well_test": test.method,
        "well_difference": test.difference,
        "well_ci_low": test.ci_low,
        "well_ci_high": test.ci_high,
        "well_t": test.t,
        "well_df": test.df,
        "well_p": test.p,
        "well_test_reason": test.reason,
        "n_cells_treated": counts.n_cells_treated,
        "n_cells_control": counts.n_cells_control,
        "n_crops_treated": counts.n_crops_treated,
        "n_crops_control": counts.n_crops_control,
        "n_wells_treated": counts.n_wells_treated,
        "n_wells_control": counts.n_wells_control,
        "n_images_treated": None if d_fake is None else d_fake.counts.n_crops_treated,
        "n_images_control": None if d_fake is None else d_fake.counts.n_crops_control,
        "level": d_real.level,
    }


def verdict_table(
    real: Measurements,
    synthetic: Measurements,
    control: str,
    *,
    seed: int,
    resolution: pd.DataFrame | None = None,
    resamples: int = effects.DEFAULT_RESAMPLES,
    level: float = effects.DEFAULT_LEVEL,
) -> pd.DataFrame:
    """One row per (real assay, condition vs control); the columns are `_row`'s.

    `real` must carry wells (`analysis.measure(..., wells=...)`). Bootstrap draws come from one
    generator seeded by `seed`, so the table is reproducible. `resolution` is the real crops'
    `resolution_check` at the model's resolution (None: the model runs at the native size).
    """
    checks = {}
    if resolution is not None and len(resolution):
        checks = {(r["feature"], r["condition"]): r for r in resolution.to_dict(orient="records")}
    rng = np.random.default_rng(seed)
    rows = []
    for assay in real.assays:
        table = assay_table(real, assay)
        fake = assay_table(synthetic, assay) if assay in synthetic.assays else None
        conditions = sorted(set(table["condition"]) - {control})
        if control not in set(table["condition"]):
            continue
        for condition in conditions:
            found = _effects(table, fake, assay, condition, control, rng, resamples, level)
            rows.append(_row(assay, condition, control, *found, checks.get((assay, condition))))
    return pd.DataFrame(rows)


def disagreements(table: pd.DataFrame) -> dict:
    """How many verdicts disagree (inflated, deflated, wrong sign), agree, or are not measurable
    (of which how many at the model's resolution)."""
    verdicts = table["verdict"] if len(table) else pd.Series([], dtype=str)
    return {
        "rows": len(table),
        "disagree": int(verdicts.isin([str(v) for v in DISAGREE]).sum()),
        "agree": int((verdicts == str(effects.Verdict.AGREES)).sum()),
        "not_measurable": int(verdicts.str.startswith(NOT_MEASURABLE).sum()),
        "below_resolution": int(verdicts.map(below_resolution).sum()),
        "wrong_sign": int((verdicts == str(effects.Verdict.WRONG_SIGN)).sum()),
    }


def sentence(counts: dict) -> str:
    """The verdict table's headline in words."""
    measurable = counts["rows"] - counts["not_measurable"]
    return (
        f"{counts['disagree']} of {measurable} measurable verdicts disagree (inflated, deflated "
        f"or wrong sign; {counts['wrong_sign']} with the wrong sign), {counts['agree']} agree; "
        f"{counts['not_measurable']} of {counts['rows']} (feature, condition) pairs are not "
        f"measurable, {counts['below_resolution']} of them at the model resolution."
    )
