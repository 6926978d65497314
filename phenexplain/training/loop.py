"""The training loop: ticks, snapshots, callbacks, the wall-clock budget, divergence handling.

`train` calls `Trainer.step()` (`phenexplain.training.trainer`) until the image budget is spent.

Divergence: every step's losses and, at every tick, every parameter and buffer of G, G_ema and D
must be finite. Otherwise `train` stops with `TrainingDivergedError` (``on_divergence="stop"``)
or reloads the last good checkpoint, moves both generators to fresh streams (`Trainer.roll_back`)
and goes on (``"rollback"``, at most `max_rollbacks` times per call). No checkpoint is written
after a divergence, so ``checkpoints/latest`` keeps naming a finite one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import torch
import torch.distributed as dist

from phenexplain.training.callbacks import Callback
from phenexplain.training.divergence import DivergenceGuard
from phenexplain.training.trainer import Progress, Trainer, checkpoint_name

log = logging.getLogger(__name__)


def _tick_stats(trainer: Trainer, means: dict[str, float], nimg: int, seconds: float) -> dict:
    """The numbers reported at a tick that showed `nimg` images in `seconds`."""
    prog = trainer.progress
    return {
        "tick": prog.tick,
        "kimg": prog.cur_nimg / 1000,
        "img_per_s": nimg / max(seconds, 1e-9),
        "augment_p": float(trainer.augment_pipe.p) if trainer.augment_pipe is not None else 0.0,
        "rollbacks": prog.rollbacks,
        **{k: v for k, v in means.items() if not k.startswith("Loss/signs")},
    }


def _time_up(trainer: Trainer, started: float, minutes: float | None) -> bool:
    """Whether the wall-clock budget is spent, by rank 0's clock on every rank."""
    if minutes is None:
        return False
    up = torch.tensor([time.perf_counter() - started >= minutes * 60], dtype=torch.int32)
    if trainer.world > 1:
        up = up.to(trainer.device)
        dist.broadcast(up, src=0)
    return bool(up.item())


def _handle_divergence(
    trainer: Trainer,
    guard: DivergenceGuard,
    callbacks: list[Callback],
    quantity: str,
    tick: int,
    nimg: int | None = None,
) -> None:
    """Carry out the guard's decision on non-finite `quantity` (seen after `nimg` images; None:
    now): tell the callbacks, then raise `TrainingDivergedError` or roll back to the last good
    checkpoint."""
    prog = trainer.progress
    kimg = (prog.cur_nimg if nimg is None else nimg) / 1000
    divergence = guard.decide(quantity, kimg, tick, prog.rollbacks)
    if trainer.rank == 0:
        for cb in callbacks:
            cb.on_divergence(divergence)
    if divergence.action == "stop":
        raise guard.error(divergence)
    assert divergence.checkpoint is not None  # "rollback" decisions name the checkpoint
    trainer.roll_back(Path(divergence.checkpoint))
    log.warning(
        "training diverged at %.3f kimg (tick %d): %s is not finite; rolled back to %s "
        "(rollback %d of at most %d in this call) with reseeded generators",
        divergence.kimg, tick, quantity, divergence.checkpoint, guard.retries_used,
        guard.max_rollbacks,
    )  # fmt: skip


def train(
    trainer: Trainer,
    run_dir: Path,
    *,
    kimg: float,
    tick_kimg: float,
    snapshot_ticks: int,
    sample_seeds: int,
    callbacks: list[Callback],
    evaluate: Callable[[Trainer], dict] | None = None,
    on_divergence: Literal["stop", "rollback"] = "stop",
    max_rollbacks: int = 3,
    minutes: float | None = None,
) -> Progress:
    """Run until `kimg` thousand images, or until the first tick after `minutes` of wall clock
    (rank 0's clock decides for every rank); tick stats every `tick_kimg`, checkpoint every
    `snapshot_ticks` ticks and at the end, with `evaluate(trainer)` (FID/KID) merged into the
    snapshot's stats. A non-finite loss (flagged on the device at every step, read at the tick,
    reported with the step it came from) or weight (checked at every tick) stops the run with
    `TrainingDivergedError` or rolls it back, as `on_divergence` says, before anything of that
    tick is saved. Only rank 0 writes and reports; each callback's `finish` is called once the
    run ends normally."""
    run_dir = Path(run_dir)
    total = int(kimg * 1000)
    started = time.perf_counter()
    guard = DivergenceGuard(run_dir, on_divergence, max_rollbacks, trainer.device)
    tick_start_nimg, tick_start = trainer.progress.cur_nimg, time.perf_counter()
    trainer.stats.clear()
    while trainer.progress.cur_nimg < total:
        step_stats = trainer.step()
        trainer.stats.add(step_stats, trainer.progress.cur_nimg)
        prog = trainer.progress
        done = prog.cur_nimg >= total
        if not done and prog.cur_nimg < tick_start_nimg + tick_kimg * 1000:
            continue
        means, bad_step = trainer.stats.read()  # the one transfer of the tick's step numbers
        trainer.stats.clear()
        bad = guard.agreed(bad_step.quantity if bad_step is not None else None)
        if bad is not None:
            nimg = bad_step.nimg if bad_step is not None else None
            _handle_divergence(trainer, guard, callbacks, bad, prog.tick + 1, nimg)
            tick_start_nimg, tick_start = trainer.progress.cur_nimg, time.perf_counter()
            continue
        prog.tick += 1
        elapsed = time.perf_counter() - tick_start
        stats = _tick_stats(trainer, means, prog.cur_nimg - tick_start_nimg, elapsed)
        stop = any(cb.should_stop() for cb in callbacks) or _time_up(trainer, started, minutes)
        if trainer.rank == 0:
            for cb in callbacks:
                cb.on_tick(stats)
        bad = guard.agreed(trainer.first_nonfinite())  # after on_tick, before anything is saved
        if bad is not None:
            _handle_divergence(trainer, guard, callbacks, bad, prog.tick)
            tick_start_nimg, tick_start = trainer.progress.cur_nimg, time.perf_counter()
            continue
        if done or stop or prog.tick % snapshot_ticks == 0:
            if trainer.rank == 0:
                if evaluate is not None:
                    stats.update(evaluate(trainer))
                path = trainer.save_snapshot(run_dir)
                grid = trainer.sample_grid(sample_seeds)
                for cb in callbacks:
                    cb.on_snapshot(stats, grid, path)
            guard.saved(run_dir / "checkpoints" / checkpoint_name(prog.cur_nimg))
        if stop:
            break
        tick_start_nimg, tick_start = prog.cur_nimg, time.perf_counter()
    trainer.check_in_sync()
    if trainer.rank == 0:
        for cb in callbacks:
            cb.finish()
    return trainer.progress
