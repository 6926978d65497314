"""Interoperability with NVlabs stylegan2-ada-pytorch datasets (a zip of PNGs + dataset.json).

Export writes ``00000/img00000000.png`` ... with ``dataset.json`` = ``{"labels": [[name, class],
...]}`` (the class index of `conditions.json`) and a copy of ``conditions.json`` so that names
survive a round trip. PNG holds 1 (L), 2 (LA), 3 (RGB) or 4 (RGBA) channels; the reference loader
reads them all as channels, so 5-channel crop sets cannot be exported.

Import reads such a zip without extracting it: member names must be plain relative paths and
unique, every image header is checked before any pixel is decoded (square, at most
`MAX_CROP_SIZE` px, one shape for all), and the pixels of all images together must fit in
`MAX_DECODED_BYTES`.
"""

from __future__ import annotations

import io
import json
import math
import reprlib
import zipfile
import zlib
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
from PIL import Image

from phenexplain.config import MAX_CROP_SIZE
from phenexplain.data import cropset as cs
from phenexplain.errors import PhenexplainError
from phenexplain.fsutil import (
    atomic_path,
    check_output,
    check_output_file,
)

PNG_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}
ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed, so the same crop set gives the same zip bytes
MAX_UNCOMPRESSED = 20 * 2**30
MAX_DECODED_BYTES = 4 * 2**30  # the pixels of all images, held in memory while importing


def export_stylegan(cropset_dir: str | Path, out_zip: str | Path) -> int:
    """Write the crop set as a stylegan2-ada dataset zip; returns the number of images."""
    out_zip = Path(out_zip)
    check_output_file(out_zip, [cropset_dir])
    crops = cs.CropSet(cropset_dir)
    channels = len(crops.channels)
    if channels not in PNG_MODES:
        raise PhenexplainError(
            f"{cropset_dir} has {channels} channels; stylegan2-ada datasets are PNGs of 1 to 4 "
            "channels. Ingest a subset of channels (ingest.channels) to export it."
        )
    labels = []
    with atomic_path(out_zip) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
        for i in range(len(crops)):
            image, label = crops[i]
            name = f"{i // 1000:05d}/img{i:08d}.png"
            buffer = io.BytesIO()
            pixels = image[0] if channels == 1 else np.moveaxis(image, 0, -1)
            # L, LA, RGB or RGBA by shape
            Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="png")
            zf.writestr(zipfile.ZipInfo(name, ZIP_TIME), buffer.getvalue())
            labels.append([name, label])
        zf.writestr(zipfile.ZipInfo("dataset.json", ZIP_TIME), json.dumps({"labels": labels}))
        zf.writestr(
            zipfile.ZipInfo("conditions.json", ZIP_TIME),
            json.dumps(crops.conditions, sort_keys=True),
        )
    return len(labels)


def _safe_member(name: str) -> str:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or "\\" in name or ":" in name:
        raise PhenexplainError(
            f"zip member {name!r} escapes the archive folder; refusing the archive"
        )
    return name


def _check_archive(zf: zipfile.ZipFile, source: Path) -> None:
    total = 0
    seen: set[str] = set()
    for info in zf.infolist():
        _safe_member(info.filename)
        if info.filename in seen:  # zipfile would silently read the last of them
            raise PhenexplainError(
                f"{source}: member {info.filename!r} appears more than once; re-create the "
                "archive with one member per name"
            )
        seen.add(info.filename)
        if (info.external_attr >> 16) & 0o170000 == 0o120000:
            raise PhenexplainError(
                f"{source}: member {info.filename!r} is a symbolic link; refusing the archive"
            )
        total += info.file_size
    if total > MAX_UNCOMPRESSED:
        raise PhenexplainError(
            f"{source} would expand to {total / 2**30:.1f} GiB; refusing the archive"
        )


PNG_ERRORS = (OSError, SyntaxError, ValueError, zlib.error, Image.DecompressionBombError)


def _png_shape(data: bytes, name: str, source: Path) -> tuple[int, int, int]:
    """[C, H, W] of member `name` (bytes `data`) from its header alone; refuses non-square and
    oversized images."""
    try:
        with Image.open(io.BytesIO(data)) as im:  # lazy: reads the header only
            shape = (len(im.getbands()), im.height, im.width)
    except Image.UnidentifiedImageError:  # its message names a BytesIO, not the member
        raise PhenexplainError(f"{source}:{name}: cannot decode: not an image file") from None
    except PNG_ERRORS as exc:
        raise PhenexplainError(f"{source}:{name}: cannot decode: {exc}") from None
    _, height, width = shape
    if height != width:
        raise PhenexplainError(
            f"{source}: {name!r} is {width}x{height}; stylegan2-ada datasets hold square images, "
            "crop or pad it to a square"
        )
    if width > MAX_CROP_SIZE:
        raise PhenexplainError(
            f"{source}: {name!r} is {width}x{height}, larger than a crop may be ({MAX_CROP_SIZE} "
            "px, as ingest.crop_size); resize the dataset"
        )
    return shape


