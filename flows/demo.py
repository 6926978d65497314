"""`make demo`: the whole pipeline on the embedded default data (data/, the synthetic nfkb plate),
with embedded defaults only (Prefect's temporary local API, MLflow in mlruns/), then where to look.

    python -m flows.demo [--kimg K] [--minutes 8]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

# The demo trains for params.yaml's budget (train.kimg, in images: the same model on any machine)
# and, on a machine slower than ours, stops at the first tick after this many minutes (recording
# the kimg it reached), so that it ends within 15 minutes.
MINUTES_CAP = 8.0


def _ci(row: dict, name: str) -> str:
    return f"{row[name]:+.2f} [{row[name + '_ci_low']:+.2f}, {row[name + '_ci_high']:+.2f}]"


def verdict_line(row: dict) -> str:
    """One row of the verdict table as the demo prints it."""
    from phenexplain.report.verdicts import below_resolution

    if below_resolution(row["verdict"]):
        return f"{row['feature_name']}, {row['condition']}: {row['verdict']}"
    return (
        f"{row['feature_name']}, {row['condition']} vs {row['control']}: d real "
        f"{_ci(row, 'd_real')}, d synthetic {_ci(row, 'd_synthetic')}: {row['verdict']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kimg", type=float, help="training budget, kimg (params.yaml's)")
    parser.add_argument("--minutes", type=float, default=MINUTES_CAP,
                        help="and at most these minutes of training (a slower machine stops "
                        "at the tick after them)")  # fmt: skip
    parser.add_argument("--run-dir", default="runs/demo", help="run folder (replaced)")
    args = parser.parse_args()

    import shutil

    from flows.pipeline import phenexplain_pipeline

    shutil.rmtree(args.run_dir, ignore_errors=True)  # the demo's own output, never user data
    start = time.perf_counter()
    result = phenexplain_pipeline(source="data", cropset="cropsets/default", run_dir=args.run_dir,
                                  kimg=args.kimg, minutes=args.minutes)  # fmt: skip
    minutes = (time.perf_counter() - start) / 60
    print(f"\nPhenexplain demo finished in {minutes:.1f} min.")
    print("  the verdict table (report.html's first table; Cohen's d, 95 % CI):")
    for row in result["verdict_table"]:
        print("    " + verdict_line(row))
    print(f"  verdict:     {result['verdict']}")
    reg = result["registration"]
    print(f"  report:      {Path(result['report']).resolve()}")
    print(f"  explorer:    {Path(result['explorer']).resolve()}  (or: phenexplain serve "
          f"{Path(result['report']).parent})")  # fmt: skip
    print(f"  traversals:  {', '.join(result['videos'])}")
    print(f"  MLflow:      make ui, then http://127.0.0.1:5000 (run {result['mlflow_run_id']})")
    why = f"; not champion: {reg['refused']}" if reg.get("refused") else ""
    print(f"  registered:  models:/{reg['name']}@champion (version {reg['version']}, "
          f"champion: {reg['champion']}{why})")  # fmt: skip


if __name__ == "__main__":
    main()
