"""What every reader returns, and the error for sources that cannot be ingested at all."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

from phenexplain.errors import PhenexplainError


class StructureError(PhenexplainError):
    """The source as a whole is unusable (missing columns, files or channels); nothing is written."""


@dataclass(frozen=True)
class FieldRecord:
    """One field of view: where its channel files are and what it is.

    `files` holds one path per channel, in channel order, or a single path to a multi-channel
    image. `extra` carries layout-specific metadata (compound, concentration, moa, ...).
    """

    field_id: str
    plate: str
    well: str
    site: int
    condition: str
    files: tuple[Path, ...]
    extra: dict[str, str] = field(default_factory=dict, compare=False)


def inside(root: Path, candidate: Path) -> Path:
    """`root / candidate`, refusing paths that leave `root` (absolute or with ``..``).

    The check is lexical, so symbolic links inside the root (e.g. a DVC cache) keep working.
    """
    root_abs = Path(os.path.abspath(root))
    full = Path(os.path.normpath(root_abs / candidate))
    if candidate.is_absolute() or (full != root_abs and root_abs not in full.parents):
        raise StructureError(f"path {candidate} points outside {root}; refusing to read it")
    return full


def require_columns(path: Path, header: list[str], columns: list[str]) -> None:
    """Raise naming `path` and every missing column."""
    missing = [c for c in columns if c not in header]
    if missing:
        raise StructureError(f"{path}: missing column(s) {', '.join(missing)}")


def read_table(source: Path, default_name: str, what: str) -> tuple[Path, list[str], list[dict]]:
    """(path, header, rows) of a CSV given as a file or as the folder holding `default_name`."""
    path = source / default_name if source.is_dir() else source
    if not path.is_file():
        raise StructureError(f"{path} not found ({what})")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        header = list(reader.fieldnames or [])
        rows = list(reader)
    return path, header, rows
