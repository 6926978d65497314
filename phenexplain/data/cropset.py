"""The crop set on disk, and a dataset view of it that a torch DataLoader can use.

```
OUT/
  cropset.json          format version, channels, crop size, resolved ingest params, per-plate
                        fingerprint, scaling and counts
  conditions.json       sorted condition names -> class index
  manifest.parquet      one row per crop: crop_id, shard, index, field_id, plate, well, site,
                        condition, y, x (centroid in the field), top, left, scale_low_<ch>,
                        scale_high_<ch>, checksum (sha256 of the crop's bytes), files, extras
  images/<plate>.npy    uint8 [N, C, S, S], memory-mapped on read
  qc.parquet            one row per field, every field (quarantined ones included)
  quarantine.csv        field_id, plate, well, site, condition, files, reasons
  report/data_docs/     great-expectations Data Docs (written by the CLI and flows)
```
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from phenexplain.errors import PhenexplainError
from phenexplain.fsutil import user_cache
from phenexplain.fsutil import safe_name

FORMAT_VERSION = 1
MANIFEST = "manifest.parquet"
QC_TABLE = "qc.parquet"
QUARANTINE = "quarantine.csv"
INFO = "cropset.json"
CONDITIONS = "conditions.json"
KIND = "crop set"  # the kind in the folder's output marker (see fsutil)


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
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    if path.suffix == ".csv":
        df.to_csv(tmp, index=False, lineterminator="\n")
    else:
        df.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def write_shard(folder: Path, name: str, crops: np.ndarray) -> None:
    """Save a plate's crops [N, C, S, S] uint8 as images/<name>.npy, atomically."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    path = folder / "images" / f"{name}.npy"
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("wb") as fh:
        np.save(fh, np.ascontiguousarray(crops, dtype=np.uint8))
    os.replace(tmp, path)


class CropSet:
    """Read access to a crop set: ``len``, ``cs[i] -> (uint8 [C, S, S], class index)``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        info_path = self.root / INFO
        if not info_path.is_file():
            raise PhenexplainError(f"{self.root} is not a crop set ({INFO} missing); run `phenexplain ingest`")
        self.info = json.loads(info_path.read_text())
        if self.info.get("format_version") != FORMAT_VERSION:
            raise PhenexplainError(
                f"{info_path}: format version {self.info.get('format_version')} is not {FORMAT_VERSION}"
            )
        self.conditions: dict[str, int] = json.loads((self.root / CONDITIONS).read_text())
        self.manifest = pd.read_parquet(self.root / MANIFEST)
        self._shards: dict[str, np.ndarray] = {}
        self._shard = self.manifest["shard"].to_numpy()
        self._index = self.manifest["index"].to_numpy()
        self.labels = self.manifest["condition"].map(self.conditions).to_numpy(dtype=np.int64)

    @property
    def channels(self) -> list[str]:
        return list(self.info["channels"])

    @property
    def resolution(self) -> int:
        return int(self.info["crop_size"])

    def __len__(self) -> int:
        return len(self.manifest)

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
            self._shards[name] = np.load(self.root / "images" / f"{name}.npy", mmap_mode="r", allow_pickle=False)
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
