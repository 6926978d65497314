"""Multi-process training launched from Python (the flow's and `phenexplain train --nproc`'s
path): torchrun with gloo on 2 CPU processes, its output streamed line by line, a failing rank
turned into one clear error."""

from __future__ import annotations

import json

import pytest

from phenexplain.config import TrainParams
from phenexplain.errors import PhenexplainError
from phenexplain.training.checkpoint import latest_checkpoint
from phenexplain.training.launch import LaunchSpec, launch_training, resolve_device, resolve_nproc
from tests.training.conftest import TINY


def tiny_params(**train) -> TrainParams:
    return TrainParams(
        profile="tiny", kimg=0.064, tick_kimg=0.032, snapshot_ticks=1, sample_seeds=2, threads=1,
        metrics=[], device="cpu", profiles={"tiny": TINY}, **train,
    )  # fmt: skip


def test_two_processes_train_one_run_and_their_progress_is_streamed(tiny_crops, tmp_path):
    lines: list[str] = []
    spec = LaunchSpec(cropset=str(tiny_crops), run_dir=str(tmp_path / "run"),
                      params=tiny_params(), device="cpu")  # fmt: skip
    launch_training(spec, 2, on_line=lines.append)
    options = json.loads((tmp_path / "run" / "training_options.json").read_text())
    assert options["world"] == 2
    config = json.loads((latest_checkpoint(tmp_path / "run") / "checkpoint.json").read_text())
    assert config["training"]["progress"]["cur_nimg"] == 64
    ticks = [line for line in lines if line.startswith("tick ")]
    assert [t.split(":")[0] for t in ticks] == ["tick 1", "tick 2"]  # rank 0 only, one per tick
    assert any(line.startswith("trained to 0.064 kimg") for line in lines)


def test_a_failing_rank_fails_the_launch_with_its_error(tiny_crops, tmp_path):
    odd = TINY.model_copy(update={"batch": 9, "mbstd_group": 1})  # 9 images cannot split in 2
    params = tiny_params().model_copy(update={"profiles": {"tiny": odd}})
    spec = LaunchSpec(cropset=str(tiny_crops), run_dir=str(tmp_path / "run"), params=params,
                      device="cpu")  # fmt: skip
    with pytest.raises(PhenexplainError) as err:
        launch_training(spec, 2, on_line=lambda line: None)
    message = str(err.value)
    assert "(2 processes) failed with exit code" in message
    assert "error: batch 9 is not divisible by 2 processes" in message  # the rank's own words


def test_device_and_process_count_resolve_on_a_machine_without_gpus():
    assert resolve_device("cpu") == "cpu"
    assert resolve_nproc("auto", "cpu") == 1 and resolve_nproc(3, "cpu") == 3
    with pytest.raises(ValueError, match="nproc must be at least 1"):
        TrainParams(nproc=0)
