"""Effect sizes with bootstrap CIs, their ratio and verdict, and well-level tests: known answers
and simulated plates with a planted condition effect and a planted well effect."""

from __future__ import annotations

import numpy as np
import pytest

from phenexplain.errors import PhenexplainError
from phenexplain.measure.effects import (
    Counts,
    EffectRatio,
    EffectSize,
    Verdict,
    effect_ratio,
    effect_size_real,
    effect_size_synthetic,
    mixed_model_test,
    verdict,
    well_t_test,
)
from phenexplain.measure.stats import cohens_d, student_t_test, welch_t_test

ALPHA = 0.05


def plate(rng, *, wells=12, cells=20, shift=0.0, well_sd=0.5, cell_sd=1.0):
    """Two conditions of `wells` wells of `cells` cells: shift * treated + well effect + noise."""
    groups = np.repeat(["treated", "control"], wells * cells)
    well = np.repeat(np.arange(2 * wells), cells)
    well_effect = rng.normal(0.0, well_sd, 2 * wells)
    noise = rng.normal(0.0, cell_sd, len(groups))
    return noise + well_effect[well] + shift * (groups == "treated"), groups, well


def images(rng, *, n=100, shift=0.0):
    """Generated images, one value each, n per condition, unit SD."""
    groups = np.repeat(["treated", "control"], n)
    return rng.normal(0.0, 1.0, 2 * n) + shift * (groups == "treated"), groups


def real(values, groups, wells, rng, **kw) -> EffectSize:
    return effect_size_real(
        values, groups, wells, treated="treated", control="control", rng=rng, **kw
    )


def synthetic(values, groups, rng, **kw) -> EffectSize:
    return effect_size_synthetic(
        values, groups, treated="treated", control="control", rng=rng, **kw
    )


def covers(effect: EffectSize, truth: float) -> bool:
    return effect.ci_low <= truth <= effect.ci_high


# --- known answers -------------------------------------------------------------------------


def test_d_is_the_projects_cohens_d_and_counts_are_right():
    rng = np.random.default_rng(0)
    values, groups, wells = plate(rng, wells=4, cells=5, shift=1.0)
    crops = np.arange(len(values)) // 2  # two cells per crop
    effect = real(values, groups, wells, rng, crops=crops, resamples=200)
    assert effect.d == pytest.approx(
        cohens_d(values[groups == "treated"], values[groups == "control"])
    )
    assert effect.counts == Counts(20, 20, 10, 10, 4, 4)
    assert effect.measurable and effect.reason == "" and effect.unit == "well"
    assert effect.ci_low < effect.d < effect.ci_high
    image = synthetic(values, groups, rng, resamples=200)
    assert image.d == effect.d and image.counts == Counts(20, 20, 20, 20, None, None)


def test_seeded_generator_reproduces_the_interval():
    values, groups, wells = plate(np.random.default_rng(1))
    first = real(values, groups, wells, np.random.default_rng(7))
    again = real(values, groups, wells, np.random.default_rng(7))
    other = real(values, groups, wells, np.random.default_rng(8))
    assert (first.ci_low, first.ci_high) == (again.ci_low, again.ci_high)
    assert (first.ci_low, first.ci_high) != (other.ci_low, other.ci_high)
    assert first.resamples == 2000 and first.level == 0.95 and len(first.bootstrap) == 2000


def test_well_labels_reused_across_conditions_are_distinct_wells():
    rng = np.random.default_rng(2)
    values, groups, wells = plate(rng, wells=3, cells=4, shift=1.0)
    reused = wells % 3  # replicate numbers 0, 1, 2 in each condition
    assert real(values, groups, reused, rng, resamples=100).counts.n_wells_treated == 3
    assert well_t_test(values, groups, reused, treated="treated", control="control") == well_t_test(
        values, groups, wells, treated="treated", control="control"
    )


def test_well_t_test_is_welch_on_well_means():
    values, groups, wells = plate(np.random.default_rng(3), wells=5, cells=7, shift=0.8)
    means = np.array([values[wells == w].mean() for w in range(10)])
    expected = welch_t_test(means[:5], means[5:], level=0.95)
    result = well_t_test(values, groups, wells, treated="treated", control="control")
    assert (result.t, result.df, result.p) == pytest.approx((expected.t, expected.df, expected.p))
    assert (result.ci_low, result.ci_high) == pytest.approx((expected.ci_low, expected.ci_high))
    assert result.counts.n_wells_treated == 5 and result.counts.n_cells_treated == 35


