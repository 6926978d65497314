"""CellProfiler LoadData CSV: one row per field, one file per channel.

Columns: ``PathName_<channel>`` and ``FileName_<channel>`` for each requested channel,
``Metadata_Plate``, ``Metadata_Well``, ``Metadata_Site`` and the condition column
(``ingest.condition_column``, ``Metadata_Condition`` by default). A ``PathName`` is absolute, or
relative to the CSV's folder (and may not leave it); a ``FileName`` may not leave its
``PathName``. Other ``Metadata_*`` columns are kept as metadata, without the prefix.
"""

from __future__ import annotations

from pathlib import Path

from phenexplain.data.readers.base import (
    FieldRecord,
    StructureError,
    inside,
    read_table,
    require_columns,
    site_number,
)

DEFAULT_CSV = "load_data.csv"
CONDITION_COLUMN = "Metadata_Condition"
KEYS = ["Metadata_Plate", "Metadata_Well", "Metadata_Site"]


def channel_path(root: Path, path_name: str, file_name: str) -> Path:
    """The file of a ``PathName_*`` / ``FileName_*`` pair; relative paths stay inside `root`."""
    folder = Path(path_name)
    if folder.is_absolute():
        return inside(folder, Path(file_name))
    return inside(root, folder / file_name)


def read_loaddata(
    source: Path, channels: list[str], condition_column: str = CONDITION_COLUMN
) -> list[FieldRecord]:
    """Fields of a LoadData CSV; `source` is the CSV or a folder holding ``load_data.csv``."""
    path, header, rows = read_table(
        source, DEFAULT_CSV, "layout 'loaddata' expects a CellProfiler LoadData CSV"
    )
    root = path.parent
    files = [f"{kind}_{ch}" for ch in channels for kind in ("PathName", "FileName")]
    required = [*KEYS, condition_column, *files]
    require_columns(
        path,
        header,
        required,
        hint=f"a LoadData CSV needs {', '.join(KEYS)}, the condition column {condition_column!r} "
        "(ingest.condition_column, --condition-column) and PathName_<channel> / "
        f"FileName_<channel> for each of the channels {', '.join(channels)}",
    )
    extra_cols = [c for c in header if c.startswith("Metadata_") and c not in required]
    records = []
    for line, row in enumerate(rows, start=2):
        where = f"{path}:{line}"
        short = [c for c in required if row[c] is None]  # the csv module's value for no cell
        if short:
            raise StructureError(
                f"{where}: the row ends before column(s) {', '.join(short)}; every row needs a "
                f"cell for each of the {len(header)} columns of the header"
            )
        empty = [c for c in [*KEYS, condition_column] if not row[c].strip()]
        if empty:
            raise StructureError(f"{where}: empty {', '.join(empty)}")
        site = site_number(row["Metadata_Site"], where)
        plate, well = row["Metadata_Plate"], row["Metadata_Well"]
        try:
            paths = tuple(
                channel_path(root, row[f"PathName_{ch}"], row[f"FileName_{ch}"]) for ch in channels
            )
        except StructureError as exc:
            raise StructureError(f"{where}: {exc}") from None
        records.append(
            FieldRecord(
                field_id=f"{plate}_{well}_s{site}",
                plate=plate,
                well=well,
                site=site,
                condition=row[condition_column],
                files=paths,
                extra={c.removeprefix("Metadata_"): row[c] or "" for c in extra_cols},
            )
        )
    return records
