"""Interoperability with NVlabs stylegan2-ada-pytorch datasets (a zip of PNGs + dataset.json).

Export writes ``00000/img00000000.png`` ... with ``dataset.json`` = ``{"labels": [[name, class],
...]}`` (the class index of `conditions.json`) and a copy of ``conditions.json`` so that names
survive a round trip. PNG holds 1 (L), 2 (LA), 3 (RGB) or 4 (RGBA) channels; the reference loader
reads them all as channels, so 5-channel crop sets cannot be exported.

Import reads such a zip without extracting it: member names must be plain relative paths, every
image header is checked before decoding, and the total size is bounded.
"""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
from PIL import Image

from phenexplain import __version__
from phenexplain.data import cropset as cs
from phenexplain.errors import PhenexplainError
from phenexplain.fsutil import check_output, staging_dir, swap_into_place, write_json

PNG_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}
ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed, so the same crop set gives the same zip bytes
MAX_UNCOMPRESSED = 20 * 2**30


def export_stylegan(cropset_dir: str | Path, out_zip: str | Path) -> int:
    """Write the crop set as a stylegan2-ada dataset zip; returns the number of images."""
    crops = cs.CropSet(cropset_dir)
    channels = len(crops.channels)
    if channels not in PNG_MODES:
        raise PhenexplainError(
            f"{cropset_dir} has {channels} channels; stylegan2-ada datasets are PNGs of 1 to 4 "
            "channels. Ingest a subset of channels (ingest.channels) to export it."
        )
    out_zip = Path(out_zip)
    out_zip.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_zip.with_name(f".{out_zip.name}.partial")
    labels = []
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
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
        zf.writestr(zipfile.ZipInfo("conditions.json", ZIP_TIME), json.dumps(crops.conditions, sort_keys=True))
    tmp.replace(out_zip)
    return len(labels)


def _safe_member(name: str) -> str:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or "\\" in name or ":" in name:
        raise PhenexplainError(f"zip member {name!r} escapes the archive folder; refusing the archive")
    return name


def _check_archive(zf: zipfile.ZipFile, source: Path) -> None:
    total = 0
    for info in zf.infolist():
        _safe_member(info.filename)
        if (info.external_attr >> 16) & 0o170000 == 0o120000:
            raise PhenexplainError(f"{source}: member {info.filename!r} is a symbolic link; refusing the archive")
        total += info.file_size
    if total > MAX_UNCOMPRESSED:
        raise PhenexplainError(f"{source} would expand to {total / 2**30:.1f} GiB; refusing the archive")


def _decode_png(data: bytes, name: str, max_pixels: int) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.width * im.height > max_pixels:
                raise PhenexplainError(f"{name}: {im.width}x{im.height} exceeds {max_pixels:,} pixels")
            im.load()
            array = np.asarray(im)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise PhenexplainError(f"{name}: cannot decode: {exc}") from None
    if array.dtype != np.uint8:
        raise PhenexplainError(f"{name}: {array.dtype} pixels; stylegan2-ada datasets are 8-bit")
    return array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0)


def import_stylegan(
    source: str | Path, out: str | Path, *, channels: list[str] | None = None, overwrite: bool = False
) -> int:
    """Turn a stylegan2-ada dataset zip into a crop set (one shard); returns the number of crops."""
    source, out = Path(source), Path(out)
    check_output(out, overwrite)
    try:
        zf = zipfile.ZipFile(source)
    except (OSError, zipfile.BadZipFile) as exc:
        raise PhenexplainError(f"{source}: not a readable zip ({exc})") from None
    with zf:
        _check_archive(zf, source)
        names = set(zf.namelist())
        if "dataset.json" not in names:
            raise PhenexplainError(f"{source}: no dataset.json; a conditional dataset needs class labels")
        labels = json.loads(zf.read("dataset.json")).get("labels")
        if not labels:
            raise PhenexplainError(f"{source}: dataset.json has no labels; phenexplain needs one class per image")
        if "conditions.json" in names:
            by_index = {i: n for n, i in json.loads(zf.read("conditions.json")).items()}
        else:
            by_index = {i: f"class_{i}" for i in sorted({int(lab) for _, lab in labels})}
        crops, rows = [], []
        for name, label in sorted(labels):
            if _safe_member(name) not in names:
                raise PhenexplainError(f"{source}: dataset.json lists {name!r}, which is not in the archive")
            crops.append(_decode_png(zf.read(name), f"{source}:{name}", 4096 * 4096))
    shapes = {c.shape for c in crops}
    if len(shapes) != 1:
        raise PhenexplainError(f"{source}: images differ in shape: {sorted(shapes)[:4]}")
    n_channels, size, _ = crops[0].shape
    channels = channels or [f"ch{i}" for i in range(n_channels)]
    if len(channels) != n_channels:
        raise PhenexplainError(f"{source}: images have {n_channels} channels, {len(channels)} names given")
    stack = np.stack(crops)
    shard = cs.shard_name(source.stem)
    for (name, label), crop in zip(sorted(labels), stack, strict=True):
        row = {"crop_id": name, "shard": shard, "index": len(rows), "field_id": name, "plate": source.stem,
               "well": "", "site": 0, "condition": by_index[int(label)], "y": size / 2, "x": size / 2,
               "top": 0, "left": 0}  # fmt: skip
        for ch in channels:
            row[f"scale_low_{ch}"], row[f"scale_high_{ch}"] = 0.0, 255.0
        row["illumination_corrected"] = False
        row["checksum"] = cs.crop_checksum(crop)
        row["files"] = f"{source.name}:{name}"
        rows.append(row)
    manifest = pd.DataFrame(rows)
    staging = staging_dir(out)
    try:
        cs.write_shard(staging, shard, stack)
        cs.write_table(manifest, staging / cs.MANIFEST)
        write_json(staging / cs.CONDITIONS, cs.condition_index(manifest["condition"]))
        write_json(
            staging / cs.INFO,
            {
                "format_version": cs.FORMAT_VERSION,
                "phenexplain_version": __version__,
                "source": str(source),
                "layout": "stylegan2-ada zip",
                "channels": channels,
                "crop_size": int(size),
                "plates": {source.stem: {"shard": shard, "crops": len(rows)}},
            },
        )
        swap_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return len(rows)