def test_mixed_model_on_a_balanced_plate_equals_student_on_well_means():
    # Balanced, positive well variance: the REML estimate is the difference of well means and its
    # Wald t is Student's t on the well means, with df = n wells - 2.
    values, groups, wells = plate(np.random.default_rng(0), wells=8, cells=30, shift=0.8)
    means = np.array([values[wells == w].mean() for w in range(16)])
    expected = student_t_test(means[:8], means[8:], level=0.95)
    result = mixed_model_test(values, groups, wells, treated="treated", control="control")
    assert result.measurable and result.df == 14
    assert result.difference == pytest.approx(expected.difference, rel=1e-6)
    assert result.t == pytest.approx(expected.t, rel=1e-4)
    assert result.p == pytest.approx(expected.p, rel=1e-3)
    assert (result.ci_low, result.ci_high) == pytest.approx(
        (expected.ci_low, expected.ci_high), rel=1e-4
    )


def test_mixed_model_with_the_well_variance_at_zero_is_cell_level_ols_with_a_note():
    # No well effect and a REML well variance on the boundary 0: the model is least squares on
    # cells, so t is Student's t on cells; the df stay those of the wells.
    values, groups, wells = plate(
        np.random.default_rng(0), wells=6, cells=30, well_sd=0.0, shift=0.5
    )
    result = mixed_model_test(values, groups, wells, treated="treated", control="control")
    cells = student_t_test(values[groups == "treated"], values[groups == "control"])
    assert result.measurable and "boundary" in result.note
    assert result.t == pytest.approx(cells.t, rel=1e-6) and result.df == 10


# --- coverage of the bootstrap CIs -----------------------------------------------------------

EXPERIMENTS = 200  # 95 % coverage +- 3 binomial SD (0.015 each) lies inside [0.88, 0.99]


def test_well_bootstrap_covers_a_planted_d_and_a_cell_bootstrap_does_not():
    # d is planted against the total SD within a condition (well and cell variance together).
    rng = np.random.default_rng(11)
    well_sd, cell_sd, d = 0.5, 1.0, 0.8
    shift = d * np.hypot(well_sd, cell_sd)
    by_well = by_cell = 0
    for _ in range(EXPERIMENTS):
        values, groups, wells = plate(rng, shift=shift, well_sd=well_sd, cell_sd=cell_sd)
        by_well += covers(real(values, groups, wells, rng), d)
        by_cell += covers(synthetic(values, groups, rng), d)  # cells as if independent
    assert 0.88 <= by_well / EXPERIMENTS <= 0.99
    assert by_cell / EXPERIMENTS < 0.80  # pseudo-replication: the interval is far too narrow


def test_image_bootstrap_covers_a_planted_d():
    rng = np.random.default_rng(12)
    covered = sum(
        covers(synthetic(*images(rng, n=80, shift=0.8), rng), 0.8) for _ in range(EXPERIMENTS)
    )
    assert 0.88 <= covered / EXPERIMENTS <= 0.99


# --- wells as the unit: false-positive rate -------------------------------------------------


def test_no_condition_effect_false_positives_by_wells_at_alpha_by_cells_inflated():
    rng = np.random.default_rng(13)
    plates = 1000
    by_well = by_cell = 0
    for _ in range(plates):
        values, groups, wells = plate(rng, wells=6, cells=30, well_sd=0.5)
        by_well += (
            well_t_test(values, groups, wells, treated="treated", control="control").p < ALPHA
        )
        cells = welch_t_test(values[groups == "treated"], values[groups == "control"], level=0.95)
        by_cell += cells.p < ALPHA
    tolerance = 3 * np.sqrt(ALPHA * (1 - ALPHA) / plates)  # 0.021
    assert abs(by_well / plates - ALPHA) <= tolerance
    assert by_cell / plates > ALPHA + 5 * tolerance  # about 0.45 with this well effect


def test_mixed_model_false_positives_at_alpha():
    rng = np.random.default_rng(14)
    plates = 150
    hits = 0
    for _ in range(plates):
        values, groups, wells = plate(rng, wells=6, cells=10, well_sd=0.5)
        result = mixed_model_test(values, groups, wells, treated="treated", control="control")
        assert result.measurable, result.reason
        hits += result.p < ALPHA
    assert abs(hits / plates - ALPHA) <= 3 * np.sqrt(ALPHA * (1 - ALPHA) / plates)


# --- ratio and verdict -----------------------------------------------------------------------


