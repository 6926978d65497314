"""Benchmarks behind `phenexplain bench ...`; each yields dicts of name, value, unit, config."""

from __future__ import annotations

import math
import os
import platform
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from phenexplain.config import SynthParams
from phenexplain.data.synthetic import generate_plates, get_assay


def _machine() -> dict:
    return {
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
    }


def bench_synth(
    fields: int = 14, workers: list[int] | None = None, seed: int = 0
) -> Iterator[dict]:
    """Fields per second of the 3-channel `dose` assay at 1024x1280, for each worker count."""
    conditions = len(get_assay("dose").conditions)
    for n in workers or [1, 2]:
        spec = SynthParams(
            assay="dose",
            seed=seed,
            plates=1,
            wells_per_condition=1,
            sites_per_well=max(1, math.ceil(fields / conditions)),
            height=1024,
            width=1280,
            cells_per_mpx=50.0,
            workers=n,
        )
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            summary = generate_plates(spec, Path(tmp) / "plate")
            elapsed = time.perf_counter() - start
        yield {
            "name": "synth_fields_per_s",
            "value": round(summary["fields"] / elapsed, 3),
            "unit": "fields/s",
            "config": {
                "assay": "dose",
                "field": "1024x1280x3 uint16",
                "fields": summary["fields"],
                "workers": n,
                "seconds": round(elapsed, 2),
                **_machine(),
            },
        }
