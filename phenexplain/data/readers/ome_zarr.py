"""OME-Zarr (OME-NGFF 0.4 on Zarr v2, 0.5 on Zarr v3): HCS plates and single images.

`source` is a ``.zarr`` group or a folder searched for them. A plate group (``plate`` metadata)
lists its wells (``A/1``: row A, column 1, well ``A01``), each well its images (site: the image's
rank in the well); a single image (``multiscales`` metadata) is named
``<plate>/<well>_s<site>.ome.zarr``. Level 0 of the first multiscales is read; channel names are
the ``omero`` channel labels, matched against ``ingest.channels``. Axes other than the channel
and space must have size 1, and so must ``z``. Conditions come from ``platemap.csv``
(`phenexplain.data.readers.platemap`). Metadata paths may not leave their group.

The groups are read with zarr itself rather than ome-zarr's ``Reader``: every path the metadata
names is checked against its group before it is opened, and listing a plate reads only the
metadata (level 0's shape), not dask arrays of every level.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from phenexplain.data.readers.base import (
    PIXEL_SIZE,
    FieldRecord,
    StructureError,
    inside,
    micrometres,
)
from phenexplain.data.readers.platemap import from_name, match_channels, well_name, with_conditions

GROUP_FILES = ("zarr.json", ".zgroup")  # Zarr v3, v2


def _attributes(path: Path) -> dict[str, Any]:
    """The NGFF metadata of the group `path` (0.5 nests it under ``ome``)."""
    import zarr  # imported here: only OME-Zarr sources need it

    try:
        attrs = dict(zarr.open_group(str(path), mode="r").attrs)
    except (ValueError, OSError, KeyError) as exc:  # zarr's errors are ValueErrors
        raise StructureError(f"{path}: not a readable Zarr group ({exc})") from None
    ome = attrs.get("ome")
    return dict(ome) if isinstance(ome, dict) else attrs


def _array_shape(path: Path) -> tuple[int, ...]:
    import zarr

    try:
        return tuple(int(n) for n in zarr.open_array(store=str(path), mode="r").shape)
    except (ValueError, OSError, KeyError) as exc:
        raise StructureError(f"{path}: not a readable Zarr array ({exc})") from None


def _is_group(path: Path) -> bool:
    return any((path / name).is_file() for name in GROUP_FILES)


def _groups(source: Path) -> list[Path]:
    """The outermost Zarr groups at or under `source`, sorted."""
    if _is_group(source):
        return [source]
    found = []
    for folder, subfolders, _ in os.walk(source):
        here = Path(folder)
        if here != source and _is_group(here):
            found.append(here)
            subfolders.clear()  # a group's children belong to it
        subfolders.sort()
    return sorted(found)


def _pixel(first: dict, axes: list) -> dict[str, str]:
    """{PIXEL_SIZE: µm} from level 0's ``scale`` transformation on y and x (times a
    multiscales-wide one), in the axes' length unit, when both agree; else {} (also when the
    axes name no unit: NGFF has no default one)."""

    def scale(transforms: object) -> list | None:
        for t in transforms if isinstance(transforms, list) else []:
            if (
                isinstance(t, dict)
                and t.get("type") == "scale"
                and isinstance(t.get("scale"), list)
            ):
                return t["scale"]
        return None

    level = scale(first.get("datasets", [{}])[0].get("coordinateTransformations"))
    if level is None or len(level) != len(axes) or len(axes) < 2:
        return {}
    overall = scale(first.get("coordinateTransformations")) or [1.0] * len(axes)
    sizes = []
    for i in (-2, -1):  # y, x
        axis = axes[i] if isinstance(axes[i], dict) else {}
        try:
            value = float(level[i]) * float(overall[i])
        except (TypeError, ValueError, IndexError):
            return {}
        sizes.append(micrometres(value, axis["unit"]) if axis.get("unit") else None)
    y, x = sizes
    if x is None or y is None or abs(x - y) > 1e-6 * x:
        return {}
    return {PIXEL_SIZE: f"{x:.6g}"}


def _image(path: Path, channels: list[str]) -> tuple[Path, tuple[int, ...], dict[str, str]]:
    """(level-0 array folder, channel planes, {PIXEL_SIZE: µm} when known) of the NGFF image
    group `path`."""
    meta = _attributes(path)
    multiscales = meta.get("multiscales")
    if not isinstance(multiscales, list) or not multiscales:
        raise StructureError(f"{path}: no NGFF multiscales metadata (not an OME-Zarr image)")
    first = multiscales[0]
    try:
        level0 = inside(path, Path(first["datasets"][0]["path"]))
    except (KeyError, IndexError, TypeError):
        raise StructureError(f"{path}: multiscales without datasets[0].path") from None
    axes: list[str] = [
        str(a.get("name") if isinstance(a, dict) else a) for a in first.get("axes", [])
    ]
    shape = _array_shape(level0)
    if not axes:  # NGFF before 0.3: always t, c, z, y, x
        axes = ["t", "c", "z", "y", "x"][-len(shape) :]
    if len(axes) != len(shape) or axes[-2:] != ["y", "x"]:
        raise StructureError(f"{level0}: axes {axes} do not fit its shape {shape} (... y, x)")
    extra = [f"{a} = {n}" for a, n in zip(axes[:-2], shape[:-2], strict=True) if a != "c" and n > 1]
    if extra:
        raise StructureError(
            f"{level0}: {', '.join(extra)}; ingest takes one 2-D plane per channel (project "
            "z-stacks, split time series)"
        )
    labels = [c.get("label") for c in meta.get("omero", {}).get("channels", [])]
    count = shape[axes.index("c")] if "c" in axes else 1
    if len(labels) != count:
        raise StructureError(
            f"{path}: {count} channel(s) but {len(labels)} omero channel label(s); label each "
            "channel (omero.channels[].label) so ingest.channels can be matched"
        )
    return level0, match_channels(labels, channels, str(path)), _pixel(first, first.get("axes", []))


def _plate(path: Path, meta: dict, channels: list[str]) -> list[tuple]:
    plate = meta["plate"]
    name = plate.get("name") or path.name.removesuffix(".zarr").removesuffix(".ome")
    fields = []
    for entry in plate.get("wells", []):
        well_path = Path(str(entry.get("path", "")))
        row, _, column = str(entry.get("path", "")).partition("/")
        well = well_name(f"{row}{column}")
        well_dir = inside(path, well_path)
        images = _attributes(well_dir).get("well", {}).get("images", [])
        for site, image in enumerate(images, start=1):
            image_dir = inside(well_dir, Path(str(image.get("path", ""))))
            level0, planes, extra = _image(image_dir, channels)
            fields.append((f"{name}_{well}_s{site}", name, well, site, (level0,), planes, extra))
    return fields


def _fields(group: Path, channels: list[str]) -> list[tuple]:
    meta = _attributes(group)
    if isinstance(meta.get("plate"), dict):
        return _plate(group, meta, channels)
    if "multiscales" in meta:
        level0, planes, extra = _image(group, channels)
        plate, well, site = from_name(group)
        return [(f"{plate}_{well}_s{site}", plate, well, site, (level0,), planes, extra)]
    raise StructureError(f"{group}: a Zarr group with neither NGFF plate nor multiscales metadata")


def read_ome_zarr(source: Path, channels: list[str]) -> list[FieldRecord]:
    """Fields of the OME-Zarr plates and images at or under `source`."""
    groups = _groups(source)
    if not groups:
        raise StructureError(f"{source}: no Zarr group found (layout 'ome-zarr')")
    fields = []
    for group in groups:
        try:
            fields += _fields(group, channels)
        except (AttributeError, TypeError, KeyError, IndexError) as exc:  # metadata of odd types
            raise StructureError(
                f"{group}: malformed OME-NGFF metadata ({type(exc).__name__}: {exc}); check it "
                "against the NGFF specification"
            ) from None
    return with_conditions(source, fields, "ome-zarr")
