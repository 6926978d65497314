"""Lay out plates, generate their fields in parallel and write them as a plate reader would.

Output folder (``OUT``):

```
OUT/
  metadata.csv             one row per field: plate, well, row, column, site, condition, treatment,
                           concentration_um, then path_<channel> (relative to OUT) per channel
  ground_truth.json        the assay's planted parameters and expected directions per condition,
                           plus the generation settings
  ground_truth_cells.csv   one row per cell: field keys, centre, planted and realised values
  ground_truth_wells.csv   one row per well: its random factor on each planted parameter
                           (see assays.WELL_SIGMA) and the parameters its cells were drawn with
  <plate>/<plate>_<well>_s<site>_w<k>.tif   16-bit single-channel TIFF, k = 1..C in channel order
```

Every field has its own random stream derived from (seed, plate, well, site), so the bytes do not
depend on the number of workers. The folder is written under a temporary name next to ``OUT`` and
renamed into place only when complete.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import tifffile

from phenexplain.config import SynthParams
from phenexplain.data.synthetic.assays import WELL_SIGMA, Assay, CellModel, get_assay
from phenexplain.data.synthetic.field import CELL_COLUMNS, FieldEffects, render_field
from phenexplain.errors import PhenexplainError
from phenexplain.fsutil import check_output, staged_output, write_json

log = logging.getLogger(__name__)

ROWS_384 = "ABCDEFGHIJKLMNOP"
FIELD_KEYS = ("plate", "well", "site", "condition")
GENERATOR_VERSION = 2  # bump when the same seed would produce different bytes
KIND = "synthetic plates"  # the kind in the folder's output marker (see fsutil)


def simd_level() -> str:
    """numpy's highest x86-64 SIMD level on this machine (``X86_V4`` with AVX-512, ``X86_V3``
    with AVX2, ``X86_V2``), or the machine name elsewhere.

    The same seed gives the same bytes only at the same level: numpy picks its float32 sin, cos
    and exp (and float64 tanh, and with AVX-512 more float64 functions) by level, and their
    last-bit differences move a few pixels and cell boundaries. Measured with the default data:
    X86_V2 and X86_V3 differ in 3 of its 64 images and in ground_truth_cells.csv.
    """
    import platform

    from numpy._core._multiarray_umath import __cpu_features__ as features

    for level in ("X86_V4", "X86_V3", "X86_V2"):
        if features.get(level):
            return level
    return platform.machine()


def _check_layout(spec: SynthParams, assay: Assay) -> None:
    wells = spec.wells_per_condition * len(assay.conditions)
    if wells > 14 * 22:
        raise PhenexplainError(
            f"{wells} wells per plate exceed the 308 inner wells of a 384-well plate; "
            "lower wells_per_condition or use more plates"
        )


@dataclass(frozen=True)
class FieldJob:
    """One field to render and write."""

    plate: str
    plate_index: int
    well: str
    well_index: int
    site: int
    condition: str
    paths: tuple[str, ...]  # relative to the output folder, one per channel


def _inner_wells(count: int) -> list[str]:
    """Well names avoiding edge wells: a 96-well plate's 60 inner wells, else a 384-well plate's."""
    if count <= 60:
        rows, cols = "BCDEFG", range(2, 12)
    else:
        rows, cols = ROWS_384[1:-1], range(2, 24)
    return [f"{r}{c:02d}" for r in rows for c in cols][:count]


def plan_jobs(spec: SynthParams, assay: Assay) -> list[FieldJob]:
    """Every field of every plate; conditions are shuffled over wells (no position confounds)."""
    jobs = []
    names = [cond.name for cond in assay.conditions]
    for p in range(spec.plates):
        plate = f"{assay.name.upper()}{spec.seed:03d}-P{p + 1:02d}"
        layout = np.repeat(names, spec.wells_per_condition)
        np.random.default_rng([spec.seed, p, 1]).shuffle(layout)
        for w, (well, condition) in enumerate(zip(_inner_wells(len(layout)), layout, strict=True)):
            for site in range(1, spec.sites_per_well + 1):
                stem = f"{plate}/{plate}_{well}_s{site}"
                paths = tuple(f"{stem}_w{k + 1}.tif" for k in range(len(assay.channels)))
                jobs.append(FieldJob(plate, p, well, w, site, str(condition), paths))
    return jobs


def _effects(spec: SynthParams, job: FieldJob, n_channels: int) -> FieldEffects:
    """Plate gain and illumination drawn per plate; a small extra gain per well."""
    plate_rng = np.random.default_rng([spec.seed, job.plate_index, 2])
    well_rng = np.random.default_rng([spec.seed, job.plate_index, 3, job.well_index])
    gain = plate_rng.normal(1.0, 0.05, n_channels) * well_rng.normal(1.0, 0.03, n_channels)
    return FieldEffects(
        channel_gain=tuple(float(g) for g in np.clip(gain, 0.7, 1.3)),
        illumination_centre=(
            float(plate_rng.uniform(0.35, 0.65)),
            float(plate_rng.uniform(0.35, 0.65)),
        ),
        illumination_falloff=float(plate_rng.uniform(0.2, 0.35)),
    )


def well_factors(spec: SynthParams, plate_index: int, well_index: int) -> dict[str, float]:
    """The well's multiplicative factor on each planted parameter of `WELL_SIGMA` (mean 1)."""
    rng = np.random.default_rng([spec.seed, plate_index, 5, well_index])
    return {
        name: float(rng.lognormal(-0.5 * sigma**2, sigma)) for name, sigma in WELL_SIGMA.items()
    }


