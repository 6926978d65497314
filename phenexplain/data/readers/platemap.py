"""What OME files do not say: each well's condition (a plate map), and the fallback names.

OME-TIFF and OME-Zarr carry plates, wells and channel names but no treatment, so the layouts
``ome-tiff`` and ``ome-zarr`` read conditions from ``platemap.csv`` in the source folder (beside
the source when it is a ``.zarr`` itself): columns ``plate``, ``well``, ``condition``; an empty
plate applies the row to every plate; other columns are kept as metadata. Wells are compared
normalised (``B2``, ``B02`` and ``b02`` are one well).

A file without plate metadata is named ``<plate>/<well>_s<site>.ome.tif`` (or ``.ome.zarr``):
its folder is the plate, its name the well and the site.
"""

from __future__ import annotations

import re
from pathlib import Path

from phenexplain.data.readers.base import (
    FieldRecord,
    StructureError,
    read_table,
    require_columns,
    site_number,
)

PLATEMAP = "platemap.csv"
WELL = re.compile(r"^([A-Za-z]{1,2})0*(\d{1,3})$")
FIELD_NAME = re.compile(r"^(?P<well>[A-Za-z]{1,2}\d{1,3})_s(?P<site>\d+)\.ome\.(?:tiff?|zarr)$")


def well_name(text: str) -> str:
    """``B2`` -> ``B02``: row letters (upper case) and a two-digit column; other names as given."""
    match = WELL.match(text.strip())
    return f"{match[1].upper()}{int(match[2]):02d}" if match else text.strip()


def well_at(row: int, column: int) -> str:
    """The well at 0-based `row` and `column` (OME-XML's Row and Column): 1, 2 -> ``B03``."""
    letters = ""
    row += 1
    while row:
        row, rest = divmod(row - 1, 26)
        letters = chr(ord("A") + rest) + letters
    return f"{letters}{column + 1:02d}"


def from_name(path: Path) -> tuple[str, str, int]:
    """(plate, well, site) of ``<plate>/<well>_s<site>.ome.tif`` (plate: the folder's name)."""
    match = FIELD_NAME.match(path.name)
    if match is None:
        raise StructureError(
            f"{path}: no plate metadata (OME-XML Plate/Well/WellSample, or NGFF plate), and the "
            "name is not <well>_s<site>.ome.tif|.ome.zarr (e.g. P1/B02_s1.ome.tif); add the "
            "metadata or rename the file"
        )
    return path.parent.name, well_name(match["well"]), site_number(match["site"], str(path))


def match_channels(names: list[str | None], channels: list[str], where: str) -> tuple[int, ...]:
    """The index among `names` (the file's channel names, in file order) of each of `channels`."""
    missing = [ch for ch in channels if ch not in names]
    if missing:
        held = ", ".join(repr(n) for n in names) or "none"
        raise StructureError(
            f"{where}: channel(s) {', '.join(missing)} not found; the file names its channels "
            f"{held}; set ingest.channels (--channels) to names it holds, in the order wanted"
        )
    repeated = [ch for ch in channels if names.count(ch) > 1]
    if repeated:
        raise StructureError(f"{where}: channel name(s) {', '.join(repeated)} repeat in the file")
    return tuple(names.index(ch) for ch in channels)


def platemap_path(source: Path) -> Path:
    folder = source if source.is_dir() and not source.name.endswith(".zarr") else source.parent
    return folder / PLATEMAP


def with_conditions(source: Path, fields: list[tuple], layout: str) -> list[FieldRecord]:
    """Records of `fields` ((field_id, plate, well, site, files, planes[, extra]) each),
    conditions and metadata from the plate map of `source` (a field's own `extra`, such as its
    pixel size, beside the plate map's columns)."""
    path, header, rows = read_table(
        platemap_path(source),
        PLATEMAP,
        f"layout {layout!r} takes each well's condition from {PLATEMAP} (columns plate, well, "
        "condition; an empty plate means every plate)",
    )
    require_columns(path, header, ["plate", "well", "condition"], hint="one row per well")
    extra_cols = [c for c in header if c not in ("plate", "well", "condition")]
    table: dict[tuple[str, str], dict[str, str]] = {}
    for line, row in enumerate(rows, start=2):
        if row["well"] is None or row["condition"] is None or not row["condition"].strip():
            raise StructureError(f"{path}:{line}: the row needs a plate, a well and a condition")
        key = ((row["plate"] or "").strip(), well_name(row["well"]))
        if key in table:
            raise StructureError(f"{path}:{line}: plate {key[0]!r} well {key[1]} is listed twice")
        table[key] = row
    records: list[FieldRecord] = []
    unmapped: list[str] = []
    for field_id, plate, well, site, files, planes, *own in fields:
        found = table.get((plate, well)) or table.get(("", well))
        if found is None:
            unmapped.append(f"{plate} {well}")
            continue
        records.append(
            FieldRecord(
                field_id=field_id,
                plate=plate,
                well=well,
                site=site,
                condition=found["condition"].strip(),
                files=files,
                planes=planes,
                extra={**{c: found[c] or "" for c in extra_cols}, **(own[0] if own else {})},
            )
        )
    if unmapped:
        shown = sorted(set(unmapped))
        raise StructureError(
            f"{path}: no condition for {len(shown)} imaged well(s): {', '.join(shown[:10])}"
            f"{' ...' if len(shown) > 10 else ''}; add a row plate,well,condition for each"
        )
    return records
