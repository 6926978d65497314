"""Segmentation and assay measurements on crops, real or generated (uint8 [C, H, W] alike).

Normalisation, the same for real and generated crops: intensity = uint8 value / 255, a float in
[0, 1] (CellProfiler's convention for 8-bit images). Nothing is rescaled per crop: real crops were
scaled once per plate at ingest (percentiles to 0..255) and the generator learnt to draw on that
scale, so a brightness difference between conditions survives measurement. Segmentation itself
uses Otsu thresholds per crop, which do not depend on the scale.

Objects, with CellProfiler's names:
- ``Nuclei``: `segment_nuclei` on the DNA channel, with the ingest's nucleus parameters; objects
  whose mean DNA intensity is below `MIN_DNA_INTENSITY` are dropped (on a crop with no nucleus,
  Otsu's threshold would otherwise cut the background noise into "nuclei");
- ``Cells``: a watershed from the nuclei over the first cell-body channel (`cell_bodies`), or,
  without one, each nucleus grown by `CELL_EXPANSION_PX` (CellProfiler's "Distance-N");
- ``Cytoplasm``: a cell minus its nucleus.
A cell keeps its nucleus's label.

One crop, one cell: ingest centres each crop on a nucleus, so a crop is measured for its centre cell
only (`centre_object`: the nucleus under the crop centre, else the nucleus whose centroid is
nearest the centre within `CENTRE_RADIUS` of the crop side). Neighbours that enter the crop are
not measured, so real crops (with neighbours) and generated crops give rows of the same kind, one
per physical cell. A crop without a centre cell keeps its crop row with ``centre_object`` 0 and
gives no cell row. Crop-level assays (`cell_count`: every nucleus; ``background_fraction``) stay
per crop.

Per-crop assays (`measure_assays`) reuse `measure.assays.measure_cells`: ``nc_ratio`` per cell for
an ``nfkb`` stain, ``spot_count`` and ``spot_area`` for ``golgi``, ``cytoplasm_area`` and the crop's
``background_fraction`` for a cell-body stain (``actin``/``tubulin``; without one, neither is a
column).
``nc_ratio`` has a heavy right tail (small bright debris, rings that reach the background give
ratios of ~20 where cells give ~0.5): compare it on a log scale, where it is close to normal.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial

import numpy as np
import pandas as pd
from skimage.segmentation import expand_labels
from threadpoolctl import threadpool_limits

from phenexplain.config import NucleiParams
from phenexplain.data.cropset import CropSet
from phenexplain.data.nuclei import segment_nuclei
from phenexplain.data.synthetic.assays import ASSAYS
from phenexplain.errors import PhenexplainError
from phenexplain.measure.assays import BODY_STAINS, cell_bodies, measure_cells

MIN_DNA_INTENSITY = 0.1  # nuclei measure 0.25-0.6 after ingest scaling (nfkb), background ~0.01
CELL_EXPANSION_PX = 10  # CellProfiler's default distance for cells grown from nuclei
CENTRE_RADIUS = 0.1  # of the crop side: how far a centre nucleus's centroid may lie from the centre
CHUNK = 16  # crops per task sent to a worker process

OBJECTS = ("Nuclei", "Cells", "Cytoplasm")

Progress = Callable[[int, int], None]


def to_intensity(crop: np.ndarray) -> np.ndarray:
    """uint8 crop [C, H, W] -> float32 intensities [C, H, W] in [0, 1] (value / 255)."""
    crop = np.asarray(crop)
    if crop.dtype != np.uint8 or crop.ndim != 3:
        raise PhenexplainError(
            f"expected a uint8 crop [C, H, W], got {crop.dtype} {crop.shape}; convert generated "
            "images with phenexplain.nets.ops.to_uint8 first"
        )
    return crop.astype(np.float32) / 255.0


def known_stains() -> dict[str, str]:
    """Channel name (lower case) -> stain, from the synthetic assays' channel definitions."""
    return {ch.name.lower(): ch.stain for make in ASSAYS.values() for ch in make().channels}


def channel_stains(channels: Sequence[str], dna_channel: str | None = None) -> dict[str, str]:
    """Stain kind of each channel, in channel order; unknown names get ``other``."""
    known = known_stains()
    stains = {ch: known.get(ch.lower(), "other") for ch in channels}
    if dna_channel is not None:
        if dna_channel not in stains:
            raise PhenexplainError(f"DNA channel {dna_channel!r} is not one of {list(channels)}")
        stains = {ch: "dna" if ch == dna_channel else s for ch, s in stains.items()}
    return stains


def cropset_stains(crops: CropSet) -> dict[str, str]:
    """Stain kind of each channel of a crop set; its DNA channel is the one ingest segmented."""
    return channel_stains(crops.channels, crops.info.get("params", {}).get("dna_channel"))


