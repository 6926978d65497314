"""What every reader returns, and the error for sources that cannot be ingested at all."""

from __future__ import annotations

import codecs
import csv
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

from phenexplain.errors import PhenexplainError


class StructureError(PhenexplainError):
    """The source as a whole is unusable (missing columns, files or channels).

    Nothing is written.
    """


@dataclass(frozen=True)
class FieldRecord:
    """One field of view: where its channel files are and what it is.

    `files` holds one path per channel, in channel order, or a single path to a multi-channel
    image (a file, or the folder of a Zarr array). `planes`, for a single multi-channel image,
    gives the index in it of each requested channel, in channel order; empty: the image holds
    exactly the requested channels in order. `masks` holds label images supplied for the field
    (nuclei, then optionally cells) instead of our nucleus detection. `extra` carries
    layout-specific metadata (compound, concentration, moa, ...).
    """

    field_id: str
    plate: str
    well: str
    site: int
    condition: str
    files: tuple[Path, ...]
    extra: dict[str, str] = field(default_factory=dict, compare=False)
    planes: tuple[int, ...] = ()
    masks: tuple[Path, ...] = ()


def inside(root: Path, candidate: Path) -> Path:
    """`root / candidate`, refusing paths that leave `root` (absolute or with ``..``).

    The check is lexical, so symbolic links inside the root (e.g. a DVC cache) keep working.
    """
    root_abs = Path(os.path.abspath(root))
    full = Path(os.path.normpath(root_abs / candidate))
    if candidate.is_absolute() or (full != root_abs and root_abs not in full.parents):
        raise StructureError(f"path {candidate} points outside {root}; refusing to read it")
    return full


# lengths in µm per unit, as OME-XML (UnitsLength) and OME-NGFF (UDUNITS-2 names) spell them
MICROMETRES = {
    "nm": 1e-3, "nanometer": 1e-3, "nanometre": 1e-3,
    "µm": 1.0, "um": 1.0, "\u03bcm": 1.0, "micrometer": 1.0, "micrometre": 1.0, "micron": 1.0,
    "mm": 1e3, "millimeter": 1e3, "millimetre": 1e3,
}  # fmt: skip
PIXEL_SIZE = "pixel_size_um"  # the FieldRecord.extra key of a field's pixel size, when known


def micrometres(value: object, unit: object = "µm") -> float | None:
    """`value` in `unit` as µm, or None when it is missing, not a positive number, or in a unit
    that is not a length (a pixel size is never guessed)."""
    try:
        number = float(value)  # type: ignore[arg-type]  # checked by the except
    except (TypeError, ValueError):
        return None
    factor = MICROMETRES.get(str(unit or "µm").strip().lower())
    if factor is None or not number > 0 or number == float("inf"):
        return None
    return number * factor


MAX_SITE = 2**31 - 1  # sites are small counters; this keeps them valid in every table format


def site_number(text: str, where: str) -> int:
    """The site number in `text`, a whole number from 0 to `MAX_SITE`; `where` names the row."""
    try:
        site = int(text)
    except ValueError:
        raise StructureError(f"{where}: site must be an integer, got {text!r}") from None
    if not 0 <= site <= MAX_SITE:
        shown = text if len(text) <= 40 else f"{text[:37]}..."
        raise StructureError(
            f"{where}: site {shown} is out of range; a site is a whole number from 0 to {MAX_SITE}"
        )
    return site


def require_columns(path: Path, header: list[str], columns: list[str], hint: str = "") -> None:
    """Raise naming `path` and every missing column (then `hint`: what the file should hold)."""
    missing = [c for c in columns if c not in header]
    if missing:
        raise StructureError(
            f"{path}: missing column(s) {', '.join(missing)}" + (f"; {hint}" if hint else "")
        )


def read_table(source: Path, default_name: str, what: str) -> tuple[Path, list[str], list[dict]]:
    """(path, header, rows) of a CSV given as a file or as the folder holding `default_name`.

    The file must be UTF-8; a leading byte-order mark (Excel's "CSV UTF-8") is skipped.
    """
    path = source / default_name if source.is_dir() else source
    if not path.is_file():
        raise StructureError(f"{path} not found ({what})")
    try:
        data = path.read_bytes().removeprefix(codecs.BOM_UTF8)
    except OSError as exc:
        raise StructureError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise StructureError(
            f"{path}:{line}: not UTF-8 text (byte {data[exc.start]:#04x}); save the file as UTF-8 "
            "(in Excel: 'CSV UTF-8')"
        ) from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        header = list(reader.fieldnames or [])
        rows = list(reader)
    except csv.Error as exc:  # DictReader.line_num lags a row behind; its csv.reader's does not
        raise StructureError(
            f"{path}:{reader.reader.line_num}: unreadable CSV row ({exc}); check for an unclosed "
            "quote or a cell that is not a path or a label"
        ) from None
    return path, header, rows
