"""Compose one fluorescence field of view as a plate reader's camera records it.

Pipeline for one field: place cells (uniform plus clustered, so some nuclei touch), draw each cell's
nucleus and body as irregular shapes, let neighbouring cells share space by nearest-boundary
ownership, paint every channel from the owners' parameters, add debris, blur with the optics' PSF,
add autofluorescence background, apply uneven illumination, then photon shot noise, camera gain,
offset and read noise, and quantise to 16 bits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from phenexplain.data.synthetic.assays import Assay, CellModel, Condition
from phenexplain.data.synthetic.shapes import Shape, random_shape, soft_mask

CAMERA_OFFSET_ADU = 100.0
CAMERA_GAIN_ADU = 2.0  # ADU per photon
READ_NOISE_ADU = 3.0
PSF_SIGMA_PX = 1.0
BACKGROUND_PHOTONS = 12.0
BORDER_MARGIN_PX = 12.0  # cell centres may lie this far outside the field (cells cut by the edge)
CLUSTER_FRACTION = 0.3  # share of cells placed next to an existing one
GOLGI_BODY = 0.12  # diffuse golgi marker in the cytoplasm, relative to the marker level
# Integrated golgi spot signal per cell, in units of the marker level (photons/px) times px^2:
# the same whatever the layout, so scattering moves the signal without adding any.
GOLGI_INTEGRAL = 4 * 6.0 * 2 * np.pi * 2.4**2


CELL_COLUMNS = (
    "cell", "y", "x", "centre_in_field", "planted_nucleus_area", "planted_cell_area",
    "nucleus_area", "cell_area", "cytoplasm_area", "nc_ratio", "golgi_spots", "golgi_spot_sigma",
    "marker_total",
)  # fmt: skip
"""Columns of a ground-truth cell row, in order. ``marker_total``: the cell's integrated NF-kB, or
its golgi spots' integrated signal, in photons before gain, blur and noise (empty otherwise)."""


@dataclass(frozen=True)
class FieldEffects:
    """Acquisition effects shared by a plate or a well: gains and the illumination profile."""

    channel_gain: tuple[float, ...]  # multiplicative, one per channel
    illumination_centre: tuple[float, float]  # relative (y, x) of the brightest point, 0..1
    illumination_falloff: float  # relative signal lost at the far corner


@dataclass
class _Cell:
    nucleus: Shape
    body: Shape
    levels: np.ndarray  # per-channel intensity factors, log-normal around 1
    nc_ratio: float
    planted_nucleus_area: float
    planted_cell_area: float


def _place_centres(
    rng: np.random.Generator, n: int, radii: np.ndarray, height: int, width: int
) -> np.ndarray:
    """Centres [n, 2] with nuclei that may touch but hardly overlap."""
    centres = np.zeros((0, 2))
    kept: list[int] = []
    lo, hi = -BORDER_MARGIN_PX, np.array([height, width]) + BORDER_MARGIN_PX
    for i in range(n):
        for _ in range(30):
            if len(kept) and rng.random() < CLUSTER_FRACTION:
                j = int(rng.integers(len(kept)))
                angle = rng.uniform(0, 2 * np.pi)
                dist = (radii[i] + radii[kept[j]]) * rng.uniform(0.95, 1.25)
                c = centres[j] + dist * np.array([np.sin(angle), np.cos(angle)])
            else:
                c = lo + rng.random(2) * (hi - lo)
            if len(kept):
                gap = np.hypot(*(centres - c).T) - 0.88 * (radii[i] + radii[kept])
                if np.any(gap < 0):
                    continue
            centres = np.vstack([centres, c])
            kept.append(i)
            break
    out = np.full((n, 2), np.nan)
    out[kept] = centres
    return out


