"""What the training loop does when a loss or a weight becomes NaN or inf.

`DivergenceGuard` takes the first non-finite loss of a tick (flagged on the device at its step, see
`training.stats`) and every weight and buffer at every tick (the same answer in every process)
and decides: stop the run (`TrainingDivergedError`), or roll back
to the last good checkpoint (`train.on_divergence: rollback`, at most `max_rollbacks` times in one
`train` call). The guard only decides; `training.loop.train` carries the decision out. No
checkpoint with non-finite weights is ever written (see
`checkpoint.save_checkpoint(require_finite=True)`), so the last good one stays "latest".
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
import torch.distributed as dist

from phenexplain.errors import PhenexplainError
from phenexplain.training.callbacks import Divergence
from phenexplain.training.checkpoint import CONFIG, latest_checkpoint


class TrainingDivergedError(PhenexplainError):
    """A loss or weight became NaN or inf; the message says where and what to try."""


def _any_rank(flag: bool, device: torch.device) -> bool:
    """True when `flag` is true in any process (the same answer everywhere)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    t = torch.tensor([float(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


class DivergenceGuard:
    """Finds NaN/inf in losses and weights and decides whether to stop or roll back.

    `last_good` is the checkpoint a rollback returns to: the run folder's latest when the guard
    is made, then each checkpoint the loop reports with `saved`."""

    def __init__(
        self,
        run_dir: Path,
        mode: Literal["stop", "rollback"],
        max_rollbacks: int,
        device: torch.device,
    ) -> None:
        if mode not in ("stop", "rollback"):
            raise ValueError(f"on_divergence must be 'stop' or 'rollback', not {mode!r}")
        self.mode, self.max_rollbacks, self.device = mode, max_rollbacks, device
        latest = latest_checkpoint(run_dir)
        self.last_good = latest if latest is not None and (latest / CONFIG).is_file() else None
        self.retries_used = 0  # rollbacks of this guard's `train` call (max_rollbacks bounds it)

    def saved(self, checkpoint: Path) -> None:
        """A finite checkpoint was written: the next rollback returns to it."""
        self.last_good = checkpoint

    def agreed(self, bad: str | None) -> str | None:
        """`bad` (this process's finding) when any process found something, else None."""
        if _any_rank(bad is not None, self.device):
            return bad or "a number in another process"
        return None

    def decide(self, quantity: str, kimg: float, tick: int, rollbacks: int) -> Divergence:
        """What to do about non-finite `quantity` at `kimg` (tick `tick`), in a run that has
        rolled back `rollbacks` times so far."""
        rollback = (
            self.mode == "rollback"
            and self.last_good is not None
            and self.retries_used < self.max_rollbacks
        )
        self.retries_used += int(rollback)
        return Divergence(
            kimg=kimg,
            tick=tick,
            quantity=quantity,
            checkpoint=None if self.last_good is None else str(self.last_good),
            action="rollback" if rollback else "stop",
            rollbacks=rollbacks + int(rollback),
        )

    def error(self, divergence: Divergence) -> TrainingDivergedError:
        """The error that stops the run, saying where it diverged and what to try."""
        text = (
            f"training diverged at {divergence.kimg:.3f} kimg (tick {divergence.tick}): "
            f"{divergence.quantity} is not finite (NaN or inf)"
        )
        if self.mode == "rollback" and self.last_good is not None:
            text += f", after {self.retries_used} rollbacks (max_rollbacks {self.max_rollbacks})"
        if self.last_good is None:
            text += (
                ". No checkpoint was written before it (lower snapshot_ticks to have one sooner)"
            )
        else:
            text += f". The last good checkpoint is {self.last_good}"
        return TrainingDivergedError(
            text + ". Try lower learning rates (glr, dlr) or a larger r1_gamma in the profile, or "
            "on_divergence: rollback; `phenexplain train --resume` continues from the last good "
            "checkpoint (with the same profile)."
        )
