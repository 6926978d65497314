"""File-system helpers shared by every writer: output checks, staging folders, atomic writes,
file locks and file hashes.

Outputs are built under a hidden staging name next to their destination and renamed into place
when complete, so a crash never leaves a half-written folder that looks finished.

Every output folder holds a marker, ``.phenexplain-output``: JSON naming the kind of output and
the entries (names directly inside the folder) that phenexplain wrote there. A folder is replaced
(`--overwrite`) or extended only when it carries a marker of the same kind, and is replaced only
when it holds nothing else, so no command ever deletes a file it did not write. No output may be,
contain or lie inside one of the command's inputs.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from phenexplain.errors import OutputExistsError, PhenexplainError

log = logging.getLogger(__name__)

MARKER = ".phenexplain-output"
MARKER_FORMAT = 1


def check_output(
    out: Path,
    overwrite: bool,
    *,
    kind: str,
    inputs: Iterable[str | Path] = (),
    extend: bool = False,
) -> frozenset[str]:
    """Check that the folder `out` may receive an output of `kind`; returns the foreign entries
    (names phenexplain did not write) it already holds, which an extending writer leaves alone.

    Refuses an `out` that is, contains or lies inside one of `inputs`. An absent or empty `out` is
    always fine. A non-empty one must carry our marker of the same `kind`; it is accepted when the
    writer adds to it (`extend`), or when it is replaced (`overwrite`) and holds only our entries.
    Also makes sure the parent exists and is writable, and removes staging folders of `out` left
    by killed writers.
    """
    check_not_input(out, inputs)
    if out.exists() and not out.is_dir():
        raise PhenexplainError(f"output {out} exists and is not a folder; choose another path")
    foreign: frozenset[str] = frozenset()
    if out.is_dir() and any(out.iterdir()):
        if not overwrite and not extend:
            raise OutputExistsError(
                f"output folder {out} exists and is not empty; choose another path or pass "
                "--overwrite"
            )
        foreign = _foreign_entries(out, kind)
        if overwrite and foreign:
            raise PhenexplainError(
                f"refusing to overwrite {out}: it holds {_listing(foreign)}, which phenexplain did "
                "not write; move them away or choose another folder"
            )
    _check_parent(out)
    remove_stale_staging(out)
    return foreign


def user_cache(*parts: str) -> Path:
    """A folder for derived data (statistics, centroids), kept outside every input so that a
    DVC-tracked crop set or checkpoint stays untouched: $PHENEXPLAIN_CACHE or ~/.cache."""
    base = os.environ.get("PHENEXPLAIN_CACHE") or Path.home() / ".cache" / "phenexplain"
    return Path(base, *parts)


def check_output_file(out: Path, inputs: Iterable[str | Path] = ()) -> None:
    """Check that the file `out` may be written (an old file there is replaced): not an input,
    not inside an input folder, not a folder; its parent exists and is writable."""
    check_not_input(out, inputs)
    if out.is_dir():
        raise PhenexplainError(f"output {out} is a folder; give the path of a file to write")
    _check_parent(out)


def prepare_folder(out: Path, kind: str, inputs: Iterable[str | Path] = ()) -> frozenset[str]:
    """For a writer that adds files to the folder `out` in place: `check_output` (extending),
    create `out` and mark it; returns the foreign entries to pass to `mark_output` at the end."""
    foreign = check_output(out, False, kind=kind, inputs=inputs, extend=True)
    try:
        out.mkdir(exist_ok=True)
    except OSError as exc:
        raise PhenexplainError(f"cannot create {out}: {exc.strerror}") from None
    mark_output(out, kind, exclude=foreign)
    return foreign


@contextlib.contextmanager
def output_folder(out: Path, kind: str, inputs: Iterable[str | Path] = ()) -> Iterator[Path]:
    """`prepare_folder` on entry and `mark_output` after the block has written its files: the
    marker then lists what this writer owns (a failed block leaves the folder marked as before)."""
    foreign = prepare_folder(out, kind, inputs)
    yield out
    mark_output(out, kind, exclude=foreign)


def check_not_input(out: Path, inputs: Iterable[str | Path]) -> None:
    """Refuse an output that is, contains or lies inside one of `inputs` (symlinks followed)."""
    target = Path(out).resolve()
    for item in inputs:
        source = Path(item).resolve()
        if target == source:
            relation = "is"
        elif target in source.parents:
            relation = "contains"
        elif source.is_dir() and source in target.parents:
            relation = "lies inside"
        else:
            continue
        raise PhenexplainError(
            f"output {out} {relation} the input {item}; write the output somewhere else (an "
            "output never replaces or adds to a command's input)"
        )


def mark_output(
    folder: Path,
    kind: str,
    entries: Iterable[str] | None = None,
    *,
    exclude: Iterable[str] = (),
) -> None:
    """Record in `folder`'s marker that phenexplain wrote `entries` there (merged with those
    already recorded); `entries=None` claims everything now in `folder` except `exclude` (the
    foreign entries `check_output` returned)."""
    old = read_marker(folder)
    if old is not None and old["kind"] != kind:
        raise PhenexplainError(_other_kind(folder, old["kind"], kind))
    if entries is None:
        names = {p.name for p in folder.iterdir()} - {MARKER} - set(exclude)
    else:
        names = set(entries) | set(old["entries"] if old else ())
    marker = {"format": MARKER_FORMAT, "kind": kind, "entries": sorted(names)}
    write_json(folder / MARKER, marker)  # no pid or time: the same output, the same bytes


def read_marker(folder: Path) -> dict | None:
    """`folder`'s marker, or None when it has none or the marker is not ours."""
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(marker, dict) or not isinstance(marker.get("kind"), str):
        return None
    entries = marker.get("entries")
    if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
        return None
    return marker


