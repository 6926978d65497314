"""Ingest plates into a crop set: read -> QC -> quarantine -> nuclei -> crops -> crop set.

Two passes over the fields, each spread over `workers` processes:

1. analyse: decode (unreadable files are quarantined), QC measurements, nucleus detection,
   per-channel histograms (and block means for illumination correction);
2. crop: per-plate scaling to uint8 that clips no condition (and illumination correction),
   nucleus-centred crops, and the fraction of crop pixels at 255 per field and channel.

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
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from phenexplain import __version__
from phenexplain.config import IngestParams
from phenexplain.data import cropset as cs
from phenexplain.data.crops import (
    block_mean,
    centroids,
    cut,
    illumination_function,
    percentiles_from_histogram,
    plate_scaling,
    to_uint8,
)
from phenexplain.data.images import UnreadableImageError, load_field
from phenexplain.data.nuclei import segment_nuclei
from phenexplain.data.qc import field_quality, robust_z
from phenexplain.data.readers import FieldRecord, StructureError, list_fields
from phenexplain.data.saturation import (
    condition_saturation,
    saturated_fraction,
    saturation_column,
    saturation_table,
    warn_saturated,
    with_crop_saturation,
)
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


class Validator(Protocol):
    """Checks the tables an ingest produces; raises `StructureError` on structural problems."""

    def check_fields(self, qc: pd.DataFrame, params: IngestParams) -> None: ...

    def check_crops(self, manifest: pd.DataFrame, params: IngestParams) -> None: ...

    def check_saturation(self, saturation: pd.DataFrame, params: IngestParams) -> None:
        """Warn (never raise) about conditions whose crops saturate; `saturation_table` rows."""
        ...

    def write_docs(self, folder: Path) -> None: ...


@dataclass
class Analysis:
    """Pass-1 result for one field."""

    record: FieldRecord
    reasons: list[str]
    qc: dict[str, float] = field(default_factory=dict)
    shape: tuple[int, int] | None = None
    dtype: str | None = None
    centres: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    hist: np.ndarray | None = None
    small: np.ndarray | None = None


def _analyse(args: tuple[FieldRecord, IngestParams]) -> Analysis:
    record, params = args
    result = Analysis(record=record, reasons=[])
    try:
        image = load_field(record.files, len(params.channels), params.max_megapixels)
    except UnreadableImageError as exc:
        result.reasons.append(f"unreadable: {exc}")
        return result
    result.shape, result.dtype = image.shape[1:], str(image.dtype)
    result.qc = field_quality(image, params.channels, params.dna_channel)
    dna = image[params.channels.index(params.dna_channel)]
    if int(dna.max()) == int(dna.min()):
        result.reasons.append("blank field: the DNA channel is constant")
    else:
        saturated = [
            f"{ch} ({result.qc[f'ImageQuality_PercentMaximal_{ch}']:.2g}% at maximum)"
            for ch in params.channels
            if result.qc[f"ImageQuality_PercentMaximal_{ch}"] > params.qc.saturation_percent
        ]
        if saturated:
            result.reasons.append("saturated: " + ", ".join(saturated))
    if not params.precropped:
        labels = np.zeros(dna.shape, np.int32)
        if not result.reasons:
            labels = segment_nuclei(dna, **params.nuclei.model_dump())
        result.centres = centroids(labels)
        result.qc["Count_Nuclei"] = float(len(result.centres))
        result.qc[f"ForegroundFraction_{params.dna_channel}"] = float(np.mean(labels > 0))
        if not result.reasons and len(result.centres) < params.qc.min_nuclei:
            result.reasons.append(
                f"no nuclei: {len(result.centres)} found, {params.qc.min_nuclei} needed"
            )
    bins = 256 if image.dtype == np.uint8 else 65536
    result.hist = np.stack([np.bincount(p.ravel(), minlength=bins) for p in image])
    if params.illumination_correction:
        result.small = block_mean(image)
    return result


@lru_cache(maxsize=4)
def _illumination(path: str) -> np.ndarray:
    return np.load(path, allow_pickle=False)


def _crop(
    args: tuple[FieldRecord, IngestParams, np.ndarray, list[tuple[float, float]], str | None],
):
    record, params, centres, scaling, illum_path = args
    image = load_field(record.files, len(params.channels), params.max_megapixels)
    source = image
    if illum_path is not None:
        source = image / _illumination(illum_path)
    if image.dtype == np.uint8 and illum_path is None:
        scaled = image
    else:
        scaled = np.stack(
            [to_uint8(p, lo, hi) for p, (lo, hi) in zip(source, scaling, strict=True)]
        )
    if params.precropped:
        return scaled[None], np.zeros(1, int), np.zeros((1, 2), int)
    return cut(scaled, centres, params.crop_size, params.border)


def _map(fn, items: list, workers: int) -> Iterator:
    if workers == 1 or len(items) < 2:
        yield from map(fn, items)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(fn, items, chunksize=1)


def _plate_fingerprint(records: Iterable[FieldRecord], hashes: dict[Path, str]) -> str:
    """Hash of a plate's field ids, conditions and file contents (ids are valid text: see
    `_with_printable_names`), so a changed plate gets new crop-set ids."""
    digest = hashlib.sha256()
    for r in records:
        digest.update(
            f"{r.field_id}|{r.condition}|{'|'.join(hashes[f] for f in r.files)}\n".encode()
        )
    return digest.hexdigest()


def _params_key(params: IngestParams) -> str:
    """Hash of the params that change crops (not `workers`)."""
    dump = params.model_dump_json(exclude={"workers"})
    return hashlib.sha256(dump.encode()).hexdigest()[:16]


def _rel(path: Path, root: Path) -> str:
    """`path` relative to the source folder when it lies inside, else as it is (printable)."""
    base = Path(os.path.abspath(root if root.is_dir() else root.parent))
    try:
        return _printable(Path(os.path.abspath(path)).relative_to(base).as_posix())
    except ValueError:
        return _printable(path.as_posix())


def _printable(name: str) -> str:
    r"""`name` as valid UTF-8 text: bytes of a file name that are not UTF-8 become ``\xNN``.

    Python keeps such bytes as lone surrogates (PEP 383), which parquet and JSON cannot store.
    Valid text is returned unchanged, so ordinary names, fingerprints and ids stay the same.
    """
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(name).decode("utf-8", "backslashreplace")
    return name


def _with_printable_names(records: list[FieldRecord], source: Path) -> list[FieldRecord]:
    """`records` with printable ids, plates, wells and conditions; the file paths are kept.

    Readers of CSVs yield valid text; names taken from the file system (the ``folders`` layout)
    may not be.
    """
    out = [
        replace(
            r,
            field_id=_printable(r.field_id),
            plate=_printable(r.plate),
            well=_printable(r.well),
            condition=_printable(r.condition),
        )
        for r in records
    ]
    renamed = [new for old, new in zip(records, out, strict=True) if new != old]
    if not renamed:
        return records
    log.warning(
        "%d field(s) of %s have names that are not valid UTF-8; they are recorded with \\xNN "
        "escapes (e.g. plate %s, field %s)",
        len(renamed),
        source,
        renamed[0].plate,
        renamed[0].field_id,
    )
    seen: set[str] = set()
    for r in out:
        if r.field_id in seen:
            raise StructureError(
                f"{source}: two fields are both named {r.field_id!r} once bytes that are not "
                "UTF-8 are written as \\xNN; rename one of the files"
            )
        seen.add(r.field_id)
    return out


def _qc_table(analyses: list[Analysis], root: Path, params: IngestParams) -> pd.DataFrame:
    """One row per field: keys, files, size, QC measurements, z-scores, status and reasons."""
    rows = []
    for a in analyses:
        r = a.record
        rows.append(
            {
                "field_id": r.field_id,
                "plate": r.plate,
                "well": r.well,
                "site": r.site,
                "condition": r.condition,
                "files": ";".join(_rel(f, root) for f in r.files),
                "height": a.shape[0] if a.shape else None,
                "width": a.shape[1] if a.shape else None,
                "dtype": a.dtype,
                **a.qc,
                "reasons": list(a.reasons),
            }
        )
    qc = pd.DataFrame(rows)
    slope = f"ImageQuality_PowerLogLogSlope_{params.dna_channel}"
    qc[f"{slope}_z"] = np.nan
    if slope in qc:
        for _, idx in qc.groupby("plate").groups.items():
            good = [i for i in idx if not qc.at[i, "reasons"]]
            if len(good) < params.qc.min_fields_for_z:
                continue
            z = robust_z(qc.loc[good, slope].to_numpy(float))
            qc.loc[good, f"{slope}_z"] = z
            for i, zi in zip(good, z, strict=True):
                if zi < -params.qc.blur_z:
                    qc.at[i, "reasons"] = [f"blurred: PowerLogLogSlope robust z = {zi:.1f}"]
    qc["status"] = np.where(qc["reasons"].map(bool), "quarantined", "ok")
    qc["reasons"] = qc["reasons"].map("; ".join)
    return qc


def _check_pixel_types(analyses: list[Analysis], source: Path) -> None:
    """Refuse a plate whose readable fields mix bit depths: one percentile scaling per plate and
    channel cannot fit both (8-bit fields would come out black under 16-bit percentiles)."""
    for plate in sorted({a.record.plate for a in analyses}):
        first: dict[str, Path] = {}
        for a in analyses:
            if a.record.plate == plate and a.dtype is not None:
                first.setdefault(a.dtype, a.record.files[0])
        if len(first) > 1:
            listed = ", ".join(f"{t} (e.g. {_rel(f, source)})" for t, f in sorted(first.items()))
            raise StructureError(
                f"plate {plate!r} mixes fields of pixel types {listed}; export the plate at one "
                "bit depth"
            )


def _scaling(analyses: list[Analysis], qc: pd.DataFrame, params: IngestParams) -> dict[str, list]:
    """Per plate and channel: (low, high) from each condition's percentiles over its good fields
    (see `plate_scaling`)."""
    ok = set(qc.loc[qc["status"] == "ok", "field_id"])
    out: dict[str, list] = {}
    for plate in sorted({a.record.plate for a in analyses}):
        good = [a for a in analyses if a.record.plate == plate and a.record.field_id in ok]
        if not good:
            continue
        if good[0].hist.shape[1] == 256 and not params.illumination_correction:
            out[plate] = [(0.0, 255.0)] * len(params.channels)  # 8-bit sources are kept as they are
            continue
        totals = [
            np.sum([a.hist for a in good if a.record.condition == c], axis=0)
            for c in sorted({a.record.condition for a in good})
        ]  # one [C, bins] histogram per condition
        out[plate] = [
            plate_scaling([percentiles_from_histogram(t[ch], params.percentiles) for t in totals])
            for ch in range(len(params.channels))
        ]
    return out


def _illumination_files(analyses, qc, folder: Path) -> dict[str, str]:
    """Per plate: the saved illumination profile [C, H, W] computed from its good fields."""
    ok = set(qc.loc[qc["status"] == "ok", "field_id"])
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for plate in sorted({a.record.plate for a in analyses}):
        good = [a for a in analyses if a.record.plate == plate and a.record.field_id in ok]
        if not good:
            continue
        profile = illumination_function(np.mean([a.small for a in good], axis=0), good[0].shape)
        path = folder / f"{cs.shard_name(plate)}.npy"
        np.save(path, profile)
        out[plate] = str(path)
    return out


def _corrected_scaling(analyses, qc, params, illum: dict[str, str]) -> dict[str, list]:
    """`_scaling` of illumination-corrected good fields (a third read of those fields)."""
    ok = set(qc.loc[qc["status"] == "ok", "field_id"])
    out = {}
    for plate, path in illum.items():
        profile = np.load(path)
        values: dict[str, list[list[np.ndarray]]] = {}
        for a in analyses:
            if a.record.plate == plate and a.record.field_id in ok:
                image = (
                    load_field(a.record.files, len(params.channels), params.max_megapixels)
                    / profile
                )
                planes = values.setdefault(a.record.condition, [[] for _ in params.channels])
                for c, plane in enumerate(image):
                    planes[c].append(plane[::4, ::4].ravel())
        out[plate] = [
            plate_scaling(
                [
                    tuple(float(v) for v in np.percentile(np.concatenate(p[c]), params.percentiles))
                    for p in values.values()
                ]
            )
            for c in range(len(params.channels))
        ]
    return out


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


def _file_hashes(records: list[FieldRecord], workers: int) -> dict[Path, str]:
    files = sorted({f for r in records for f in r.files})
    with ThreadPoolExecutor(max_workers=max(workers, 1)) as pool:
        return dict(zip(files, pool.map(file_sha256, files), strict=True))


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
) -> dict:
    """Ingest `source` (read with `params.layout`) into the crop set `out`; returns a summary.

    Raises `StructureError` (nothing written) when the source cannot be ingested as a whole:
    missing files, columns or channels, or a failed structural expectation of `validator`.
    Another ingest into `out` is waited for, at most `lock_timeout` seconds (None: no limit).
    """
    source, out = Path(source), Path(out)
    records = _with_printable_names(list_fields(source, params.layout, params.channels), source)
    missing = sorted({str(f) for r in records for f in r.files if not f.is_file()})
    if missing:
        shown = ", ".join(missing[:10]) + (
            f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        )
        raise StructureError(f"{len(missing)} file(s) listed in {source} do not exist: {shown}")
    inputs = [source, *sorted({f for r in records for f in r.files})]
    # refuse before the lock file is made next to `out`; checked again under the lock
    check_output(out, overwrite, kind=cs.KIND, inputs=inputs, extend=True)
    with cs.output_lock(out, lock_timeout):
        return _ingest_locked(source, out, inputs, records, params, validator, overwrite, progress)


def _ingest_locked(source, out, inputs, records, params, validator, overwrite, progress) -> dict:
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
    summary = {"out": str(out), "plates_added": todo, "plates_kept": sorted(set(known) - set(todo))}
    if not todo:
        if existing:  # up to date only if it also opens
            cs.read_conditions(out, existing["manifest"])
        log.info("crop set %s is up to date", out)
        return {**summary, "fields": 0, "crops": 0, "quarantined": 0}

    analyses = _run(
        _analyse,
        [(r, params) for p in todo for r in by_plate[p]],
        params.workers,
        "analyse",
        progress,
    )
    qc_new = _qc_table(analyses, source, params)
    keep = lambda df: df[~df["plate"].isin(todo)] if existing else df.iloc[0:0]  # noqa: E731
    qc = pd.concat([keep(existing["qc"]) if existing else None, qc_new], ignore_index=True)
    if validator is not None:
        validator.check_fields(qc, params)
    _check_pixel_types(analyses, source)

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
            "channels": list(params.channels),
            "crop_size": _crop_size(analyses, params),
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
    return {
        **summary,
        "fields": len(qc_new),
        "crops": len(manifest_new),
        "quarantined": n_quarantined,
    }


QUARANTINE_COLUMNS = ["field_id", "plate", "well", "site", "condition", "files", "reasons"]


def _crop_size(analyses: list[Analysis], params: IngestParams) -> int:
    if not params.precropped:
        return params.crop_size
    sizes = {a.shape for a in analyses if a.shape}
    return int(max(max(s) for s in sizes)) if sizes else params.crop_size


def _crop_plates(analyses, qc, params, dest: Path, prints, progress, source: Path):
    """Pass 2 for the good fields of the analysed plates; writes shards, returns their plates'
    info, manifest rows and shard records."""
    scaling = _scaling(analyses, qc, params)
    illum: dict[str, str] = {}
    if params.illumination_correction:
        illum = _illumination_files(analyses, qc, dest / "illumination")
        scaling = _corrected_scaling(analyses, qc, params, illum)
    ok = set(qc.loc[qc["status"] == "ok", "field_id"])
    good = [a for a in analyses if a.record.field_id in ok]
    items = [
        (a.record, params, a.centres, scaling[a.record.plate], illum.get(a.record.plate))
        for a in good
    ]
    results = _run(_crop, items, params.workers, "crop", progress)
    rows, parts_of, info, shards, cropped = [], {}, {}, {}, {}
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
            row["files"] = ";".join(_rel(f, source) for f in r.files)
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
