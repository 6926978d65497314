"""Two-sample statistics for comparing conditions, as the paper reports them (Fig. 1c, 1d).

For samples a and b of sizes n_a, n_b, means m_a, m_b and unbiased variances v_a, v_b:

- Student's t-test (pooled variance): s_p^2 = ((n_a - 1) v_a + (n_b - 1) v_b) / (n_a + n_b - 2),
  se = s_p sqrt(1/n_a + 1/n_b), df = n_a + n_b - 2;
- Welch's t-test (unequal variances): se = sqrt(v_a/n_a + v_b/n_b),
  df = se^4 / ((v_a/n_a)^2 / (n_a - 1) + (v_b/n_b)^2 / (n_b - 1)) (Welch-Satterthwaite);
- t = (m_a - m_b) / se, two-sided p = 2 P(T_df > |t|);
- confidence interval of m_a - m_b at `level` (the paper's 99.99% by default):
  (m_a - m_b) +- q se with q the (1 + level) / 2 quantile of T_df;
- Cohen's d = (m_a - m_b) / s_p (pooled SD, whichever test);
- Benjamini-Hochberg adjusted p: q_(i) = min over k >= i of p_(k) m / k, capped at 1.

Student's test is the default: the paper's T(1998) for 1000 + 1000 images is Student's df. Only
the t distribution comes from scipy. Non-finite values are dropped from every sample; with
fewer than two values on a side, results are NaN.

Real vs synthetic (Supplementary Fig. 8): `compare_shifts` measures, for every condition against
the control and every feature, the shift on real and on synthetic crops in standardised units
(Cohen's d, each source with its own pooled SD), and correlates the two over all pairs and per
feature across conditions. `flag_shifts` says of each pair whether the two sources agree on
significance (BH q below `SIGNIFICANT_Q` on each side): a shift significant only on synthetic
images is a candidate false discovery, one significant on both with opposite signs a wrong
direction.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import stats

from phenexplain.errors import PhenexplainError

DEFAULT_LEVEL = 0.9999
SIGNIFICANT_Q = 0.05  # BH q below which a feature shift counts as significant (`flag_shifts`)
FLAGS = ("opposite sign", "synthetic only", "real only", "both, same sign", "neither",
         "not tested")  # fmt: skip


@dataclass(frozen=True)
class TTest:
    """A two-sided two-sample t-test of a - b, its confidence interval and effect size."""

    t: float
    df: float
    p: float
    difference: float  # mean(a) - mean(b)
    ci_low: float
    ci_high: float
    level: float
    cohens_d: float
    n_a: int
    n_b: int
    welch: bool

    def as_dict(self) -> dict:
        return asdict(self)


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise PhenexplainError(f"confidence level must lie in (0, 1), e.g. 0.9999; got {level}")


def _finite(x) -> np.ndarray:
    x = np.asarray(x, dtype=float).ravel()
    return x[np.isfinite(x)]


def _summary(x) -> tuple[int, float, float]:
    """(n, mean, unbiased variance) of the finite values of `x`."""
    x = _finite(x)
    n = len(x)
    mean = float(x.mean()) if n else np.nan
    var = float(x.var(ddof=1)) if n > 1 else np.nan
    return n, mean, var


def t_statistics(n_a, mean_a, var_a, n_b, mean_b, var_b, *, welch: bool, level: float) -> dict:
    """t, df, p, difference, ci_low, ci_high, cohens_d from sample summaries (arrays broadcast)."""
    _check_level(level)
    n_a, mean_a, var_a, n_b, mean_b, var_b = (
        np.asarray(x, dtype=float) for x in (n_a, mean_a, var_a, n_b, mean_b, var_b)
    )
    enough = (n_a > 1) & (n_b > 1)
    n_a, n_b = np.where(enough, n_a, np.nan), np.where(enough, n_b, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        difference = mean_a - mean_b
        pooled = ((n_a - 1) * var_a + (n_b - 1) * var_b) / (n_a + n_b - 2)
        if welch:
            share_a, share_b = var_a / n_a, var_b / n_b
            se = np.sqrt(share_a + share_b)
            df = (share_a + share_b) ** 2 / (share_a**2 / (n_a - 1) + share_b**2 / (n_b - 1))
        else:
            se = np.sqrt(pooled * (1 / n_a + 1 / n_b))
            df = n_a + n_b - 2
        t = difference / se
        p = 2 * stats.t.sf(np.abs(t), df)
        half = stats.t.ppf((1 + level) / 2, df) * se
        d = difference / np.sqrt(pooled)
    return {
        "t": t,
        "df": df,
        "p": p,
        "difference": difference,
        "ci_low": difference - half,
        "ci_high": difference + half,
        "cohens_d": d,
    }


def t_test(a, b, *, welch: bool = False, level: float = DEFAULT_LEVEL) -> TTest:
    """Two-sided Student (or, with `welch`, Welch) t-test of mean(a) - mean(b); see the module."""
    n_a, mean_a, var_a = _summary(a)
    n_b, mean_b, var_b = _summary(b)
    out = t_statistics(n_a, mean_a, var_a, n_b, mean_b, var_b, welch=welch, level=level)
    return TTest(
        **{k: float(v) for k, v in out.items()},
        level=level,
        n_a=n_a,
        n_b=n_b,
        welch=welch,
    )


def student_t_test(a, b, *, level: float = DEFAULT_LEVEL) -> TTest:
    """Student's t-test (pooled variance) of mean(a) - mean(b)."""
    return t_test(a, b, welch=False, level=level)


