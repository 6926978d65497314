"""The CNN discriminability check: grouped folds, nfkb conditions apart, random halves not."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from phenexplain.data.cropset import CropSet
from phenexplain.errors import PhenexplainError
from phenexplain.measure.discriminability import (
    EPOCHS,
    FOLDS,
    crop_groups,
    cross_validate,
    discriminability,
    grouped_folds,
)
from phenexplain.training.data import TrainingData


def test_defaults_are_the_papers():
    assert (FOLDS, EPOCHS) == (4, 10)
    params = inspect.signature(discriminability).parameters
    assert params["folds"].default == 4 and params["epochs"].default == 10
    assert params["group"].default == "well"


def test_folds_never_share_a_well(tiny_crops):
    cs = CropSet(tiny_crops)
    groups = crop_groups(cs)
    assert len(set(groups)) == 6  # plate/well keys: 3 wells per condition
    labels = cs.labels
    splits = grouped_folds(labels, groups, folds=3, seed=0)
    tested = np.concatenate([test for _, test in splits])
    assert np.array_equal(np.sort(tested), np.arange(len(cs)))  # every crop tested once
    for train, test in splits:
        assert not set(groups[train]) & set(groups[test])
        assert set(labels[test]) == {0, 1}  # stratified: both conditions in every test fold
    # the default four folds on many wells, and one plate's well names repeating on another
    many = np.array([f"P{i % 2}/W{i % 10}" for i in range(400)])
    for train, test in grouped_folds(np.arange(400) % 2, many):
        assert not set(many[train]) & set(many[test])
    with pytest.raises(PhenexplainError, match="groups"):
        grouped_folds(labels, groups, folds=7)


def test_cnn_tells_nfkb_conditions_apart(tiny_crops):
    result = discriminability(CropSet(tiny_crops), resolution=16, folds=3, seed=0)
    assert len(result.folds) == 3 and result.group == "well"
    assert result.accuracy_mean > 0.85 and result.accuracy_std < 0.1
    assert result.group_accuracy_mean == 1.0  # mean probability over each held-out well
    summary = result.as_dict()
    assert summary["aggregation"] == "mean probability" and len(summary["folds"]) == 3
    assert (result.folds["test_groups"] == 2).all()


def test_cnn_does_not_separate_random_halves_of_one_condition(tiny_crops):
    cs = CropSet(tiny_crops)
    data = TrainingData(cs, resolution=16)
    control = np.flatnonzero(cs.manifest["condition"].to_numpy() == "control")
    images = np.stack([data.image(int(i)) for i in control])
    halves = np.random.default_rng(0).permutation(len(control)) % 2
    result = cross_validate(images, halves, crop_groups(cs)[control], folds=3, seed=0)
    assert abs(result.accuracy_mean - 0.5) < 0.12
    assert np.isnan(result.group_accuracy_mean)  # every well holds both halves: no well label


def test_same_seed_same_numbers(tiny_crops):
    cs = CropSet(tiny_crops)

    def run(seed: int):
        return discriminability(cs, resolution=8, folds=2, epochs=1, seed=seed).folds

    assert run(3).equals(run(3))
    with pytest.raises(PhenexplainError, match="conditions"):
        discriminability(cs, conditions=["control"], resolution=8)