def remove_entries(folder: Path, names: Iterable[str]) -> None:
    """Delete the entries `names` of `folder` (ours, by the caller's check); nothing else."""
    for name in names:
        if Path(name).name != name or name in ("", ".", ".."):
            continue  # a marker entry is a plain name; anything else is not ours to follow
        path = folder / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def remove_stale_staging(out: Path) -> None:
    """Remove staging folders next to `out` (``.<name>.partial-<pid>-*``, of any name: a killed
    writer of another checkpoint of the same run left it) whose writer on this machine has died,
    and old copies (``.<out>.old-<pid>``) a killed swap left once `out` is in place. Only folders
    that carry our marker are touched."""
    parent = out.parent
    if not parent.is_dir():
        return
    own = re.escape(out.name)
    pattern = re.compile(rf"\.(?:.+\.(partial)-(\d+)-|{own}\.(old)-(\d+)$)")
    for path in parent.iterdir():
        match = pattern.match(path.name)
        if match is None or not path.is_dir() or path.is_symlink():
            continue
        what, pid = (match[1], match[2]) if match[1] else (match[3], match[4])
        if _alive(int(pid)):
            continue
        marker = read_marker(path)
        if marker is None:
            # killed between creating the folder and writing its marker: empty but for our
            # half-written marker, so nothing of anyone else's is in it
            if what == "partial" and {p.name for p in path.iterdir()} <= {f".{MARKER}.tmp-{pid}"}:
                log.info("removing %s, left by a writer that was killed", path)
                shutil.rmtree(path, ignore_errors=True)
            continue
        if what == "partial" and marker.get("host") == socket.gethostname():
            log.info("removing %s, left by a writer that was killed", path)
            shutil.rmtree(path, ignore_errors=True)
        elif what == "old" and out.is_dir():
            log.info("removing %s, left by a writer that was killed", path)
            _remove_output(path, marker)


