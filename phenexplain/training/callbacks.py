"""What the training loop reports, and to whom: `Callback` (the base class: every method a no-op,
so a callback overrides only what it needs), `Divergence` (what `on_divergence` receives) and the
default callback, `RunFolderCallback` (``stats.jsonl``, ``snapshots.jsonl`` and sample-grid PNGs
in the run folder)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

RUN_KIND = "training run"  # the kind in the run folder's output marker (see fsutil)
# what a run writes into its folder: continued with --resume, discarded with --overwrite
RUN_RECORDS = ("checkpoints", "samples", "snapshots.jsonl", "stats.jsonl", "training_options.json")


@dataclass(frozen=True)
class Divergence:
    """A loss or tensor became NaN or inf, and what the loop does about it."""

    kimg: float
    tick: int
    quantity: str  # the non-finite loss or tensor, e.g. ``G.synthesis.b8.conv0.weight``
    checkpoint: str | None  # the last good checkpoint, or None when none was written yet
    action: Literal["stop", "rollback"]
    rollbacks: int  # rollbacks over the whole run, this one included (as in stats.jsonl)


class Callback:
    """The training loop's listener. `train` calls every method of every callback (rank 0 only,
    except `should_stop`, which every process asks); each is a no-op here."""

    def on_tick(self, stats: dict) -> None:
        """Every tick: kimg, tick, img/s, augment_p, rollbacks and the mean losses."""

    def on_snapshot(self, stats: dict, grid: np.ndarray, checkpoint: Path) -> None:
        """After each checkpoint: the tick's stats with FID/KID, the sample grid, its path."""

    def on_divergence(self, divergence: Divergence) -> None:
        """Before the loop stops (raising `TrainingDivergedError`) or rolls back."""

    def should_stop(self) -> bool:
        """Asked at every tick; True ends the run after a last checkpoint."""
        return False

    def finish(self) -> bool:
        """Once, when training ends normally (not after a divergence that stops it); True when
        everything the callback reports has reached its destination."""
        return True


class RunFolderCallback(Callback):
    """Appends one JSON line per tick to ``RUN/stats.jsonl`` and per snapshot to
    ``RUN/snapshots.jsonl``; writes the sample grids to ``RUN/samples/*.png``."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        (self.run_dir / "samples").mkdir(parents=True, exist_ok=True)

    def on_tick(self, stats: dict) -> None:
        with (self.run_dir / "stats.jsonl").open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(stats, sort_keys=True) + "\n")

    def on_snapshot(self, stats: dict, grid: np.ndarray, checkpoint: Path) -> None:
        Image.fromarray(grid).save(
            self.run_dir / "samples" / f"fakes_kimg{stats['kimg']:08.3f}.png"
        )
        record = {
            k: v
            for k, v in stats.items()
            if k == "kimg" or k.startswith(("fid_", "kid_", "extractor"))
        }
        with (self.run_dir / "snapshots.jsonl").open("a", encoding="utf-8") as fh:
            fh.write(json.dumps({**record, "checkpoint": str(checkpoint)}, sort_keys=True) + "\n")
