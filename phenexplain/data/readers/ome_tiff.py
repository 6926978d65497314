"""OME-TIFF: one field per file, ``ROOT/**/*.ome.tif`` (or ``.ome.tiff``), all channels in it.

Channel names come from the OME-XML ``Channel Name`` attributes and are matched against
``ingest.channels``; plate, well and site from the ``Plate`` / ``Well`` / ``WellSample`` that
refers to the file's image (site: the sample's rank by ``Index`` among the samples of its well
found in the source, so one XML per file or one for the whole plate both work), else from the
file name (``<plate>/<well>_s<site>.ome.tif``). Conditions come from ``platemap.csv``
(`phenexplain.data.readers.platemap`). Z-stacks and time series are refused: project them first.
"""

from __future__ import annotations

from pathlib import Path
from xml.etree import ElementTree

import tifffile

from phenexplain.data.images import DECODER_ERRORS
from phenexplain.data.readers.base import (
    PIXEL_SIZE,
    FieldRecord,
    StructureError,
    inside,
    micrometres,
)
from phenexplain.data.readers.platemap import (
    from_name,
    match_channels,
    well_at,
    with_conditions,
)

SUFFIXES = (".ome.tif", ".ome.tiff")


def _tag(element: ElementTree.Element) -> str:
    return element.tag.rpartition("}")[2]  # without the OME namespace, whichever version


def _all(root: ElementTree.Element, tag: str) -> list[ElementTree.Element]:
    return [e for e in root.iter() if _tag(e) == tag]


def _metadata(path: Path) -> ElementTree.Element:
    """The file's OME-XML (expat, which refuses entity expansion bombs; no external entities)."""
    try:
        with tifffile.TiffFile(path) as tif:
            xml = tif.ome_metadata
    except DECODER_ERRORS as exc:
        raise StructureError(f"{path}: cannot read the TIFF header: {exc}") from None
    if not xml:
        raise StructureError(
            f"{path}: no OME-XML in the file; write it as OME-TIFF or use layout 'folders'"
        )
    try:
        return ElementTree.fromstring(xml)
    except ElementTree.ParseError as exc:
        raise StructureError(f"{path}: unreadable OME-XML ({exc})") from None


def _image(root: ElementTree.Element, path: Path) -> ElementTree.Element:
    images = _all(root, "Image")
    if len(images) != 1:
        raise StructureError(
            f"{path}: its OME-XML describes {len(images)} images; phenexplain reads one field "
            "per file (export each field as its own OME-TIFF)"
        )
    pixels = _all(images[0], "Pixels")
    if not pixels:
        raise StructureError(f"{path}: OME-XML Image without Pixels")
    for size in ("SizeZ", "SizeT"):
        if pixels[0].get(size, "1").strip() not in ("0", "1"):
            raise StructureError(
                f"{path}: {size} = {pixels[0].get(size)}; ingest takes one 2-D plane per channel "
                "(project z-stacks, split time series)"
            )
    return images[0]


def _position(root: ElementTree.Element, image_id: str, path: Path) -> tuple[str, str, int]:
    """(plate, well, WellSample Index) of the image `image_id` in the OME-XML plate, else
    (plate, well, -site) from the file name."""
    for plate in _all(root, "Plate"):
        for well in _all(plate, "Well"):
            for sample in _all(well, "WellSample"):
                if image_id in [r.get("ID") for r in _all(sample, "ImageRef")]:
                    name = plate.get("Name") or plate.get("ID") or path.parent.name
                    try:
                        where = well_at(int(well.get("Row", "")), int(well.get("Column", "")))
                        index = int(sample.get("Index", "0"))
                    except ValueError:
                        raise StructureError(
                            f"{path}: OME-XML Well {well.get('ID')} without a Row and Column, "
                            "or its WellSample without an Index"
                        ) from None
                    return name, where, index
    plate_name, well_name, site = from_name(path)
    return plate_name, well_name, -site


def _pixel(image: ElementTree.Element) -> dict[str, str]:
    """{PIXEL_SIZE: µm} from the Image's PhysicalSizeX when it is given in a length unit and
    PhysicalSizeY agrees (square pixels), else {}."""
    pixels = _all(image, "Pixels")[0]
    x, y = (
        micrometres(pixels.get(f"PhysicalSize{a}"), pixels.get(f"PhysicalSize{a}Unit", "µm"))
        for a in "XY"
    )
    if x is None or (y is not None and abs(x - y) > 1e-6 * x):
        return {}
    return {PIXEL_SIZE: f"{x:.6g}"}


def read_ome_tiff(source: Path, channels: list[str]) -> list[FieldRecord]:
    """Fields of the OME-TIFFs under the folder `source`."""
    if not source.is_dir():
        raise StructureError(
            f"{source} is not a folder (layout 'ome-tiff' expects ROOT/**/*.ome.tif)"
        )
    paths = sorted(
        p
        for p in source.rglob("*")
        if p.name.lower().endswith(SUFFIXES) and p.is_file() and not p.name.startswith(".")
    )
    if not paths:
        raise StructureError(f"{source}: no *.ome.tif or *.ome.tiff files found")
    found = []
    for path in paths:
        full = inside(source, path.relative_to(source))
        root = _metadata(full)
        image = _image(root, full)
        names = [c.get("Name") for c in _all(image, "Channel")]
        planes = match_channels(names, channels, str(full))
        found.append((*_position(root, image.get("ID", ""), full), full, planes, _pixel(image)))
    # a sample's site: its rank by Index among the samples of its well in the whole source
    indexes: dict[tuple[str, str], list[int]] = {}
    for plate, well, index, *_ in found:
        if index >= 0:
            indexes.setdefault((plate, well), []).append(index)
    fields = []
    for plate, well, index, full, planes, extra in found:
        site = -index if index < 0 else sorted(indexes[(plate, well)]).index(index) + 1
        fields.append((f"{plate}_{well}_s{site}", plate, well, site, (full,), planes, extra))
    return with_conditions(source, fields, "ome-tiff")
