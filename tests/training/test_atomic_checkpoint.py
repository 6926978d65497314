"""A process killed (SIGKILL) while writing checkpoints never leaves a corrupt ``latest``.

A helper process imports torch and builds a tiny Trainer once, then forks one writer per kill;
each writer continues from the latest checkpoint (as a resumed run does) and calls the loop's own
`Trainer.save_snapshot` in a tight loop, so most kills land in the middle of a write.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from phenexplain.data.cropset import CropSet
from phenexplain.fsutil import atomic_write_bytes
from phenexplain.training.checkpoint import CONFIG, WEIGHTS, latest_checkpoint, load_network
from phenexplain.training.data import TrainingData
from phenexplain.training.trainer import Trainer
from tests.training.conftest import TINY

REPO = Path(__file__).parents[2]

WRITER_SERVER = r"""
import json, os, sys
import torch
torch.set_num_threads(1)  # no OpenMP thread pool exists when we fork
from phenexplain.config import TrainProfile
from phenexplain.data.cropset import CropSet
from phenexplain.training.checkpoint import latest_checkpoint, read_config
from phenexplain.training.data import TrainingData
from phenexplain.training.trainer import Trainer

crops, run, profile = sys.argv[1], sys.argv[2], TrainProfile(**json.loads(sys.argv[3]))
trainer = Trainer(TrainingData(CropSet(crops), resolution=16, xflip=True), profile, seed=0)
trainer.step()  # optimiser moments exist, so checkpoints have their full size
print("ready", flush=True)
for _ in sys.stdin:
    pid = os.fork()
    if pid == 0:
        try:
            latest = latest_checkpoint(run)
            if latest is not None:
                trainer.progress.cur_nimg = read_config(latest).training.progress["cur_nimg"]
            while True:
                trainer.progress.cur_nimg += 8
                trainer.save_snapshot(run)
        except BaseException:
            import traceback
            traceback.print_exc()
        finally:
            os._exit(1)  # reached only if saving failed: the test sees it was not killed
    print(pid, flush=True)
    _, status = os.waitpid(pid, 0)  # returns once the test has killed the writer
    print(status, flush=True)
"""


def _check_latest(run: Path, trainer: Trainer) -> Path | None:
    """Assert that `latest` is absent or names a complete, loadable checkpoint."""
    latest = latest_checkpoint(run)
    if latest is None:
        assert not (run / "checkpoints" / "latest").exists()
        return None
    assert latest.parent == run / "checkpoints"
    assert latest.name.startswith("kimg") and ".partial-" not in latest.name, latest.name
    config = json.loads((latest / CONFIG).read_text())
    weights = load_file(str(latest / WEIGHTS))  # reads every tensor
    assert set(config["networks"]) == {"G", "G_ema", "D"}
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())
    load_network(latest, "G_ema")
    load_network(latest, "D")
    trainer.load(latest)  # what `--resume` does
    return latest


def test_sigkill_during_checkpoint_writes_never_corrupts_latest(tiny_crops, tmp_path):
    run = tmp_path / "run"
    server = subprocess.Popen(
        [sys.executable, "-c", WRITER_SERVER, str(tiny_crops), str(run), TINY.model_dump_json()],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    pid = None
    try:
        assert server.stdout.readline().strip() == "ready"
        torch.set_num_threads(1)
        reader = Trainer(TrainingData(CropSet(tiny_crops), resolution=16, xflip=True), TINY)
        rng = random.Random(1234)
        previous_kimg = -1.0
        mid_write = 0
        for _ in range(15):
            server.stdin.write("go\n")
            server.stdin.flush()
            pid = int(server.stdout.readline())
            time.sleep(rng.uniform(0.01, 0.25))
            with contextlib.suppress(ProcessLookupError):  # it died by itself: status says how
                os.kill(pid, signal.SIGKILL)
            status = int(server.stdout.readline())
            assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status
            # a staging folder of the killed writer (the next one removes it, see below)
            mid_write += any((run / "checkpoints").glob(f".*.partial-{pid}-*"))
            pid = None
            latest = _check_latest(run, reader)
            if latest is not None:
                kimg = reader.progress.cur_nimg / 1000
                assert kimg >= previous_kimg  # `latest` never moves back to an older checkpoint
                previous_kimg = kimg
        assert previous_kimg > 0  # the writers got checkpoints through
        assert mid_write  # and some kills did land in the middle of a write
        staging = list((run / "checkpoints").glob(".*.partial-*"))
        assert len(staging) <= 1  # writers remove what killed ones left: the last kill's at most
    finally:
        if pid is not None:  # a writer still running when an assertion failed
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        server.kill()
        server.wait()


def test_atomic_write_bytes_never_shows_an_empty_or_partial_pointer(tmp_path):
    pointer = tmp_path / "latest"
    payloads = [b"a" * 1_000_000, b"b" * 2_000_000]
    atomic_write_bytes(pointer, payloads[0])
    stop = threading.Event()

    def write() -> None:
        for i in range(200):
            atomic_write_bytes(pointer, payloads[i % 2])
        stop.set()

    writer = threading.Thread(target=write)
    writer.start()
    seen = set()
    while not stop.is_set():
        data = pointer.read_bytes()
        assert data in payloads, f"read {len(data)} bytes"
        seen.add(data[:1])
    writer.join()
    assert seen == {b"a", b"b"}  # the reader did overlap the writer


def test_a_write_that_dies_before_the_rename_keeps_the_old_pointer(tmp_path, monkeypatch):
    pointer = tmp_path / "latest"
    atomic_write_bytes(pointer, b"kimg0000.016")
    real_write_bytes = Path.write_bytes

    def dies_half_way(self: Path, data: bytes) -> int:
        real_write_bytes(self, data[: len(data) // 2])
        raise KeyboardInterrupt  # stands for a kill between the write and the rename

    monkeypatch.setattr(Path, "write_bytes", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(pointer, b"kimg0000.032")
    assert pointer.read_bytes() == b"kimg0000.016"