def _decode_png(data: bytes, name: str, shape: tuple[int, int, int]) -> np.ndarray:
    """The [C, H, W] uint8 pixels of `data`, which its header said have `shape`."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            array = np.asarray(im)
    except PNG_ERRORS as exc:
        raise PhenexplainError(f"{name}: cannot decode: {exc}") from None
    if array.dtype != np.uint8:
        raise PhenexplainError(f"{name}: {array.dtype} pixels; stylegan2-ada datasets are 8-bit")
    array = array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0)
    if array.shape != shape:
        raise PhenexplainError(f"{name}: decodes to {array.shape}, its header said {shape}")
    return array


def _check_shapes(shapes: dict[str, tuple[int, int, int]], source: Path) -> tuple[int, int, int]:
    """The one [C, S, S] shared by every image, whose pixels together fit in `MAX_DECODED_BYTES`."""
    first_name, first = next(iter(shapes.items()))
    for name, shape in shapes.items():
        if shape != first:
            raise PhenexplainError(
                f"{source}: images differ in shape: {name!r} is {shape}, {first_name!r} "
                f"{first} ([channels, height, width])"
            )
    total = len(shapes) * math.prod(first)
    if total > MAX_DECODED_BYTES:
        raise PhenexplainError(
            f"{source}: {len(shapes)} images of {'x'.join(map(str, first))} pixels decode to "
            f"{total / 2**30:.1f} GiB, over the {MAX_DECODED_BYTES / 2**30:.0f} GiB an import "
            "holds in memory; split the archive into several crop sets"
        )
    return first


def _read_crops(zf: zipfile.ZipFile, members: list[str], source: Path) -> np.ndarray:
    """The images `members` as [N, C, S, S] uint8; every header is checked before decoding."""
    names = set(zf.namelist())
    shapes = {}
    for name in members:  # one member's bytes held at a time
        if _safe_member(name) not in names:
            raise PhenexplainError(
                f"{source}: dataset.json lists {name!r}, which is not in the archive"
            )
        shapes[name] = _png_shape(_read_member(zf, name, source), name, source)
    shape = _check_shapes(shapes, source)
    stack = np.empty((len(members), *shape), np.uint8)
    for crop, name in zip(stack, members, strict=True):
        crop[...] = _decode_png(_read_member(zf, name, source), f"{source}:{name}", shape)
    return stack


def _is_class_index(value: object) -> bool:
    """A non-negative whole number (JSON may spell it 3 or 3.0); booleans are not classes."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return value >= 0 and float(value).is_integer()


def _json_kind(value: object) -> str:
    """The JSON name of `value`'s type, for messages."""
    kinds = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return kinds.get(type(value), "number")


