"""Translation scores on planted truth, with translators whose right answer is known: an oracle
that answers each control crop with a real TNF crop (lands on TNF, loses the cell), and the
identity (keeps the cell, moves nothing). No generator is needed to know what each must score."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from phenexplain.config import ReportParams
from phenexplain.data.cropset import CropSet
from phenexplain.errors import PhenexplainError
from phenexplain.explain.translate import _write
from phenexplain.report.translation import score_translation
from phenexplain.training.data import downsample

PARAMS = ReportParams(real_per_condition=60, workers=1, seed=0)


def _translation(crops, out, answer) -> CropSet:
    """A translation crop set of every control crop of `crops` at half its size: the source
    (as reconstruction) and `answer(source index, TNF indices)` as its TNF translation."""
    names = crops.manifest["condition"].to_numpy()
    control, tnf = np.flatnonzero(names == "control"), np.flatnonzero(names == "TNF")
    small = downsample(crops.images, 2)
    stack = np.stack([small[control], small[answer(control, tnf)]])
    _write(out, CropSet(crops.root), control, ["control", "TNF"], stack, crops.root,
           out.parent / "ckpt", out.parent / "enc", {})  # fmt: skip
    return CropSet(out)


def _row(table: pd.DataFrame, feature: str) -> pd.Series:
    return table.set_index("feature").loc[feature]


def _covers(row: pd.Series, key: str, value: float) -> bool:
    return bool(row[f"{key}_ci_low"] <= value <= row[f"{key}_ci_high"])


def test_an_oracle_lands_on_the_target_and_an_identity_keeps_the_cell(assay_crops, tmp_path):
    crops = assay_crops("nfkb", 64)
    rng = np.random.default_rng(1)
    oracle = _translation(crops, tmp_path / "oracle",
                          lambda src, tnf: rng.choice(tnf, size=len(src)))  # fmt: skip
    same = _translation(crops, tmp_path / "same", lambda src, tnf: src)

    scored = score_translation(oracle.root, crops.root, PARAMS, holdout=[])
    assert scored.source == "control" and scored.targets == ["TNF"] and scored.resolution == 32
    nfkb = _row(scored.effects, "log_nc_ratio")  # the planted translocation: d about 4 at 32 px
    assert nfkb["changed"] and nfkb["d_real"] > 2
    assert abs(nfkb["d_vs_real_target"]) < 0.5 and _covers(nfkb, "d_vs_real_target", 0)
    assert _covers(nfkb, "ratio", 1) and abs(nfkb["d_vs_sources"] - nfkb["d_real"]) < 0.6
    ident = _row(scored.identity, "nucleus_area")
    assert abs(ident["r_translation"]) < 0.4 and ident["r_reconstruction"] == pytest.approx(1)
    assert ident["nuclei_dice_reconstruction"] == 1
    assert ident["nuclei_dice"] < 0.6 and ident["nuclei_dice_chance"] < 0.6

    kept = score_translation(same.root, crops.root, PARAMS, holdout=[])
    nfkb = _row(kept.effects, "log_nc_ratio")
    assert nfkb["d_vs_sources"] == pytest.approx(0, abs=1e-9) and _covers(nfkb, "ratio", 0)
    assert nfkb["d_vs_real_target"] < -2  # still control: far from real TNF
    ident = _row(kept.identity, "nucleus_area")
    assert ident["r_translation"] == pytest.approx(1) and ident["nuclei_dice"] == 1
    assert kept.reconstruction["all"]["mean_psnr_db"] == np.inf or (
        kept.reconstruction["all"]["mean_psnr_db"] > 90
    )  # the sources themselves
    held = score_translation(same.root, crops.root, PARAMS,
                             holdout=list(same.manifest["source_crop_id"].unique()[::2]))  # fmt: skip
    scored = held.reconstruction
    assert scored["all"]["crops"] == held.crops == 60 and 0 < scored["held_out"]["crops"] < 60


def test_scoring_refuses_what_is_not_a_translation_of_the_crop_set(assay_crops, tmp_path):
    crops = assay_crops("nfkb", 64)
    with pytest.raises(PhenexplainError, match="is not a translation"):
        score_translation(crops.root, crops.root, PARAMS)
    same = _translation(crops, tmp_path / "same", lambda src, tnf: src)
    other = assay_crops("subtle", 64)
    with pytest.raises(PhenexplainError, match="pass the crop set it was made from"):
        score_translation(same.root, other.root, PARAMS)