def _sample_cells(
    rng: np.random.Generator, model: CellModel, n: int, n_channels: int, height: int, width: int
) -> list[_Cell]:
    nuc_area = np.clip(
        rng.normal(model.nucleus_area, model.nucleus_area_sd, n),
        0.35 * model.nucleus_area,
        2.5 * model.nucleus_area,
    )
    cell_area = np.clip(
        rng.normal(model.cell_area, model.cell_area_sd, n), 0.3 * model.cell_area, None
    )
    cell_area = np.maximum(cell_area, 1.6 * nuc_area)
    centres = _place_centres(rng, n, np.sqrt(nuc_area / np.pi), height, width)
    sigma = np.sqrt(np.log1p(model.brightness_cv**2))
    cells = []
    for i in range(n):
        if np.isnan(centres[i, 0]):
            continue
        cy, cx = centres[i]
        nucleus = random_shape(rng, cy, cx, nuc_area[i], aspect_sigma=0.18, irregularity=0.03)
        r_cell = np.sqrt(cell_area[i] / np.pi)
        shift = rng.uniform(0.0, 0.3) * (r_cell - np.sqrt(nuc_area[i] / np.pi))
        angle = rng.uniform(0, 2 * np.pi)
        body = random_shape(
            rng,
            cy + shift * np.sin(angle),
            cx + shift * np.cos(angle),
            cell_area[i],
            aspect_sigma=0.3,
            irregularity=0.09,
        )
        cells.append(
            _Cell(
                nucleus=nucleus,
                body=body,
                levels=rng.lognormal(-0.5 * sigma**2, sigma, n_channels),
                nc_ratio=float(model.nc_ratio * rng.lognormal(0.0, model.nc_ratio_sigma)),
                planted_nucleus_area=float(nuc_area[i]),
                planted_cell_area=float(cell_area[i]),
            )
        )
    return cells


