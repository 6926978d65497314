"""The files of a crop set, read and checked: typed metadata, the manifest, shard headers and bytes.

Every reader of a crop set (`CropSet`, and ingest when it extends one) goes through these, so a
crop set is either what was written or refused with one line naming the file and what to do.

- ``cropset.json``: typed (`CropSetInfo`); one sha256 per shard (``shards``) since format 2.
- ``conditions.json``: the manifest's conditions, sorted, onto 0..K-1 (`condition_index`).
- ``manifest.parquet``: required columns and their types; each row's shard is recorded in
  ``cropset.json``; the rows of a shard are its crops in order (index 0..n-1, n its length).
- ``images/<shard>.npy``: a safe file name; header uint8 [N, C, S, S] with the recorded N,
  channels and crop size; bytes matching the recorded sha256. Hashes already checked are cached
  by file identity (size, mtime, ctime, inode) outside the crop set, so re-opening hashes nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import reprlib
from pathlib import Path
from tokenize import TokenError
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from phenexplain import fsutil
from phenexplain.errors import PhenexplainError

log = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: cropset.json records a sha256 per shard
MANIFEST = "manifest.parquet"
QC_TABLE = "qc.parquet"
QUARANTINE = "quarantine.csv"
INFO = "cropset.json"
CONDITIONS = "conditions.json"
SHARD_NAME = r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}"  # a plain file name in images/, no dot first
REINGEST = "ingest its source again (into a new folder, or with --overwrite)"

_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 120
_short = _repr.repr  # values and library messages quoted in errors, shortened

ShardName = Annotated[str, StringConstraints(pattern=f"^{SHARD_NAME}$")]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ShardRecord(_Record):
    """One shard as written: the sha256 of its .npy file and its number of crops."""

    sha256: str = Field(pattern="^[0-9a-f]{64}$")
    crops: int = Field(ge=0)


class PlateRecord(_Record):
    """One plate: its shard, and (from ingest) fingerprint, scaling and field counts."""

    shard: ShardName
    crops: int = Field(ge=0)
    fingerprint: str | None = None
    scaling: dict[str, list[float]] = Field(default_factory=dict)
    illumination: str | None = None
    fields: int | None = Field(None, ge=0)
    quarantined: int | None = Field(None, ge=0)


class CropSetInfo(_Record):
    """``cropset.json``."""

    format_version: int
    channels: list[str] = Field(min_length=1, max_length=5)
    crop_size: int = Field(ge=1, le=65536)
    shards: dict[ShardName, ShardRecord]
    plates: dict[str, PlateRecord] = Field(default_factory=dict)
    phenexplain_version: str | None = None
    source: str | None = None
    layout: str | None = None
    # where the crops' nuclei came from: "segmented" (ingest's detection) or "supplied" (masks)
    nuclei: Literal["segmented", "supplied"] | None = None
    # µm per pixel of the fields the crops were cut from (None: not known, never guessed)
    pixel_size_um: Annotated[float, Field(gt=0)] | None = None
    params: dict[str, Any] | None = None
    params_key: str | None = None
    # condition -> channel -> fraction of its crops' pixels at 255 (absent before it was recorded)
    saturation: dict[str, dict[str, Annotated[float, Field(ge=0, le=1)]]] | None = None

    @model_validator(mode="after")
    def _plates_have_recorded_shards(self) -> CropSetInfo:
        for plate, record in self.plates.items():
            if record.shard not in self.shards:
                raise ValueError(f"plate {plate!r}: shard {record.shard!r} is not in 'shards'")
        if len(set(self.channels)) != len(self.channels):
            raise ValueError(f"channel names repeat: {self.channels}")
        return self


def _first_error(exc: ValidationError) -> str:
    """The first of a validation's errors as ``'key': message``, and how many more there are."""
    errors = exc.errors()
    err = errors[0]
    key = ".".join(str(p) for p in err["loc"])
    text = err["msg"]
    if "input" in err and err["type"] not in ("json_invalid", "missing"):
        text += f" (got {_short(err['input'])})"
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return f"'{key}': {text}{more}" if key else f"{text}{more}"


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise PhenexplainError(f"{path} is missing; {REINGEST}") from None
    except OSError as exc:
        raise PhenexplainError(f"cannot read {path}: {exc.strerror}") from None


