"""The default training callback: ``stats.jsonl`` and sample-grid PNGs in the run folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

RUN_KIND = "training run"  # the kind in the run folder's output marker (see fsutil)
# what a run writes into its folder: continued with --resume, discarded with --overwrite
RUN_RECORDS = ("checkpoints", "samples", "snapshots.jsonl", "stats.jsonl", "training_options.json")


class RunFolderCallback:
    """Appends one JSON line per tick to ``RUN/stats.jsonl``; writes ``RUN/samples/*.png``."""

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

    def should_stop(self) -> bool:
        return False
