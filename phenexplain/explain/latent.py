"""Latent analysis in W: the LDA map of conditions (paper Fig. 4b), the dose response as distances
to the control centroid (Fig. 4d), and the orthogonal projection of dose-conditioned W onto the
control-to-highest-dose traversal (Fig. 4c).

Samples are drawn with z from a seeded torch generator; the same z serve every condition (the
"same cells" under each condition), so differences between conditions are not sampling noise of z.
Every function returns the numbers it plots as a pandas DataFrame.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from scipy import stats

from phenexplain.errors import PhenexplainError
from phenexplain.explain.traversal import map_w, synthesize
from phenexplain.generate import condition_indices
from phenexplain.nets import Generator
from phenexplain.nets.ops import to_uint8
from phenexplain.nets.sampling import one_hot, seed_latent, z_batches


def sample_w(G: Generator, condition: int, n: int, seed: int = 0, batch: int = 4096) -> np.ndarray:
    """w = M(z, c) for n seeded z: float64 [n, w_dim] (same z for every condition)."""
    device = next(G.parameters()).device
    out = []
    with torch.no_grad():
        for z in z_batches(n, G.z_dim, seed, batch, device):
            c = one_hot(condition, G.c_dim, len(z), device)
            out.append(map_w(G, z, c).double().cpu().numpy())
    return np.concatenate(out)


def dose_order(names: list[str]) -> list[str]:
    """Sort condition names by the first number in each ('cytoD_0.3uM' < 'cytoD_3uM'); names
    without a number cannot be ordered: pass the order explicitly."""
    values = {}
    for name in names:
        match = re.search(r"\d+(?:\.\d+)?(?:[eE][-+]?\d+)?", name)
        if match is None:
            raise PhenexplainError(
                f"cannot tell the dose of condition {name!r} from its name; "
                "list the doses in increasing order with --doses"
            )
        values[name] = float(match[0])
    return sorted(names, key=values.__getitem__)


def ordered_doses(
    conditions: list[str], control: str, concentrations: Mapping[str, float] | None = None
) -> list[str] | None:
    """The conditions other than `control` in increasing dose, or None where there is no dose
    series (fewer than 2 of them, or no order to tell): by `concentrations` (a crop set's
    `concentration_um` per condition) where it gives every one, else by the number in each name."""
    others = [c for c in conditions if c != control]
    if len(others) < 2:
        return None
    if concentrations is not None and all(
        c in concentrations and concentrations[c] == concentrations[c]
        for c in others  # not NaN
    ):
        return sorted(others, key=lambda c: float(concentrations[c]))
    try:
        return dose_order(others)
    except PhenexplainError:
        return None


CONTROL_WORDS = ("control", "ctrl", "dmso", "untreated", "mock", "vehicle", "wt", "negative")


def pick_control(conditions: list[str], given: str | None) -> str:
    """`given` if it is a condition; otherwise the first condition named like a control."""
    if given is not None:
        if given not in conditions:
            raise PhenexplainError(f"control {given!r} is not a condition of {conditions}")
        return given
    for name in conditions:
        words = re.split(r"[^a-z0-9]+", name.lower())
        if any(w in CONTROL_WORDS for w in words):
            return name
    raise PhenexplainError(
        f"cannot tell which of {conditions} is the control; set report.control in params.yaml "
        "or pass --control"
    )


def lda_conditions(
    conditions: list[str], control: str, doses: list[str] | None
) -> tuple[list[str], list[str]]:
    """(fitted, projected) conditions of the default LDA map: the control and the highest dose
    (the paper's Fig. 4b), or without doses the first three conditions; the others projected."""
    fit = [control, doses[-1]] if doses else conditions[:3]
    return fit, [c for c in conditions if c not in fit]


def lda_map(
    G: Generator,
    conditions: list[str],
    fit: list[str],
    project: Sequence[str] = (),
    *,
    n_fit: int = 3000,
    n_project: int = 300,
    seed: int = 0,
) -> pd.DataFrame:
    """LDA fitted on W of `n_fit` samples of each `fit` condition, with `n_project` samples of each
    `project` condition projected onto the same plane. Two or more fit conditions give LD1; with
    three or more, LD2 too; with two, the second axis is the first principal component of W
    orthogonal to LD1 (so the map stays a plane). Columns: condition, role, ld1, ld2."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    if len(fit) < 2:
        raise PhenexplainError("the LDA needs at least two conditions to fit")
    fit_idx, proj_idx = (
        condition_indices(conditions, fit),
        condition_indices(conditions, list(project)),
    )
    x = [sample_w(G, j, n_fit, seed) for j in fit_idx]
    y = np.repeat(np.arange(len(fit)), n_fit)
    lda = LinearDiscriminantAnalysis(n_components=min(2, len(fit) - 1)).fit(np.concatenate(x), y)
    axes = lda.scalings_[:, : lda.n_components]
    if axes.shape[1] == 1:
        a = axes[:, 0] / np.linalg.norm(axes[:, 0])
        centred = np.concatenate(x) - np.concatenate(x).mean(axis=0)
        residual = centred - np.outer(centred @ a, a)
        pc = np.linalg.svd(residual, full_matrices=False)[2][0]
        axes = np.stack([axes[:, 0], pc], axis=1)
    mean = lda.xbar_
    rows = []
    for role, names, idx, n in (
        ("fit", fit, fit_idx, n_fit),
        ("projected", project, proj_idx, n_project),
    ):
        for name, j in zip(names, idx, strict=True):
            coords = (sample_w(G, j, n, seed + 1 if role == "projected" else seed) - mean) @ axes
            rows.append(
                pd.DataFrame(
                    {"condition": name, "role": role, "ld1": coords[:, 0], "ld2": coords[:, 1]}
                )
            )
    return pd.concat(rows, ignore_index=True)


def dose_distances(
    G: Generator,
    conditions: list[str],
    control: str,
    doses: list[str],
    *,
    centroid: torch.Tensor,
    n: int = 1000,
    seed: int = 0,
) -> tuple[pd.DataFrame, dict]:
    """Distance in W of `n` samples of the control and of each dose to the control centroid w̄
    (eq. 4). Returns (rows: condition, dose_rank, sample, distance; summary: medians, Spearman rho
    of the median distance against dose rank, the control counted as rank 0)."""
    idx = condition_indices(conditions, [control, *doses])
    centre = centroid[idx[0]].double().numpy()
    frames = []
    for rank, (name, j) in enumerate(zip([control, *doses], idx, strict=True)):
        d = np.linalg.norm(sample_w(G, j, n, seed) - centre, axis=1)
        frames.append(
            pd.DataFrame(
                {"condition": name, "dose_rank": rank, "sample": np.arange(n), "distance": d}
            )
        )
    rows = pd.concat(frames, ignore_index=True)
    medians = rows.groupby("dose_rank")["distance"].median()
    rho = float(stats.spearmanr(medians.index, medians.values).statistic)
    summary = {
        "control": control,
        "doses": list(doses),
        "n": n,
        "median_distance": {name: float(medians[r]) for r, name in enumerate([control, *doses])},
        "spearman_rho_median_vs_dose": rho,
        "spearman_rho_samples_vs_dose": float(
            stats.spearmanr(rows["dose_rank"], rows["distance"]).statistic
        ),
    }
    return rows, summary


def dose_projection(
    G: Generator,
    conditions: list[str],
    control: str,
    doses: list[str],
    seeds: list[int],
    *,
    noise_mode: str = "const",
) -> tuple[pd.DataFrame, np.ndarray]:
    """For each seed z, w_d = M(z, c_d) for the control and every dose, and its orthogonal
    projection p_d onto the line from M(z, c_control) to M(z, c_highest) (Fig. 4c).

    Returns (rows: seed, condition, dose_rank, t (position along the line, 0 control, 1 highest
    dose), residual (distance from the line); images uint8 [seeds, doses + 1, 2, C, H, W] with
    S(w_d) then S(p_d))."""
    idx = condition_indices(conditions, [control, *doses])
    device = next(G.parameters()).device
    z = torch.cat([seed_latent(s, G.z_dim) for s in seeds]).to(device)
    with torch.no_grad():
        w = torch.stack(
            [map_w(G, z, one_hot(j, G.c_dim, len(z), device)) for j in idx], dim=1
        )  # [S, D, w]
    start, axis = w[:, :1], w[:, -1:] - w[:, :1]
    t = ((w - start) * axis).sum(-1, keepdim=True) / (axis * axis).sum(-1, keepdim=True)
    projected = start + t * axis
    residual = (w - projected).norm(dim=-1)
    rows = [
        {
            "seed": s,
            "condition": name,
            "dose_rank": r,
            "t": float(t[i, r, 0]),
            "residual": float(residual[i, r]),
        }
        for i, s in enumerate(seeds)
        for r, name in enumerate([control, *doses])
    ]
    images = to_uint8(synthesize(G, torch.stack([w, projected], dim=2), noise_mode=noise_mode))
    return pd.DataFrame(rows), images.numpy()
