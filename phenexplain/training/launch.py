"""Multi-process training launched from Python: torchrun as a child process, its output streamed.

`phenexplain train --nproc N` and the flow's training task call `launch_training` when
`train.nproc` resolves above 1. It writes the run's spec to a temporary file, starts
``python -m torch.distributed.run --standalone --nproc-per-node N -m phenexplain.cli.train_worker
SPEC`` and hands each line the processes print (rank 0 prints one per tick) to `on_line`, so the
progress reaches the flow's log; rank 0 also reports to the MLflow run when the spec names one.
A rank that fails makes torchrun stop the others and exit non-zero: `launch_training` then raises
`PhenexplainError` with the last lines of their output (the failing rank's error among them).
"""

from __future__ import annotations

import collections
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from pydantic import BaseModel

from phenexplain.config import TrainParams
from phenexplain.errors import PhenexplainError
from phenexplain.training.callbacks import Callback

TAIL_LINES = 40  # lines of output quoted when the processes fail
RANK_ERROR = re.compile(r"rank \d+: error: ")  # how `phenexplain.cli.train_worker` reports one


class LaunchSpec(BaseModel):
    """What each torchrun process needs to train its share of one run."""

    cropset: str
    run_dir: str
    params: TrainParams
    device: str
    resume: bool = False
    overwrite: bool = False
    mlflow_run_id: str | None = None


def resolve_device(device: str) -> str:
    """`train.device` as torch names it: auto is cuda when a GPU is visible, else cpu."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise PhenexplainError(
            "train.device is cuda but no GPU is visible (torch.cuda.is_available() is False); "
            "set train.device to auto or cpu, or install a CUDA build of torch"
        )
    return device


def resolve_nproc(nproc: int | str, device: str) -> int:
    """`train.nproc` as a number: auto is one process per visible GPU (1 on the CPU)."""
    gpus = torch.cuda.device_count() if device == "cuda" else 0
    if nproc == "auto":
        return max(gpus, 1)
    count = int(nproc)
    if device == "cuda" and count > gpus:
        raise PhenexplainError(
            f"train.nproc is {count} but {gpus} GPU(s) are visible; set it to at most {gpus} "
            "or to auto"
        )
    return count


def torchrun_command(nproc: int, spec_file: Path) -> list[str]:
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc-per-node={nproc}", "-m", "phenexplain.cli.train_worker", str(spec_file),
    ]  # fmt: skip


def launch_training(spec: LaunchSpec, nproc: int, on_line: Callable[[str], None] = print) -> None:
    """Train `spec` in `nproc` processes under torchrun; each output line goes to `on_line`."""
    with tempfile.TemporaryDirectory(prefix="phenexplain-launch-") as tmp:
        spec_file = Path(tmp) / "spec.json"
        spec_file.write_text(spec.model_dump_json())
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        rank_errors: list[str] = []  # the workers' own one-line errors (train_worker)
        with subprocess.Popen(
            torchrun_command(nproc, spec_file), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, env=env, errors="replace",
        ) as proc:  # fmt: skip
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = raw.rstrip("\n")
                tail.append(line)
                if RANK_ERROR.match(line) and len(rank_errors) < 8:
                    rank_errors.append(line)
                on_line(line)
        if proc.returncode != 0:
            said = "; ".join(rank_errors) or "no rank reported an error (killed?)"
            shown = "\n".join(tail)
            raise PhenexplainError(
                f"distributed training of {spec.run_dir} ({nproc} processes) failed with exit "
                f"code {proc.returncode}: {said}; the last lines of its output:\n{shown}"
            )


class TickPrinter(Callback):
    """Rank 0's progress on stdout, one line per tick and snapshot, for the launcher to stream."""

    def on_tick(self, stats: dict) -> None:
        print(
            f"tick {stats['tick']}: {stats['kimg']:.3f} kimg, {stats['img_per_s']:.1f} img/s, "
            f"G loss {stats.get('Loss/G/loss', float('nan')):.3f}, "
            f"D loss {stats.get('Loss/D/loss', float('nan')):.3f}",
            flush=True,
        )

    def on_snapshot(self, stats: dict, grid, checkpoint: Path) -> None:
        print(f"checkpoint {checkpoint}", flush=True)


def train_with_params(
    cropset: str | Path,
    run_dir: str | Path,
    params: TrainParams,
    *,
    resume: bool = False,
    overwrite: bool = False,
    callbacks: list[Callback] | None = None,
    mlflow_run_id: str | None = None,
    on_line: Callable[[str], None] = print,
) -> float:
    """Train where `params.device` and `params.nproc` say: in this process (with `callbacks`),
    or in `nproc` torchrun processes (rank 0 reports to `mlflow_run_id`; their output goes to
    `on_line`). Under torchrun already, this process trains its share. Returns the kimg
    reached."""
    from phenexplain.training.checkpoint import latest_checkpoint, read_config
    from phenexplain.training.distributed import launched_by_torchrun
    from phenexplain.training.run import run_training

    device = resolve_device(params.device)
    nproc = resolve_nproc(params.nproc, device)
    if nproc > 1 and not launched_by_torchrun():
        spec = LaunchSpec(
            cropset=str(cropset), run_dir=str(run_dir), params=params, device=device,
            resume=resume, overwrite=overwrite, mlflow_run_id=mlflow_run_id,
        )  # fmt: skip
        on_line(f"training in {nproc} processes (torchrun, {device})")
        launch_training(spec, nproc, on_line=on_line)
        latest = latest_checkpoint(Path(run_dir))
        return (read_config(latest).training.kimg or 0.0) if latest is not None else 0.0
    progress = run_training(cropset, run_dir, params, resume=resume, overwrite=overwrite,
                            device=device, callbacks=callbacks)  # fmt: skip
    return progress.cur_nimg / 1000
