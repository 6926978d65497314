"""Manifest CSV: one row per field with plate, well, site, condition and ``path_<channel>``."""

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

BASE_COLUMNS = ["plate", "well", "site", "condition"]


def read_manifest(source: Path, channels: list[str]) -> list[FieldRecord]:
    """Fields of a manifest; `source` is the CSV or a folder holding ``metadata.csv``.

    Paths are relative to the CSV's folder and may not leave it.
    """
    path, header, rows = read_table(source, "metadata.csv", "layout 'manifest' expects a CSV")
    root = path.parent
    required = BASE_COLUMNS + [f"path_{ch}" for ch in channels]
    require_columns(path, header, required)
    extra_cols = [c for c in header if c not in BASE_COLUMNS and not c.startswith("path_")]
    records = []
    for line, row in enumerate(rows, start=2):
        short = [c for c in required if row[c] is None]  # the csv module's value for no cell
        if short:
            raise StructureError(
                f"{path}:{line}: the row ends before column(s) {', '.join(short)}; every row "
                f"needs a cell for each of the {len(header)} columns of the header"
            )
        site = site_number(row["site"], f"{path}:{line}")
        if not row["condition"]:
            raise StructureError(f"{path}:{line}: empty condition")
        files = tuple(inside(root, Path(row[f"path_{ch}"])) for ch in channels)
        records.append(
            FieldRecord(
                field_id=f"{row['plate']}_{row['well']}_s{site}",
                plate=row["plate"],
                well=row["well"],
                site=site,
                condition=row["condition"],
                files=files,
                extra={c: row[c] for c in extra_cols},
            )
        )
    return records
