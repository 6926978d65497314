"""Saturated pixels of a crop set: the fraction of crop pixels at 255, per field and per condition.

A pixel at 255 was clipped by the 8-bit scaling (or was saturated in an 8-bit source); where a
condition's bright phenotype is clipped, its measured intensities hit a ceiling. Ingest records
per field, in ``qc.parquet``, the crop count (``Count_Crops``) and the fraction of its crops' pixels
at 255 per channel (``Crops_FractionSaturated_<ch>``), and per condition and channel, in
``cropset.json`` (``saturation``), the fraction over all its crops; it warns above
``ingest.qc.crop_saturation_percent``, and so does the report (`recorded_limit`,
`saturation_warning`).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from phenexplain.config import IngestParams, QCParams

log = logging.getLogger(__name__)


def saturated_fraction(crops: np.ndarray) -> list[float]:
    """Per channel, the fraction of the pixels of `crops` [N, C, S, S] at 255 (NaN if none)."""
    if len(crops) == 0:
        return [float("nan")] * crops.shape[1]
    return [float(np.mean(crops[:, c] == 255)) for c in range(crops.shape[1])]


def saturation_column(channel: str) -> str:
    """The qc.parquet column with the fraction of a field's crop pixels at 255 in `channel`."""
    return f"Crops_FractionSaturated_{channel}"


def condition_saturation(qc: pd.DataFrame, channels: list[str]) -> dict[str, dict[str, float]]:
    """Per condition and channel: the fraction of its crops' pixels at 255, from the per-field
    fractions and crop counts of `qc` (fields without crops, or measured by an older ingest,
    are left out)."""
    columns = [saturation_column(ch) for ch in channels]
    if not {"Count_Crops", *columns} <= set(qc.columns):
        return {}
    measured = qc[(qc["Count_Crops"] > 0) & qc[columns].notna().all(axis=1)]
    out = {}
    for condition, group in measured.groupby("condition", sort=True):
        weights = group["Count_Crops"].to_numpy(float)
        out[str(condition)] = {
            ch: float(np.average(group[col].to_numpy(float), weights=weights))
            for ch, col in zip(channels, columns, strict=True)
        }
    return out


def saturation_table(saturation: dict[str, dict[str, float]]) -> pd.DataFrame:
    """`condition_saturation` as rows (condition, channel, saturated_percent)."""
    rows = [
        {"condition": cond, "channel": ch, "saturated_percent": 100.0 * value}
        for cond, per_channel in saturation.items()
        for ch, value in per_channel.items()
    ]
    return pd.DataFrame(rows, columns=["condition", "channel", "saturated_percent"])


def over_limit(saturation: dict[str, dict[str, float]], limit: float) -> pd.DataFrame:
    """The `saturation_table` rows whose saturated percent is above `limit`."""
    table = saturation_table(saturation)
    return table[table["saturated_percent"] > limit].reset_index(drop=True)


def recorded_limit(info: dict) -> float:
    """The percent above which the ingest of a crop set (its ``cropset.json`` as a dict) warned:
    its recorded ``ingest.qc.crop_saturation_percent``, else the default."""
    recorded = ((info.get("params") or {}).get("qc") or {}).get("crop_saturation_percent")
    return float(recorded) if recorded is not None else QCParams().crop_saturation_percent


def saturation_warning(over: pd.DataFrame, limit: float) -> str | None:
    """One sentence naming each condition and channel of `over` (`over_limit` rows); None if
    there is none."""
    if over.empty:
        return None
    pairs = "; ".join(
        f"condition {cond}, channel {ch}: {pct:.2f} %"
        for cond, ch, pct in over.itertuples(index=False)
    )
    return (
        f"Warning: more than {limit:g} % of the crop pixels are saturated (255) in {pairs}. The "
        "8-bit scaling clipped these phenotypes, so their measured intensities hit a ceiling and "
        "their cell-to-cell variation is lost; re-ingest with a higher high percentile "
        "(ingest.percentiles) before trusting these numbers."
    )


def warn_saturated(saturation: dict[str, dict[str, float]], params: IngestParams) -> None:
    """Log a warning for each condition and channel above `ingest.qc.crop_saturation_percent`."""
    limit = params.qc.crop_saturation_percent
    for cond, ch, pct in over_limit(saturation, limit).itertuples(index=False):
        log.warning(
            "condition %s: %.2f%% of its crop pixels are saturated (255) in channel %s, "
            "more than %g%% (ingest.qc.crop_saturation_percent), its phenotype is clipped; "
            "raise the high percentile (ingest.percentiles, now %s), or, for an 8-bit source, "
            "image with a shorter exposure",
            cond,
            pct,
            ch,
            limit,
            list(params.percentiles),
        )


def with_crop_saturation(qc: pd.DataFrame, new_fields: pd.Series, cropped: pd.DataFrame):
    """`qc` with the crop count and saturated fractions per field (`cropped`, indexed by field
    id) for the fields of `new_fields`; quarantined ones get no crops and NaN fractions, fields
    of kept plates keep theirs."""
    qc = qc.copy()
    new = qc["field_id"].isin(set(new_fields))
    for col in cropped.columns:
        value = qc["field_id"].map(cropped[col]).fillna(0 if col == "Count_Crops" else np.nan)
        qc[col] = value.where(new, qc.get(col, np.nan))
    if qc["Count_Crops"].notna().all():
        qc["Count_Crops"] = qc["Count_Crops"].astype(int)
    return qc
