"""Adaptive discriminator augmentation (ADA) safe for fluorescence images.

Every transformation acts on each channel separately and never mixes channels, so a marker's
intensity is never leaked into another channel. Geometric: x-flip, 90-degree rotations, integer
translation, isotropic scaling, rotation, anisotropic scaling, fractional translation, composed
into one affine map per image and applied with bilinear sampling and reflection padding. Intensity:
per-channel brightness (additive) and contrast (multiplicative, around 0 = mid-range in [-1, 1]).
Each transformation is applied to each image with probability `p`, which the training loop adapts
so that the discriminator's overfitting heuristic r_t = E[sign(D(real))] stays at its target.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _reflect(coord: torch.Tensor, size: int) -> torch.Tensor:
    """Reflect pixel coordinates about -0.5 and size - 0.5, then clip to [0, size - 1]."""
    span = float(size)
    c = (coord + 0.5).abs()
    flips = torch.floor(c / span)
    extra = c - flips * span
    c = torch.where(flips % 2 == 0, extra, span - extra) - 0.5
    return c.clamp(0, size - 1)


def grid_sample_reflect(images: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Bilinear sampling with reflection padding (align_corners=False), as F.grid_sample does,
    written with gathers so that it can be differentiated twice with respect to the images (R1
    regularisation backpropagates through the augmentation; grid_sample's backward is not
    differentiable). images [N, C, H, W], grid [N, Ho, Wo, 2] in [-1, 1]."""
    n, c, h, w = images.shape
    gx = _reflect(((grid[..., 0] + 1) * w - 1) / 2, w)
    gy = _reflect(((grid[..., 1] + 1) * h - 1) / 2, h)
    x0, y0 = gx.floor(), gy.floor()
    wx, wy = (gx - x0)[:, None], (gy - y0)[:, None]
    x0, y0 = x0.long(), y0.long()
    x1, y1 = (x0 + 1).clamp(max=w - 1), (y0 + 1).clamp(max=h - 1)
    flat = images.reshape(n, c, h * w)

    def take(yy: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
        index = (yy * w + xx).reshape(n, 1, -1).expand(n, c, -1)
        return flat.gather(2, index).reshape(n, c, *yy.shape[1:])

    top = take(y0, x0) * (1 - wx) + take(y0, x1) * wx
    bottom = take(y1, x0) * (1 - wx) + take(y1, x1) * wx
    return top * (1 - wy) + bottom * wy


class AugmentPipe(torch.nn.Module):
    """images [N, C, H, W] -> augmented images, differentiable; `p` is a buffer (saved, synced)."""

    p: torch.Tensor  # a buffer: the augmentation probability

    def __init__(
        self,
        xflip: float = 1,
        rotate90: float = 1,
        xint: float = 1,
        scale: float = 1,
        rotate: float = 1,
        aniso: float = 1,
        xfrac: float = 1,
        brightness: float = 1,
        contrast: float = 1,
        xint_max: float = 0.125,
        scale_std: float = 0.2,
        rotate_max: float = 1.0,
        aniso_std: float = 0.2,
        xfrac_std: float = 0.125,
        brightness_std: float = 0.2,
        contrast_std: float = 0.5,
        sync_free: bool = False,
    ) -> None:
        super().__init__()
        # sync_free: p is used as a device tensor and identity transforms are not skipped, so a
        # GPU step never waits to read p (the CPU default skips work when p is 0)
        self.sync_free = sync_free
        self.register_buffer("p", torch.zeros([]))
        self.strength = dict(
            xflip=xflip,
            rotate90=rotate90,
            xint=xint,
            scale=scale,
            rotate=rotate,
            aniso=aniso,
            xfrac=xfrac,
            brightness=brightness,
            contrast=contrast,
        )
        self.xint_max, self.scale_std, self.rotate_max = xint_max, scale_std, rotate_max
        self.aniso_std, self.xfrac_std = aniso_std, xfrac_std
        self.brightness_std, self.contrast_std = brightness_std, contrast_std

    def _p(self, g: torch.Generator) -> torch.Tensor | float:
        return self.p.to(g.device) if self.sync_free else self.p.item()

    def _mask(
        self, name: str, n: int, g: torch.Generator, p: torch.Tensor | float | None = None
    ) -> torch.Tensor:
        prob = (self._p(g) if p is None else p) * self.strength[name]
        return (torch.rand(n, generator=g, device=g.device) < prob).to(torch.float32)

    def _geometry(self, n: int, height: int, width: int, g: torch.Generator) -> torch.Tensor | None:
        """Inverse affine maps [n, 2, 3] in normalised coordinates; None if all are identity."""
        dev = g.device
        eye = torch.eye(3, device=dev).repeat(n, 1, 1)
        m = eye.clone()

        def compose(t: torch.Tensor) -> None:
            nonlocal m
            m = m @ t

        def scale2d(sx, sy):
            t = eye.clone()
            t[:, 0, 0], t[:, 1, 1] = sx, sy
            return t

        def translate2d(tx, ty):
            t = eye.clone()
            t[:, 0, 2], t[:, 1, 2] = tx, ty
            return t

        def rotate2d(theta):
            t = eye.clone()
            t[:, 0, 0], t[:, 0, 1] = torch.cos(theta), -torch.sin(theta)
            t[:, 1, 0], t[:, 1, 1] = torch.sin(theta), torch.cos(theta)
            return t

        i = torch.floor(torch.rand(n, generator=g, device=dev) * 2) * self._mask("xflip", n, g)
        compose(scale2d(1 - 2 * i, torch.ones(n, device=dev)))
        k = torch.floor(torch.rand(n, generator=g, device=dev) * 4) * self._mask("rotate90", n, g)
        compose(rotate2d(-math.pi / 2 * k))
        shift = (
            (torch.rand(n, 2, generator=g, device=dev) * 2 - 1)
            * self.xint_max
            * self._mask("xint", n, g)[:, None]
        )
        pixels = torch.round(shift * torch.tensor([width, height], device=dev))
        compose(translate2d(pixels[:, 0] * 2 / width, pixels[:, 1] * 2 / height))
        s = torch.exp2(
            torch.randn(n, generator=g, device=dev) * self.scale_std * self._mask("scale", n, g)
        )
        compose(scale2d(s, s))
        p_rot: torch.Tensor | float
        if self.sync_free:
            p_rot = 1 - torch.sqrt(torch.clamp(1 - self.p.to(dev) * self.strength["rotate"], min=0))
        else:
            p_rot = 1 - math.sqrt(max(1 - self.p.item() * self.strength["rotate"], 0))
        theta = (
            (torch.rand(n, generator=g, device=dev) * 2 - 1)
            * math.pi
            * self.rotate_max
            * self._mask("rotate", n, g, p_rot)
        )
        compose(rotate2d(-theta))
        a = torch.exp2(
            torch.randn(n, generator=g, device=dev) * self.aniso_std * self._mask("aniso", n, g)
        )
        compose(scale2d(a, 1 / a))
        theta = (
            (torch.rand(n, generator=g, device=dev) * 2 - 1)
            * math.pi
            * self.rotate_max
            * self._mask("rotate", n, g, p_rot)
        )
        compose(rotate2d(-theta))
        frac = (
            torch.randn(n, 2, generator=g, device=dev)
            * self.xfrac_std
            * self._mask("xfrac", n, g)[:, None]
        )
        compose(translate2d(frac[:, 0] * 2, frac[:, 1] * 2))
        if not self.sync_free and torch.equal(m, eye):
            return None
        return m[:, :2, :]

    def forward(
        self, images: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        if not self.sync_free and self.p.item() <= 0:
            return images
        g = generator if generator is not None else torch.Generator(images.device).manual_seed(0)
        dev = g.device
        n, c, h, w = images.shape
        theta = self._geometry(n, h, w, g)
        if theta is not None:
            grid = F.affine_grid(
                theta.to(images.device, images.dtype), [n, c, h, w], align_corners=False
            )
            images = grid_sample_reflect(images, grid)
        shift = torch.randn(n, c, generator=g, device=dev) * self.brightness_std
        shift = shift * self._mask("brightness", n, g)[:, None]
        gain = torch.exp2(
            torch.randn(n, c, generator=g, device=dev)
            * self.contrast_std
            * self._mask("contrast", n, g)[:, None]
        )
        return images * gain.to(images)[:, :, None, None] + shift.to(images)[:, :, None, None]
