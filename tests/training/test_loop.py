"""Training loop on tiny nets: finite losses, EMA, adaptive augmentation, exact resume, refusals."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from phenexplain.data.cropset import CropSet
from phenexplain.errors import PhenexplainError
from phenexplain.training.callbacks import RunFolderCallback
from phenexplain.training.checkpoint import latest_checkpoint
from phenexplain.training.data import TrainingData
from phenexplain.training.loop import train
from phenexplain.training.trainer import Trainer
from tests.training.conftest import TINY


def _trainer(crops, **kw) -> Trainer:
    torch.set_num_threads(1)
    return Trainer(
        TrainingData(CropSet(crops), resolution=16, xflip=True), TINY.model_copy(update=kw), seed=3
    )


def test_steps_are_finite_and_move_g_ema_and_augmentation(tiny_crops):
    tr = _trainer(tiny_crops, ada_target=0.01)  # D sees reals as real at once: r_t > target
    before = [p.clone() for p in tr.G_ema.parameters()]
    stats = {}
    for _ in range(16):
        stats.update(tr.step())
    assert all(torch.isfinite(torch.as_tensor(v)) for v in stats.values())
    assert {"Loss/G/loss", "Loss/D/loss", "Loss/r1_penalty", "Loss/pl_penalty"} <= set(stats)
    assert any(not torch.equal(a, b) for a, b in zip(before, tr.G_ema.parameters(), strict=True))
    assert not all(
        torch.equal(a, b) for a, b in zip(tr.G.parameters(), tr.G_ema.parameters(), strict=True)
    )
    assert float(tr.augment_pipe.p) > 0
    assert tr.progress.cur_nimg == 16 * 8 and tr.progress.batch_idx == 16


def _weights(path: Path, prefix: str = "G_ema.") -> dict[str, torch.Tensor]:
    return {
        k: v
        for k, v in load_file(str(path / "weights.safetensors")).items()
        if k.startswith(prefix)
    }


@pytest.mark.parametrize("sync_free", [False, True], ids=["host-checks", "sync-free"])
def test_resume_in_process_continues_exactly(tiny_crops, tmp_path, sync_free):
    """Both step modes resume bit for bit (sync-free is the GPU default; here on the CPU)."""
    _trainer = functools.partial(globals()["_trainer"], sync_free=sync_free)
    a = _trainer(tiny_crops)
    train(
        a,
        tmp_path / "a",
        kimg=0.128,
        tick_kimg=0.032,
        snapshot_ticks=2,
        sample_seeds=2,
        callbacks=[],
    )
    b = _trainer(tiny_crops)
    train(
        b,
        tmp_path / "b",
        kimg=0.064,
        tick_kimg=0.032,
        snapshot_ticks=2,
        sample_seeds=2,
        callbacks=[],
    )
    c = _trainer(tiny_crops)
    c.load(latest_checkpoint(tmp_path / "b"))
    assert c.progress.cur_nimg == 64
    train(
        c,
        tmp_path / "b",
        kimg=0.128,
        tick_kimg=0.032,
        snapshot_ticks=2,
        sample_seeds=2,
        callbacks=[],
    )
    for name in ("G", "G_ema", "D"):
        for pa, pc in zip(
            getattr(a, name).state_dict().values(),
            getattr(c, name).state_dict().values(),
            strict=True,
        ):
            assert torch.equal(pa, pc)
    assert float(a.augment_pipe.p) == float(c.augment_pipe.p)


def test_checkpoint_from_other_data_or_config_is_refused(tiny_crops, tmp_path, plate_factory):
    a = _trainer(tiny_crops)
    train(
        a,
        tmp_path / "a",
        kimg=0.016,
        tick_kimg=0.016,
        snapshot_ticks=1,
        sample_seeds=2,
        callbacks=[],
    )
    ckpt = latest_checkpoint(tmp_path / "a")
    with pytest.raises(PhenexplainError, match="another network or profile"):
        _trainer(tiny_crops, w_dim=32).load(ckpt)
    other = _trainer(tiny_crops)
    other.crop_set_id = "0000"
    with pytest.raises(PhenexplainError, match="another crop set"):
        other.load(ckpt)


def test_run_folder_callback_writes_stats_and_samples(tiny_crops, tmp_path):
    tr = _trainer(tiny_crops)
    run = tmp_path / "run"
    train(
        tr,
        run,
        kimg=0.032,
        tick_kimg=0.016,
        snapshot_ticks=1,
        sample_seeds=3,
        callbacks=[RunFolderCallback(run)],
    )
    lines = [json.loads(x) for x in (run / "stats.jsonl").read_text().splitlines()]
    assert [x["tick"] for x in lines] == [1, 2] and lines[-1]["kimg"] == pytest.approx(0.032)
    assert {"img_per_s", "augment_p", "Loss/G/loss"} <= set(lines[-1])
    samples = sorted((run / "samples").glob("*.png"))
    assert len(samples) == 2
    from PIL import Image

    assert Image.open(samples[-1]).size == (3 * 16, 2 * 16)  # 3 seeds x 2 conditions


def test_a_minutes_budget_stops_at_the_first_tick_after_it(tiny_crops, tmp_path):
    tr = _trainer(tiny_crops)
    run = tmp_path / "run"
    progress = train(tr, run, kimg=100.0, tick_kimg=0.016, snapshot_ticks=4, sample_seeds=1,
                     callbacks=[RunFolderCallback(run)], minutes=1e-6)  # fmt: skip
    assert progress.cur_nimg == 16 and progress.tick == 1  # one tick, far below the kimg cap
    assert latest_checkpoint(run).name == "kimg0000.016"  # the stop is checkpointed
    lines = [json.loads(x) for x in (run / "stats.jsonl").read_text().splitlines()]
    assert [x["tick"] for x in lines] == [1]


def _cli(*args):
    exe = Path(sys.executable).with_name("phenexplain")
    return [str(exe), *args]


def _tiny_params(tmp_path: Path) -> Path:
    profile = TINY.model_dump()
    params = {"train": {"profile": "tiny", "kimg": 0.384, "seed": 5, "tick_kimg": 0.032, "snapshot_ticks": 1,
                        "sample_seeds": 2, "threads": 1, "metrics": [], "profiles": {"tiny": profile}}}  # fmt: skip
    path = tmp_path / "params.yaml"
    path.write_text(json.dumps(params))  # JSON is YAML
    return path


def test_kill_9_and_resume_ends_with_the_same_weights(tiny_crops, tmp_path):
    params = _tiny_params(tmp_path)
    base = ["--params", str(params), "train", str(tiny_crops)]
    full = subprocess.run(
        _cli(*base, "--run-dir", str(tmp_path / "full")),
        capture_output=True,
        text=True,
    )
    assert full.returncode == 0, full.stderr
    run = tmp_path / "killed"
    proc = subprocess.Popen(_cli(*base, "--run-dir", str(run)), stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while latest_checkpoint(run) is None and time.time() < deadline and proc.poll() is None:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = latest_checkpoint(run)
    assert killed_at is not None and "0.384" not in killed_at.name  # it was interrupted mid-run
    resumed = subprocess.run(
        _cli(*base, "--run-dir", str(run), "--resume"), capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr
    a, b = _weights(latest_checkpoint(tmp_path / "full"), ""), _weights(latest_checkpoint(run), "")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    again = subprocess.run(_cli(*base, "--run-dir", str(run)), capture_output=True, text=True)
    assert again.returncode == 1 and "pass --resume" in again.stderr


def test_two_process_gloo_training(tiny_crops, tmp_path):
    params = _tiny_params(tmp_path)
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "phenexplain.cli", "--params", str(params),
           "train", str(tiny_crops), "--run-dir", str(tmp_path / "ddp"), "--kimg", "0.064"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    options = json.loads((tmp_path / "ddp" / "training_options.json").read_text())
    assert options["world"] == 2
    config = json.loads((latest_checkpoint(tmp_path / "ddp") / "checkpoint.json").read_text())
    assert config["training"]["progress"]["cur_nimg"] == 64  # global batches of 8 counted once
    weights = _weights(latest_checkpoint(tmp_path / "ddp"))
    assert all(torch.isfinite(v).all() for v in weights.values())
    # a time budget: rank 0's clock stops both processes at the same tick (no hang)
    timed = [*cmd[:-4], "--run-dir", str(tmp_path / "timed"), "--kimg", "10", "--minutes", "1e-6"]
    result = subprocess.run(timed, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    config = json.loads((latest_checkpoint(tmp_path / "timed") / "checkpoint.json").read_text())
    assert config["training"]["progress"]["cur_nimg"] == 32  # one tick of 0.032 kimg


def test_train_with_nproc_2_launches_torchrun_itself(tiny_crops, tmp_path):
    params = _tiny_params(tmp_path)
    run = tmp_path / "launched"
    result = subprocess.run(
        _cli("--params", str(params), "train", str(tiny_crops), "--run-dir", str(run),
             "--kimg", "0.064", "--nproc", "2", "--device", "cpu"),
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "training in 2 processes (torchrun, cpu)" in result.stdout
    assert "tick 2: 0.064 kimg" in result.stdout  # rank 0's progress, streamed
    assert json.loads((run / "training_options.json").read_text())["world"] == 2
    bad = subprocess.run(_cli("train", str(tiny_crops), "--run-dir", str(run), "--nproc", "two"),
                         capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 1 and "--nproc 'two': give a number of processes or auto" in bad.stderr


def test_a_checkpoint_carries_the_pixel_size_of_its_images(tiny_crops, tmp_path):
    import shutil

    crops = tmp_path / "crops"
    shutil.copytree(tiny_crops, crops)
    info = json.loads((crops / "cropset.json").read_text())
    (crops / "cropset.json").write_text(json.dumps({**info, "pixel_size_um": 0.65}))
    _, meta = _trainer(crops).state()
    assert meta.pixel_size_um == pytest.approx(0.65 * 32 / 16)  # 32 px crops drawn at 16 px
    _, meta = _trainer(tiny_crops).state()
    assert meta.pixel_size_um is None and "pixel_size_um" not in meta.to_json()
