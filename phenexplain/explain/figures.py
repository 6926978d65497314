"""PNG figures of the latent analyses (numbers come from `phenexplain.explain.latent`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from phenexplain.display import IntensityMapping, composite
from phenexplain.plots import figure, paper_boxplot, save


def plot_lda(points: pd.DataFrame, path: str | Path, *, order: list[str] | None = None) -> Path:
    """Fitted conditions as faint clouds, projected ones as points with their mean marked."""
    fig = figure(6.5, 5.0)
    ax = fig.add_subplot()
    names = order or list(dict.fromkeys(points["condition"]))
    for k, name in enumerate(names):
        sel = points[points["condition"] == name]
        fitted = (sel["role"] == "fit").all()
        label = f"{name} ({'fit' if fitted else 'projected'})"
        ax.scatter(sel["ld1"], sel["ld2"], s=3 if fitted else 6, alpha=0.15 if fitted else 0.5,
                   color=f"C{k % 10}", label=label)  # fmt: skip
        ax.scatter(sel["ld1"].mean(), sel["ld2"].mean(), s=80, color=f"C{k % 10}",
                   edgecolor="black", marker="o" if fitted else "D", zorder=3)  # fmt: skip
    ax.set_xlabel("LD1")
    ax.set_ylabel("LD2")
    ax.set_title("LDA of W (generated samples)")
    ax.legend(fontsize=7, markerscale=3, loc="best")
    return save(fig, path)


def plot_dose_distances(rows: pd.DataFrame, summary: dict, path: str | Path) -> Path:
    """Box plot per dose of the W distance to the control centroid (paper Fig. 4d)."""
    names = [summary["control"], *summary["doses"]]
    fig = figure(max(4.0, 0.8 * len(names) + 2), 4.0)
    ax = fig.add_subplot()
    paper_boxplot(
        ax, [rows.loc[rows["condition"] == n, "distance"].to_numpy() for n in names], names
    )
    ax.set_ylabel(f"distance in W to the {summary['control']} centroid")
    ax.set_title(f"dose response (Spearman rho {summary['spearman_rho_median_vs_dose']:.2f})")
    return save(fig, path)


def plot_dose_projection(
    images: np.ndarray, names: list[str], seeds: list[int], colours: list[str], path: str | Path
) -> Path:
    """Per seed two rows: S(w_d) for each dose, and S of its projection on the traversal line."""
    s, d = images.shape[:2]
    mapping = IntensityMapping.fit(images)
    rgb = composite(images, colours, mapping)  # [S, D, 2, H, W, 3]
    fig = figure(1.2 * d + 1, 2.4 * s + 0.5)
    for i in range(s):
        for k in range(d):
            for row in range(2):
                ax = fig.add_subplot(2 * s, d, (2 * i + row) * d + k + 1)
                ax.imshow(rgb[i, k, row])
                ax.set_xticks([])
                ax.set_yticks([])
                if i == 0 and row == 0:
                    ax.set_title(names[k], fontsize=7)
                if k == 0:
                    ax.set_ylabel(
                        f"seed {seeds[i]}\n{'dose' if row == 0 else 'projected'}", fontsize=7
                    )
    return save(fig, path)