def _ownership(
    shapes: list[Shape], height: int, width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per pixel: owning shape index (-1 none), its normalised radius q and soft mask.

    A pixel belongs to the shape in whose normalised radius it lies deepest, so neighbours share
    space along a boundary instead of overlapping.
    """
    owner = np.full((height, width), -1, dtype=np.int32)
    best_q = np.full((height, width), np.inf, dtype=np.float32)
    margin = np.full((height, width), -np.inf, dtype=np.float32)
    for idx, shape in enumerate(shapes):
        win = shape.window(height, width)
        if win is None:
            continue
        q, m = shape.evaluate(win)
        take = (q < best_q[win]) & (m > -4.0)
        owner[win][take] = idx
        best_q[win][take] = q[take]
        margin[win][take] = m[take]
    return owner, np.where(owner >= 0, best_q, 1.0e3), soft_mask(margin)


def _per_cell_sum(owner: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Sum of `values` per owning cell 0..n-1."""
    return np.bincount(owner, weights=values, minlength=n)[:n]


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Unit-variance Gaussian texture with correlation length `sigma` px."""
    noise = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma)
    return noise / max(float(noise.std()), 1e-6)


def _low_frequency(rng: np.random.Generator, shape: tuple[int, int], order: int = 4) -> np.ndarray:
    """A smooth unit-variance field: a random mix of the lowest 2D cosine modes (one matmul)."""
    ys = np.cos(np.pi * np.outer(np.arange(shape[0]) / shape[0], np.arange(1, order + 1)))
    xs = np.cos(np.pi * np.outer(np.arange(shape[1]) / shape[1], np.arange(1, order + 1)))
    coeffs = rng.standard_normal((order, order)) / (
        1.0 + np.add.outer(np.arange(order), np.arange(order))
    )
    out = (ys @ coeffs @ xs.T).astype(np.float32)
    return (out - out.mean()) / max(float(out.std()), 1e-6)


def _golgi_spots(
    rng: np.random.Generator, model: CellModel, cell: _Cell, cyto_pixels: np.ndarray, width: int
) -> np.ndarray:
    """Spots [n, 3] of (y, x, sigma) for one cell."""
    n = 1 + int(rng.poisson(max(model.golgi_spots - 1.0, 0.0)))
    if len(cyto_pixels) == 0:
        return np.zeros((0, 3))
    sigmas = model.golgi_spot_sigma * rng.lognormal(0.0, 0.15, n)
    if model.golgi_compact:
        nuc = cell.nucleus
        angle = rng.uniform(0, 2 * np.pi)
        reach = 1.15 * np.sqrt(nuc.a * nuc.b) + model.golgi_spot_sigma
        centre = np.array([nuc.cy + reach * np.sin(angle), nuc.cx + reach * np.cos(angle)])
        pos = centre + rng.normal(0.0, 1.4 * model.golgi_spot_sigma, (n, 2))
    else:
        flat = rng.choice(cyto_pixels, size=n)
        pos = np.stack([flat // width, flat % width], axis=1) + rng.uniform(-0.5, 0.5, (n, 2))
    return np.column_stack([pos, sigmas])


def _paint_spots(target: np.ndarray, spots: np.ndarray, amplitudes: np.ndarray) -> None:
    height, width = target.shape
    for (y, x, s), amp in zip(spots, amplitudes, strict=True):
        r = int(np.ceil(3.5 * s))
        y0, y1 = max(int(y) - r, 0), min(int(y) + r + 1, height)
        x0, x1 = max(int(x) - r, 0), min(int(x) + r + 1, width)
        if y0 >= y1 or x0 >= x1:
            continue
        yy = np.arange(y0, y1)[:, None] - y
        xx = np.arange(x0, x1)[None, :] - x
        target[y0:y1, x0:x1] += amp * np.exp(-(yy**2 + xx**2) / (2 * s * s))


def _debris(rng: np.random.Generator, signal: np.ndarray, height: int, width: int) -> int:
    """Add a few bright irregular particles unrelated to cells; returns how many."""
    n = int(rng.poisson(1.5 * height * width / (1024 * 1280)))
    for _ in range(n):
        shape = random_shape(
            rng,
            rng.uniform(0, height),
            rng.uniform(0, width),
            area=rng.uniform(6, 60),
            aspect_sigma=0.5,
            irregularity=0.2,
        )
        win = shape.window(height, width)
        if win is None:
            continue
        mask = soft_mask(shape.evaluate(win)[1])
        for c in range(signal.shape[0]):
            if c == 0 or rng.random() < 0.5:
                signal[c][win] += rng.uniform(1.0, 4.0) * 900.0 * mask
    return n


def render_field(
    assay: Assay,
    condition: Condition,
    height: int,
    width: int,
    cells_per_mpx: float,
    effects: FieldEffects,
    rng: np.random.Generator,
) -> tuple[np.ndarray, list[dict], dict]:
    """Render one field.

    Returns the image [C, H, W] uint16, one ground-truth row per cell (planted and realised values)
    and field-level facts (cell and debris counts).
    """
    model = condition.model
    n_ch = len(assay.channels)
    expected_cells = cells_per_mpx * model.relative_density * height * width / 1e6
    cells = _sample_cells(rng, model, int(rng.poisson(expected_cells)), n_ch, height, width)

    nuc_owner, nuc_q, nuc_mask = _ownership([c.nucleus for c in cells], height, width)
    cell_owner, cell_q, cell_mask = _ownership([c.body for c in cells], height, width)
    # A nucleus always lies in its own cell, whatever the neighbours' bodies do.
    inside = nuc_mask > 0.5
    cell_owner[inside] = nuc_owner[inside]
    cell_mask = np.maximum(cell_mask, nuc_mask)
    cell_q = np.where(inside, np.minimum(cell_q, 0.5), cell_q)
    cyto_mask = cell_mask * (1.0 - nuc_mask)

    # Row 0 stands in for "no cell" in an empty field; its masks are zero everywhere anyway.
    levels = np.zeros((max(len(cells), 1), n_ch), dtype=np.float32)
    nc_ratio = np.zeros(max(len(cells), 1), dtype=np.float32)
    for i, cell in enumerate(cells):
        levels[i], nc_ratio[i] = cell.levels, cell.nc_ratio
    safe_owner = np.maximum(cell_owner, 0)
    safe_nuc = np.maximum(nuc_owner, 0)
    owned = cell_owner >= 0
    # Per cell: nuclear and cytoplasmic area as painted (soft masks summed over its pixels).
    nuc_in_cell = _per_cell_sum(cell_owner[owned], nuc_mask[owned], len(cells))
    cyto_in_cell = _per_cell_sum(cell_owner[owned], cyto_mask[owned], len(cells))
    marker_total = np.zeros(len(cells))
    signal = np.zeros((n_ch, height, width), dtype=np.float32)
    spot_rows: dict[int, np.ndarray] = {}

    for c, channel in enumerate(assay.channels):
        gain = np.float32(effects.channel_gain[c])
        if channel.stain == "dna":
            texture = 1.0 + 0.18 * _smooth_noise(rng, (height, width), 1.3)
            radial = 1.0 - 0.25 * np.clip(nuc_q, 0, 1) ** 2
            level = levels[safe_nuc, c] * np.float32(model.dna_level)
            signal[c] = level * nuc_mask * radial * texture
        elif channel.stain == "nfkb":
            texture = 1.0 + 0.12 * _smooth_noise(rng, (height, width), 1.0)
            # Translocation conserves the cell's marker: a total of level x marker level x cell
            # area, split so that nuclear concentration = nc_ratio x cytoplasmic concentration.
            total = levels[: len(cells), c] * model.marker_level * (cyto_in_cell + nuc_in_cell)
            weight = cyto_in_cell + nc_ratio[: len(cells)] * nuc_in_cell
            cyto_conc = np.zeros(levels.shape[0], dtype=np.float32)
            cyto_conc[: len(cells)] = np.where(weight > 0, total / np.maximum(weight, 1e-9), 0.0)
            marker_total = total
            conc = cyto_conc[safe_owner]
            signal[c] = conc * (cyto_mask + nc_ratio[safe_owner] * nuc_mask) * texture
        elif channel.stain == "actin":
            texture = 1.0 + 0.3 * _smooth_noise(rng, (height, width), 1.5)
            cortex = 0.45 + 1.1 * np.clip(cell_q, 0, 1) ** 4
            level = levels[safe_owner, c] * np.float32(model.marker_level)
            signal[c] = level * cell_mask * cortex * (1.0 - 0.4 * nuc_mask) * np.maximum(texture, 0)
        elif channel.stain == "tubulin":
            texture = 1.0 + 0.3 * _smooth_noise(rng, (height, width), 2.0)
            perinuclear = 1.4 - 0.8 * np.clip(cell_q, 0, 1)
            level = levels[safe_owner, c] * np.float32(model.marker_level)
            signal[c] = (
                level * cell_mask * perinuclear * (1.0 - 0.3 * nuc_mask) * np.maximum(texture, 0)
            )
        elif channel.stain == "golgi":
            level = levels[safe_owner, c] * np.float32(model.marker_level)
            signal[c] = GOLGI_BODY * level * cyto_mask
            cyto = np.flatnonzero((cyto_mask > 0.5).ravel())
            owners = cell_owner.ravel()[cyto]
            order = np.argsort(owners, kind="stable")
            bounds = np.searchsorted(owners[order], np.arange(len(cells) + 1))
            for i, cell in enumerate(cells):
                spots = _golgi_spots(
                    rng, model, cell, cyto[order[bounds[i] : bounds[i + 1]]], width
                )
                spot_rows[i] = spots
                if len(spots) == 0:
                    continue
                # every spot carries an equal share of the cell's fixed integrated golgi signal
                share = GOLGI_INTEGRAL * model.marker_level * cell.levels[c] / len(spots)
                amp = share / (2 * np.pi * spots[:, 2] ** 2)
                _paint_spots(signal[c], spots, amp.astype(np.float32))
                marker_total[i] = share * len(spots)
        else:  # pragma: no cover - assays are validated at definition
            raise AssertionError(channel.stain)
        signal[c] *= gain

    n_debris = _debris(rng, signal, height, width)
    for c in range(n_ch):
        signal[c] = ndimage.gaussian_filter(signal[c], PSF_SIGMA_PX)
        background = BACKGROUND_PHOTONS * (1.0 + 0.15 * _low_frequency(rng, (height, width)))
        signal[c] += np.maximum(background, 0.0)

    yy = (np.arange(height, dtype=np.float32)[:, None] / height) - effects.illumination_centre[0]
    xx = (np.arange(width, dtype=np.float32)[None, :] / width) - effects.illumination_centre[1]
    illum = 1.0 - effects.illumination_falloff * (yy**2 + xx**2) / 2.0
    signal *= illum[None]

    photons = rng.poisson(np.maximum(signal, 0.0)).astype(np.float32)
    adu = CAMERA_OFFSET_ADU + CAMERA_GAIN_ADU * photons
    adu += rng.normal(0.0, READ_NOISE_ADU, adu.shape).astype(np.float32)
    image = np.clip(np.rint(adu), 0, 65535).astype(np.uint16)

    nuc_area = _per_cell_sum(nuc_owner[nuc_owner >= 0], nuc_mask[nuc_owner >= 0], len(cells))
    cell_area = _per_cell_sum(cell_owner[owned], cell_mask[owned], len(cells))
    rows = []
    for i, cell in enumerate(cells):
        spots = spot_rows.get(i, np.zeros((0, 3)))
        rows.append(
            {
                "cell": i,
                "y": round(cell.nucleus.cy, 2),
                "x": round(cell.nucleus.cx, 2),
                "centre_in_field": bool(
                    0 <= cell.nucleus.cy < height and 0 <= cell.nucleus.cx < width
                ),
                "planted_nucleus_area": round(cell.planted_nucleus_area, 2),
                "planted_cell_area": round(cell.planted_cell_area, 2),
                "nucleus_area": round(float(nuc_area[i]), 2),
                "cell_area": round(float(cell_area[i]), 2),
                "cytoplasm_area": round(float(cell_area[i] - nuc_area[i]), 2),
                "nc_ratio": round(cell.nc_ratio, 4),
                "golgi_spots": len(spots),
                "golgi_spot_sigma": round(float(spots[:, 2].mean()), 3) if len(spots) else "",
                "marker_total": round(float(marker_total[i]), 1) if marker_total[i] else "",
            }
        )
    facts = {"cells": len(cells), "debris": n_debris}
    return image, rows, facts
