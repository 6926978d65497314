"""Summarise a plate folder: per condition, what was measured and whether it matches the plan.

Reads ``metadata.csv`` (one row per field, a ``path_<channel>`` column per channel) and, when
present, ``ground_truth.json``; segments nuclei, measures the assay features of a sample of fields
per condition, and compares each treated condition with the control in the direction the ground
truth expects.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tifffile
from scipy import stats

from phenexplain.data.nuclei import segment_nuclei
from phenexplain.data.readers.base import read_table, require_columns
from phenexplain.errors import PhenexplainError
from phenexplain.measure.assays import measure_field

REQUIRED_COLUMNS = ("plate", "well", "site", "condition")
PER_FIELD = ("cell_count", "background_fraction")
ALPHA = 0.05


def read_metadata(root: Path) -> tuple[list[dict], list[str]]:
    """Rows of ``root/metadata.csv`` and the channel names from its ``path_*`` columns."""
    path, header, rows = read_table(
        root, "metadata.csv", "is it a plate folder written by `phenexplain synth`?"
    )
    channels = [c.removeprefix("path_") for c in header if c.startswith("path_")]
    require_columns(path, header, [*REQUIRED_COLUMNS, *([] if channels else ["path_<channel>"])])
    if not rows:
        raise PhenexplainError(f"{path} lists no fields")
    return rows, channels


def _read_field(root: Path, row: dict, channels: list[str]) -> dict[str, np.ndarray]:
    images = {}
    for ch in channels:
        file = root / row[f"path_{ch}"]
        try:
            images[ch] = tifffile.imread(file)
        except (OSError, ValueError) as exc:
            raise PhenexplainError(f"cannot read {file}: {exc}") from None
    return images


def summarize_plate(
    root: str | Path,
    *,
    max_fields_per_condition: int = 16,
    on_field: Callable[[int, int], None] | None = None,
) -> dict:
    """Measure up to `max_fields_per_condition` fields per condition; see the module docstring."""
    root = Path(root)
    rows, channels = read_metadata(root)
    truth_path = root / "ground_truth.json"
    truth = json.loads(truth_path.read_text()) if truth_path.exists() else None
    if truth is not None:
        stains = {ch["name"]: ch["stain"] for ch in truth["channels"]}
    else:  # without ground truth: first channel is DNA, nothing else is measured
        stains = {channels[0]: "dna"}
    dna = next(name for name, stain in stains.items() if stain == "dna")

    by_condition: dict[str, list[dict]] = {}
    for row in rows:
        by_condition.setdefault(row["condition"], []).append(row)
    if truth is not None:  # control first, then by concentration
        gt = truth["conditions"]
        order = sorted(
            by_condition, key=lambda c: (not gt[c]["is_control"], gt[c]["concentration_um"], c)
        )
        by_condition = {c: by_condition[c] for c in order}
    chosen = [(c, r) for c, rs in by_condition.items() for r in rs[:max_fields_per_condition]]

    cells: dict[str, list[dict]] = {c: [] for c in by_condition}
    fields: dict[str, list[dict]] = {c: [] for c in by_condition}
    for i, (cond, row) in enumerate(chosen):
        images = _read_field(root, row, channels)
        nuclei = segment_nuclei(images[dna])
        cell_rows, field_values = measure_field(images, stains, nuclei)
        cells[cond].extend(cell_rows)
        fields[cond].append(field_values)
        if on_field is not None:
            on_field(i + 1, len(chosen))

    samples: dict[str, dict[str, np.ndarray]] = {}
    conditions = {}
    for cond in by_condition:
        values = {
            key: np.array([r[key] for r in cells[cond]], dtype=float)
            for key in sorted({k for r in cells[cond] for k in r})
        }
        values.update(
            {key: np.array([f[key] for f in fields[cond] if key in f]) for key in PER_FIELD}
        )
        samples[cond] = {k: v[np.isfinite(v)] for k, v in values.items() if np.isfinite(v).any()}
        conditions[cond] = {
            "fields": len(by_condition[cond]),
            "fields_measured": len(fields[cond]),
            "cells_measured": len(cells[cond]),
            "features": {
                k: float(np.mean(v) if k in PER_FIELD else np.median(v))
                for k, v in samples[cond].items()
            },
        }
    return {
        "root": str(root),
        "assay": truth["assay"] if truth else None,
        "channels": channels,
        "conditions": conditions,
        "checks": _checks(truth, conditions, samples) if truth else [],
    }


def _checks(truth: dict, conditions: dict, samples: dict) -> list[dict]:
    """Compare each treated condition with the control in the planted direction.

    A two-sided Mann-Whitney U test on per-cell values (per-field values for field features; robust
    to the heavy tails of ratios) decides whether a difference is significant at `ALPHA`; the
    verdict is "agrees", "not significant" or "disagrees".
    """
    control = conditions.get(truth["control"])
    out = []
    for name in conditions:
        gt = truth["conditions"][name]
        if control is None:
            continue
        for feature, expected in gt["expected_vs_control"].items():
            ref = control["features"].get(feature)
            val = conditions[name]["features"].get(feature)
            observed, p = None, float("nan")
            if ref is not None and val is not None:
                observed = "up" if val > ref else "down"
                a, b = samples[truth["control"]][feature], samples[name][feature]
                if len(a) > 1 and len(b) > 1:
                    p = float(stats.mannwhitneyu(a, b, alternative="two-sided").pvalue)
            if not p < ALPHA:
                verdict = "not significant"
            else:
                verdict = "agrees" if observed == expected else "disagrees"
            out.append(
                {
                    "condition": name,
                    "feature": feature,
                    "expected": expected,
                    "control": ref,
                    "value": val,
                    "observed": observed,
                    "p_value": p,
                    "verdict": verdict,
                }
            )
    return out
