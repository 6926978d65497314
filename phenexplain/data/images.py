"""Decode a field's files into one array [C, H, W] of uint8 or uint16, safely.

Image sizes are read from the headers before any pixel is decoded, so a file claiming giant
dimensions is refused instead of exhausting memory. Compressed TIFFs (LZW, Deflate, JPEG, ...) and
packed 10-, 12- or 14-bit samples are decoded by imagecodecs (through tifffile), packed samples as
uint16. A Zarr array (an OME-Zarr image's level 0) is given as its folder; its axes other than
the channel and the last two (y, x) must have size 1 (the reader checks). A file no decoder can
read raises `UnreadableImageError`, which an ingest quarantines.
"""

from __future__ import annotations

import io
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from phenexplain.errors import PhenexplainError

MAX_CHANNELS = 5
DTYPES = (np.uint8, np.uint16)
MAX_BYTES_PER_VALUE = 8  # a file larger than this per allowed value is not one field


# What tifffile, Pillow and imagecodecs raise on malformed or unsupported input. imagecodecs'
# codec errors (Jpeg8Error, LzwError, ...) and a missing codec (NotImplementedError) are
# RuntimeErrors; tags of the wrong type or count surface as TypeError, KeyError, IndexError or
# ZeroDivisionError.
DECODER_ERRORS = (
    OSError, ValueError, TypeError, SyntaxError, RuntimeError, KeyError, IndexError,
    ArithmeticError, EOFError, struct.error, zlib.error, tifffile.TiffFileError,
    Image.DecompressionBombError,
)  # fmt: skip


class UnreadableImageError(PhenexplainError):
    """A file exists but cannot be decoded (corrupt, truncated, unsupported, too large)."""


def _check_values(shape: tuple[int, ...], path: Path, max_pixels: int) -> None:
    values = math.prod(shape)  # a Python int: a forged shape cannot overflow to a small number
    if values > max_pixels:
        raise UnreadableImageError(
            f"{path}: header claims {'x'.join(map(str, shape))} = {values:,} values, over the "
            f"limit of {max_pixels:,} (ingest.max_megapixels)"
        )


def _read(path: Path, max_pixels: int) -> io.BytesIO:
    """The file's bytes in memory: a decoder asking a forged length of it gets what is there,
    where a read of the file itself would first allocate the whole claimed length."""
    size = path.stat().st_size
    if size > MAX_BYTES_PER_VALUE * max_pixels:
        raise UnreadableImageError(
            f"{path}: {size:,} bytes, more than an image of {max_pixels:,} values needs "
            "(ingest.max_megapixels)"
        )
    return io.BytesIO(path.read_bytes())


def _decode_zarr(path: Path, max_pixels: int) -> np.ndarray:
    """A Zarr array folder as [C, H, W] or [H, W]: its size-1 leading axes (t, z) dropped."""
    import zarr  # imported here: only OME-Zarr sources need it

    try:
        array = zarr.open_array(store=str(path), mode="r")
        shape = tuple(int(n) for n in array.shape)
        _check_values(shape, path, max_pixels)
        data = np.asarray(array[...])
    except UnreadableImageError:
        raise
    except DECODER_ERRORS as exc:  # zarr's errors are ValueErrors
        raise UnreadableImageError(f"{path}: cannot read the Zarr array: {exc}") from None
    single = tuple(i for i in range(data.ndim - 2) if data.shape[i] == 1)
    return data.squeeze(axis=single)


def _decode(path: Path, max_pixels: int) -> np.ndarray:
    if path.is_dir():
        return _decode_zarr(path, max_pixels)
    try:
        data = _read(path, max_pixels)
        if path.suffix.lower() in (".tif", ".tiff"):
            with tifffile.TiffFile(data) as tif:
                if not tif.series:
                    raise UnreadableImageError(f"{path}: TIFF without image data")
                _check_values(tuple(tif.series[0].shape), path, max_pixels)
                return tif.asarray()  # the first series, as the header check measured
        with Image.open(data) as im:  # lazy: reads the header only
            _check_values((im.height, im.width, len(im.getbands())), path, max_pixels)
            im.load()
            return np.asarray(im)
    except UnreadableImageError:
        raise
    except DECODER_ERRORS as exc:
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