def _well_model(model: CellModel, factors: dict[str, float]) -> CellModel:
    return replace(model, **{name: getattr(model, name) * f for name, f in factors.items()})


def _render_job(args: tuple[SynthParams, FieldJob, str]) -> tuple[list[dict], dict]:
    spec, job, out = args
    assay = get_assay(spec.assay)
    rng = np.random.default_rng([spec.seed, job.plate_index, 4, job.well_index, job.site])
    condition = assay.condition(job.condition)
    factors = well_factors(spec, job.plate_index, job.well_index)
    image, cells, facts = render_field(
        assay,
        replace(condition, model=_well_model(condition.model, factors)),
        spec.height,
        spec.width,
        spec.cells_per_mpx,
        _effects(spec, job, len(assay.channels)),
        rng,
    )
    for channel_image, rel in zip(image, job.paths, strict=True):
        path = Path(out) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(path, channel_image, photometric="minisblack", metadata=None)
    keys = dict(zip(FIELD_KEYS, (job.plate, job.well, job.site, job.condition), strict=True))
    return [{**keys, **row} for row in cells], facts


def _write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def generate_plates(
    spec: SynthParams,
    out: Path,
    *,
    overwrite: bool = False,
    on_field: Callable[[int, int], None] | None = None,
) -> dict:
    """Generate `spec` into the folder `out` with `spec.workers` processes; returns a summary
    (fields, cells per condition, ...).

    `on_field(done, total)` is called after each field, for progress bars.
    """
    assay = get_assay(spec.assay)
    _check_layout(spec, assay)
    workers = spec.workers
    out = Path(out)
    check_output(out, overwrite, kind=KIND)
    jobs = plan_jobs(spec, assay)

    with staged_output(out, KIND) as staging:
        cell_rows: list[dict] = []
        cells_per_condition = {cond.name: 0 for cond in assay.conditions}
        debris = 0
        args = [(spec, job, str(staging)) for job in jobs]
        results: Iterator[tuple[list[dict], dict]]
        if workers == 1:
            results = map(_render_job, args)
        else:
            pool = ProcessPoolExecutor(max_workers=workers)
            results = pool.map(_render_job, args, chunksize=1)
        try:
            for i, (job, (rows, facts)) in enumerate(zip(jobs, results, strict=True)):
                cell_rows.extend(rows)
                cells_per_condition[job.condition] += facts["cells"]
                debris += facts["debris"]
                if on_field is not None:
                    on_field(i + 1, len(jobs))
        finally:
            if workers > 1:
                pool.shutdown(cancel_futures=True)

        _write_metadata(staging, assay, jobs)
        truth = assay.ground_truth()
        settings = spec.model_dump(exclude={"workers"})  # the bytes do not depend on workers
        truth["generation"] = {"generator_version": GENERATOR_VERSION, **settings}
        write_json(staging / "ground_truth.json", truth)
        _write_csv(staging / "ground_truth_cells.csv", cell_rows, [*FIELD_KEYS, *CELL_COLUMNS])
        _write_wells(staging, spec, assay, jobs)
    summary = {
        "assay": assay.name,
        "out": str(out),
        "fields": len(jobs),
        "plates": spec.plates,
        "wells": spec.plates * spec.wells_per_condition * len(assay.conditions),
        "channels": [ch.name for ch in assay.channels],
        "cells_per_condition": cells_per_condition,
        "debris": debris,
    }
    log.debug("wrote %d fields of assay %s to %s", len(jobs), assay.name, out)
    return summary


def _write_wells(root: Path, spec: SynthParams, assay: Assay, jobs: list[FieldJob]) -> None:
    rows = []
    for job in jobs:
        if job.site != 1:
            continue
        factors = well_factors(spec, job.plate_index, job.well_index)
        model = _well_model(assay.condition(job.condition).model, factors)
        row: dict[str, str | float] = {
            "plate": job.plate,
            "well": job.well,
            "condition": job.condition,
        }
        row.update({f"factor_{name}": round(f, 6) for name, f in factors.items()})
        row.update({name: round(getattr(model, name), 6) for name in factors})
        rows.append(row)
    _write_csv(root / "ground_truth_wells.csv", rows, list(rows[0]))


def _write_metadata(root: Path, assay: Assay, jobs: list[FieldJob]) -> None:
    rows = []
    for job in jobs:
        cond = assay.condition(job.condition)
        row = {
            "plate": job.plate,
            "well": job.well,
            "row": job.well[0],
            "column": int(job.well[1:]),
            "site": job.site,
            "condition": job.condition,
            "treatment": cond.treatment,
            "concentration_um": cond.concentration_um,
        }
        row.update({f"path_{ch.name}": p for ch, p in zip(assay.channels, job.paths, strict=True)})
        rows.append(row)
    _write_csv(root / "metadata.csv", rows, list(rows[0]))
