"""A diverging run is caught within one tick: stopped with a clear error or rolled back.

Divergence is injected precisely: a callback that fills a G weight with NaN at a chosen tick, or
a `Trainer.step` that reports a NaN loss after a chosen number of images.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file

from phenexplain.config import TrainParams, load_params
from phenexplain.data.cropset import CropSet
from phenexplain.errors import PhenexplainError
from phenexplain.training.callbacks import Callback, Divergence, RunFolderCallback
from phenexplain.training.checkpoint import latest_checkpoint
from phenexplain.training.data import TrainingData
from phenexplain.training.divergence import TrainingDivergedError
from phenexplain.training.loop import train
from phenexplain.training.run import run_training
from phenexplain.training.trainer import Trainer
from tests.training.conftest import TINY

# 2 steps of 8 images per tick, a checkpoint every 2 ticks (0.032, 0.064, ... kimg)
SCHEDULE = dict(kimg=0.128, tick_kimg=0.016, snapshot_ticks=2, sample_seeds=2)


def _trainer(crops) -> Trainer:
    torch.set_num_threads(1)
    return Trainer(TrainingData(CropSet(crops), resolution=16, xflip=True), TINY, seed=3)


class NaNWeightAt(Callback):
    """Fills one G weight with NaN in `on_tick` of tick `tick` (the first `times` times)."""

    def __init__(self, trainer: Trainer, tick: int, times: int = 1) -> None:
        self.trainer, self.tick, self.left = trainer, tick, times
        self.name, _ = next(trainer.G.synthesis.named_parameters())
        self.infos: list[Divergence] = []

    def on_tick(self, stats: dict) -> None:
        if stats["tick"] == self.tick and self.left > 0:
            self.left -= 1
            with torch.no_grad():
                dict(self.trainer.G.synthesis.named_parameters())[self.name].fill_(math.nan)

    def on_divergence(self, divergence: Divergence) -> None:
        self.infos.append(divergence)


def _all_finite(checkpoint: Path) -> bool:
    tensors = load_file(str(checkpoint / "weights.safetensors")).values()
    return all(torch.isfinite(v).all() for v in tensors if v.is_floating_point())


def _checkpoints(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").iterdir() if p.is_dir())


def test_stop_raises_at_the_injected_tick_and_latest_stays_finite(tiny_crops, tmp_path):
    tr = _trainer(tiny_crops)
    inject = NaNWeightAt(tr, tick=3)
    with pytest.raises(TrainingDivergedError) as err:
        train(tr, tmp_path, callbacks=[inject], **SCHEDULE)
    message = str(err.value)
    assert "0.048 kimg (tick 3)" in message  # detected at the tick of the injection
    assert f"G.synthesis.{inject.name}" in message and "is not finite" in message
    assert str(tmp_path / "checkpoints" / "kimg0000.032") in message
    assert "glr" in message and "r1_gamma" in message and "--resume" in message
    assert latest_checkpoint(tmp_path).name == "kimg0000.032"
    assert _checkpoints(tmp_path) == ["kimg0000.032"]  # nothing written after the divergence
    assert _all_finite(latest_checkpoint(tmp_path))
    assert [i.action for i in inject.infos] == ["stop"]
    assert inject.infos[0].quantity == f"G.synthesis.{inject.name}"


def test_a_nan_loss_stops_at_the_end_of_its_tick_naming_its_step(tiny_crops, tmp_path, monkeypatch):
    """The loss check is a device-side flag read once per tick: the run stops at the end of the
    tick (nothing of it saved) and the message names the step the loss came from."""
    tr = _trainer(tiny_crops)
    step = tr.step

    def nan_at_40_images() -> dict:
        stats = step()
        if tr.progress.cur_nimg == 40:  # the first of tick 3's two steps (33-48 images)
            stats["Loss/D/loss"] = stats["Loss/D/loss"] * math.inf
        return stats

    monkeypatch.setattr(tr, "step", nan_at_40_images)
    with pytest.raises(TrainingDivergedError, match=r"0\.040 kimg \(tick 3\): Loss/D/loss"):
        train(tr, tmp_path, callbacks=[], **SCHEDULE)
    assert tr.progress.cur_nimg == 48  # the tick's last step, not one further
    assert latest_checkpoint(tmp_path).name == "kimg0000.032"


def _final_weights(trainer: Trainer) -> list[torch.Tensor]:
    return [p.clone() for p in trainer.G_ema.parameters()]


def test_rollback_reloads_reseeds_and_finishes(tiny_crops, tmp_path):
    finals = []
    for name in ("a", "b"):
        tr = _trainer(tiny_crops)
        inject = NaNWeightAt(tr, tick=3)
        run = tmp_path / name
        progress = train(
            tr, run, callbacks=[inject, RunFolderCallback(run)], on_divergence="rollback",
            **SCHEDULE,
        )  # fmt: skip
        assert progress.cur_nimg == 128 and progress.rollbacks == 1
        assert [(i.action, i.tick, i.rollbacks) for i in inject.infos] == [("rollback", 3, 1)]
        assert inject.infos[0].checkpoint == str(run / "checkpoints" / "kimg0000.032")
        assert latest_checkpoint(run).name == "kimg0000.128"
        assert all(_all_finite(run / "checkpoints" / c) for c in _checkpoints(run))
        ticks = [json.loads(x) for x in (run / "stats.jsonl").read_text().splitlines()]
        assert ticks[-1]["rollbacks"] == 1 and ticks[-1]["kimg"] == pytest.approx(0.128)
        config = json.loads((latest_checkpoint(run) / "checkpoint.json").read_text())
        assert config["training"]["progress"]["rollbacks"] == 1
        finals.append(_final_weights(tr))
    clean = _trainer(tiny_crops)
    train(clean, tmp_path / "clean", callbacks=[], **SCHEDULE)
    a, b = finals
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))  # the reseed is deterministic
    # the same minibatches were not replayed: without the reseed, b would equal the clean run
    assert not all(torch.equal(x, y) for x, y in zip(b, _final_weights(clean), strict=True))


def test_rollback_stops_after_max_rollbacks(tiny_crops, tmp_path):
    tr = _trainer(tiny_crops)
    inject = NaNWeightAt(tr, tick=3, times=100)
    with pytest.raises(TrainingDivergedError, match="after 2 rollbacks") as err:
        train(tr, tmp_path, callbacks=[inject], on_divergence="rollback", max_rollbacks=2, **SCHEDULE)  # fmt: skip
    assert "0.048 kimg" in str(err.value)
    assert [i.action for i in inject.infos] == ["rollback", "rollback", "stop"]
    assert [i.rollbacks for i in inject.infos] == [1, 2, 2]  # the run's count, as in stats.jsonl
    assert latest_checkpoint(tmp_path).name == "kimg0000.032"
    assert _all_finite(latest_checkpoint(tmp_path))


class Finishes(Callback):
    """Overrides only `finish`: the base class answers every other call."""

    def __init__(self) -> None:
        self.calls = 0

    def finish(self) -> bool:
        self.calls += 1
        return True


def test_finish_is_called_once_after_a_normal_end_and_never_after_a_stop(tiny_crops, tmp_path):
    done = Finishes()
    train(_trainer(tiny_crops), tmp_path / "ok", callbacks=[done], **SCHEDULE)
    assert done.calls == 1
    tr = _trainer(tiny_crops)
    stopped = Finishes()
    with pytest.raises(TrainingDivergedError):
        train(tr, tmp_path / "nan", callbacks=[NaNWeightAt(tr, tick=3), stopped], **SCHEDULE)
    assert stopped.calls == 0


def test_rollback_without_a_good_checkpoint_stops(tiny_crops, tmp_path):
    tr = _trainer(tiny_crops)
    inject = NaNWeightAt(tr, tick=1)
    with pytest.raises(TrainingDivergedError, match="No checkpoint was written before it"):
        train(tr, tmp_path, callbacks=[inject], on_divergence="rollback", **SCHEDULE)
    assert latest_checkpoint(tmp_path) is None
    assert [i.action for i in inject.infos] == ["stop"]


def test_non_finite_weights_are_never_saved(tiny_crops, tmp_path):
    tr = _trainer(tiny_crops)
    assert tr.first_nonfinite() is None
    tr.G_ema.mapping.w_avg.fill_(math.inf)  # a buffer, not a parameter
    assert tr.first_nonfinite() == "G_ema.mapping.w_avg"
    with pytest.raises(PhenexplainError, match=r"G_ema\.mapping\.w_avg holds NaN or inf"):
        tr.save_snapshot(tmp_path)
    assert latest_checkpoint(tmp_path) is None
    assert list((tmp_path / "checkpoints").iterdir()) == []  # no staging folder left behind


def test_run_training_applies_the_params(tiny_crops, tmp_path, monkeypatch):
    step = Trainer.step

    def nan_at_48_images(self: Trainer) -> dict[str, float]:
        stats = step(self)
        return {**stats, "Loss/G/loss": math.nan} if self.progress.cur_nimg == 48 else stats

    monkeypatch.setattr(Trainer, "step", nan_at_48_images)
    params = TrainParams(
        profile="tiny", profiles={"tiny": TINY}, kimg=0.064, seed=3, tick_kimg=0.016,
        snapshot_ticks=1, sample_seeds=2, threads=1, metrics=[], on_divergence="rollback",
        max_rollbacks=1,
    )  # fmt: skip
    with pytest.raises(TrainingDivergedError, match=r"Loss/G/loss .* after 1 rollbacks"):
        run_training(tiny_crops, tmp_path / "run", params)
    assert latest_checkpoint(tmp_path / "run").name == "kimg0000.032"


def test_params_defaults_and_validation():
    train_params = load_params(Path(__file__).parents[2] / "params.yaml").train
    assert (train_params.on_divergence, train_params.max_rollbacks) == ("stop", 3)
    with pytest.raises(ValidationError):
        TrainParams(on_divergence="explode")
    with pytest.raises(ValidationError):
        TrainParams(max_rollbacks=-1)