def check_stains(channels: Sequence[str], stains: Mapping[str, str] | None) -> dict[str, str]:
    """`stains` (inferred from the names when None), checked against `channels`."""
    stains = channel_stains(channels) if stains is None else dict(stains)
    if list(stains) != list(channels):
        raise PhenexplainError(
            f"stains must name every channel, in order: channels {list(channels)}, "
            f"stains {list(stains)}"
        )
    dna = [ch for ch, s in stains.items() if s == "dna"]
    if len(dna) != 1:
        raise PhenexplainError(
            f"exactly one channel must have stain 'dna', got {dna} in {stains}; pass stains= "
            "or channel_stains(channels, dna_channel=...)"
        )
    return stains


@dataclass(frozen=True)
class CropObjects:
    """Label images [H, W] (int32, 0 = background) of one crop; a cell keeps its nucleus's label."""

    nuclei: np.ndarray
    cells: np.ndarray
    foreground: np.ndarray | None  # bool [H, W] cell-body foreground; None without a body stain
    centre: int = 0  # label of the centre nucleus (`centre_object`); 0: no centre cell

    @property
    def cytoplasm(self) -> np.ndarray:
        """Cells minus nuclei [H, W]."""
        return np.where(self.nuclei > 0, 0, self.cells)

    def labels(self, name: str) -> np.ndarray:
        """The label image of ``Nuclei``, ``Cells`` or ``Cytoplasm``."""
        if name not in OBJECTS:
            raise PhenexplainError(f"unknown object {name!r}; choose from {OBJECTS}")
        return {"Nuclei": self.nuclei, "Cells": self.cells}.get(name, self.cytoplasm)


def body_channel(stains: Mapping[str, str]) -> str | None:
    """The channel `measure_cells` outlines cells with: the first with a cell-body stain."""
    return next((ch for ch, s in stains.items() if s in BODY_STAINS), None)