def read_info(root: Path) -> CropSetInfo:
    """The validated ``cropset.json`` of the crop set `root`."""
    path = root / INFO
    if not path.is_file():
        raise PhenexplainError(
            f"{root} is not a crop set ({INFO} missing); run `phenexplain ingest`"
        )
    raw = _read_bytes(path)
    try:
        version = json.loads(raw).get("format_version")
    except (ValueError, RecursionError, AttributeError):
        version = FORMAT_VERSION  # pydantic below names the problem
    if version != FORMAT_VERSION:
        raise PhenexplainError(
            f"{path}: crop set format {_short(version)}, this phenexplain reads format "
            f"{FORMAT_VERSION} (with shard checksums); {REINGEST}"
        )
    try:
        return CropSetInfo.model_validate_json(raw)
    except ValidationError as exc:
        raise PhenexplainError(f"{path}: {_first_error(exc)}; {REINGEST}") from None


def read_table(path: Path) -> pd.DataFrame:
    """A parquet table of the crop set; a missing or unreadable file names itself."""
    if not path.is_file():
        raise PhenexplainError(f"{path} is missing; {REINGEST}")
    try:  # pandas' own metadata is not needed (no index is stored) and may itself be damaged
        table = pq.read_table(path)
        table.validate(full=True)  # e.g. text that is not UTF-8, which arrow does not check on read
        return table.to_pandas(ignore_metadata=True)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise PhenexplainError(
            f"{path} is not a readable parquet table ({_short(str(exc))}); {REINGEST}"
        ) from None


STRING_COLUMNS = ("crop_id", "shard", "condition", "checksum")
OPTIONAL_STRING_COLUMNS = ("field_id", "plate", "well")


def read_manifest(root: Path, info: CropSetInfo) -> pd.DataFrame:
    """``manifest.parquet``, checked against `info` (columns, types, shards, row order)."""
    path = root / MANIFEST
    df = read_table(path).reset_index(drop=True)

    def refuse(problem: str) -> PhenexplainError:
        return PhenexplainError(f"{path}: {problem}; {REINGEST}")

    missing = [c for c in (*STRING_COLUMNS, "index") if c not in df.columns]
    if missing:
        raise refuse(f"column(s) {missing} missing")
    for column in (*STRING_COLUMNS, *(c for c in OPTIONAL_STRING_COLUMNS if c in df.columns)):
        values = df[column]
        if len(df) and (values.isna().any() or pd.api.types.infer_dtype(values) != "string"):
            raise refuse(f"column {column!r} must hold text in every row")
    index = df["index"]
    if not pd.api.types.is_integer_dtype(index) or pd.api.types.is_bool_dtype(index):
        raise refuse(f"column 'index' must hold whole numbers, not {index.dtype}")
    bad = ~df["checksum"].str.fullmatch("[0-9a-f]{64}")
    if bad.any():
        raise refuse(f"row {int(np.flatnonzero(bad)[0])}: 'checksum' is not a sha256")
    for shard, rows in df.groupby("shard", sort=False).groups.items():
        if shard not in info.shards:
            raise refuse(f"shard {shard!r} is not recorded in {INFO}")
        expected = np.arange(info.shards[shard].crops)
        if not np.array_equal(index.loc[rows].to_numpy(), expected):
            raise refuse(
                f"the rows of shard {shard!r} must be its {len(expected)} crops in order "
                "(index 0, 1, ...)"
            )
    return df


