"""Soft star-convex shapes: ellipses whose boundary radius is modulated by low harmonics.

A shape is evaluated on a pixel window and yields, per pixel, the normalised radius
q = rho / r(phi) (0 at the centre, 1 on the boundary) and the signed distance to the boundary in
pixels, r(phi) - rho, from which an anti-aliased mask follows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit

EDGE_PX = 0.6
"""Width of the soft boundary (logistic scale, pixels)."""


@dataclass(frozen=True)
class Shape:
    """An irregular ellipse centred at (cy, cx) in field pixel coordinates."""

    cy: float
    cx: float
    a: float  # semi-axis along `theta`, px
    b: float  # other semi-axis, px
    theta: float  # orientation, rad
    harmonics: tuple[tuple[float, float], ...] = ()  # (amplitude, phase) for k = 2, 3, ...

    @property
    def extent(self) -> float:
        """An upper bound of the boundary radius, px."""
        return max(self.a, self.b) * (1.0 + sum(abs(amp) for amp, _ in self.harmonics)) + 3.0

    def window(self, height: int, width: int) -> tuple[slice, slice] | None:
        """The pixel window covering the shape, clipped to the field; None when fully outside."""
        r = self.extent
        y0, y1 = max(int(np.floor(self.cy - r)), 0), min(int(np.ceil(self.cy + r)) + 1, height)
        x0, x1 = max(int(np.floor(self.cx - r)), 0), min(int(np.ceil(self.cx + r)) + 1, width)
        if y0 >= y1 or x0 >= x1:
            return None
        return slice(y0, y1), slice(x0, x1)

    def evaluate(self, win: tuple[slice, slice]) -> tuple[np.ndarray, np.ndarray]:
        """Return (q, margin) on the window: normalised radius and boundary distance in px."""
        yy = np.arange(win[0].start, win[0].stop, dtype=np.float32)[:, None] - np.float32(self.cy)
        xx = np.arange(win[1].start, win[1].stop, dtype=np.float32)[None, :] - np.float32(self.cx)
        rho = np.hypot(yy, xx)
        phi = np.arctan2(yy, xx)
        t = phi - np.float32(self.theta)
        radius = (self.a * self.b) / np.sqrt((self.b * np.cos(t)) ** 2 + (self.a * np.sin(t)) ** 2)
        modulation = np.ones_like(phi)
        for k, (amp, phase) in enumerate(self.harmonics, start=2):
            modulation += np.float32(amp) * np.cos(k * phi + np.float32(phase))
        radius = radius * modulation
        return rho / np.maximum(radius, 1e-3), radius - rho


def soft_mask(margin: np.ndarray) -> np.ndarray:
    """Anti-aliased inside-ness from the boundary distance, in [0, 1]."""
    return expit(margin / np.float32(EDGE_PX)).astype(np.float32)


def random_shape(
    rng: np.random.Generator,
    cy: float,
    cx: float,
    area: float,
    aspect_sigma: float,
    irregularity: float,
    orders: int = 4,
) -> Shape:
    """A random irregular ellipse whose enclosed area is close to `area` (px^2).

    Aspect ratio is exp(|N(0, aspect_sigma)|); harmonic amplitudes are N(0, irregularity). The
    semi-axes are corrected for the harmonics' contribution to the area (mean of modulation^2).
    """
    aspect = float(np.exp(abs(rng.normal(0.0, aspect_sigma))))
    amps = rng.normal(0.0, irregularity, size=orders)
    phases = rng.uniform(0.0, 2 * np.pi, size=orders)
    area_gain = 1.0 + 0.5 * float(np.sum(amps**2))
    ab = area / (np.pi * area_gain)
    a = float(np.sqrt(ab * aspect))
    return Shape(
        cy=cy,
        cx=cx,
        a=a,
        b=float(ab / a),
        theta=float(rng.uniform(0.0, np.pi)),
        harmonics=tuple((float(m), float(p)) for m, p in zip(amps, phases, strict=True)),
    )
