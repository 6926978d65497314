"""Report figures: assays real vs synthetic per condition, and the shift scatter."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd

from phenexplain.plots import figure, paper_boxplot, save


def real_vs_synthetic(
    real: pd.DataFrame,
    synthetic: pd.DataFrame,
    assay: str,
    conditions: list[str],
    path: Path,
    label: str | None = None,
) -> Path:
    """Per condition a real box (orange, as the paper) and a synthetic box (violet) of the column
    `assay`, titled by `label` (its plain name; default the column name)."""
    label = label or assay
    fig = figure(max(4.0, 1.2 * len(conditions) + 1.5), 3.6)
    ax = fig.add_subplot()
    groups, labels = [], []
    for name in conditions:
        for source, table in (("real", real), ("synth", synthetic)):
            groups.append(table.loc[table["condition"] == name, assay].to_numpy(float))
            labels.append(f"{name}\n{source}")
    paper_boxplot(ax, groups, labels)
    for patch, k in zip(ax.patches, range(len(groups)), strict=False):
        patch.set_facecolor("tab:orange" if k % 2 == 0 else "tab:purple")
    ax.set_ylabel(textwrap.fill(label, 32), fontsize="small")
    title = f"{textwrap.fill(label, 48)}\nreal (orange) vs synthetic (violet)"
    ax.set_title(title, fontsize="small")
    return save(fig, path)


def shift_scatter(shifts: pd.DataFrame, path: Path) -> Path:
    """Cohen's d on synthetic vs real images, one point per (feature, condition)."""
    fig = figure(4.2, 4.0)
    ax = fig.add_subplot()
    x, y = shifts["shift_real"].to_numpy(float), shifts["shift_synthetic"].to_numpy(float)
    ok = np.isfinite(x) & np.isfinite(y)
    ax.scatter(x[ok], y[ok], s=8, alpha=0.6)
    if ok.any():
        lim = float(np.nanmax(np.abs(np.concatenate([x[ok], y[ok]])))) * 1.05 or 1.0
        ax.plot([-lim, lim], [-lim, lim], color="grey", lw=0.8, ls="--")
    ax.set_xlabel("shift on real images (Cohen's d)")
    ax.set_ylabel("shift on synthetic images (Cohen's d)")
    return save(fig, path)
