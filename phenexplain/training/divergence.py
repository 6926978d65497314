"""What the training loop does when a loss or a weight becomes NaN or inf.

`DivergenceGuard` checks the losses of every step and every weight and buffer at every tick (the
same answer in every process), then stops the run with `TrainingDivergedError`, or reloads the
last good checkpoint and reseeds the generators (`train.on_divergence: rollback`, at most
`max_rollbacks` times). No checkpoint with non-finite weights is ever written (see
`checkpoint.save_checkpoint(require_finite=True)`), so the last good one stays "latest".
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
import torch.distributed as dist

from phenexplain.errors import PhenexplainError
from phenexplain.training.checkpoint import CONFIG, latest_checkpoint

if TYPE_CHECKING:
    from phenexplain.training.loop import Callback, Trainer

log = logging.getLogger(__name__)


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
    """Checks losses and weights for NaN/inf; stops the run or rolls it back (`on_divergence`)."""

    def __init__(
        self,
        trainer: Trainer,
        run_dir: Path,
        mode: Literal["stop", "rollback"],
        max_rollbacks: int,
        callbacks: list[Callback],
    ) -> None:
        if mode not in ("stop", "rollback"):
            raise ValueError(f"on_divergence must be 'stop' or 'rollback', not {mode!r}")
        self.trainer, self.mode, self.max_rollbacks = trainer, mode, max_rollbacks
        self.callbacks = callbacks
        latest = latest_checkpoint(run_dir)
        self.last_good = latest if latest is not None and (latest / CONFIG).is_file() else None
        self.rollbacks = 0

    def bad_loss(self, stats: dict[str, float]) -> str | None:
        """The first non-finite number of one step's `stats` (in any process), or None."""
        return self._agreed(next((k for k, v in stats.items() if not math.isfinite(v)), None))

    def bad_weight(self) -> str | None:
        """The first non-finite parameter or buffer (in any process), or None."""
        return self._agreed(self.trainer.first_nonfinite())

    def _agreed(self, bad: str | None) -> str | None:
        if _any_rank(bad is not None, self.trainer.device):
            return bad or "a number in another process"
        return None

    def handle(self, quantity: str, tick: int) -> None:
        """Raise `TrainingDivergedError`, or reload the last good checkpoint and reseed."""
        tr = self.trainer
        kimg = tr.progress.cur_nimg / 1000
        rollback = (
            self.mode == "rollback"
            and self.last_good is not None
            and self.rollbacks < self.max_rollbacks
        )
        info = {
            "kimg": kimg,
            "tick": tick,
            "quantity": quantity,
            "checkpoint": None if self.last_good is None else str(self.last_good),
            "action": "rollback" if rollback else "stop",
            "rollbacks": self.rollbacks + int(rollback),
        }
        if tr.rank == 0:
            for cb in self.callbacks:
                notify = getattr(cb, "on_divergence", None)
                if notify is not None:
                    notify(info)
        if not rollback:
            raise TrainingDivergedError(self._message(info))
        total = tr.progress.rollbacks + 1
        tr.load(self.last_good)
        tr.progress.rollbacks = total
        tr.reseed(total)
        self.rollbacks += 1
        log.warning(
            "training diverged at %.3f kimg (tick %d): %s is not finite; rolled back to %s "
            "(rollback %d of at most %d) with reseeded generators",
            kimg, tick, quantity, self.last_good, self.rollbacks, self.max_rollbacks,
        )  # fmt: skip

    def _message(self, info: dict) -> str:
        text = (
            f"training diverged at {info['kimg']:.3f} kimg (tick {info['tick']}): "
            f"{info['quantity']} is not finite (NaN or inf)"
        )
        if self.mode == "rollback" and self.last_good is not None:
            text += f", after {self.rollbacks} rollbacks (max_rollbacks {self.max_rollbacks})"
        if self.last_good is None:
            text += (
                ". No checkpoint was written before it (lower snapshot_ticks to have one sooner)"
            )
        else:
            text += f". The last good checkpoint is {self.last_good}"
        return text + (
            ". Try lower learning rates (glr, dlr) or a larger r1_gamma in the profile, or "
            "on_divergence: rollback; `phenexplain train --resume` continues from the last good "
            "checkpoint (with the same profile)."
        )