def test_ratio_ci_contains_the_true_ratio():
    # true d_real 1 (well and cell variance together), true d_synthetic 2: the ratio is 2. A
    # percentile CI of a ratio is a little liberal (about 0.92 here), hence the lower bound 0.85.
    rng = np.random.default_rng(15)
    well_sd = 0.5
    covered = 0
    for _ in range(EXPERIMENTS):
        real_effect = real(*plate(rng, shift=np.hypot(well_sd, 1.0), well_sd=well_sd), rng)
        synthetic_effect = synthetic(*images(rng, n=150, shift=2.0), rng)
        ratio = effect_ratio(real_effect, synthetic_effect)
        assert ratio.ratio == synthetic_effect.d / real_effect.d and ratio.level == 0.95
        assert ratio.ci_low < ratio.ratio < ratio.ci_high
        covered += ratio.ci_low <= 2.0 <= ratio.ci_high
    assert 0.85 <= covered / EXPERIMENTS <= 0.99


@pytest.mark.parametrize(
    "real_shift, synthetic_shift, expected",
    [
        (1.0, 1.0, Verdict.AGREES),
        (1.0, 2.5, Verdict.INFLATED),
        (1.0, 0.3, Verdict.DEFLATED),
        (1.0, -1.0, Verdict.WRONG_SIGN),
        (-1.0, 1.0, Verdict.WRONG_SIGN),
        (0.0, 1.0, Verdict.NOT_MEASURABLE),
    ],
)
def test_verdict_on_planted_effects(real_shift, synthetic_shift, expected):
    rng = np.random.default_rng(16)
    real_effect = real(*plate(rng, wells=12, cells=20, shift=real_shift, well_sd=0.2), rng)
    synthetic_effect = synthetic(*images(rng, n=200, shift=synthetic_shift), rng)
    ratio = effect_ratio(real_effect, synthetic_effect)
    label, reason = verdict(real_effect, synthetic_effect, ratio)
    assert label is expected, reason
    assert reason


def made(d, low, high, *, measurable=True) -> EffectSize:
    counts = Counts(10, 10, None, None, 5, 5)
    reason = "" if measurable else "too few wells"
    return EffectSize(
        d, low, high, 0.95, "well", 2000, 0, counts, measurable, reason, np.array([d])
    )


@pytest.mark.parametrize(
    "real_effect, synthetic_effect, ratio, expected",
    [
        (
            made(1.0, 0.5, 1.5),
            made(1.1, 0.8, 1.4),
            EffectRatio(1.1, 0.6, 2.0, 0.95),
            Verdict.AGREES,
        ),
        (
            made(1.0, 0.5, 1.5),
            made(3.0, 2.5, 3.5),
            EffectRatio(3.0, 1.2, 6.0, 0.95),
            Verdict.INFLATED,
        ),
        (
            made(1.0, 0.5, 1.5),
            made(0.2, 0.1, 0.3),
            EffectRatio(0.2, 0.1, 0.5, 0.95),
            Verdict.DEFLATED,
        ),
        # the ratio CI alone would say deflated: the sign rule comes first
        (
            made(1.0, 0.5, 1.5),
            made(-1, -1.5, -0.5),
            EffectRatio(-1, -3, -0.3, 0.95),
            Verdict.WRONG_SIGN,
        ),
        (
            made(-1, -1.5, -0.5),
            made(1.0, 0.5, 1.5),
            EffectRatio(-1, -3, -0.3, 0.95),
            Verdict.WRONG_SIGN,
        ),
        # a synthetic CI touching 0 is not a wrong sign
        (
            made(1.0, 0.5, 1.5),
            made(-0.2, -0.5, 0.0),
            EffectRatio(-0.2, -1, 0, 0.95),
            Verdict.DEFLATED,
        ),
        (
            made(1.0, 0.5, 1.5),
            made(1.0, 0.5, 1.5),
            EffectRatio(1.0, 1.0, 1.5, 0.95),
            Verdict.AGREES,
        ),
        (
            made(0.3, -0.1, 0.7),
            made(1.0, 0.5, 1.5),
            EffectRatio(3, -9, 9, 0.95),
            Verdict.NOT_MEASURABLE,
        ),
        (
            made(0.3, 0.0, 0.7),
            made(1.0, 0.5, 1.5),
            EffectRatio(3, 1, 9, 0.95),
            Verdict.NOT_MEASURABLE,
        ),
        (
            made(1.0, 0.5, 1.5, measurable=False),
            made(1.0, 0.5, 1.5),
            EffectRatio(1, 0.5, 2, 0.95),
            Verdict.NOT_MEASURABLE,
        ),
        (
            made(1.0, 0.5, 1.5),
            made(1.0, 0.5, 1.5, measurable=False),
            EffectRatio(1, 0.5, 2, 0.95),
            Verdict.NOT_MEASURABLE,
        ),
        (
            made(1.0, 0.5, 1.5),
            made(1.0, 0.5, 1.5),
            EffectRatio(*[np.nan] * 3, 0.95),
            Verdict.NOT_MEASURABLE,
        ),
    ],
)
def test_verdict_rule(real_effect, synthetic_effect, ratio, expected):
    assert verdict(real_effect, synthetic_effect, ratio)[0] is expected


