"""Benchmarks behind `phenexplain bench ...`; each yields dicts of name, value, unit, config."""

from __future__ import annotations

import math
import os
import platform
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from phenexplain.config import IngestParams, SynthParams
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


def bench_ingest(
    fields: int = 28, workers: list[int] | None = None, seed: int = 0
) -> Iterator[dict]:
    """Fields per second through read + QC + nuclei + crops, on 1024x1280 3-channel 16-bit fields.

    The plate (the `dose` assay) is generated first and not timed; the great-expectations checks
    are not part of the figure (they run once per ingest, not per field).
    """
    from phenexplain.data.ingest import ingest

    conditions = len(get_assay("dose").conditions)
    spec = SynthParams(
        assay="dose",
        seed=seed,
        wells_per_condition=1,
        sites_per_well=max(1, math.ceil(fields / conditions)),
        height=1024,
        width=1280,
        workers=2,
    )
    with tempfile.TemporaryDirectory() as tmp:
        plate = Path(tmp) / "plate"
        n_fields = generate_plates(spec, plate)["fields"]
        for n in workers or [1, 2]:
            params = IngestParams(
                layout="manifest",
                channels=["DNA", "Tubulin", "Actin"],
                dna_channel="DNA",
                min_images_per_condition=1,
                workers=n,
            )
            start = time.perf_counter()
            summary = ingest(plate, Path(tmp) / f"crops-{n}", params)
            elapsed = time.perf_counter() - start
            yield {
                "name": "ingest_fields_per_s",
                "value": round(n_fields / elapsed, 3),
                "unit": "fields/s",
                "config": {
                    "field": "1024x1280x3 uint16",
                    "fields": n_fields,
                    "crops": summary["crops"],
                    "crop_size": params.crop_size,
                    "workers": n,
                    "seconds": round(elapsed, 2),
                    **_machine(),
                },
            }
