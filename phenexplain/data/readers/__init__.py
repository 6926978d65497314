"""Plate readers: each lists the fields of a source as `FieldRecord`s.

A reader only *lists* fields (metadata and files); `phenexplain.data.images.load_field` decodes
them. Layouts:

- ``folders``: ``ROOT/<condition>/*.{png,jpg,jpeg,tif,tiff}``, one (possibly multi-channel) image
  per field; plate = the root folder's name;
- ``bbbc021``: the Broad BBBC021 ``BBBC021_v1_image.csv`` with one file per channel;
- ``manifest``: a CSV with one row per field (the ``metadata.csv`` that ``phenexplain synth``
  writes);
- ``loaddata``: a CellProfiler LoadData CSV (``PathName_*`` / ``FileName_*``, ``Metadata_*``);
- ``ome-tiff``: ``ROOT/**/*.ome.tif``, one multi-channel field per file;
- ``ome-zarr``: OME-NGFF plates (HCS) and images; the OME layouts take conditions from
  ``platemap.csv``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

from phenexplain.data.readers.base import FieldRecord, StructureError
from phenexplain.data.readers.bbbc021 import read_bbbc021
from phenexplain.data.readers.folders import read_folders
from phenexplain.data.readers.loaddata import CONDITION_COLUMN, read_loaddata
from phenexplain.data.readers.manifest import read_manifest
from phenexplain.data.readers.ome_tiff import read_ome_tiff
from phenexplain.data.readers.ome_zarr import read_ome_zarr

READERS: dict[str, Callable[[Path, list[str]], list[FieldRecord]]] = {
    "folders": read_folders,
    "bbbc021": read_bbbc021,
    "manifest": read_manifest,
    "loaddata": read_loaddata,
    "ome-tiff": read_ome_tiff,
    "ome-zarr": read_ome_zarr,
}


def list_fields(
    source: str | Path,
    layout: str,
    channels: list[str],
    *,
    condition_column: str = CONDITION_COLUMN,
) -> list[FieldRecord]:
    """All fields of `source` read with `layout`, in a stable order; `condition_column`: the
    column naming conditions (layout ``loaddata``)."""
    try:
        reader = READERS[layout]
    except KeyError:
        raise StructureError(
            f"unknown layout {layout!r}; choose one of: {', '.join(READERS)}"
        ) from None
    if layout == "loaddata":
        reader = partial(read_loaddata, condition_column=condition_column)
    source = Path(source)
    if not source.exists():
        raise StructureError(f"source {source} does not exist")
    records = reader(source, channels)
    if not records:
        raise StructureError(f"no fields found in {source} with layout {layout!r}")
    ids = [r.field_id for r in records]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise StructureError(f"{source}: several fields share the id(s) {', '.join(dupes[:5])}")
    return sorted(records, key=lambda r: (r.plate, r.well, r.site, r.field_id))


__all__ = ["READERS", "FieldRecord", "StructureError", "list_fields"]
