"""OME-TIFF files of raw images: the one writer of every raw image phenexplain makes.

`generate` and `traverse` write their raw pixels here (the rendered RGB grids and videos are
`explain.render`'s). A file holds one or more series (OME Images), each a uint8 or uint16 array
over the axes ``[T][C]YX`` (C always present), with the channel names, the physical pixel size
when it is known (it is left out otherwise, never guessed), a name, and key-value annotations
(condition, seed, ...) as an OME MapAnnotation. Readers:

- Fiji (Bio-Formats, which File > Open uses for ``.ome.tif``): one hyperstack per series, with
  named channels and a time axis, never a stack of slices;
- napari: phenexplain's reader plugin (`phenexplain.napari_reader`) or any OME-TIFF reader;
- CellProfiler: NamesAndTypes with "Extract metadata from file headers"; channels by index;
- Python: ``tifffile.TiffFile(path).series[i].asarray()``, axes in ``series[i].axes``.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tifffile

from phenexplain.errors import PhenexplainError
from phenexplain.fsutil import atomic_path

SUFFIX = ".ome.tif"
AXES = re.compile(r"T?CYX")  # the orders we write: OME's XYCZT read backwards, Z unused
DTYPES = (np.uint8, np.uint16)  # as crop sets and microscopes store intensities
NAMESPACE = "phenexplain"  # of the MapAnnotation holding a series' annotations


@dataclass(frozen=True)
class Series:
    """One OME Image: `array` over `axes` (``CYX`` or ``TCYX``), its name and annotations."""

    array: np.ndarray
    axes: str
    name: str = ""
    annotations: Mapping[str, str] = field(default_factory=dict)


def ome_path(path: str | Path) -> Path:
    """`path` with the ``.ome.tif`` suffix: x.gif -> x.ome.tif; x.ome.tif stays; a suffix-less
    name (a frames folder) gains it."""
    path = Path(path)
    if is_ome_tiff(path):
        return path
    return path.with_suffix(SUFFIX) if path.suffix else path.with_name(path.name + SUFFIX)


def is_ome_tiff(path: str | Path) -> bool:
    """Whether `path` is named as an OME-TIFF (``.ome.tif`` or ``.ome.tiff``)."""
    return Path(path).name.lower().endswith((".ome.tif", ".ome.tiff"))


def _check(series: Series, channel_names: Sequence[str]) -> None:
    if not AXES.fullmatch(series.axes):
        raise PhenexplainError(f"OME-TIFF axes {series.axes!r}: expected CYX or TCYX")
    if series.array.ndim != len(series.axes):
        raise PhenexplainError(
            f"an array of shape {list(series.array.shape)} does not have axes {series.axes!r}"
        )
    if series.array.dtype not in DTYPES:
        raise PhenexplainError(
            f"OME-TIFF pixels are uint8 or uint16 (as crop sets store them), got "
            f"{series.array.dtype}"
        )
    channels = series.array.shape[series.axes.index("C")]
    if channels != len(channel_names):
        raise PhenexplainError(
            f"{channels} channels in the image but {len(channel_names)} channel names "
            f"({list(channel_names)})"
        )


def _metadata(series: Series, channel_names: Sequence[str], pixel_size_um: float | None) -> dict:
    """tifffile's OME metadata of one series (see `tifffile.OmeXml.addimage`)."""
    metadata: dict = {"axes": series.axes, "Channel": {"Name": list(channel_names)}}
    if series.name:
        metadata["Name"] = series.name
    if pixel_size_um is not None:
        if not pixel_size_um > 0:
            raise PhenexplainError(f"pixel size {pixel_size_um} µm: it must be positive")
        for axis in "XY":
            metadata[f"PhysicalSize{axis}"] = float(pixel_size_um)
            metadata[f"PhysicalSize{axis}Unit"] = "µm"
    if series.annotations:
        metadata["MapAnnotation"] = {
            "Namespace": NAMESPACE,
            "Value": {str(k): str(v) for k, v in series.annotations.items()},
        }
    return metadata


def write_ome_series(
    path: str | Path,
    series: Sequence[Series],
    channel_names: Sequence[str],
    *,
    pixel_size_um: float | None = None,
) -> Path:
    """Write `series` (one OME Image each, all with `channel_names`) to `path` (named
    ``.ome.tif``), atomically; `pixel_size_um`: µm per pixel, left out when None."""
    path = Path(path)
    if not is_ome_tiff(path):
        raise PhenexplainError(f"{path}: an OME-TIFF is named .ome.tif (readers go by the name)")
    if not series:
        raise PhenexplainError(f"no image to write to {path}")
    for one in series:
        _check(one, channel_names)
    metadata = [_metadata(one, channel_names, pixel_size_um) for one in series]
    metadata[0] = {**metadata[0], **_identity(series, metadata)}
    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, ome=True) as tif:
        for one, meta in zip(series, metadata, strict=True):
            tif.write(np.ascontiguousarray(one.array), photometric="minisblack", metadata=meta)
    return path


def _identity(series: Sequence[Series], metadata: list[dict]) -> dict:
    """The OME root's UUID and Creator. The UUID is a digest of the pixels and metadata (not a
    random one), so the same images give the same bytes, as the pipeline's reruns compare them."""
    from phenexplain import __version__

    digest = hashlib.sha256(json.dumps(metadata, sort_keys=True).encode())
    for one in series:
        digest.update(np.ascontiguousarray(one.array).tobytes())
    return {
        "UUID": str(uuid.UUID(bytes=digest.digest()[:16], version=4)),
        "Creator": f"phenexplain {__version__}",
    }


def write_ome_tiff(
    path: str | Path,
    array: np.ndarray,
    axes: str,
    channel_names: Sequence[str],
    *,
    pixel_size_um: float | None = None,
    name: str = "",
    annotations: Mapping[str, str] | None = None,
) -> Path:
    """One image `array` over `axes` (``CYX`` or ``TCYX``) as the OME-TIFF `path`."""
    one = Series(array, axes, name, dict(annotations or {}))
    return write_ome_series(path, [one], channel_names, pixel_size_um=pixel_size_um)