def centre_object(labels: np.ndarray, radius: float = CENTRE_RADIUS) -> int:
    """Label of the centre nucleus of a label image [H, W]; 0 when there is none.

    The nucleus under the crop centre (the 1, 2 or 4 pixels around it; where they hold several
    nuclei, the one whose centroid is nearest), else the nucleus whose centroid is nearest the
    centre if it lies within `radius` x the crop side.
    """
    h, w = labels.shape
    cy, cx = (h - 1) / 2, (w - 1) / 2
    n = int(labels.max())
    if n == 0:
        return 0
    yy, xx = np.indices(labels.shape)
    count = np.bincount(labels.ravel(), minlength=n + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        y = np.bincount(labels.ravel(), weights=yy.ravel(), minlength=n + 1) / count
        x = np.bincount(labels.ravel(), weights=xx.ravel(), minlength=n + 1) / count
    distance = np.hypot(y - cy, x - cx)
    distance[0] = np.inf  # the background
    under = np.unique(labels[int(np.floor(cy)) : int(np.ceil(cy)) + 1,
                             int(np.floor(cx)) : int(np.ceil(cx)) + 1])  # fmt: skip
    under = under[under > 0]
    if under.size:
        return int(under[np.argmin(distance[under])])
    nearest = int(np.nanargmin(distance))
    return nearest if distance[nearest] <= radius * min(h, w) else 0


def segment_crop(
    image: np.ndarray,
    stains: Mapping[str, str],
    *,
    nuclei: NucleiParams | None = None,
    min_dna_intensity: float = MIN_DNA_INTENSITY,
) -> CropObjects:
    """Objects of one crop of intensities [C, H, W] in [0, 1]; `stains` names its channels in order.

    `nuclei` defaults to the ingest's defaults (`NucleiParams()`).
    """
    nuclei = nuclei or NucleiParams()
    channels = list(stains)
    dna = image[channels.index(next(ch for ch, s in stains.items() if s == "dna"))]
    labels = segment_nuclei(
        dna,
        smoothing=nuclei.smoothing,
        min_area=nuclei.min_area,
        min_distance=nuclei.min_distance,
    )
    n = int(labels.max())
    counts = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    sums = np.bincount(labels.ravel(), weights=dna.ravel(), minlength=n + 1)[1:]
    keep = sums >= min_dna_intensity * np.maximum(counts, 1)
    relabel = np.zeros(n + 1, dtype=np.int32)
    relabel[1:][keep] = np.arange(1, int(keep.sum()) + 1)
    labels = relabel[labels]
    body = body_channel(stains)
    if body is not None:
        cells, foreground = cell_bodies(image[channels.index(body)], labels)
    else:
        cells, foreground = expand_labels(labels, CELL_EXPANSION_PX), None
    return CropObjects(labels, cells.astype(np.int32), foreground, centre_object(labels))


def assay_crop(
    image: np.ndarray, stains: Mapping[str, str], objects: CropObjects
) -> tuple[list[dict], dict]:
    """The centre cell's assay row (none without a centre cell) and the crop's values.

    The crop row carries ``centre_object`` (0: no centre cell) and the centre cell's values (NaN
    without one) beside the crop-level assays; ``background_fraction`` only with a cell-body
    stain (without one there is no foreground to measure, and no all-NaN column).
    """
    channels = dict(zip(stains, image, strict=True))
    bodies = None if objects.foreground is None else (objects.cells, objects.foreground)
    columns, crop = measure_cells(channels, dict(stains), objects.nuclei, bodies)
    i = objects.centre
    cell = {k: float(v[i - 1]) if i else np.nan for k, v in columns.items()}
    crop = {"cell_count": crop.pop("cell_count"), "centre_object": i, **crop, **cell}
    return ([{"object": i, **cell}] if i else []), crop


def _one_thread(fn: Callable[[np.ndarray, int], list], block: np.ndarray, start: int) -> list:
    """`fn` with BLAS on one thread: cp-measure's Haralick features make many tiny BLAS calls, and
    OpenBLAS threads spinning on them made texture 20-50x slower (measured on 2 cores)."""
    with threadpool_limits(limits=1, user_api="blas"):
        return fn(block, start)


def map_crops(
    fn: Callable[[np.ndarray, int], list],
    crops: np.ndarray,
    workers: int,
    on_progress: Progress | None = None,
) -> list:
    """`fn(block, start)` over blocks of `CHUNK` crops [N, C, H, W], concatenated in crop order.

    Results do not depend on `workers`: every crop is measured on its own, and blocks come back
    in order.
    """
    if workers < 1:
        raise PhenexplainError(f"workers must be at least 1, got {workers}")
    starts = list(range(0, len(crops), CHUNK))
    blocks = [np.ascontiguousarray(crops[s : s + CHUNK]) for s in starts]
    out: list = []
    fn = partial(_one_thread, fn)
    if workers == 1 or len(blocks) < 2:
        results: Iterator[list] = map(fn, blocks, starts)
        pool = None
    else:
        pool = ProcessPoolExecutor(max_workers=min(workers, len(blocks)))
        results = pool.map(fn, blocks, starts)
    try:
        for done, result in enumerate(results, start=1):
            out.extend(result)
            if on_progress is not None:
                on_progress(min(done * CHUNK, len(crops)), len(crops))
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return out


def check_crops(crops: np.ndarray, channels: Sequence[str]) -> np.ndarray:
    """`crops` as a uint8 array [N, C, H, W] whose C matches `channels`."""
    crops = np.asarray(crops)
    if crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[1] != len(channels):
        raise PhenexplainError(
            f"expected uint8 crops [N, {len(channels)}, H, W] for channels {list(channels)}, "
            f"got {crops.dtype} {crops.shape}"
        )
    return crops


def _assay_block(
    block: np.ndarray, start: int, stains: dict[str, str], nuclei: NucleiParams | None
) -> list[tuple[list[dict], dict]]:
    out = []
    for k, crop in enumerate(block):
        image = to_intensity(crop)
        rows, values = assay_crop(image, stains, segment_crop(image, stains, nuclei=nuclei))
        out.append(([{"crop": start + k, **r} for r in rows], {"crop": start + k, **values}))
    return out


def measure_assays(
    crops: np.ndarray,
    channels: Sequence[str],
    stains: Mapping[str, str] | None = None,
    *,
    nuclei: NucleiParams | None = None,
    workers: int = 2,
    on_progress: Progress | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Assays of uint8 crops [N, C, H, W] -> (one row per centre cell, one row per crop).

    Both tables carry ``crop``, the crop's position in `crops`; the cell table also ``object``,
    the centre cell's label in `segment_crop`'s label images, and the crop table
    ``centre_object`` (0: the crop has no centre cell, and no cell row). `stains` maps each
    channel to its stain (default: from the channel names, see `channel_stains`).
    """
    crops = check_crops(crops, channels)
    stains = check_stains(channels, stains)
    fn = partial(_assay_block, stains=stains, nuclei=nuclei)
    results = map_crops(fn, crops, workers, on_progress)
    cells = pd.DataFrame([r for rows, _ in results for r in rows])
    if cells.empty:
        cells = pd.DataFrame(columns=["crop", "object"])
    per_crop = pd.DataFrame([values for _, values in results])
    if per_crop.empty:
        per_crop = pd.DataFrame(columns=["crop", "cell_count", "centre_object"])
    return cells, per_crop