# --- degenerate input ------------------------------------------------------------------------


def test_one_well_per_condition_is_not_measurable():
    rng = np.random.default_rng(17)
    values, groups, _ = plate(rng, wells=1, cells=50, shift=1.0)
    wells = np.where(groups == "treated", "B02", "B03")
    effect = real(values, groups, wells, rng)
    assert not effect.measurable and "too few wells" in effect.reason
    assert np.isfinite(effect.d) and len(effect.bootstrap) == 0
    label, reason = verdict(effect, synthetic(*images(rng), rng), effect_ratio(effect, effect))
    assert label is Verdict.NOT_MEASURABLE and "too few wells" in reason
    for test in (well_t_test, mixed_model_test):
        result = test(values, groups, wells, treated="treated", control="control")
        assert not result.measurable and "too few wells" in result.reason


def test_zero_variance_is_not_measurable():
    rng = np.random.default_rng(18)
    values, groups, wells = plate(rng, wells=4, cells=5)
    flat = np.ones_like(values)
    for effect in (real(flat, groups, wells, rng), synthetic(flat, groups, rng)):
        assert not effect.measurable and "zero variance" in effect.reason
    for test in (well_t_test, mixed_model_test):
        result = test(flat, groups, wells, treated="treated", control="control")
        assert not result.measurable and "zero variance" in result.reason


def test_constant_within_each_condition_is_not_measurable():
    rng = np.random.default_rng(19)
    _, groups, wells = plate(rng, wells=4, cells=5)
    steps = (groups == "treated").astype(float)  # differ between conditions, no spread within
    assert "zero variance" in real(steps, groups, wells, rng).reason
    assert (
        "zero variance"
        in well_t_test(steps, groups, wells, treated="treated", control="control").reason
    )


def test_mixed_model_without_variation_inside_wells_is_not_measurable():
    rng = np.random.default_rng(22)
    _, groups, wells = plate(rng, wells=4, cells=5)
    constant_wells = rng.normal(size=8)[wells]
    result = mixed_model_test(constant_wells, groups, wells, treated="treated", control="control")
    assert not result.measurable and "within wells" in result.reason
    one_cell = mixed_model_test(
        rng.normal(size=8), np.repeat(["treated", "control"], 4), np.arange(8),
        treated="treated", control="control",
    )  # fmt: skip
    assert not one_cell.measurable and "one cell" in one_cell.reason


def test_too_few_images_or_no_finite_values_is_not_measurable():
    rng = np.random.default_rng(20)
    effect = synthetic([1.0, 2.0, 3.0], ["treated", "control", "control"], rng)
    assert not effect.measurable and "too few images" in effect.reason
    values, groups, wells = plate(rng, wells=4, cells=5)
    values[groups == "treated"] = np.nan
    effect = real(values, groups, wells, rng)
    assert not effect.measurable and effect.counts.n_cells_treated == 0


def test_measurable_results_carry_no_nan():
    rng = np.random.default_rng(21)
    values, groups, wells = plate(rng, wells=3, cells=2, shift=2.0, well_sd=0.0)
    values[0] = np.nan  # dropped, as in stats
    effect = real(values, groups, wells, rng)
    assert effect.measurable and effect.counts.n_cells_treated == 5
    assert np.isfinite([effect.d, effect.ci_low, effect.ci_high]).all()
    assert np.isfinite(effect.bootstrap).all()


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda rng: real([], [], [], rng), "empty"),
        (
            lambda rng: real([1.0, 2.0], ["treated", "control"], ["A1", None], rng),
            "wells has 1 missing",
        ),
        (
            lambda rng: real([1.0, 2.0], ["treated", "control"], [1.0, np.nan], rng),
            "wells has 1 missing",
        ),
        (lambda rng: real([1.0, 2.0], ["treated", "control"], ["A1"], rng), "wells has 1"),
        (lambda rng: synthetic([1.0, 2.0], ["treated"], rng), "groups has 1"),
        (lambda rng: synthetic([1.0, 2.0], ["treated", "DMSO"], rng), "control 'control'"),
        (lambda rng: synthetic([1.0, 2.0], ["x", "control"], rng), "treated 'treated'"),
        (lambda rng: synthetic([1.0, 2.0], ["treated", "control"], rng, level=95), "level"),
        (lambda rng: synthetic([1.0, 2.0], ["treated", "control"], rng, resamples=0), "resamples"),
    ],
)
def test_bad_input_is_a_clear_error(call, message):
    with pytest.raises(PhenexplainError, match=message):
        call(np.random.default_rng(0))
