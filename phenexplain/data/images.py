"""Decode a field's files into one array [C, H, W] of uint8 or uint16, safely.

Image sizes are read from the headers before any pixel is decoded, so a file claiming giant
dimensions is refused instead of exhausting memory.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from phenexplain.errors import PhenexplainError

MAX_CHANNELS = 5
DTYPES = (np.uint8, np.uint16)


class UnreadableImageError(PhenexplainError):
    """A file exists but cannot be decoded (corrupt, truncated, unsupported, too large)."""


def _header_shape(path: Path) -> tuple[int, ...]:
    if path.suffix.lower() in (".tif", ".tiff"):
        with tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise UnreadableImageError(f"{path}: TIFF without image data")
            return tuple(tif.series[0].shape)
    with Image.open(path) as im:  # lazy: reads the header only
        return (im.height, im.width, len(im.getbands()))


def _decode(path: Path, max_pixels: int) -> np.ndarray:
    try:
        shape = _header_shape(path)
        pixels = int(np.prod(shape))
        if pixels > max_pixels:
            raise UnreadableImageError(
                f"{path}: header claims {'x'.join(map(str, shape))} = {pixels:,} values, over the "
                f"limit of {max_pixels:,} (ingest.max_megapixels)"
            )
        if path.suffix.lower() in (".tif", ".tiff"):
            return tifffile.imread(path)
        with Image.open(path) as im:
            im.load()
            return np.asarray(im)
    except UnreadableImageError:
        raise
    except (OSError, ValueError, SyntaxError, tifffile.TiffFileError, Image.DecompressionBombError) as exc:
        raise UnreadableImageError(f"{path}: cannot decode: {exc}") from None


def _to_chw(array: np.ndarray, n_channels: int, path: Path) -> np.ndarray:
    if array.ndim == 2:
        array = array[None]
    elif array.ndim == 3 and array.shape[-1] <= MAX_CHANNELS and array.shape[0] > MAX_CHANNELS:
        array = np.moveaxis(array, -1, 0)
    elif array.ndim != 3:
        raise UnreadableImageError(f"{path}: expected a 2-D or 3-D image, got shape {array.shape}")
    if array.shape[0] == 4 and n_channels == 3:  # RGBA PNG: drop alpha
        array = array[:3]
    if array.shape[0] == 3 and n_channels == 1 and np.array_equal(array[0], array[1]):
        array = array[:1]  # grey image saved as RGB
    if array.shape[0] != n_channels:
        raise UnreadableImageError(
            f"{path}: holds {array.shape[0]} channel(s) but ingest.channels declares {n_channels}"
        )
    return array


def load_field(files: tuple[Path, ...], n_channels: int, max_megapixels: float = 100.0) -> np.ndarray:
    """The field as [C, H, W] uint8 or uint16, from one file per channel or one multi-channel file."""
    max_pixels = int(max_megapixels * 1e6)
    if len(files) == 1:
        array = _to_chw(_decode(files[0], max_pixels), n_channels, files[0])
    elif len(files) == n_channels:
        planes = []
        for path in files:
            plane = _decode(path, max_pixels)
            if plane.ndim == 3 and plane.shape[-1] in (3, 4) and np.array_equal(plane[..., 0], plane[..., 1]):
                plane = plane[..., 0]
            if plane.ndim != 2:
                raise UnreadableImageError(f"{path}: expected one channel, got shape {plane.shape}")
            planes.append(plane)
        shapes = {p.shape for p in planes}
        if len(shapes) != 1:
            raise UnreadableImageError(f"channel files differ in size: {sorted(shapes)} ({files[0]} ...)")
        array = np.stack(planes)
    else:
        raise UnreadableImageError(f"{len(files)} files for {n_channels} channels ({files[0]} ...)")
    if array.dtype == np.bool_ or array.dtype not in DTYPES:
        raise UnreadableImageError(f"{files[0]}: pixel type {array.dtype} is not 8- or 16-bit unsigned")
    return np.ascontiguousarray(array)
