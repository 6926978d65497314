"""napari reader plugin: crop set folders and OME-TIFFs as image layers, with their metadata.

Declared in ``phenexplain/napari.yaml`` (npe2 manifest), found by napari through the entry point
``napari.manifest`` of an installed phenexplain (``pip install -e .``, then ``napari <path>`` or
File > Open). Nothing here imports napari: the reader returns napari's LayerData tuples
``(data, kwargs, "image")``.

- a crop set folder (``cropset.json``): one layer per condition, crops stacked [N, C, S, S] and
  split into a layer per channel (``channel_axis``); per crop, its crop_id, plate, well and site
  in the layer's metadata (the manifest's rows, in stack order);
- an OME-TIFF (``generate``'s images, ``traverse``'s raw traversals): one layer per series, split
  per channel, named by the series and the OME channel names; its annotations (seed, source,
  target, ...) and axes in the metadata; scaled in µm when the file records a pixel size.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from xml.etree import ElementTree

import numpy as np

from phenexplain.data.cropset_files import INFO
from phenexplain.data.ome_tiff import is_ome_tiff

log = logging.getLogger(__name__)

LayerData = tuple[np.ndarray, dict, str]
OME = "{http://www.openmicroscopy.org/Schemas/OME/2016-06}"


def napari_get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    """The reader of `path` (napari's hook): crop set folders and ``.ome.tif`` files; None
    for anything else, so napari asks another plugin."""
    if isinstance(path, list):
        if len(path) != 1:
            return None  # several files at once: one layer list per file is napari's to stack
        path = path[0]
    if (Path(path) / INFO).is_file():
        return read_layers
    if is_ome_tiff(path) and Path(path).is_file():
        return read_layers
    return None


def read_layers(path: str | list[str]) -> list[LayerData]:
    """The layers of a crop set folder or an OME-TIFF (see the module's docstring)."""
    one = Path(path[0] if isinstance(path, list) else path)
    return read_cropset(one) if one.is_dir() else read_ome_tiff(one)


def read_cropset(root: Path) -> list[LayerData]:
    """One layer per condition of the crop set `root`: uint8 [N, C, S, S], a layer per channel."""
    from phenexplain.data.cropset import CropSet

    crops = CropSet(root)
    manifest = crops.manifest
    layers = []
    for condition in sorted(crops.conditions):
        index = np.flatnonzero(manifest["condition"].to_numpy() == condition)
        rows = manifest.iloc[index]
        data = np.stack([crops[int(i)][0] for i in index])  # in memory: crop sets fit in RAM
        metadata = {
            "source": str(root),
            "condition": condition,
            "channels": crops.channels,
            "crop_id": rows["crop_id"].astype(str).tolist(),
        }
        for column in ("plate", "well", "site"):
            if column in rows:
                metadata[column] = rows[column].tolist()
        names = [f"{condition} {channel}" for channel in crops.channels]
        layers.append((data, _channel_kwargs(names, 1, metadata), "image"))
    return layers


def read_ome_tiff(path: Path) -> list[LayerData]:
    """One layer per series of the OME-TIFF `path`, split per channel."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        ome = ElementTree.fromstring(tif.ome_metadata or "<OME/>")
        arrays = [(series.asarray(), series.axes, series.name) for series in tif.series]
    images = ome.findall(f"{OME}Image")
    maps = {
        note.get("ID"): {m.get("K", ""): m.text or "" for m in note.iter(f"{OME}M")}
        for note in ome.iter(f"{OME}MapAnnotation")
    }
    layers = []
    for k, (data, axes, name) in enumerate(arrays):
        channels, size, annotations = _describe(images[k] if k < len(images) else None, maps)
        name = name or path.name
        metadata = {"source": str(path), "axes": axes, "channels": channels, **annotations}
        if "C" in axes:
            names = [f"{name} {c}" for c in channels] if channels else name
            kwargs = _channel_kwargs(names, axes.index("C"), metadata)
        else:  # one channel: tifffile leaves the axis out
            kwargs = {"name": f"{name} {channels[0]}" if channels else name, "metadata": metadata}
        if size is not None:  # µm per pixel on Y and X, 1 a step on T
            kwargs["scale"] = [size if a in "YX" else 1.0 for a in axes if a != "C"]
        layers.append((data, kwargs, "image"))
    return layers


def _channel_kwargs(names: list[str] | str, axis: int, metadata: dict) -> dict:
    return {"name": names, "channel_axis": axis, "metadata": metadata}


def _describe(
    image: ElementTree.Element | None, maps: dict[str | None, dict[str, str]]
) -> tuple[list[str], float | None, dict[str, str]]:
    """An OME Image's channel names, pixel size (µm, when X and Y agree) and the key-value
    annotations it refers to (`maps`: MapAnnotation ID -> its pairs)."""
    pixels = image.find(f"{OME}Pixels") if image is not None else None
    if image is None or pixels is None:
        return [], None, {}
    channels = [c.get("Name", "") for c in pixels.findall(f"{OME}Channel")]
    x, y = pixels.get("PhysicalSizeX"), pixels.get("PhysicalSizeY")
    unit = pixels.get("PhysicalSizeXUnit", "µm")
    size = float(x) if x is not None and x == y and unit in ("µm", "um") else None
    annotations: dict[str, str] = {}
    for ref in image.findall(f"{OME}AnnotationRef"):
        annotations.update(maps.get(ref.get("ID"), {}))
    return channels, size, annotations
