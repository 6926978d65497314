"""The crop set on disk, and a dataset view of it that a torch DataLoader can use.

```
OUT/
  cropset.json          format version, channels, crop size, resolved ingest params, per-plate
                        fingerprint, scaling and counts, per-shard sha256 and length
  conditions.json       sorted condition names -> class index
  manifest.parquet      one row per crop: crop_id, shard, index, field_id, plate, well, site,
                        condition, y, x (centroid in the field), top, left, scale_low_<ch>,
                        scale_high_<ch>, checksum (sha256 of the crop's bytes), files, extras
  images/<plate>.npy    uint8 [N, C, S, S], memory-mapped on read
  qc.parquet            one row per field, every field (quarantined ones included)
  quarantine.csv        field_id, plate, well, site, condition, files, reasons
  report/data_docs/     great-expectations Data Docs (written by the CLI and flows)
.OUT.lock               held by whoever writes OUT (next to it, so it also guards a new OUT)
```

Opening a crop set checks all of it (see `phenexplain.data.cropset_files`).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

from phenexplain.data.cropset_files import (  # noqa: F401 (the crop set's file names live here too)
    CONDITIONS,
    FORMAT_VERSION,
    INFO,
    MANIFEST,
    QC_TABLE,
    QUARANTINE,
    SHARD_NAME,
    CropSetInfo,
    ShardRecord,
    check_shards,
    read_conditions,
    read_info,
    read_manifest,
    read_table,
    shard_path,
    shard_problems,
)
from phenexplain.errors import PhenexplainError
from phenexplain.fsutil import (
    atomic_path,
    check_output,
    file_lock,
    file_sha256,
    safe_name,
    staged_output,
    user_cache,
    write_json,
)

KIND = "crop set"  # the kind in the folder's output marker (see fsutil)

log = logging.getLogger(__name__)

LOCK_TIMEOUT_S = 600.0
# what ingest and import-stylegan name their shards (shard_name, then an optional fingerprint)
OUR_SHARD = re.compile(rf"{SHARD_NAME}-[0-9a-f]{{8}}\.npy")
OUR_TEMPORARY_SHARD = re.compile(rf"\.{SHARD_NAME}-[0-9a-f]{{8}}\.npy\.tmp-[0-9]+")


def shard_name(plate: str) -> str:
    """A file-system-safe, collision-free shard name for a plate id (see `fsutil.safe_name`)."""
    return safe_name(plate, fallback="plate")


def crop_checksum(crop: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(crop).tobytes()).hexdigest()


def condition_index(names) -> dict[str, int]:
    """Sorted names -> index (the paper's tooling's convention; never file order)."""
    return {name: i for i, name in enumerate(sorted(set(names)))}


def write_table(df: pd.DataFrame, path: Path) -> None:
    """Parquet (or CSV by suffix), written atomically."""
    with atomic_path(path) as tmp:
        if path.suffix == ".csv":
            df.to_csv(tmp, index=False, lineterminator="\n")
        else:
            df.to_parquet(tmp, index=False)


def write_shard(folder: Path, name: str, crops: np.ndarray) -> ShardRecord:
    """Save a plate's crops [N, C, S, S] uint8 as images/<name>.npy, atomically; returns the
    record of it that cropset.json keeps (``shards[name]``)."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    path = shard_path(folder, name)
    with atomic_path(path) as tmp:
        with tmp.open("wb") as fh:
            np.save(fh, np.ascontiguousarray(crops, dtype=np.uint8))
        record = ShardRecord(sha256=file_sha256(tmp), crops=len(crops))
    return record


def output_lock(out: Path, timeout: float | None = LOCK_TIMEOUT_S):
    """Held while a crop set `out` is written: ``.<name>.lock`` next to it (its parent is made)."""
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PhenexplainError(
            f"cannot create the parent folder {out.parent}: {exc.strerror}"
        ) from None
    return file_lock(
        out.parent / f".{out.name}.lock",
        timeout=timeout,
        busy=f"another process is writing the crop set {out}",
    )


