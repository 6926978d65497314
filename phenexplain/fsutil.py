"""File-system helpers shared by every writer: output checks, staging folders, atomic writes.

Outputs are built under a hidden staging name next to their destination and renamed into place
when complete, so a crash never leaves a half-written folder that looks finished.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from phenexplain.errors import OutputExistsError, PhenexplainError


def check_output(out: Path, overwrite: bool) -> None:
    """Refuse a non-empty `out` unless `overwrite`; make sure its parent exists and is writable."""
    if out.exists() and not out.is_dir():
        raise PhenexplainError(f"output {out} exists and is not a folder; choose another path")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise OutputExistsError(
            f"output folder {out} exists and is not empty; choose another path or pass --overwrite"
        )
    parent = out.parent
    if parent.exists() and not parent.is_dir():
        raise PhenexplainError(f"cannot write to {out}: {parent} is a file, not a folder")
    if not parent.exists():
        try:
            parent.mkdir(parents=True)
        except OSError as exc:
            raise PhenexplainError(
                f"cannot create the parent folder {parent}: {exc.strerror}"
            ) from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PhenexplainError(
            f"cannot write to {parent}: permission denied; choose a writable path"
        )


def staging_dir(out: Path) -> Path:
    """A new empty hidden folder next to `out`, on the same file system (for an atomic rename)."""
    try:
        path = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    except OSError as exc:
        raise PhenexplainError(
            f"cannot write to {out.parent}: {exc.strerror}; choose a writable path"
        ) from None
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o777 & ~umask)  # mkdtemp's 0700 would leak into the final folder
    return path


def swap_into_place(staging: Path, out: Path) -> None:
    """Rename the complete `staging` folder to `out`; an old `out` is removed only afterwards."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
    try:
        staging.rename(out)
    except OSError:
        if old is not None:
            old.rename(out)
        raise
    if old is not None:
        shutil.rmtree(old)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file and a rename."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_json(path: Path, data: dict) -> None:
    """Pretty, key-sorted JSON (stable bytes for the same content), written atomically."""
    atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


SAFE_STEM_CHARS = 100  # readable part of a safe file name; the digest keeps it unique


def safe_name(name: str, *, fallback: str = "name") -> str:
    """A file name for any label (a condition, plate, channel or assay name), for every writer.

    The label's runs of characters other than ``A-Z a-z 0-9 . _ -`` become ``_``, leading and
    trailing dots and underscores go (so ``..``, ``.`` and hidden names cannot arise), and the
    first 8 hex digits of the label's sha256 follow: ``EGF/TNF`` -> ``EGF_TNF-<8 hex>``. Labels
    that differ in any character, case included, so get different names even on case-insensitive
    file systems, and Windows device names (``CON``) never stand alone. The label itself stays
    as it is in tables, JSON and captions; only paths use this name."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[:SAFE_STEM_CHARS] or fallback
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{stem}-{digest}"
