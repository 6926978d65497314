"""Folder per condition: ``ROOT/<condition>/*.{png,jpg,jpeg,tif,tiff}``.

Each image is one field (or one ready-made crop with ``--precropped``) holding all channels: a
2-D image for one channel, ``[H, W, C]`` (PNG/JPEG, or TIFF with C <= 5 last) or ``[C, H, W]``.
There are no wells: the well is the condition folder and the site the image's rank in it.
"""

from __future__ import annotations

from pathlib import Path

from phenexplain.data.readers.base import FieldRecord, StructureError, inside

SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff"}


def read_folders(source: Path, channels: list[str]) -> list[FieldRecord]:
    if not source.is_dir():
        raise StructureError(
            f"{source} is not a folder (layout 'folders' expects ROOT/<condition>/)"
        )
    records = []
    for cond_dir in sorted(
        p for p in source.iterdir() if p.is_dir() and not p.name.startswith(".")
    ):
        images = sorted(
            p for p in cond_dir.iterdir() if p.suffix.lower() in SUFFIXES and p.is_file()
        )
        for rank, image in enumerate(images, start=1):
            rel = image.relative_to(source)
            records.append(
                FieldRecord(
                    field_id=rel.as_posix(),
                    plate=source.name,
                    well=cond_dir.name,
                    site=rank,
                    condition=cond_dir.name,
                    files=(inside(source, rel),),
                )
            )
    if not records:
        raise StructureError(
            f"{source}: no images found; expected {source}/<condition>/*.png|jpg|tif (one folder "
            "per condition)"
        )
    return records
