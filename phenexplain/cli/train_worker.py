"""The process torchrun starts for `phenexplain.training.launch.launch_training`.

    python -m phenexplain.cli.train_worker SPEC.json   (under torchrun)

Reads the `LaunchSpec`, trains its share of the run (`run_training` joins the process group),
prints rank 0's progress, and reports to the spec's MLflow run from rank 0. An error becomes one
line on stderr naming the rank, and exit status 1, which makes torchrun stop the other ranks.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from phenexplain.errors import PhenexplainError


def main(argv: list[str] | None = None) -> int:
    from phenexplain.training.callbacks import Callback
    from phenexplain.training.launch import LaunchSpec, TickPrinter
    from phenexplain.training.run import run_training

    args = sys.argv[1:] if argv is None else argv
    rank = int(os.environ.get("RANK", "0"))
    try:
        if len(args) != 1:
            raise PhenexplainError("usage: python -m phenexplain.cli.train_worker SPEC.json")
        spec = LaunchSpec.model_validate_json(Path(args[0]).read_text())
        callbacks: list[Callback] = [TickPrinter()]
        if spec.mlflow_run_id is not None and rank == 0:
            from phenexplain.integrations.mlflow_tracking import MlflowCallback

            callbacks.append(MlflowCallback(spec.run_dir, spec.mlflow_run_id))
        progress = run_training(
            spec.cropset, spec.run_dir, spec.params, resume=spec.resume,
            overwrite=spec.overwrite, device=spec.device, callbacks=callbacks,
        )  # fmt: skip
    except PhenexplainError as exc:
        print(f"rank {rank}: error: {exc}", file=sys.stderr, flush=True)
        return 1
    if rank == 0:
        print(f"trained to {progress.cur_nimg / 1000:.3f} kimg in {spec.run_dir}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
