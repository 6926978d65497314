"""Effect sizes that can be compared between real and generated cells, with wells as replicates.

What the report's verdict rests on (DESIGN.md, "Measuring a phenotype"): generated images have no
wells, so real and synthetic are compared by the size of an effect, not by p-values.

- `effect_size_real`: Cohen's d of treated - control on real cells (pooled SD over cells, the
  same d as `stats.cohens_d`), with a percentile bootstrap CI that resamples WELLS with
  replacement within each condition (a cluster bootstrap), so well-to-well variation widens it.
- `effect_size_synthetic`: the same d on generated cells, the bootstrap resampling IMAGES.
- `effect_ratio`: d_synthetic / d_real with a percentile CI from the two independent bootstrap
  distributions (the i-th resample of one divided by the i-th of the other).
- `verdict`: agrees / inflated / deflated / wrong sign / not measurable; the rule is in its
  docstring.
- `well_t_test` and `mixed_model_test`: tests between real conditions with the well as the
  experimental unit: Welch's t-test on well means, or a linear mixed model with a random
  intercept per well (statsmodels' MixedLM, REML).

A well is identified by its (condition, well label) pair, so replicate numbers reused across
conditions are distinct wells. Non-finite values are dropped, as in `stats`. Bad input (lengths
that differ, a condition that is absent, a level outside (0, 1)) raises `PhenexplainError`;
data that cannot carry the statistic (too few wells or images, zero variance) gives a result
with ``measurable=False`` and the reason, never a silent NaN.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from phenexplain.errors import PhenexplainError
from phenexplain.measure.stats import _summary, t_statistics, welch_t_test

DEFAULT_RESAMPLES = 2000
DEFAULT_LEVEL = 0.95
MIN_WELLS = 3  # per condition: a cluster bootstrap over 2 wells has only 3 distinct outcomes
MIN_IMAGES = 2  # per condition: d needs a variance
MAX_FAILED_SHARE = 0.01  # bootstrap resamples with an undefined d (zero variance) tolerated
_CHUNK_CELLS = 1_000_000  # resamples x clusters drawn at once, bounds memory


@dataclass(frozen=True)
class Counts:
    """How many cells, crops (or images) and wells stand behind a statistic, per condition."""

    n_cells_treated: int
    n_cells_control: int
    n_crops_treated: int | None  # None: crops not given
    n_crops_control: int | None
    n_wells_treated: int | None  # None: no wells (generated images)
    n_wells_control: int | None


@dataclass(frozen=True)
class EffectSize:
    """Cohen's d of treated - control with a percentile bootstrap CI over `unit` ("well", "image").

    When ``measurable`` is False, `reason` says why; d may still be finite but the CI is NaN.
    `bootstrap` holds the resampled d values (finite ones), for `effect_ratio`.
    """

    d: float
    ci_low: float
    ci_high: float
    level: float
    unit: str
    resamples: int
    failed_resamples: int
    counts: Counts
    measurable: bool
    reason: str
    bootstrap: np.ndarray = field(repr=False, compare=False)


@dataclass(frozen=True)
class EffectRatio:
    """d_synthetic / d_real and its percentile bootstrap CI (NaN unless both are measurable)."""

    ratio: float
    ci_low: float
    ci_high: float
    level: float


class Verdict(StrEnum):
    """How a generated effect compares with the real one."""

    AGREES = "agrees"
    INFLATED = "inflated"
    DEFLATED = "deflated"
    WRONG_SIGN = "wrong sign"
    NOT_MEASURABLE = "not measurable"


@dataclass(frozen=True)
class WellTest:
    """A test of treated - control between real conditions with the well as the unit."""

    method: str  # "welch on well means" or "mixed model (well random intercept)"
    t: float
    df: float
    p: float
    difference: float  # treated - control, in the feature's units
    ci_low: float
    ci_high: float
    level: float
    counts: Counts
    measurable: bool
    reason: str  # why not measurable; "" when measurable
    note: str = ""  # a caveat of a measurable result, e.g. a well variance estimated at 0


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise PhenexplainError(f"confidence level must lie in (0, 1), e.g. 0.95; got {level}")


def _as_labels(name: str, labels, n: int) -> np.ndarray:
    labels = np.asarray(labels).ravel()
    if len(labels) != n:
        raise PhenexplainError(f"{name} has {len(labels)} entries, values has {n}: give one each")
    return labels


def _prepare(values, groups, treated, control, clusters=None, crops=None):
    """Finite values of the two conditions, their condition (True = treated) and cluster labels."""
    values = np.asarray(values, dtype=float).ravel()
    if values.size == 0:
        raise PhenexplainError("values is empty: there is nothing to measure")
    groups = _as_labels("groups", groups, len(values))
    present = set(groups.tolist())
    for role, label in (("treated", treated), ("control", control)):
        if label not in present:
            raise PhenexplainError(f"{role} {label!r} is not among the groups: {sorted(present)}")
    if treated == control:
        raise PhenexplainError(f"treated and control are the same condition {treated!r}")
    keep = np.isin(groups, [treated, control]) & np.isfinite(values)
    is_treated = groups[keep] == treated
    out = [values[keep], is_treated]
    for name, labels in (("wells", clusters), ("crops", crops)):
        if labels is not None:
            labels = _as_labels(name, labels, len(values))[keep]
            if pd.isna(labels).any():
                raise PhenexplainError(
                    f"{name} has {int(pd.isna(labels).sum())} missing labels: give every cell one"
                )
        out.append(labels)
    return out


def _cluster_ids(is_treated: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """One integer per (condition, label) pair."""
    keys = np.char.add(np.where(is_treated, "t:", "c:"), labels.astype(str))
    return np.unique(keys, return_inverse=True)[1]


def _counts(is_treated, wells=None, crops=None) -> Counts:
    def distinct(labels, side):
        return None if labels is None else len(np.unique(labels[side]))

    control = ~is_treated
    return Counts(
        n_cells_treated=int(is_treated.sum()),
        n_cells_control=int(control.sum()),
        n_crops_treated=distinct(crops, is_treated),
        n_crops_control=distinct(crops, control),
        n_wells_treated=distinct(wells, is_treated),
        n_wells_control=distinct(wells, control),
    )


def _pooled_d(n_a, mean_a, var_a, n_b, mean_b, var_b) -> np.ndarray:
    """Cohen's d from summaries (arrays broadcast), by the one formula in `stats`."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = t_statistics(n_a, mean_a, var_a, n_b, mean_b, var_b, welch=False, level=0.95)
    return np.asarray(out["cohens_d"], dtype=float)


