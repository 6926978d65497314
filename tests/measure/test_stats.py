"""t-tests, effect size, confidence intervals and BH against scipy, hand computations and
simulation; real-vs-synthetic shift comparison on tables with planted shifts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from phenexplain.errors import PhenexplainError
from phenexplain.measure.stats import (
    DEFAULT_LEVEL,
    benjamini_hochberg,
    cohens_d,
    compare_shifts,
    condition_shifts,
    count_flags,
    flag_shifts,
    mean_difference_ci,
    student_t_test,
    t_test,
    welch_t_test,
)

A = [1.0, 2.0, 3.0, 4.0, 5.0]  # n 5, mean 3, variance 2.5
B = [4.0, 6.0, 8.0]  # n 3, mean 6, variance 4


def test_hand_computed_example():
    # Student: s_p^2 = (4 * 2.5 + 2 * 4) / 6 = 3, se = sqrt(3 * (1/5 + 1/3)) = sqrt(1.6)
    student = student_t_test(A, B, level=0.95)
    assert student.difference == -3.0
    assert student.t == pytest.approx(-3 / np.sqrt(1.6), rel=1e-12)  # -2.371708
    assert student.df == 6
    assert student.cohens_d == pytest.approx(-3 / np.sqrt(3), rel=1e-12) == cohens_d(A, B)
    # t(6) two-sided 95% quantile 2.446912 (tables): CI = -3 +- 2.446912 * sqrt(1.6)
    assert student.ci_low == pytest.approx(-3 - 2.446912 * np.sqrt(1.6), abs=1e-5)
    assert student.ci_high == pytest.approx(-3 + 2.446912 * np.sqrt(1.6), abs=1e-5)
    # Welch: se^2 = 2.5/5 + 4/3 = 11/6, df = (11/6)^2 / (0.5^2/4 + (4/3)^2/2) = 3.532847
    welch = welch_t_test(A, B, level=0.95)
    assert welch.t == pytest.approx(-3 / np.sqrt(11 / 6), rel=1e-12)  # -2.215647
    assert welch.df == pytest.approx((11 / 6) ** 2 / (0.25 / 4 + (16 / 9) / 2), rel=1e-12)
    assert welch.cohens_d == student.cohens_d  # pooled SD whichever test
    assert (welch.n_a, welch.n_b, welch.welch, student.welch) == (5, 3, True, False)


@pytest.mark.parametrize("equal_var", [True, False])
def test_t_tests_match_scipy(equal_var):
    rng = np.random.default_rng(3)
    for n_a, n_b, shift, scale in [(12, 30, 0.4, 1.0), (200, 150, 0.1, 3.0), (5, 7, 2.0, 0.2)]:
        a, b = rng.normal(shift, 1.0, n_a), rng.normal(0.0, scale, n_b)
        ours = t_test(a, b, welch=not equal_var, level=0.99)
        ref = stats.ttest_ind(a, b, equal_var=equal_var)
        low, high = ref.confidence_interval(0.99)
        assert ours.t == pytest.approx(ref.statistic, rel=1e-10)
        assert ours.p == pytest.approx(ref.pvalue, rel=1e-8)
        assert ours.df == pytest.approx(ref.df, rel=1e-10)
        assert (ours.ci_low, ours.ci_high) == pytest.approx((low, high), rel=1e-9)
        assert mean_difference_ci(a, b, level=0.99, welch=not equal_var) == (
            ours.ci_low,
            ours.ci_high,
        )


def test_defaults_nan_and_bad_level():
    assert DEFAULT_LEVEL == 0.9999 and t_test(A, B).level == 0.9999
    wide, narrow = t_test(A, B), t_test(A, B, level=0.9)
    assert wide.ci_low < narrow.ci_low < narrow.ci_high < wide.ci_high
    with_nan = t_test([*A, np.nan, np.inf], B)
    assert with_nan.t == t_test(A, B).t and with_nan.n_a == 5  # non-finite values dropped
    assert np.isnan(t_test([1.0], B).p)  # one value: no variance, no test
    with pytest.raises(PhenexplainError, match="level"):
        t_test(A, B, level=99.99)


def test_false_positive_rate_matches_alpha():
    """Two samples from one normal distribution: p < alpha in about alpha of the draws."""
    rng = np.random.default_rng(0)
    draws, alpha = 1000, 0.05
    for welch in (False, True):
        p = np.array([t_test(*rng.normal(size=(2, 25)), welch=welch).p for _ in range(draws)])
        tolerance = 3 * np.sqrt(alpha * (1 - alpha) / draws)  # 3 binomial standard deviations
        assert abs((p < alpha).mean() - alpha) < tolerance


def test_confidence_interval_covers_the_true_difference_at_its_level():
    rng = np.random.default_rng(1)
    draws, level, true = 1000, 0.9, 0.7
    # Student's interval assumes one variance; Welch's holds with unequal ones (and sizes)
    for welch, sd_b in ((False, 1.0), (True, 2.0)):
        covered = 0
        for _ in range(draws):
            a, b = rng.normal(true, 1.0, 15), rng.normal(0.0, sd_b, 40)
            result = t_test(a, b, welch=welch, level=level)
            covered += result.ci_low <= true <= result.ci_high
        assert abs(covered / draws - level) < 3 * np.sqrt(level * (1 - level) / draws)


def test_benjamini_hochberg_hand_example_and_scipy():
    # sorted p 0.01, 0.02, 0.03, 0.04, 0.5 (m = 5): p * 5 / rank = 0.05, 0.05, 0.05, 0.05, 0.5
    p = np.array([0.04, 0.01, 0.5, 0.03, 0.02])
    assert benjamini_hochberg(p) == pytest.approx([0.05, 0.05, 0.5, 0.05, 0.05])
    # monotone step-down: 0.001 * 4 / 1 = 0.004; 0.04 * 4 / 2 = 0.08 > 0.045 * 4 / 3 = 0.06
    assert benjamini_hochberg([0.001, 0.04, 0.045, 0.9]) == pytest.approx([0.004, 0.06, 0.06, 0.9])
    q = benjamini_hochberg([0.2, np.nan, 0.01])  # NaN is kept and not counted: m = 2
    assert np.isnan(q[1]) and q[[0, 2]] == pytest.approx([0.2, 0.02])
    rng = np.random.default_rng(2)
    many = rng.uniform(size=300) ** 3
    assert benjamini_hochberg(many) == pytest.approx(stats.false_discovery_control(many))
    with pytest.raises(PhenexplainError):
        benjamini_hochberg([0.5, 1.5])


def _table(rng, shifts: dict[str, np.ndarray], n: int = 400) -> pd.DataFrame:
    """Per-object table: features f0..fk, condition shifted by `shifts[condition]` SDs."""
    parts = []
    for condition, shift in shifts.items():
        values = rng.normal(size=(n, len(shift))) + shift
        part = pd.DataFrame(values, columns=[f"f{i}" for i in range(len(shift))])
        parts.append(part.assign(condition=condition))
    return pd.concat(parts, ignore_index=True)


def test_condition_shifts_and_real_vs_synthetic_correlation():
    rng = np.random.default_rng(4)
    planted = {c: rng.normal(0, 0.8, 6) for c in ("d1", "d2", "d3", "d4")}
    real = _table(rng, {"DMSO": np.zeros(6), **planted})
    synthetic = _table(rng, {"DMSO": np.zeros(6), **{c: 0.9 * s for c, s in planted.items()}})
    features = [f"f{i}" for i in range(6)]
    shifts = condition_shifts(real, features, control="DMSO")
    assert len(shifts) == 4 * 6 and set(shifts["condition"]) == set(planted)
    row = shifts[(shifts["condition"] == "d2") & (shifts["feature"] == "f3")].iloc[0]
    direct = t_test(
        real.loc[real.condition == "d2", "f3"], real.loc[real.condition == "DMSO", "f3"]
    )
    assert row["t"] == pytest.approx(direct.t) and row["cohens_d"] == pytest.approx(direct.cohens_d)
    assert row["cohens_d"] == pytest.approx(planted["d2"][3], abs=0.25)
    d2 = shifts[shifts["condition"] == "d2"]
    assert d2["q"].to_numpy() == pytest.approx(benjamini_hochberg(d2["p"]))

    paired, correlations = compare_shifts(real, synthetic, features, control="DMSO")
    overall = correlations.iloc[0]
    assert overall["feature"] == "all" and overall["pairs"] == 24
    assert overall["pearson_r"] > 0.9 and overall["spearman_r"] > 0.85
    assert overall["pearson_p"] < 1e-6
    assert list(correlations["feature"][1:]) == features  # per feature, across 4 conditions
    shuffled = synthetic.assign(condition=rng.permutation(synthetic["condition"].to_numpy()))
    _, unrelated = compare_shifts(real, shuffled, features, control="DMSO")
    assert abs(unrelated.iloc[0]["pearson_r"]) < 0.5
    assert {"shift_real", "shift_synthetic", "q_real", "q_synthetic"} <= set(paired.columns)


def test_shift_flags_known_answers():
    # q real, q synthetic, difference real, difference synthetic -> flag
    cases = [
        (0.01, 0.001, -27.8, 26.0, "opposite sign"),  # the demo's nucleus area
        (0.20, 0.001, 0.1, 2.0, "synthetic only"),  # a candidate false discovery
        (0.05, 0.049, 0.1, 2.0, "synthetic only"),  # q = 0.05 is not significant
        (0.01, 0.50, 1.0, 0.2, "real only"),
        (0.01, 0.02, -1.0, -0.5, "both, same sign"),
        (0.30, 0.60, 1.0, -1.0, "neither"),  # opposite signs, but neither significant
        (np.nan, 0.001, np.nan, 2.0, "not tested"),
    ]
    shifts = pd.DataFrame(cases, columns=["q_real", "q_synthetic", "difference_real",
                                          "difference_synthetic", "expected"])  # fmt: skip
    assert flag_shifts(shifts).tolist() == shifts["expected"].tolist()
    counts = count_flags(flag_shifts(shifts))
    assert counts == {"pairs": 7, "tested": 6, "opposite sign": 1, "synthetic only": 2,
                      "real only": 1, "both, same sign": 1, "neither": 1, "not tested": 1}  # fmt: skip
    assert flag_shifts(shifts, q=0.001).tolist()[:2] == ["neither", "neither"]


def test_compare_shifts_flags_a_shift_planted_only_in_synthetic_images():
    rng = np.random.default_rng(5)
    zero = np.zeros(3)
    real = _table(rng, {"DMSO": zero, "drug": np.array([-1.5, 0.0, 1.5])})
    synthetic = _table(rng, {"DMSO": zero, "drug": np.array([1.5, 1.5, 0.0])})
    shifts, _ = compare_shifts(real, synthetic, ["f0", "f1", "f2"], control="DMSO")
    assert shifts["flag"].tolist() == ["opposite sign", "synthetic only", "real only"]


def test_condition_shifts_say_what_is_wrong():
    table = pd.DataFrame({"condition": ["a", "a", "b", "b"], "x": [1.0, 2.0, 3.0, 4.0]})
    with pytest.raises(PhenexplainError, match="control"):
        condition_shifts(table, ["x"], control="DMSO")
    with pytest.raises(PhenexplainError, match="no column"):
        condition_shifts(table, ["y"], control="a")
