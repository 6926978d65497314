"""Ingest plates into a crop set: read -> QC -> quarantine -> nuclei -> crops -> crop set.

Two passes over the fields (`phenexplain.data.fields`), each spread over `workers` processes:

1. analyse: decode (unreadable files are quarantined), QC measurements, nucleus detection,
   per-channel histograms (and block means for illumination correction);
2. crop: per-plate scaling to uint8 that clips no condition (and illumination correction),
   nucleus-centred crops (`phenexplain.data.scaling`), and the fraction of crop pixels at 255
   per field and channel.

Between them, per-plate robust z-scores flag blurred fields and an optional `Validator` (the
great-expectations suite, supplied by the CLI and flows from `phenexplain.integrations`) checks
the QC table for structural problems; after pass 2 it checks the crop manifest and warns (in the
log, and in its Data Docs) about conditions whose crops saturate.

Re-running on the same source and params changes nothing; a new (or changed) plate is processed
alone and added, other plates' crops are kept byte for byte.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
from pydantic import BaseModel

from phenexplain import __version__
from phenexplain.config import IngestParams
from phenexplain.data import cropset as cs
from phenexplain.data.fields import (
    Analysis,
    analyse_field,
    check_pixel_types,
    crop_field,
    qc_table,
)
from phenexplain.data.masks import attach_masks
from phenexplain.data.names import source_name, with_printable_names
from phenexplain.data.readers import FieldRecord, StructureError, list_fields
from phenexplain.data.readers.base import PIXEL_SIZE
from phenexplain.data.saturation import (
    condition_saturation,
    saturated_fraction,
    saturation_column,
    saturation_table,
    warn_saturated,
    with_crop_saturation,
)
from phenexplain.data.scaling import corrected_scalings, illumination_files, plate_scalings
from phenexplain.errors import PhenexplainError
from phenexplain.fsutil import (
    check_output,
    file_sha256,
    mark_output,
    staging_dir,
    swap_into_place,
    write_json,
)

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]


class IngestSummary(BaseModel):
    """What an ingest did: the plates it (re)processed and kept, and the new fields, crops and
    quarantined fields (0 when the crop set was up to date)."""

    out: str
    plates_added: list[str]
    plates_kept: list[str]
    fields: int = 0
    crops: int = 0
    quarantined: int = 0


class Validator(Protocol):
    """Checks the tables an ingest produces; raises `StructureError` on structural problems."""

    def check_fields(self, qc: pd.DataFrame, params: IngestParams) -> None: ...

    def check_crops(self, manifest: pd.DataFrame, params: IngestParams) -> None: ...

    def check_saturation(self, saturation: pd.DataFrame, params: IngestParams) -> None:
        """Warn (never raise) about conditions whose crops saturate; `saturation_table` rows."""
        ...

    def write_docs(self, folder: Path) -> None: ...


def _map(fn, items: list, workers: int) -> Iterator:
    if workers == 1 or len(items) < 2:
        yield from map(fn, items)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(fn, items, chunksize=1)


def _plate_fingerprint(records: Iterable[FieldRecord], hashes: dict[Path, str]) -> str:
    """Hash of a plate's field ids, conditions and file contents (ids are valid text: see
    `with_printable_names`), and the channel planes and masks where a field has them, so a
    changed plate gets new crop-set ids."""
    digest = hashlib.sha256()
    for r in records:
        line = f"{r.field_id}|{r.condition}|{'|'.join(hashes[f] for f in r.files)}"
        if r.planes:
            line += f"|planes={','.join(map(str, r.planes))}"
        if r.masks:
            line += f"|masks={'|'.join(hashes[f] for f in r.masks)}"
        digest.update(f"{line}\n".encode())
    return digest.hexdigest()


def _content_sha256(path: Path) -> str:
    """`file_sha256` of a file; of a folder (a Zarr array), the hash of its files' names and
    hashes, so a changed chunk changes it."""
    if not path.is_dir():
        return file_sha256(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(path).as_posix()}|{file_sha256(file)}\n".encode())
    return digest.hexdigest()


def _params_key(params: IngestParams) -> str:
    """Hash of the params that change crops (not `workers`)."""
    dump = params.model_dump_json(exclude={"workers"})
    return hashlib.sha256(dump.encode()).hexdigest()[:16]


def _existing(out: Path, params: IngestParams, overwrite: bool, plates: set[str]) -> dict | None:
    """The crop set already at `out` when it can be extended with the same params, else None.

    Call it holding the output lock. Removes orphan shards; a plate whose shard is missing or
    damaged loses its fingerprint (so it is processed again) when it is among `plates` (those of
    the source); otherwise that is an error.
    """
    if not (out / cs.INFO).is_file() or overwrite:
        check_output(out, overwrite, kind=cs.KIND)
        return None
    meta = cs.read_info(out)
    if meta.params_key != _params_key(params):
        raise StructureError(
            f"{out} holds a crop set built with other ingest params; write to a new folder or "
            "pass --overwrite"
        )
    manifest = cs.read_manifest(out, meta)
    qc = cs.read_table(out / cs.QC_TABLE)
    own = {p.shard: plate for plate, p in meta.plates.items()}
    cs.remove_orphan_shards(out, set(own) | set(manifest["shard"]))
    info = meta.model_dump(exclude_unset=True)
    for shard, problem in cs.shard_problems(out, meta, sorted(own)).items():
        plate = own[shard]
        if plate not in plates:
            raise PhenexplainError(
                f"{cs.shard_path(out, shard)} (plate {plate}): {problem}; ingest the source of "
                f"plate {plate} into {out} again, or rebuild it with --overwrite"
            )
        log.warning("%s (plate %s): %s; processing the plate again", shard, plate, problem)
        info["plates"][plate]["fingerprint"] = None
    return {"info": info, "manifest": manifest, "qc": qc}


def pixel_size(
    records: list[FieldRecord], params: IngestParams, known: float | None
) -> float | None:
    """µm per pixel of the fields: `params.pixel_size_um` when set, else the one every record's
    metadata gives (and `known`, the crop set's so far, agrees with); None when any is missing
    or they differ (logged): a pixel size is never guessed."""
    if params.pixel_size_um is not None:
        return params.pixel_size_um
    sizes = {r.extra.get(PIXEL_SIZE) for r in records}
    if not records or None in sizes or "" in sizes:
        return None
    values = sorted({float(s) for s in sizes if s is not None} | ({known} if known else set()))
    if values[-1] - values[0] > 1e-6 * values[-1]:
        log.warning(
            "pixel sizes differ between fields (%s µm): none recorded; set ingest.pixel_size_um",
            ", ".join(f"{v:g}" for v in values[:5]),
        )
        return None
    return values[0]


def _inputs(records: list[FieldRecord]) -> list[Path]:
    """Every image and mask file (or Zarr array folder) the records read, sorted."""
    return sorted({f for r in records for f in (*r.files, *r.masks)})


def _file_hashes(records: list[FieldRecord], workers: int) -> dict[Path, str]:
    files = _inputs(records)
    with ThreadPoolExecutor(max_workers=max(workers, 1)) as pool:
        return dict(zip(files, pool.map(_content_sha256, files), strict=True))


def _run(fn, items: list, workers: int, stage: str, progress: Progress | None) -> list:
    out = []
    for i, item in enumerate(_map(fn, items, workers), start=1):
        out.append(item)
        if progress is not None:
            progress(stage, i, len(items))
    return out


def ingest(
    source: str | Path,
    out: str | Path,
    params: IngestParams,
    *,
    validator: Validator | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
    lock_timeout: float | None = cs.LOCK_TIMEOUT_S,
) -> IngestSummary:
    """Ingest `source` (read with `params.layout`) into the crop set `out`; returns a summary.

    Raises `StructureError` (nothing written) when the source cannot be ingested as a whole:
    missing files, columns or channels, or a failed structural expectation of `validator`.
    Another ingest into `out` is waited for, at most `lock_timeout` seconds (None: no limit).
    """
    source, out = Path(source), Path(out)
    listed = list_fields(
        source, params.layout, params.channels, condition_column=params.condition_column
    )
    records = with_printable_names(listed, source)
    if params.masks is not None:
        records = attach_masks(records, params)
    missing = sorted({str(f) for f in _inputs(records) if not (f.is_file() or f.is_dir())})
    if missing:
        shown = ", ".join(missing[:10]) + (
            f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        )
        where = f"{source}" + (f" and {params.masks}" if params.masks else "")
        raise StructureError(f"{len(missing)} file(s) listed in {where} do not exist: {shown}")
    inputs = [source, *([Path(params.masks)] if params.masks else []), *_inputs(records)]
    # refuse before the lock file is made next to `out`; checked again under the lock
    check_output(out, overwrite, kind=cs.KIND, inputs=inputs, extend=True)
    with cs.output_lock(out, lock_timeout):
        return _ingest_locked(source, out, inputs, records, params, validator, overwrite, progress)


def _ingest_locked(
    source, out, inputs, records, params, validator, overwrite, progress
) -> IngestSummary:
    """`ingest` once it holds the output lock."""
    foreign = check_output(out, overwrite, kind=cs.KIND, inputs=inputs, extend=True)
    by_plate: dict[str, list[FieldRecord]] = {}
    for r in records:
        by_plate.setdefault(r.plate, []).append(r)
    existing = _existing(out, params, overwrite, set(by_plate))
    hashes = _file_hashes(records, params.workers)
    prints = {p: _plate_fingerprint(rs, hashes) for p, rs in by_plate.items()}
    known = existing["info"]["plates"] if existing else {}
    todo = sorted(p for p in by_plate if known.get(p, {}).get("fingerprint") != prints[p])
    summary = IngestSummary(
        out=str(out), plates_added=todo, plates_kept=sorted(set(known) - set(todo))
    )
    if not todo:
        if existing:  # up to date only if it also opens
            cs.read_conditions(out, existing["manifest"])
        log.info("crop set %s is up to date", out)
        return summary

    analyses = _run(
        analyse_field,
        [(r, params) for p in todo for r in by_plate[p]],
        params.workers,
        "analyse",
        progress,
    )
    qc_new = qc_table(analyses, source, params)
    keep = lambda df: df[~df["plate"].isin(todo)] if existing else df.iloc[0:0]  # noqa: E731
    qc = pd.concat([keep(existing["qc"]) if existing else None, qc_new], ignore_index=True)
    if validator is not None:
        validator.check_fields(qc, params)
    check_pixel_types(analyses, source)

    dest = out if existing else staging_dir(out, cs.KIND)
    try:
        plates_info, manifest_new, new_shards, cropped = _crop_plates(
            analyses, qc_new, params, dest, prints, progress, source
        )
        qc = with_crop_saturation(qc, qc_new["field_id"], cropped)
        saturation = condition_saturation(qc, list(params.channels))
        warn_saturated(saturation, params)
        plates = {**{p: v for p, v in known.items() if p not in todo}, **plates_info}
        every_shard = {**(existing["info"]["shards"] if existing else {}), **new_shards}
        if existing:  # record the new shards before the manifest refers to them
            write_json(dest / cs.INFO, {**existing["info"], "shards": every_shard})
        manifest = pd.concat(
            [keep(existing["manifest"]) if existing else None, manifest_new], ignore_index=True
        )
        if manifest.empty:
            raise StructureError(
                f"no crops were produced from {source}; check the quarantine list "
                "(quarantine.csv of a partial run is not written) and the nucleus settings "
                "(ingest.nuclei in params.yaml), or the crop size against the field size"
            )
        if validator is not None:
            validator.check_crops(manifest, params)
        info = {
            "format_version": cs.FORMAT_VERSION,
            "phenexplain_version": __version__,
            "source": str(source),
            "layout": params.layout,
            "nuclei": None if params.precropped else ("supplied" if params.masks else "segmented"),
            "channels": list(params.channels),
            "crop_size": _crop_size(analyses, params),
            "pixel_size_um": pixel_size(
                records, params, existing["info"].get("pixel_size_um") if existing else None
            ),
            "params": params.model_dump(exclude={"workers"}),
            "params_key": _params_key(params),
            "plates": plates,
            "shards": {v["shard"]: every_shard[v["shard"]] for v in plates.values()},
            "saturation": saturation,
        }
        cs.write_table(manifest, dest / cs.MANIFEST)
        cs.write_table(qc, dest / cs.QC_TABLE)
        quarantine = qc.loc[qc["status"] == "quarantined", QUARANTINE_COLUMNS]
        cs.write_table(quarantine, dest / cs.QUARANTINE)
        write_json(dest / cs.CONDITIONS, cs.condition_index(manifest["condition"]))
        write_json(dest / cs.INFO, info)
        if validator is not None:
            validator.check_saturation(saturation_table(saturation), params)
            validator.write_docs(dest / "report" / "data_docs")
    except BaseException:
        if dest is not out:
            shutil.rmtree(dest, ignore_errors=True)
        raise
    if dest is not out:
        swap_into_place(dest, out)
    else:
        mark_output(out, cs.KIND, exclude=foreign)
    for plate in todo:  # shards of re-processed plates are replaced by new names
        old = known.get(plate, {}).get("shard")
        if old and old != plates_info.get(plate, {}).get("shard"):
            (out / "images" / f"{old}.npy").unlink(missing_ok=True)
    n_quarantined = int((qc_new["status"] == "quarantined").sum())
    log.info(
        "ingested %d plate(s): %d crops, %d field(s) quarantined",
        len(todo),
        len(manifest_new),
        n_quarantined,
    )
    return summary.model_copy(
        update={"fields": len(qc_new), "crops": len(manifest_new), "quarantined": n_quarantined}
    )


QUARANTINE_COLUMNS = ["field_id", "plate", "well", "site", "condition", "files", "reasons"]


def _crop_size(analyses: list[Analysis], params: IngestParams) -> int:
    if not params.precropped:
        return params.crop_size
    sizes = {a.shape for a in analyses if a.shape}
    return int(max(max(s) for s in sizes)) if sizes else params.crop_size


def _crop_plates(analyses, qc, params, dest: Path, prints, progress, source: Path):
    """Pass 2 for the good fields of the analysed plates; writes shards, returns their plates'
    info, manifest rows and shard records."""
    scaling = plate_scalings(analyses, qc, params)
    illum: dict[str, str] = {}
    if params.illumination_correction:
        illum = illumination_files(analyses, qc, dest / "illumination")
        scaling = corrected_scalings(analyses, qc, params, illum)
    ok = set(qc.loc[qc["status"] == "ok", "field_id"])
    good = [a for a in analyses if a.record.field_id in ok]
    items = [
        (a.record, params, a.centres, scaling[a.record.plate], illum.get(a.record.plate))
        for a in good
    ]
    results = _run(crop_field, items, params.workers, "crop", progress)
    parts_of: dict[str, list[np.ndarray]] = {}
    rows, info, shards, cropped = [], {}, {}, {}
    for a, (crops, kept, origins) in zip(good, results, strict=True):
        r = a.record
        cropped[r.field_id] = [len(crops), *saturated_fraction(crops)]
        name = f"{cs.shard_name(r.plate)}-{prints[r.plate][:8]}"
        shard = parts_of.setdefault(r.plate, [])
        base = sum(len(c) for c in shard)
        shard.append(crops)
        lows_highs = scaling[r.plate]
        for k, (i, (top, left)) in enumerate(zip(kept, origins, strict=True)):
            y, x = a.centres[i] if len(a.centres) else (a.shape[0] / 2, a.shape[1] / 2)
            row = {
                "crop_id": f"{r.field_id}#{int(i):04d}",
                "shard": name,
                "index": base + k,
                "field_id": r.field_id,
                "plate": r.plate,
                "well": r.well,
                "site": r.site,
                "condition": r.condition,
                "y": float(y),
                "x": float(x),
                "top": int(top),
                "left": int(left),
            }
            for ch, (lo, hi) in zip(params.channels, lows_highs, strict=True):
                row[f"scale_low_{ch}"], row[f"scale_high_{ch}"] = lo, hi
            row["illumination_corrected"] = r.plate in illum
            row["checksum"] = cs.crop_checksum(crops[k])
            row["files"] = ";".join(source_name(f, source) for f in r.files)
            row.update({key: val for key, val in r.extra.items() if key not in row})
            rows.append(row)
    for plate in sorted({a.record.plate for a in analyses}):
        name = f"{cs.shard_name(plate)}-{prints[plate][:8]}"
        parts = parts_of.get(plate, [])
        size = _crop_size(analyses, params)
        crops = (
            np.concatenate(parts)
            if parts
            else np.zeros((0, len(params.channels), size, size), np.uint8)
        )
        shards[name] = cs.write_shard(dest, name, crops).model_dump()
        plate_qc = qc[qc["plate"] == plate]
        info[plate] = {
            "fingerprint": prints[plate],
            "shard": name,
            "scaling": {
                ch: list(v) for ch, v in zip(params.channels, scaling.get(plate, []), strict=False)
            },
            "illumination": os.path.relpath(illum[plate], dest) if plate in illum else None,
            "fields": len(plate_qc),
            "quarantined": int((plate_qc["status"] == "quarantined").sum()),
            "crops": len(crops),
        }
    columns = ["Count_Crops", *(saturation_column(ch) for ch in params.channels)]
    per_field = pd.DataFrame.from_dict(cropped, "index", columns=columns)
    return info, pd.DataFrame(rows), shards, per_field