def read_conditions(root: Path, manifest: pd.DataFrame) -> dict[str, int]:
    """``conditions.json``: the manifest's conditions, sorted, onto 0..K-1."""
    path = root / CONDITIONS
    try:
        conditions = _CONDITIONS.validate_json(_read_bytes(path))
    except ValidationError as exc:
        raise PhenexplainError(f"{path}: {_first_error(exc)}; {REINGEST}") from None
    expected = {name: i for i, name in enumerate(sorted(set(manifest["condition"])))}
    if conditions != expected:
        unknown = sorted(set(manifest["condition"]) - set(conditions))
        problem = (
            f"no index for condition(s) {_short(unknown)} of {MANIFEST}"
            if unknown
            else f"must map the conditions of {MANIFEST}, sorted, to 0..{len(expected) - 1}: "
            f"{_short(expected)}"
        )
        raise PhenexplainError(f"{path}: {problem}; {REINGEST}")
    return conditions


_CONDITIONS = TypeAdapter(dict[str, int], config=ConfigDict(strict=True))


def shard_path(root: Path, name: str) -> Path:
    return root / "images" / f"{name}.npy"


def _header_problem(path: Path, info: CropSetInfo, record: ShardRecord) -> str | None:
    """What is wrong with the .npy header of a shard (shape, dtype, length), or None."""
    want = (record.crops, len(info.channels), info.crop_size, info.crop_size)
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            if version not in ((1, 0), (2, 0)):
                return f"unsupported .npy version {version}"
            read = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else (np.lib.format.read_array_header_2_0)
            )
            shape, fortran, dtype = read(fh)
            offset = fh.tell()
    except FileNotFoundError:
        return "the shard is missing"
    except OSError as exc:
        return f"cannot read it: {exc.strerror}"
    except (ValueError, SyntaxError, TokenError, EOFError, RecursionError, TypeError) as exc:
        # what numpy's header parser (a restricted literal_eval) raises on damaged headers
        return f"not a .npy array ({_short(str(exc))})"
    if dtype != np.uint8 or fortran or tuple(shape) != want:
        order = " in Fortran order" if fortran else ""
        return f"holds {dtype} {list(shape)}{order}, not uint8 {list(want)}"
    if os.path.getsize(path) != offset + int(np.prod(shape)):
        return "the file is truncated or has extra bytes"
    return None


class _HashCache:
    """Shards of one crop set whose sha256 was checked, by file identity (a JSON file)."""

    def __init__(self, root: Path) -> None:
        key = hashlib.sha256(os.fsencode(root.resolve())).hexdigest()[:16]
        self.path = fsutil.user_cache("shard-hashes", f"{key}.json")
        try:
            entries = json.loads(self.path.read_text())
        except (OSError, ValueError, RecursionError):
            entries = {}
        self.entries = entries if isinstance(entries, dict) else {}
        self.changed = False

    @staticmethod
    def _identity(path: Path, sha256: str) -> list:
        st = path.stat()
        return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, sha256]

    def known(self, name: str, path: Path, sha256: str) -> bool:
        return self.entries.get(name) == self._identity(path, sha256)

    def add(self, name: str, path: Path, sha256: str) -> None:
        self.entries[name] = self._identity(path, sha256)
        self.changed = True

    def save(self) -> None:
        if not self.changed:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fsutil.write_json(self.path, self.entries)
        except OSError as exc:  # a cache that cannot be written only costs time
            log.debug("cannot write the shard hash cache %s: %s", self.path, exc)


def shard_problems(root: Path, info: CropSetInfo, names) -> dict[str, str]:
    """Shard name -> what is wrong with it (header, length or bytes) for the named shards."""
    cache, problems = _HashCache(root), {}
    for name in names:
        record, path = info.shards[name], shard_path(root, name)
        problem = _header_problem(path, info, record)
        if problem is None and not cache.known(name, path, record.sha256):
            log.info("checking the sha256 of %s", path)
            if fsutil.file_sha256(path) == record.sha256:
                cache.add(name, path, record.sha256)
            else:
                problem = (
                    f"its bytes do not match the sha256 recorded in {INFO} (changed or damaged)"
                )
        if problem is not None:
            problems[name] = problem
    cache.save()
    return problems


def check_shards(root: Path, info: CropSetInfo, names) -> None:
    """Raise, naming the first shard (of `names`) that is damaged, missing or changed."""
    for name, problem in shard_problems(root, info, names).items():
        raise PhenexplainError(f"{shard_path(root, name)}: {problem}; {REINGEST}")