def welch_t_test(a, b, *, level: float = DEFAULT_LEVEL) -> TTest:
    """Welch's t-test (unequal variances) of mean(a) - mean(b)."""
    return t_test(a, b, welch=True, level=level)


def cohens_d(a, b) -> float:
    """(mean(a) - mean(b)) / pooled standard deviation."""
    return t_test(a, b).cohens_d


def mean_difference_ci(
    a, b, *, level: float = DEFAULT_LEVEL, welch: bool = False
) -> tuple[float, float]:
    """Confidence interval of mean(a) - mean(b) at `level`, Student's or Welch's."""
    result = t_test(a, b, welch=welch, level=level)
    return result.ci_low, result.ci_high


def benjamini_hochberg(p) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values, same shape as `p`; NaN stays NaN and is not counted."""
    p = np.asarray(p, dtype=float)
    flat = p.ravel()
    result = np.full(flat.shape, np.nan)
    valid = np.flatnonzero(np.isfinite(flat))
    if ((flat[valid] < 0) | (flat[valid] > 1)).any():
        raise PhenexplainError("p-values must lie in [0, 1]")
    order = valid[np.argsort(flat[valid], kind="stable")]
    m = len(order)
    scaled = flat[order] * m / np.arange(1, m + 1)
    result[order] = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    return result.reshape(p.shape)


def _check_table(table: pd.DataFrame, features: Sequence[str], condition: str, control: str):
    missing = [c for c in [condition, *features] if c not in table.columns]
    if missing:
        raise PhenexplainError(f"the table has no column {missing}; columns: {list(table.columns)}")
    if control not in set(table[condition]):
        raise PhenexplainError(
            f"control {control!r} is not a value of {condition!r}: {sorted(set(table[condition]))}"
        )


def condition_shifts(
    table: pd.DataFrame,
    features: Sequence[str],
    *,
    control: str,
    condition: str = "condition",
    welch: bool = False,
    level: float = DEFAULT_LEVEL,
) -> pd.DataFrame:
    """Every other condition against `control`, per feature: one row per (condition, feature).

    Columns: condition, feature, n, n_control, t, df, p, difference (condition - control),
    ci_low, ci_high, cohens_d, and q, the Benjamini-Hochberg adjusted p across the features of
    that condition.
    """
    features = list(features)
    _check_table(table, features, condition, control)
    values = table[features].astype(float).replace([np.inf, -np.inf], np.nan)
    grouped = values.groupby(table[condition].to_numpy())
    n, mean, var = grouped.count(), grouped.mean(), grouped.var(ddof=1)
    frames = []
    for name in n.index:
        if name == control:
            continue
        out = t_statistics(
            n.loc[name], mean.loc[name], var.loc[name],
            n.loc[control], mean.loc[control], var.loc[control],
            welch=welch, level=level,
        )  # fmt: skip
        frame = pd.DataFrame(
            {
                "condition": name,
                "feature": features,
                "n": n.loc[name].to_numpy(),
                "n_control": n.loc[control].to_numpy(),
                **{k: np.asarray(v, dtype=float) for k, v in out.items()},
            }
        )
        frame["q"] = benjamini_hochberg(frame["p"])
        frames.append(frame)
    if not frames:
        raise PhenexplainError(f"the table holds only the control {control!r}: nothing to compare")
    return pd.concat(frames, ignore_index=True)


def correlate(name: str, real: np.ndarray, synthetic: np.ndarray) -> dict:
    """Pearson and Spearman correlation of synthetic with real shifts (NaN if undefined)."""
    ok = np.isfinite(real) & np.isfinite(synthetic)
    x, y = real[ok], synthetic[ok]
    row = {"feature": name, "pairs": int(ok.sum())}
    row |= dict.fromkeys(("pearson_r", "pearson_p", "spearman_r", "spearman_p"), np.nan)
    if len(x) >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0:
        with warnings.catch_warnings():  # ties make spearman's p approximate; it says so itself
            warnings.simplefilter("ignore")
            pearson, spearman = stats.pearsonr(x, y), stats.spearmanr(x, y)
        row |= {
            "pearson_r": float(pearson.statistic),
            "pearson_p": float(pearson.pvalue),
            "spearman_r": float(spearman.statistic),
            "spearman_p": float(spearman.pvalue),
        }
    return row


def compare_shifts(
    real: pd.DataFrame,
    synthetic: pd.DataFrame,
    features: Sequence[str],
    *,
    control: str,
    condition: str = "condition",
    welch: bool = False,
    level: float = DEFAULT_LEVEL,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Condition shifts on real vs synthetic measurements -> (shifts, correlations).

    shifts: one row per (condition, feature) present in both, with shift_real and
    shift_synthetic (Cohen's d of condition - control within each source), the raw differences,
    p and q of each, and their `flag_shifts` flag. correlations: Pearson and Spearman
    correlation of shift_synthetic with shift_real, first over all pairs (feature ``all``), then
    per feature across conditions (NaN with fewer than 3 conditions or a constant shift).
    """
    keep = ["condition", "feature", "difference", "cohens_d", "p", "q"]
    shift = functools.partial(
        condition_shifts, control=control, condition=condition, welch=welch, level=level
    )
    shifts = shift(real, features)[keep].merge(
        shift(synthetic, features)[keep],
        on=["condition", "feature"],
        suffixes=("_real", "_synthetic"),
    )
    shifts = shifts.rename(
        columns={"cohens_d_real": "shift_real", "cohens_d_synthetic": "shift_synthetic"}
    )
    shifts["flag"] = flag_shifts(shifts)
    rows = [correlate("all", shifts["shift_real"].to_numpy(), shifts["shift_synthetic"].to_numpy())]
    for feature, part in shifts.groupby("feature", sort=False):
        rows.append(
            correlate(feature, part["shift_real"].to_numpy(), part["shift_synthetic"].to_numpy())
        )
    return shifts, pd.DataFrame(rows)