def _read_json(raw: bytes | str, where: str) -> dict:
    """The JSON object in `raw`; `where` names the file in the error."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError
        raise PhenexplainError(
            f"{where} is not valid JSON ({exc}); rewrite it as a JSON object"
        ) from None
    if not isinstance(data, dict):
        raise PhenexplainError(f"{where} holds a JSON {_json_kind(data)}; it must be a JSON object")
    return data


def dataset_labels(raw: bytes | str, where: str) -> list[tuple[str, int]]:
    """(file, class index) pairs of a stylegan2-ada ``dataset.json`` (``{"labels": [...]}``).

    `where` names the file in errors. Refuses text that is not a JSON object, missing or empty
    labels, and labels that are not ``[file, class_index]`` with a whole class index >= 0.
    """
    labels = _read_json(raw, where).get("labels")
    if not labels:
        raise PhenexplainError(
            f"{where} has no labels; phenexplain needs one class per image "
            '({"labels": [[file, class_index], ...]})'
        )
    if not isinstance(labels, list):
        raise PhenexplainError(
            f"{where}: 'labels' is a JSON {_json_kind(labels)}; it must be a list of "
            "[file, class_index] pairs"
        )
    pairs = []
    for i, entry in enumerate(labels):
        if not (
            isinstance(entry, list)
            and len(entry) == 2
            and isinstance(entry[0], str)
            and _is_class_index(entry[1])
        ):
            raise PhenexplainError(
                f"{where}: labels[{i}] is {reprlib.repr(entry)}; each label must be "
                "[file, class_index] with a whole class index >= 0"
            )
        pairs.append((entry[0], int(entry[1])))
    first: dict[str, int] = {}
    for i, (file, _) in enumerate(pairs):
        if file in first:
            raise PhenexplainError(
                f"{where}: {file!r} is labelled twice (labels[{first[file]}] and labels[{i}]); "
                "give each file one class"
            )
        first[file] = i
    return pairs


def _class_names(raw: bytes, where: str, classes: set[int]) -> dict[int, str]:
    """Class index -> name from ``conditions.json`` (``{name: index}``), covering `classes`."""
    by_index: dict[int, str] = {}
    for name, index in _read_json(raw, where).items():
        if not _is_class_index(index):
            raise PhenexplainError(
                f"{where}: {name!r} maps to {reprlib.repr(index)}; each condition must map to a "
                "whole class index >= 0"
            )
        if int(index) in by_index:
            raise PhenexplainError(
                f"{where}: {by_index[int(index)]!r} and {name!r} share class {int(index)}; give "
                "each condition its own index"
            )
        by_index[int(index)] = name
    unknown = sorted(classes - set(by_index))
    if unknown:
        raise PhenexplainError(
            f"{where} has no name for class(es) {unknown[:10]} used in dataset.json (it names "
            f"{sorted(by_index)[:10]}); add them or fix the labels"
        )
    return by_index


def _read_member(zf: zipfile.ZipFile, name: str, source: Path) -> bytes:
    """The bytes of member `name`; a damaged member (bad CRC, bad data) is a clear error."""
    try:
        return zf.read(name)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise PhenexplainError(
            f"{source}: member {name!r} is damaged ({exc}); re-create or re-download the archive"
        ) from None
    except (NotImplementedError, RuntimeError) as exc:  # unknown compression, encryption
        raise PhenexplainError(
            f"{source}: member {name!r} cannot be read ({exc}); re-create the archive without "
            "encryption, with stored or deflated members"
        ) from None


def import_stylegan(
    source: str | Path,
    out: str | Path,
    *,
    channels: list[str] | None = None,
    overwrite: bool = False,
) -> int:
    """Turn a stylegan2-ada dataset zip into a crop set (one shard); returns the number of crops.

    Everything is read and checked before the output is staged, so a refused archive writes
    nothing; every image's header is checked before any pixel is decoded, and all pixels together
    may take at most `MAX_DECODED_BYTES`.
    """
    source, out = Path(source), Path(out)
    check_output(out, overwrite, kind=cs.KIND, inputs=[source])
    try:
        zf = zipfile.ZipFile(source)
    except (OSError, zipfile.BadZipFile) as exc:
        raise PhenexplainError(f"{source}: not a readable zip ({exc})") from None
    with zf:
        _check_archive(zf, source)
        names = set(zf.namelist())
        if "dataset.json" not in names:
            raise PhenexplainError(
                f"{source}: no dataset.json; a conditional dataset needs class labels"
            )
        labels = dataset_labels(
            _read_member(zf, "dataset.json", source), f"dataset.json in {source}"
        )
        classes = {label for _, label in labels}
        if "conditions.json" in names:
            by_index = _class_names(
                _read_member(zf, "conditions.json", source), f"conditions.json in {source}", classes
            )
        else:
            by_index = {i: f"class_{i}" for i in sorted(classes)}
        stack = _read_crops(zf, [name for name, _ in sorted(labels)], source)
    n_channels, size = stack.shape[1:3]
    channels = channels or [f"ch{i}" for i in range(n_channels)]
    if len(channels) != n_channels:
        raise PhenexplainError(
            f"{source}: images have {n_channels} channels, {len(channels)} names given"
        )
    rows: list[dict] = []
    shard = cs.shard_name(source.stem)
    for (name, label), crop in zip(sorted(labels), stack, strict=True):
        row = {"crop_id": name, "shard": shard, "index": len(rows), "field_id": name,
               "plate": source.stem, "well": "", "site": 0, "condition": by_index[label],
               "y": size / 2, "x": size / 2, "top": 0, "left": 0}  # fmt: skip
        for ch in channels:
            row[f"scale_low_{ch}"], row[f"scale_high_{ch}"] = 0.0, 255.0
        row["illumination_corrected"] = False
        row["checksum"] = cs.crop_checksum(crop)
        row["files"] = f"{source.name}:{name}"
        rows.append(row)
    manifest = pd.DataFrame(rows)
    cs.write_cropset(
        out, shard, stack, manifest, inputs=[source], overwrite=overwrite,
        info={"source": str(source), "layout": "stylegan2-ada zip", "channels": channels,
              "plates": {source.stem: {"shard": shard, "crops": len(rows)}}},
    )  # fmt: skip
    return len(rows)