def _planes(array: np.ndarray, planes: tuple[int, ...], path: Path) -> np.ndarray:
    """The channels `planes` of a multi-channel image, in that order, as [C, H, W]."""
    if array.ndim == 2:
        array = array[None]
    elif array.ndim == 3 and array.shape[-1] <= MAX_CHANNELS < array.shape[0]:
        array = np.moveaxis(array, -1, 0)  # samples last (an RGB OME-TIFF)
    if array.ndim != 3:
        raise UnreadableImageError(f"{path}: expected a 2-D or 3-D image, got shape {array.shape}")
    if max(planes) >= array.shape[0]:
        raise UnreadableImageError(
            f"{path}: holds {array.shape[0]} channel(s), its metadata names {max(planes) + 1} or "
            "more"
        )
    return array[list(planes)]


def load_field(
    files: tuple[Path, ...],
    n_channels: int,
    max_megapixels: float = 100.0,
    planes: tuple[int, ...] = (),
) -> np.ndarray:
    """The field as [C, H, W] uint8 or uint16, from one file per channel or one multi-channel
    file (or Zarr array); `planes`: the index of each wanted channel in that one image."""
    max_pixels = int(max_megapixels * 1e6)
    if planes:
        assert len(files) == 1 and len(planes) == n_channels, (files, planes, n_channels)
        array = _planes(_decode(files[0], max_pixels), planes, files[0])
    elif len(files) == 1:
        array = _to_chw(_decode(files[0], max_pixels), n_channels, files[0])
    elif len(files) == n_channels:
        arrays = []
        for path in files:
            plane = _decode(path, max_pixels)
            if (
                plane.ndim == 3
                and plane.shape[-1] in (3, 4)
                and np.array_equal(plane[..., 0], plane[..., 1])
            ):
                plane = plane[..., 0]
            if plane.ndim != 2:
                raise UnreadableImageError(f"{path}: expected one channel, got shape {plane.shape}")
            arrays.append(plane)
        shapes = {p.shape for p in arrays}
        if len(shapes) != 1:
            raise UnreadableImageError(
                f"channel files differ in size: {sorted(shapes)} ({files[0]} ...)"
            )
        types = [str(p.dtype) for p in arrays]
        if len(set(types)) != 1:  # np.stack would widen them, e.g. 8-bit DNA to a dark 16-bit one
            listed = ", ".join(f"{path.name}: {t}" for path, t in zip(files, types, strict=True))
            raise UnreadableImageError(
                f"channel files differ in pixel type ({listed}); export every channel of a field "
                "at the same bit depth"
            )
        array = np.stack(arrays)
    else:
        raise UnreadableImageError(f"{len(files)} files for {n_channels} channels ({files[0]} ...)")
    if array.dtype == np.bool_ or array.dtype not in DTYPES:
        raise UnreadableImageError(
            f"{files[0]}: pixel type {array.dtype} is not 8- or 16-bit unsigned"
        )
    return np.ascontiguousarray(array)


def load_labels(path: Path, shape: tuple[int, int], max_megapixels: float = 100.0) -> np.ndarray:
    """A supplied label image (0 background, one integer per object) of the field `shape` [H, W].

    Raises `UnreadableImageError` naming `path` when it is not an integer image of that size.
    """
    labels = _decode(path, int(max_megapixels * 1e6))
    if labels.ndim == 3 and 1 in (labels.shape[0], labels.shape[-1]):
        labels = labels.squeeze()
    if labels.dtype == np.bool_ or labels.dtype.kind not in "ui":
        raise UnreadableImageError(
            f"mask {path}: pixel type {labels.dtype} is not an integer label image; save the "
            "labels as 16-bit integers (0 = background, 1..n = objects), as CellProfiler, "
            "cellpose and StarDist write them"
        )
    if labels.shape != tuple(shape):
        raise UnreadableImageError(
            f"mask {path}: shape {'x'.join(map(str, labels.shape))} is not the field's "
            f"{'x'.join(map(str, shape))}; give the label image of this field at full size"
        )
    if labels.dtype.kind == "i" and int(labels.min()) < 0:
        raise UnreadableImageError(f"mask {path}: negative labels; 0 is background, 1..n objects")
    return labels