def flag_shifts(shifts: pd.DataFrame, q: float = SIGNIFICANT_Q) -> pd.Series:
    """How real and synthetic agree on each shift of `compare_shifts`, one of `FLAGS`.

    Significant means a BH q below `q` (``q_real``, ``q_synthetic``): "opposite sign" (significant
    on both, differences of opposite signs), "synthetic only" (a candidate false discovery),
    "real only", "both, same sign", "neither"; "not tested" where a side has no q (too few values).
    """
    real, synthetic = shifts["q_real"] < q, shifts["q_synthetic"] < q
    same = np.sign(shifts["difference_real"]) == np.sign(shifts["difference_synthetic"])
    tested = shifts["q_real"].notna() & shifts["q_synthetic"].notna()
    cases = [~tested, real & synthetic & ~same, synthetic & ~real, real & ~synthetic,
             real & synthetic]  # fmt: skip
    names = ["not tested", "opposite sign", "synthetic only", "real only", "both, same sign"]
    return pd.Series(np.select(cases, names, "neither"), index=shifts.index, name="flag")


def count_flags(flags: pd.Series) -> dict[str, int]:
    """Pairs, pairs tested, and the count of each of `FLAGS` (zeros included)."""
    counts = flags.value_counts()
    out = {"pairs": len(flags), "tested": int((flags != "not tested").sum())}
    return out | {flag: int(counts.get(flag, 0)) for flag in FLAGS}
