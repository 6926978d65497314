"""The per-field work of an ingest, run in worker processes, and the QC table of its results.

Pass 1 (`analyse_field`): decode (an unreadable file quarantines the field), QC measurements,
nucleus detection (or the supplied masks of `phenexplain.data.masks`; a missing or bad mask
quarantines the field), per-channel histograms and, for illumination correction, block means.
Pass 2 (`crop_field`): scale to uint8 with the plate's (low, high) per channel and cut
nucleus-centred crops.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from phenexplain.config import IngestParams
from phenexplain.data.crops import block_mean, centroids, cut, to_uint8
from phenexplain.data.images import UnreadableImageError, load_field
from phenexplain.data.masks import supplied_labels
from phenexplain.data.names import source_name
from phenexplain.data.nuclei import segment_nuclei
from phenexplain.data.qc import field_quality, robust_z
from phenexplain.data.readers import FieldRecord, StructureError


@dataclass
class Analysis:
    """Pass-1 result for one field."""

    record: FieldRecord
    reasons: list[str]
    qc: dict[str, float] = field(default_factory=dict)
    shape: tuple[int, int] | None = None
    dtype: str | None = None
    centres: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    hist: np.ndarray | None = None
    small: np.ndarray | None = None


def analyse_field(args: tuple[FieldRecord, IngestParams]) -> Analysis:
    record, params = args
    result = Analysis(record=record, reasons=[])
    try:
        image = load_field(record.files, len(params.channels), params.max_megapixels, record.planes)
    except UnreadableImageError as exc:
        result.reasons.append(f"unreadable: {exc}")
        return result
    result.shape, result.dtype = image.shape[1:], str(image.dtype)
    result.qc = field_quality(image, params.channels, params.dna_channel)
    dna = image[params.channels.index(params.dna_channel)]
    if int(dna.max()) == int(dna.min()):
        result.reasons.append("blank field: the DNA channel is constant")
    else:
        saturated = [
            f"{ch} ({result.qc[f'ImageQuality_PercentMaximal_{ch}']:.2g}% at maximum)"
            for ch in params.channels
            if result.qc[f"ImageQuality_PercentMaximal_{ch}"] > params.qc.saturation_percent
        ]
        if saturated:
            result.reasons.append("saturated: " + ", ".join(saturated))
    if not params.precropped:
        labels = np.zeros(dna.shape, np.int32)
        if params.masks is not None:
            labels = _supplied(record, params, dna.shape, result)
        elif not result.reasons:
            labels = segment_nuclei(dna, **params.nuclei.model_dump())
        result.centres = centroids(labels)
        result.qc["Count_Nuclei"] = float(len(result.centres))
        result.qc[f"ForegroundFraction_{params.dna_channel}"] = float(np.mean(labels > 0))
        if not result.reasons and len(result.centres) < params.qc.min_nuclei:
            result.reasons.append(
                f"no nuclei: {len(result.centres)} found, {params.qc.min_nuclei} needed"
            )
    bins = 256 if image.dtype == np.uint8 else 65536
    result.hist = np.stack([np.bincount(p.ravel(), minlength=bins) for p in image])
    if params.illumination_correction:
        result.small = block_mean(image)
    return result


def _supplied(record: FieldRecord, params: IngestParams, shape, result: Analysis) -> np.ndarray:
    """The field's supplied nucleus labels (zeros and a quarantine reason when missing or bad);
    counts the cells of a supplied cell mask."""
    if not record.masks:
        result.reasons.append(f"no mask: none for this field in {params.masks}")
        return np.zeros(shape, np.int32)
    try:
        labels = supplied_labels(record.masks, shape, params.max_megapixels)
    except UnreadableImageError as exc:
        result.reasons.append(f"bad mask: {exc}")
        return np.zeros(shape, np.int32)
    if len(labels) > 1:
        result.qc["Count_Cells"] = float(labels[1].max())
    return labels[0]


@lru_cache(maxsize=4)
def _illumination(path: str) -> np.ndarray:
    return np.load(path, allow_pickle=False)


def crop_field(
    args: tuple[FieldRecord, IngestParams, np.ndarray, list[tuple[float, float]], str | None],
):
    record, params, centres, scaling, illum_path = args
    image = load_field(record.files, len(params.channels), params.max_megapixels, record.planes)
    source = image
    if illum_path is not None:
        source = image / _illumination(illum_path)
    if image.dtype == np.uint8 and illum_path is None:
        scaled = image
    else:
        scaled = np.stack(
            [to_uint8(p, lo, hi) for p, (lo, hi) in zip(source, scaling, strict=True)]
        )
    if params.precropped:
        return scaled[None], np.zeros(1, int), np.zeros((1, 2), int)
    return cut(scaled, centres, params.crop_size, params.border)


def qc_table(analyses: list[Analysis], root: Path, params: IngestParams) -> pd.DataFrame:
    """One row per field: keys, files, size, QC measurements, z-scores, status and reasons."""
    rows = []
    for a in analyses:
        r = a.record
        rows.append(
            {
                "field_id": r.field_id,
                "plate": r.plate,
                "well": r.well,
                "site": r.site,
                "condition": r.condition,
                "files": ";".join(source_name(f, root) for f in r.files),
                **(
                    {"masks": ";".join(source_name(f, root) for f in r.masks)}
                    if params.masks
                    else {}
                ),
                "height": a.shape[0] if a.shape else None,
                "width": a.shape[1] if a.shape else None,
                "dtype": a.dtype,
                **a.qc,
                "reasons": list(a.reasons),
            }
        )
    qc = pd.DataFrame(rows)
    slope = f"ImageQuality_PowerLogLogSlope_{params.dna_channel}"
    qc[f"{slope}_z"] = np.nan
    if slope in qc:
        for _, idx in qc.groupby("plate").groups.items():
            good = [i for i in idx if not qc.at[i, "reasons"]]
            if len(good) < params.qc.min_fields_for_z:
                continue
            z = robust_z(qc.loc[good, slope].to_numpy(float))
            qc.loc[good, f"{slope}_z"] = z
            for i, zi in zip(good, z, strict=True):
                if zi < -params.qc.blur_z:
                    qc.at[i, "reasons"] = [f"blurred: PowerLogLogSlope robust z = {zi:.1f}"]
    qc["status"] = np.where(qc["reasons"].map(bool), "quarantined", "ok")
    qc["reasons"] = qc["reasons"].map("; ".join)
    return qc


def check_pixel_types(analyses: list[Analysis], source: Path) -> None:
    """Refuse a plate whose readable fields mix bit depths: one percentile scaling per plate and
    channel cannot fit both (8-bit fields would come out black under 16-bit percentiles)."""
    for plate in sorted({a.record.plate for a in analyses}):
        first: dict[str, Path] = {}
        for a in analyses:
            if a.record.plate == plate and a.dtype is not None:
                first.setdefault(a.dtype, a.record.files[0])
        if len(first) > 1:
            listed = ", ".join(
                f"{t} (e.g. {source_name(f, source)})" for t, f in sorted(first.items())
            )
            raise StructureError(
                f"plate {plate!r} mixes fields of pixel types {listed}; export the plate at one "
                "bit depth"
            )
