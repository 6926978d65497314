"""The golden-number tool's comparison: what it accepts is what `test_networks` accepts."""

from __future__ import annotations

import json

import pytest

from tests.nets.regenerate_golden import differences, main
from tests.nets.test_networks import GOLDEN


def test_the_stored_numbers_match_themselves_and_a_changed_number_is_reported():
    stored = json.loads(GOLDEN.read_text())
    assert differences(stored, stored) == []
    moved = {
        **stored,
        "G_image_corner": [stored["G_image_corner"][0] + 1e-3, *stored["G_image_corner"][1:]],
    }
    assert [p.split(":")[0] for p in differences(stored, moved)] == ["G_image_corner"]
    scaled = {**stored, "D_scores": [s * 1.001 for s in stored["D_scores"]]}
    assert [p.split(":")[0] for p in differences(stored, scaled)] == ["D_scores"]


def test_a_tree_that_is_not_the_reference_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="not a stylegan2-ada-pytorch work tree"):
        main(["--reference", str(tmp_path), "--check"])
