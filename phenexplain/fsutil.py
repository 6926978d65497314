"""File-system helpers shared by every writer: output checks, staging folders, atomic writes,
file locks and file hashes.

Outputs are built under a hidden staging name next to their destination and renamed into place
when complete, so a crash never leaves a half-written folder that looks finished.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
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


def file_sha256(path: Path) -> str:
    """Hex sha256 of the bytes of `path`, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def file_lock(path: Path, *, timeout: float | None = None, busy: str = "") -> Iterator[None]:
    """Exclusive across processes while inside: an fcntl lock on `path` (created if missing).

    Waits for the holder, at most `timeout` seconds (None: as long as it takes), then raises a
    `PhenexplainError` that starts with `busy`. The lock file is left in place: removing it would
    let a waiting process and a newcomer lock two different files.
    """
    try:
        handle = open(path, "a")  # noqa: SIM115 (closed in the finally below)
    except OSError as exc:
        raise PhenexplainError(
            f"cannot create the lock file {path}: {exc.strerror}; choose a writable path"
        ) from None
    try:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | (0 if deadline is None else fcntl.LOCK_NB))
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise PhenexplainError(
                        f"{busy or 'another process holds the lock'} (lock file {path}, waited "
                        f"{timeout:g} s); wait for it to finish, then run again"
                    ) from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        handle.close()