def _alive(pid: int) -> bool:
    """Whether process `pid` runs on this machine (ours counts as running)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    except OverflowError:
        return False
    return True


def _remove_output(folder: Path, marker: dict) -> None:
    """Delete our entries of `folder`, then the folder if that left it empty."""
    remove_entries(folder, marker["entries"])
    (folder / MARKER).unlink(missing_ok=True)
    try:
        folder.rmdir()
    except OSError:
        log.warning("kept %s: it holds files phenexplain did not write", folder)


def _foreign_entries(out: Path, kind: str) -> frozenset[str]:
    marker = read_marker(out)
    if marker is None:
        raise PhenexplainError(
            f"{out} is not empty and was not written by phenexplain (it has no {MARKER}); "
            "phenexplain neither replaces nor adds to it: choose another folder"
        )
    if marker["kind"] != kind:
        raise PhenexplainError(_other_kind(out, marker["kind"], kind))
    ours = set(marker["entries"]) | {MARKER}
    temporary = re.compile(r"\.(.+)\.tmp-\d+$")  # atomic writes a killed writer left
    return frozenset(
        name
        for name in (p.name for p in out.iterdir())
        if name not in ours and not ((m := temporary.match(name)) is not None and m[1] in ours)
    )


def _other_kind(folder: Path, found: str, wanted: str) -> str:
    return (
        f"{folder} holds another kind of phenexplain output ({found}), not {wanted}; choose "
        "another folder"
    )


def _listing(names: Iterable[str], limit: int = 5) -> str:
    names = sorted(names)
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _check_parent(out: Path) -> None:
    parent = out.parent
    if parent.exists() and not parent.is_dir():
        raise PhenexplainError(f"cannot write to {out}: {parent} is a file, not a folder")
    if not parent.exists():
        try:
            parent.mkdir(parents=True, exist_ok=True)  # ranks of one run race here
        except OSError as exc:
            raise PhenexplainError(
                f"cannot create the parent folder {parent}: {exc.strerror}"
            ) from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PhenexplainError(
            f"cannot write to {parent}: permission denied; choose a writable path"
        )


def staging_dir(out: Path, kind: str) -> Path:
    """A new hidden folder next to `out`, on the same file system (for an atomic rename), named
    with our pid and holding a marker, so that a later writer can remove it if we are killed."""
    try:
        path = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-{os.getpid()}-", dir=out.parent))
    except OSError as exc:
        raise PhenexplainError(
            f"cannot write to {out.parent}: {exc.strerror}; choose a writable path"
        ) from None
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o777 & ~umask)  # mkdtemp's 0700 would leak into the final folder
    staging = {"format": MARKER_FORMAT, "kind": kind, "entries": [], "host": socket.gethostname()}
    write_json(path / MARKER, staging)
    return path


def swap_into_place(staging: Path, out: Path) -> None:
    """Mark the complete `staging` folder as ours and rename it to `out`; an old `out` (checked
    by `check_output`) is set aside first, and only its recorded entries are deleted afterwards."""
    marker = read_marker(staging)
    assert marker is not None, f"{staging} was not made by staging_dir"
    mark_output(staging, marker["kind"])
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
        _remove_output(old, read_marker(old) or {"entries": []})


@contextlib.contextmanager
def staged_output(out: Path, kind: str) -> Iterator[Path]:
    """A staging folder for the output folder `out` (`staging_dir`) to write into: swapped into
    place (`swap_into_place`) when the block ends, removed when it raises. Check `out` first
    (`check_output`)."""
    staging = staging_dir(out, kind)
    try:
        yield staging
        swap_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary name next to `path` (``.<name>.tmp-<pid>``, so two writers never share one)
    to write to; renamed to `path` when the block ends, removed when it raises."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file and a rename."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


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
                if deadline is not None and time.monotonic() >= deadline:
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


def git_commit(repo: str | Path) -> str | None:
    """The commit checked out in `repo`, or None outside a git work tree (read-only)."""
    try:
        done = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else None
