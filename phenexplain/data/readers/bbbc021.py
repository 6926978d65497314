"""BBBC021 (Broad Bioimage Benchmark Collection): ``BBBC021_v1_image.csv`` and its plates.

Condition = compound and concentration (``DMSO_0`` is the control). The site comes from the DAPI
file name (``_s1_`` .. ``_s4_``). ``Image_PathName_*`` values look like ``Week1/Week1_22123``
while unzipped plates sit at ``ROOT/Week1_22123/``: both places are tried. An optional
``BBBC021_v1_moa.csv`` (``compound,concentration,moa``) attaches the mechanism of action.
"""

from __future__ import annotations

import re
from pathlib import Path

from phenexplain.data.readers.base import (
    FieldRecord,
    StructureError,
    inside,
    read_table,
    require_columns,
    site_number,
)

IMAGE_CSV = "BBBC021_v1_image.csv"
MOA_CSV = "BBBC021_v1_moa.csv"
SITE = re.compile(r"_s(\d+)_")


def condition_name(compound: str, concentration: float) -> str:
    return f"{compound}_{concentration:g}"


def _resolve(root: Path, path_name: str, file_name: str) -> Path:
    candidates = [Path(path_name) / file_name, Path(Path(path_name).name) / file_name]
    for rel in candidates:
        full = inside(root, rel)
        if full.exists():
            return full
    return inside(root, candidates[-1])  # reported missing by the ingest's structural check


def _moa(root: Path) -> dict[tuple[str, float], str]:
    if not (root / MOA_CSV).is_file():
        return {}
    path, header, rows = read_table(root / MOA_CSV, MOA_CSV, "mechanism of action")
    require_columns(path, header, ["compound", "concentration", "moa"])
    return {(r["compound"], float(r["concentration"])): r["moa"] for r in rows}


def read_bbbc021(source: Path, channels: list[str]) -> list[FieldRecord]:
    """`channels`: BBBC021 channel names (``DAPI``, ``Tubulin``, ``Actin``) in the order wanted."""
    path, header, rows = read_table(source, IMAGE_CSV, f"layout 'bbbc021' expects {IMAGE_CSV}")
    root = path.parent
    needed = ["Image_Metadata_Plate_DAPI", "Image_Metadata_Well_DAPI", "Image_Metadata_Compound"]
    needed += ["Image_Metadata_Concentration", "Image_FileName_DAPI"]
    for ch in channels:
        needed += [f"Image_FileName_{ch}", f"Image_PathName_{ch}"]
    require_columns(path, header, list(dict.fromkeys(needed)))
    moa = _moa(root)
    records = []
    for line, row in enumerate(rows, start=2):
        match = SITE.search(row["Image_FileName_DAPI"])
        if match is None:
            raise StructureError(
                f"{path}:{line}: no site (_s1_.._s4_) in file name {row['Image_FileName_DAPI']!r}"
            )
        try:
            conc = float(row["Image_Metadata_Concentration"])
        except ValueError:
            raise StructureError(
                f"{path}:{line}: concentration {row['Image_Metadata_Concentration']!r} "
                "is not a number"
            ) from None
        compound = row["Image_Metadata_Compound"]
        plate, well = row["Image_Metadata_Plate_DAPI"], row["Image_Metadata_Well_DAPI"]
        site = site_number(match[1], f"{path}:{line}")
        files = tuple(
            _resolve(root, row[f"Image_PathName_{ch}"], row[f"Image_FileName_{ch}"])
            for ch in channels
        )
        extra = {"compound": compound, "concentration": f"{conc:g}"}
        if "Replicate" in row:
            extra["replicate"] = row["Replicate"]
        if (compound, conc) in moa:
            extra["moa"] = moa[(compound, conc)]
        records.append(
            FieldRecord(
                field_id=f"{plate}_{well}_s{site}",
                plate=plate,
                well=well,
                site=site,
                condition=condition_name(compound, conc),
                files=files,
                extra=extra,
            )
        )
    return records