def _resampled_summaries(x: np.ndarray, cluster: np.ndarray, rng, resamples: int):
    """(n, mean, var) of `resamples` samples, each drawing the clusters of x with replacement."""
    cluster = np.unique(cluster, return_inverse=True)[1]
    centre = x.mean()
    x = x - centre  # centred sums of squares lose less to cancellation
    count = np.bincount(cluster).astype(float)
    total = np.bincount(cluster, weights=x)
    square = np.bincount(cluster, weights=x * x)
    k = len(count)
    chunk = max(1, _CHUNK_CELLS // k)
    n, s, q = (np.empty(resamples) for _ in range(3))
    for start in range(0, resamples, chunk):
        stop = min(resamples, start + chunk)
        drawn = rng.integers(0, k, size=(stop - start, k))  # [resamples, clusters]
        n[start:stop] = count[drawn].sum(axis=1)
        s[start:stop] = total[drawn].sum(axis=1)
        q[start:stop] = square[drawn].sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        var = np.maximum(q - s * s / n, 0.0) / (n - 1)
    return n, centre + s / n, var


def _effect_size(values, is_treated, cluster, counts, *, unit, minimum, rng, resamples, level):
    _check_level(level)
    if resamples < 1:
        raise PhenexplainError(f"resamples must be at least 1, e.g. {DEFAULT_RESAMPLES}")
    treated, control = values[is_treated], values[~is_treated]
    d = float(_pooled_d(*_summary(treated), *_summary(control)))
    k_treated = len(np.unique(cluster[is_treated]))
    k_control = len(np.unique(cluster[~is_treated]))
    reason = ""
    if min(k_treated, k_control) < minimum:
        reason = (f"too few {unit}s: {k_treated} treated and {k_control} control, "
                  f"need at least {minimum} each")  # fmt: skip
    elif not np.isfinite(d):
        reason = "zero variance within the conditions: d is undefined"
    boot = np.full(resamples, np.nan)
    if not reason:
        boot = _pooled_d(
            *_resampled_summaries(treated, cluster[is_treated], rng, resamples),
            *_resampled_summaries(control, cluster[~is_treated], rng, resamples),
        )
    finite = boot[np.isfinite(boot)]
    failed = resamples - len(finite)
    if not reason and failed > MAX_FAILED_SHARE * resamples:
        reason = f"the bootstrap is unstable: {failed} of {resamples} resamples had zero variance"
    tail = (1 - level) / 2
    low, high = np.quantile(finite, [tail, 1 - tail]) if not reason else (np.nan, np.nan)
    return EffectSize(
        d=d, ci_low=float(low), ci_high=float(high), level=level, unit=unit,
        resamples=resamples, failed_resamples=failed, counts=counts,
        measurable=not reason, reason=reason, bootstrap=finite if not reason else finite[:0],
    )  # fmt: skip


def effect_size_real(
    values,
    groups,
    wells,
    *,
    treated,
    control,
    rng: np.random.Generator,
    crops=None,
    resamples: int = DEFAULT_RESAMPLES,
    level: float = DEFAULT_LEVEL,
    min_wells: int = MIN_WELLS,
) -> EffectSize:
    """Cohen's d of treated - control on real cells, CI by resampling wells within each condition.

    values, groups (condition per cell), wells (well label per cell) and, optionally, crops (crop
    id per cell, only counted) have one entry per cell. Not measurable with fewer than
    `min_wells` wells in either condition, or zero variance. The percentile cluster bootstrap is
    a little liberal with few wells: a nominal 95 % CI covered a planted d in about 85 % of
    simulated plates with 4 wells per condition, 88 % with 6, 93 % with 12 and 95 % with 24.
    """
    values, is_treated, wells, crops = _prepare(values, groups, treated, control, wells, crops)
    cluster = _cluster_ids(is_treated, wells)
    return _effect_size(
        values, is_treated, cluster, _counts(is_treated, cluster, crops),
        unit="well", minimum=min_wells, rng=rng, resamples=resamples, level=level,
    )  # fmt: skip


def effect_size_synthetic(
    values,
    groups,
    *,
    treated,
    control,
    rng: np.random.Generator,
    images=None,
    resamples: int = DEFAULT_RESAMPLES,
    level: float = DEFAULT_LEVEL,
    min_images: int = MIN_IMAGES,
) -> EffectSize:
    """Cohen's d of treated - control on generated cells, CI by resampling images.

    `images` (image id per value) groups several values of one image; by default each value is
    its own image. Not measurable with fewer than `min_images` images in either condition, or
    zero variance.
    """
    values, is_treated, images, _ = _prepare(values, groups, treated, control, images)
    if images is None:
        images = np.arange(len(values))
    cluster = _cluster_ids(is_treated, images)
    counts = _counts(is_treated, crops=cluster)
    return _effect_size(
        values, is_treated, cluster, counts,
        unit="image", minimum=min_images, rng=rng, resamples=resamples, level=level,
    )  # fmt: skip


def effect_ratio(real: EffectSize, synthetic: EffectSize, *, level: float | None = None):
    """d_synthetic / d_real with a percentile CI over paired independent bootstrap resamples.

    The i-th synthetic resample is divided by the i-th real one (the two are independent, so
    pairing by index is a draw from the joint distribution). `level` defaults to the level of
    the two effect sizes. NaN when either is not measurable or d_real is 0.
    """
    level = real.level if level is None else level
    _check_level(level)
    if not (real.measurable and synthetic.measurable) or real.d == 0:
        return EffectRatio(ratio=np.nan, ci_low=np.nan, ci_high=np.nan, level=level)
    k = min(len(real.bootstrap), len(synthetic.bootstrap))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = synthetic.bootstrap[:k] / real.bootstrap[:k]
    ratios = ratios[np.isfinite(ratios)]
    if len(ratios) == 0:
        return EffectRatio(ratio=np.nan, ci_low=np.nan, ci_high=np.nan, level=level)
    tail = (1 - level) / 2
    low, high = np.quantile(ratios, [tail, 1 - tail])
    return EffectRatio(synthetic.d / real.d, float(low), float(high), level)


def verdict(real: EffectSize, synthetic: EffectSize, ratio: EffectRatio) -> tuple[Verdict, str]:
    """The verdict on a generated effect and the reason, by the first rule that applies.

    1. not measurable: either effect is not measurable (too few wells or images, zero variance),
       or the real CI includes 0 (no real effect whose size could be matched), or the ratio CI
       is undefined;
    2. wrong sign: the synthetic CI lies wholly on the other side of 0 from d_real;
    3. inflated: the ratio CI lies wholly above 1;
    4. deflated: the ratio CI lies wholly below 1;
    5. agrees: otherwise (the ratio CI includes 1).
    """
    for name, effect in (("real", real), ("synthetic", synthetic)):
        if not effect.measurable:
            return Verdict.NOT_MEASURABLE, f"{name}: {effect.reason}"
    if real.ci_low <= 0 <= real.ci_high:
        return Verdict.NOT_MEASURABLE, (
            f"the real effect's CI [{real.ci_low:.3g}, {real.ci_high:.3g}] includes 0"
        )
    if not (np.isfinite(ratio.ci_low) and np.isfinite(ratio.ci_high)):
        return Verdict.NOT_MEASURABLE, "the ratio's CI is undefined"
    sign = np.sign(real.ci_low)  # the real CI excludes 0: both ends have the sign
    if sign * synthetic.ci_high < 0 and sign * synthetic.ci_low < 0:
        return Verdict.WRONG_SIGN, (
            f"d_real {real.d:.3g} but the synthetic CI is "
            f"[{synthetic.ci_low:.3g}, {synthetic.ci_high:.3g}]"
        )
    span = f"d_synthetic / d_real {ratio.ratio:.3g} [{ratio.ci_low:.3g}, {ratio.ci_high:.3g}]"
    if ratio.ci_low > 1:
        return Verdict.INFLATED, span
    if ratio.ci_high < 1:
        return Verdict.DEFLATED, span
    return Verdict.AGREES, span


def _well_means(values, is_treated, cluster):
    """Mean per well and whether the well is treated (one entry per well)."""
    count = np.bincount(cluster)
    means = np.bincount(cluster, weights=values) / count
    treated = np.bincount(cluster, weights=is_treated.astype(float)) > 0
    return means, treated


def _not_measurable(method, counts, level, reason) -> WellTest:
    nan = float("nan")
    return WellTest(method, nan, nan, nan, nan, nan, nan, level, counts, False, reason)


def _design_problem(values, is_treated, counts) -> str:
    if min(counts.n_wells_treated, counts.n_wells_control) < 2:
        return (f"too few wells: {counts.n_wells_treated} treated and {counts.n_wells_control} "
                "control, need at least 2 each")  # fmt: skip
    if np.ptp(values) == 0:
        return "zero variance: every value is the same"
    return ""


def well_t_test(
    values, groups, wells, *, treated, control, crops=None, level: float = DEFAULT_LEVEL
) -> WellTest:
    """Welch's t-test of treated - control on well means (each well weighs the same).

    Not measurable with fewer than 2 wells per condition or when the well means do not vary.
    """
    _check_level(level)
    values, is_treated, wells, crops = _prepare(values, groups, treated, control, wells, crops)
    cluster = _cluster_ids(is_treated, wells)
    counts = _counts(is_treated, cluster, crops)
    method = "welch on well means"
    means, side = _well_means(values, is_treated, cluster)
    reason = _design_problem(values, is_treated, counts)
    if not reason and np.ptp(means[side]) == 0 and np.ptp(means[~side]) == 0:
        reason = "zero variance: the well means do not vary within either condition"
    if reason:
        return _not_measurable(method, counts, level, reason)
    result = welch_t_test(means[side], means[~side], level=level)
    return WellTest(
        method, result.t, result.df, result.p, result.difference,
        result.ci_low, result.ci_high, level, counts, True, "",
    )  # fmt: skip


def mixed_model_test(
    values, groups, wells, *, treated, control, crops=None, level: float = DEFAULT_LEVEL
) -> WellTest:
    """Linear mixed model value ~ condition + (1 | well), REML (statsmodels' MixedLM).

    t is the Wald statistic of the condition effect; it is referred to a t distribution with
    df = n wells - 2 (the between-well "containment" df), not to a normal, which would be too
    liberal with few wells. In a balanced design (equal cells per well) with a positive
    well variance the result equals Student's t-test on well means. When the fit warns (no
    convergence), measurable is False and `reason` quotes it; a well variance estimated at 0 (the
    fit's boundary) is a valid result whose `note` says so. The optimizer is Powell then L-BFGS:
    statsmodels' default BFGS fails on well-behaved plates.
    """
    _check_level(level)
    values, is_treated, wells, crops = _prepare(values, groups, treated, control, wells, crops)
    cluster = _cluster_ids(is_treated, wells)
    counts = _counts(is_treated, cluster, crops)
    method = "mixed model (well random intercept)"
    reason = _design_problem(values, is_treated, counts)
    means, _ = _well_means(values, is_treated, cluster)
    if not reason and len(values) == len(means):
        reason = "every well has one cell: well and cell variance cannot be told apart"
    elif not reason and np.ptp(values - means[cluster]) <= 1e-12 * np.abs(values).max():
        reason = "zero variance within wells: every well is constant"
    if reason:
        return _not_measurable(method, counts, level, reason)
    # statsmodels is imported here: it takes about a second and only this test needs it.
    from statsmodels.regression.mixed_linear_model import MixedLM

    exog = np.column_stack([np.ones(len(values)), is_treated.astype(float)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fit = MixedLM(values, exog, groups=cluster).fit(reml=True, method=["powell", "lbfgs"])
        except np.linalg.LinAlgError as error:
            return _not_measurable(method, counts, level, f"the fit is singular: {error}")
    problems = "; ".join(sorted({str(w.message).splitlines()[0] for w in caught}))
    if not fit.converged:
        return _not_measurable(method, counts, level, f"the fit did not converge: {problems}")
    difference, se = float(fit.fe_params[1]), float(fit.bse_fe[1])
    assert (
        counts.n_wells_treated is not None and counts.n_wells_control is not None
    )  # checked above
    df = float(counts.n_wells_treated + counts.n_wells_control - 2)
    t = difference / se
    half = float(scipy_stats.t.ppf((1 + level) / 2, df)) * se
    p = float(2 * scipy_stats.t.sf(abs(t), df))
    return WellTest(
        method, t, df, p, difference, difference - half, difference + half,
        level, counts, True, "", problems,
    )  # fmt: skip