def write_cropset(
    out: Path,
    shard: str,
    crops: np.ndarray,
    manifest: pd.DataFrame,
    info: dict,
    *,
    inputs: list,
    overwrite: bool = False,
    tables: dict[str, pd.DataFrame] | None = None,
) -> None:
    """A crop set of one shard written to `out` in one staged swap, under `output_lock`: the
    shard, `manifest` (its rows in shard order), `tables` (file name -> table, e.g.
    quarantine.csv), conditions.json from the manifest, and cropset.json: `info` (source,
    layout, channels, plates, params) with the format and phenexplain versions, the crop size and
    the shard's record. `out` is checked again once the lock is held (another writer may have
    made it since the caller's check)."""
    from phenexplain import __version__

    with output_lock(out):
        check_output(out, overwrite, kind=KIND, inputs=inputs)
        with staged_output(out, KIND) as staging:
            record = write_shard(staging, shard, crops)
            write_table(manifest, staging / MANIFEST)
            for name, table in (tables or {}).items():
                write_table(table, staging / name)
            write_json(staging / CONDITIONS, condition_index(manifest["condition"]))
            write_json(
                staging / INFO,
                {"format_version": FORMAT_VERSION, "phenexplain_version": __version__, **info,
                 "crop_size": int(crops.shape[-1]), "shards": {shard: record.model_dump()}},
            )  # fmt: skip


def remove_orphan_shards(root: Path, referenced: set[str]) -> list[str]:
    """Delete the shards of ours in root/images that `referenced` (shard names) does not hold,
    and temporary shards left by a killed writer; call it holding `output_lock`. Other files
    are never touched. Returns the names removed."""
    images = root / "images"
    if not images.is_dir():
        return []
    removed = []
    for path in sorted(images.iterdir()):
        ours = OUR_SHARD.fullmatch(path.name) and path.name[: -len(".npy")] not in referenced
        if (ours or OUR_TEMPORARY_SHARD.fullmatch(path.name)) and path.is_file():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            removed.append(path.name)
    if removed:
        log.info("removed %d orphan shard(s) from %s: %s", len(removed), images, ", ".join(removed))
    return removed


class CropSet:
    """Read access to a crop set: ``len``, ``cs[i] -> (uint8 [C, S, S], class index)``.

    Opening checks the metadata (`read_info`, `read_manifest`, `read_conditions`) and every
    shard's header and sha256 (`check_shards`, cached), and raises `PhenexplainError` naming the
    file when anything is missing, damaged or inconsistent.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.metadata: CropSetInfo = read_info(self.root)
        self.info = self.metadata.model_dump(exclude_unset=True)
        self.manifest = read_manifest(self.root, self.metadata)
        self.conditions: dict[str, int] = read_conditions(self.root, self.manifest)
        check_shards(self.root, self.metadata, self.manifest["shard"].unique())
        self._shards: dict[str, np.ndarray] = {}
        self._shard = self.manifest["shard"].to_numpy()
        self._index = self.manifest["index"].to_numpy()
        self.labels = self.manifest["condition"].map(self.conditions).to_numpy(dtype=np.int64)

    @property
    def channels(self) -> list[str]:
        return list(self.metadata.channels)

    @property
    def resolution(self) -> int:
        return self.metadata.crop_size

    def pixel_size_um(self, resolution: int | None = None) -> float | None:
        """µm per pixel of the crops resized to `resolution` (None: as stored), when the
        fields' pixel size is known."""
        size = self.metadata.pixel_size_um
        if size is None:
            return None
        return size * self.metadata.crop_size / (resolution or self.metadata.crop_size)

    def __len__(self) -> int:
        return len(self.manifest)

    @property
    def concentrations(self) -> dict[str, float]:
        """`concentration_um` of each condition that records one (the manifest's first value)."""
        if "concentration_um" not in self.manifest:
            return {}
        dose = self.manifest.groupby("condition")["concentration_um"].first().dropna()
        return {str(k): float(v) for k, v in dose.items()}

    @property
    def content_id(self) -> str:
        """Identity of the crops: hash of every crop checksum, in order."""
        return hashlib.sha256("\n".join(self.manifest["checksum"]).encode()).hexdigest()[:16]

    @property
    def cache_dir(self) -> Path:
        """Per-crop-set cache for derived data (extractors, reference statistics), outside the
        crop set so a DVC-tracked crop set stays untouched: $PHENEXPLAIN_CACHE or ~/.cache."""
        return user_cache("cropsets", self.content_id)

    def shard(self, name: str) -> np.ndarray:
        if name not in self._shards:
            self._shards[name] = np.load(
                shard_path(self.root, name), mmap_mode="r", allow_pickle=False
            )
        return self._shards[name]

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        return np.asarray(self.shard(self._shard[i])[self._index[i]]), int(self.labels[i])

    def verify(self) -> list[str]:
        """crop_ids whose bytes no longer match their recorded checksum."""
        bad = []
        for i, crop_id in enumerate(self.manifest["crop_id"]):
            if crop_checksum(self[i][0]) != self.manifest["checksum"].iat[i]:
                bad.append(crop_id)
        return bad
