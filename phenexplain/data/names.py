"""Names taken from the file system as valid text: what the crop set's tables record."""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path

from phenexplain.data.readers import FieldRecord, StructureError

log = logging.getLogger(__name__)


def source_name(path: Path, root: Path) -> str:
    """`path` relative to the source folder when it lies inside, else as it is (printable)."""
    base = Path(os.path.abspath(root if root.is_dir() else root.parent))
    try:
        return printable(Path(os.path.abspath(path)).relative_to(base).as_posix())
    except ValueError:
        return printable(path.as_posix())


def printable(name: str) -> str:
    r"""`name` as valid UTF-8 text: bytes of a file name that are not UTF-8 become ``\xNN``.

    Python keeps such bytes as lone surrogates (PEP 383), which parquet and JSON cannot store.
    Valid text is returned unchanged, so ordinary names, fingerprints and ids stay the same.
    """
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(name).decode("utf-8", "backslashreplace")
    return name


def with_printable_names(records: list[FieldRecord], source: Path) -> list[FieldRecord]:
    """`records` with printable ids, plates, wells and conditions; the file paths are kept.

    Readers of CSVs yield valid text; names taken from the file system (the ``folders`` layout)
    may not be.
    """
    out = [
        replace(
            r,
            field_id=printable(r.field_id),
            plate=printable(r.plate),
            well=printable(r.well),
            condition=printable(r.condition),
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
