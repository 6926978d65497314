"""Label images a lab already has (CellProfiler, cellpose, StarDist), used instead of our nucleus
detection (`ingest.masks`, ``--masks``).

A label image holds 0 for background and one integer per object (16-bit as those tools write
it), at the field's size. `ingest.masks` is either

- a folder: the nucleus labels of a field are ``<field_id>.<ext>`` or ``<field_id>_nuclei.<ext>``,
  else ``<stem>_cp_masks.<ext>`` (cellpose), ``<stem>_masks.<ext>`` or ``<stem>_nuclei.<ext>``
  where ``<stem>`` is the name of the field's DNA-channel file without its extension; cell labels,
  optional, ``<field_id>_cells.<ext>`` or ``<stem>_cells.<ext>`` (``ext``: tif, tiff or png);
- a CSV keyed by ``Metadata_Plate``, ``Metadata_Well``, ``Metadata_Site`` (or ``plate``, ``well``,
  ``site``) with ``ObjectsPathName_Nuclei`` / ``ObjectsFileName_Nuclei`` (as CellProfiler exports
  them) or ``PathName_Nuclei`` / ``FileName_Nuclei``, and optionally the same for ``Cells``; a
  LoadData CSV that has these columns can be given as is.

A field without a mask is quarantined ("no mask"), as is one whose mask is not an integer image
of its size. Masks are taken as they are: no size filter, labels renumbered 1..n.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
from skimage.segmentation import relabel_sequential

from phenexplain.config import IngestParams
from phenexplain.data.images import load_labels
from phenexplain.data.readers import FieldRecord, StructureError
from phenexplain.data.readers.base import inside, read_table, site_number
from phenexplain.data.readers.loaddata import channel_path

SUFFIXES = (".tif", ".tiff", ".png")
KEYS = (("Metadata_Plate", "Metadata_Well", "Metadata_Site"), ("plate", "well", "site"))
PREFIXES = ("Objects", "")  # ObjectsPathName_Nuclei (CellProfiler's export), PathName_Nuclei


def _stem(record: FieldRecord, params: IngestParams) -> str:
    files = record.files
    dna = files[params.channels.index(params.dna_channel)] if len(files) > 1 else files[0]
    name = dna.name
    for suffix in (".ome.tiff", ".ome.tif", ".ome.zarr"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def _first(folder: Path, names: list[str]) -> Path | None:
    for name in names:
        for suffix in SUFFIXES:
            path = inside(folder, Path(name + suffix))
            if path.is_file():
                return path
    return None


def _from_folder(folder: Path, record: FieldRecord, params: IngestParams) -> tuple[Path, ...]:
    field, stem = record.field_id, _stem(record, params)
    nuclei = _first(folder, [field, f"{field}_nuclei", f"{stem}_cp_masks", f"{stem}_masks"])
    nuclei = nuclei or _first(folder, [f"{stem}_nuclei"])
    if nuclei is None:
        return ()
    cells = _first(folder, [f"{field}_cells", f"{stem}_cells"])
    return (nuclei,) if cells is None else (nuclei, cells)


def _columns(header: list[str], objects: str) -> tuple[str, str] | None:
    for prefix in PREFIXES:
        pair = (f"{prefix}PathName_{objects}", f"{prefix}FileName_{objects}")
        if all(c in header for c in pair):
            return pair
    return None


def _from_table(path: Path) -> dict[tuple[str, str, int], tuple[Path, ...]]:
    """(plate, well, site) -> mask files of the CSV `path`."""
    path, header, rows = read_table(path, "", "ingest.masks")
    keys = next((k for k in KEYS if all(c in header for c in k)), None)
    nuclei = _columns(header, "Nuclei")
    if keys is None or nuclei is None:
        raise StructureError(
            f"{path}: a mask table needs Metadata_Plate, Metadata_Well, Metadata_Site (or plate, "
            "well, site) and ObjectsPathName_Nuclei / ObjectsFileName_Nuclei (or PathName_Nuclei "
            "/ FileName_Nuclei); add the missing columns"
        )
    cells = _columns(header, "Cells")
    table = {}
    for line, row in enumerate(rows, start=2):
        where = f"{path}:{line}"
        if any(row[c] is None for c in (*keys, *nuclei)):
            raise StructureError(f"{where}: the row ends before the key and mask columns")
        try:
            files = [channel_path(path.parent, row[nuclei[0]], row[nuclei[1]])]
            if cells is not None and row[cells[1]]:
                files.append(channel_path(path.parent, row[cells[0]] or "", row[cells[1]]))
        except StructureError as exc:
            raise StructureError(f"{where}: {exc}") from None
        site = site_number(row[keys[2]], where)
        table[(row[keys[0]], row[keys[1]], site)] = tuple(files)
    return table


def attach_masks(records: list[FieldRecord], params: IngestParams) -> list[FieldRecord]:
    """`records` with the mask files of `params.masks` (none: the field will be quarantined)."""
    assert params.masks is not None
    where = Path(params.masks)
    if where.is_dir():
        out = [replace(r, masks=_from_folder(where, r, params)) for r in records]
    elif where.is_file():
        table = _from_table(where)
        out = [replace(r, masks=table.get((r.plate, r.well, r.site), ())) for r in records]
    else:
        raise StructureError(f"ingest.masks {where} does not exist; give a folder or a CSV")
    if records and not any(r.masks for r in out):
        example = records[0]
        raise StructureError(
            f"no field has a mask in {where} (e.g. none for field {example.field_id}, plate "
            f"{example.plate} well {example.well} site {example.site}); name label images "
            "<field_id>.tif or <image>_cp_masks.tif, or list them in a CSV (see "
            "phenexplain.data.masks)"
        )
    return out


def supplied_labels(
    files: tuple[Path, ...], shape: tuple[int, int], max_megapixels: float
) -> list[np.ndarray]:
    """The label images `files` (nuclei, then cells), checked against the field `shape` and
    renumbered 1..n; raises `UnreadableImageError` naming a bad file."""
    out = []
    for path in files:
        labels = load_labels(path, shape, max_megapixels)
        out.append(relabel_sequential(labels.astype(np.int64, copy=False))[0])
    return out
