"""Per-plate intensity scaling to uint8: (low, high) per channel that clips no condition, from
pass-1 histograms, or from illumination-corrected fields (a profile per plate)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from phenexplain.config import IngestParams
from phenexplain.data import cropset as cs
from phenexplain.data.crops import illumination_function, percentiles_from_histogram, plate_scaling
from phenexplain.data.fields import Analysis
from phenexplain.data.images import load_field


def _histogram(a: Analysis) -> np.ndarray:
    if a.hist is None:  # pass 1 stores one for every field it could read
        raise ValueError(f"field {a.record.field_id} has no histogram")
    return a.hist


def _low_high(values: np.ndarray, percentiles: list[float]) -> tuple[float, float]:
    low, high = np.percentile(values, percentiles)
    return float(low), float(high)


def plate_scalings(
    analyses: list[Analysis], qc: pd.DataFrame, params: IngestParams
) -> dict[str, list]:
    """Per plate and channel: (low, high) from each condition's percentiles over its good fields
    (see `plate_scaling`)."""
    ok = set(qc.loc[qc["status"] == "ok", "field_id"])
    out: dict[str, list] = {}
    for plate in sorted({a.record.plate for a in analyses}):
        good = [a for a in analyses if a.record.plate == plate and a.record.field_id in ok]
        if not good:
            continue
        hist = {a.record.field_id: _histogram(a) for a in good}
        if hist[good[0].record.field_id].shape[1] == 256 and not params.illumination_correction:
            out[plate] = [(0.0, 255.0)] * len(params.channels)  # 8-bit sources are kept as they are
            continue
        totals = [
            np.sum([hist[a.record.field_id] for a in good if a.record.condition == c], axis=0)
            for c in sorted({a.record.condition for a in good})
        ]  # one [C, bins] histogram per condition
        out[plate] = [
            plate_scaling([percentiles_from_histogram(t[ch], params.percentiles) for t in totals])
            for ch in range(len(params.channels))
        ]
    return out


def illumination_files(analyses, qc, folder: Path) -> dict[str, str]:
    """Per plate: the saved illumination profile [C, H, W] computed from its good fields."""
    ok = set(qc.loc[qc["status"] == "ok", "field_id"])
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for plate in sorted({a.record.plate for a in analyses}):
        good = [a for a in analyses if a.record.plate == plate and a.record.field_id in ok]
        if not good:
            continue
        profile = illumination_function(np.mean([a.small for a in good], axis=0), good[0].shape)
        path = folder / f"{cs.shard_name(plate)}.npy"
        np.save(path, profile)
        out[plate] = str(path)
    return out


def corrected_scalings(analyses, qc, params, illum: dict[str, str]) -> dict[str, list]:
    """`plate_scalings` of illumination-corrected good fields (a third read of those fields)."""
    ok = set(qc.loc[qc["status"] == "ok", "field_id"])
    out = {}
    for plate, path in illum.items():
        profile = np.load(path)
        values: dict[str, list[list[np.ndarray]]] = {}
        for a in analyses:
            if a.record.plate == plate and a.record.field_id in ok:
                image = (
                    load_field(
                        a.record.files,
                        len(params.channels),
                        params.max_megapixels,
                        a.record.planes,
                    )
                    / profile
                )
                planes = values.setdefault(a.record.condition, [[] for _ in params.channels])
                for c, plane in enumerate(image):
                    planes[c].append(plane[::4, ::4].ravel())
        out[plate] = [
            plate_scaling(
                [_low_high(np.concatenate(p[c]), params.percentiles) for p in values.values()]
            )
            for c in range(len(params.channels))
        ]
    return out
