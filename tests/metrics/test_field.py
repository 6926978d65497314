"""The field's protocol (FIDo/FIDc, KIDo/KIDc): a translation that returns the real target crops
scores 0, generated images of a random generator do not, and FIDc is the mean over conditions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from phenexplain.errors import PhenexplainError
from phenexplain.metrics.extractors import RandomCNNExtractor
from phenexplain.metrics.field import field_protocol, scores
from tests.cli_inprocess import run_cli
from tests.report.test_translation_scores import _translation


def test_fidc_is_the_mean_over_conditions_and_identical_sets_score_zero():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(60, 8))
    names = np.repeat(["a", "b", "c"], 20)
    same = scores(real, real.copy(), names, names, "x")
    assert same["fid_o_x"] == pytest.approx(0, abs=1e-6) and same["fid_c_x"] == pytest.approx(
        0, abs=1e-6
    )
    fake = (
        real
        + rng.normal(size=real.shape) * np.array([0.1, 1, 3])[np.repeat([0, 1, 2], 20)][:, None]
    )
    moved = scores(real, fake, names, names, "x")
    per = moved["per_condition_x"]
    assert moved["fid_c_x"] == pytest.approx(np.mean([per[c]["fid"] for c in "abc"]))
    assert per["a"]["fid"] < per["b"]["fid"] < per["c"]["fid"] and per["a"]["real"] == 20


def test_field_protocol_on_translations_and_generated_images(
    assay_crops, tiny_checkpoint, tmp_path
):
    crops = assay_crops("nfkb", 64)
    ckpt, _ = tiny_checkpoint(["DNA", "NFkB"], ("TNF", "control"), 32)
    oracle = _translation(crops, tmp_path / "tr", lambda src, tnf: np.resize(tnf, len(src)))
    n_tnf = int((crops.manifest["condition"] == "TNF").sum())
    rand = RandomCNNExtractor(2)
    exact = field_protocol(ckpt, crops.root, [rand], translation=oracle.root, samples=n_tnf)
    assert exact["source"] == "translated" and exact["real"] == exact["generated"] == n_tnf
    assert exact["fid_o_rand"] == pytest.approx(0, abs=1e-6)
    assert exact["fid_c_rand"] == pytest.approx(0, abs=1e-6)
    assert list(exact["per_condition_rand"]) == ["TNF"]  # the control is not a target
    generated = field_protocol(ckpt, crops.root, [rand], samples=50)
    assert generated["source"] == "generated" and generated["real"] == 50
    assert generated["fid_o_rand"] > 1 and generated["extractor_rand"] == rand.id
    with pytest.raises(PhenexplainError, match="no 'split' column"):
        field_protocol(ckpt, crops.root, [rand], split="test")
    out = tmp_path / "m.json"
    code, err = run_cli("evaluate", ckpt, crops.root, "--protocol", "field", "--metrics", "rand",
                        "--samples", "40", "--out", out)  # fmt: skip
    assert code == 0, err
    assert json.loads(out.read_text())["real"] == 40
    code, err = run_cli("evaluate", ckpt, crops.root, "--protocol", "fieldd")
    assert code != 0
