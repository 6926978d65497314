"""Figures shared by explain and report: matplotlib's object API (no pyplot global state).

Box plots are drawn as the paper draws them: the box spans q1 to q3, the bar is the median, the
whiskers reach the last datum within 1.5 IQR of the box, points beyond are drawn as outliers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure


def figure(width: float = 6.0, height: float = 4.0) -> Figure:
    """A new figure (Agg canvas) of `width` x `height` inches."""
    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def paper_boxplot(ax, groups: list[np.ndarray], labels: list[str], *, colour: str = "C0") -> None:
    """One box per group (q1-q3, median bar, whiskers at 1.5 IQR, outliers as points)."""
    ax.boxplot(
        [np.asarray(g, float)[np.isfinite(g)] for g in groups],
        whis=1.5,
        showfliers=True,
        patch_artist=True,
        boxprops={"facecolor": colour, "alpha": 0.35},
        medianprops={"color": "black"},
        flierprops={"markersize": 2, "alpha": 0.4},
    )
    ax.set_xticks(range(1, len(labels) + 1), labels, rotation=30, ha="right")


def save(fig: Figure, path: str | Path) -> Path:
    """Write `fig` as PNG (or by suffix) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
