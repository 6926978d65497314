"""Projection of real crops into W of the conditional G, and their translation to another
condition (beyond the paper, which names the lack of it as its limitation).

A crop x of condition c1 is reconstructed as S(w) by optimising w (one w, or one per layer: W+)
and optionally the per-layer noise maps, from the centroid w̄1 (eq. 4), with a loss that needs no
downloaded network: mean squared error plus 0.1 (1 - MS-SSIM) (a larger weight made the
optimisation oscillate on small crops). The projected w is translated to c2 by
method 2 (eq. 5): w + t (w̄2 - w̄1), t from 0 to 1.

Quality is reported as PSNR (dB, uint8 range) and SSIM (Gaussian window 11, sigma 1.5) between the
crop and its reconstruction.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from phenexplain.errors import PhenexplainError
from phenexplain.nets import Generator
from phenexplain.nets.generator import SynthesisLayer
from phenexplain.nets.ops import from_uint8, to_uint8
from phenexplain.nets.sampling import one_hot, z_batches

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al. 2003, finest first


def _window(size: int, sigma: float, channels: int) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def _ssim_terms(
    x: torch.Tensor, y: torch.Tensor, data_range: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(SSIM, contrast-structure term) per image for x, y [N, C, H, W]; Gaussian window 11 (or the
    image size if smaller), sigma 1.5, 'valid' positions only."""
    c = x.shape[1]
    size = min(11, x.shape[-1], x.shape[-2])
    win = _window(size, 1.5, c).to(x)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, win, groups=c)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    cs = (2 * cxy + c2) / (vx + vy + c2)
    ssim = (2 * mx * my + c1) / (mx**2 + my**2 + c1) * cs
    return ssim.mean(dim=[1, 2, 3]), cs.mean(dim=[1, 2, 3])


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """Structural similarity per image, [N]."""
    return _ssim_terms(x, y, data_range)[0]


def ms_ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """Multi-scale SSIM per image [N], over as many of the 5 standard scales as the size allows
    (each at least 8 px), weights renormalised to sum to 1. Each scale's term is mapped from
    [-1, 1] to [0, 1] before the weighted product, so a negative term cannot zero the product
    and stall the gradient (identical images still give 1)."""
    scales = max(1, min(len(MS_SSIM_WEIGHTS), int(math.log2(min(x.shape[-2:]) / 8)) + 1))
    weights = torch.tensor(MS_SSIM_WEIGHTS[:scales], device=x.device)
    weights = weights / weights.sum()
    values = []
    for k in range(scales):
        s, cs = _ssim_terms(x, y, data_range)
        values.append(((s if k == scales - 1 else cs) + 1) / 2)
        if k < scales - 1:
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    return torch.prod(torch.stack(values, dim=1) ** weights, dim=1)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB between uint8 arrays."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


@dataclass
class Projection:
    """The result of projecting one crop."""

    ws: torch.Tensor  # [num_ws, w_dim]
    noise: dict[str, torch.Tensor]  # optimised noise maps by layer name (empty if not optimised)
    image: np.ndarray  # uint8 [C, H, W], the reconstruction
    psnr: float
    ssim: float
    losses: list[float]


def _w_scale(G: Generator, start: torch.Tensor, n: int = 2000) -> float:
    """Typical distance of W samples from `start` per dimension: the unit of the step size."""
    device = next(G.parameters()).device
    z = next(z_batches(n, G.z_dim, 0, n, device))
    c = one_hot(torch.arange(n) % G.c_dim, G.c_dim, device=device)
    with torch.no_grad():
        w = G.mapping(z, c, update_w_avg=False)[:, 0]
    return float((w - start.to(w)).pow(2).mean().sqrt())


def _noise_layers(G: Generator) -> dict[str, SynthesisLayer]:
    return {
        n: m
        for n, m in G.synthesis.named_modules()
        if isinstance(m, SynthesisLayer) and hasattr(m, "noise_const")
    }


def _noise_regulariser(maps: list[torch.Tensor]) -> torch.Tensor:
    """Spatial autocorrelation of the noise maps at every scale (keeps noise from carrying the
    image, as the reference projector does)."""
    total = torch.zeros([])
    for n in maps:
        x = n[None, None]
        while True:
            total = total + (x * torch.roll(x, 1, dims=3)).mean() ** 2
            total = total + (x * torch.roll(x, 1, dims=2)).mean() ** 2
            if x.shape[-1] <= 8:
                break
            x = F.avg_pool2d(x, 2)
    return total


def lr_schedule(step: int, steps: int) -> float:
    """The projection's learning-rate factor at `step`: linear warm-up over the first 5 %,
    cosine ramp-down over the last quarter."""
    ramp = min(1.0, (1 - step / steps) / 0.25)
    return 0.5 * (1 - math.cos(math.pi * ramp)) * min(1.0, (step + 1) / (0.05 * steps))


def refine(
    G: Generator,
    ws: torch.Tensor,
    crops: np.ndarray,
    *,
    steps: int,
    lr: float = 0.01,
    w_scale: float = 1.0,
    ssim_weight: float = 0.1,
    batch: int = 64,
) -> torch.Tensor:
    """W+ codes [N, num_ws, w_dim] optimised for `steps` from `ws` so that S(w) fits the uint8
    `crops` [N, C, H, W] (the projection's loss and schedule, a batch of crops at a time; `lr` in
    units of `w_scale`, the spread of W). Each crop's loss is its own, so batching does not mix
    crops."""
    G = copy.deepcopy(G).eval().requires_grad_(False)
    device = next(G.parameters()).device
    out = []
    with torch.enable_grad():  # also when called under no_grad
        for start in range(0, len(ws), batch):
            w = ws[start : start + batch].to(device)
            target = from_uint8(crops[start : start + batch]).to(device)
            out.append(_refine_batch(G, w, target, steps, lr * w_scale, ssim_weight))
    return torch.cat(out) if out else ws


def _refine_batch(
    G: Generator, w0: torch.Tensor, target: torch.Tensor, steps: int, lr: float, ssim_weight: float
) -> torch.Tensor:
    """`refine` of one batch: Adam on w from `w0` (one loss per crop, summed)."""
    w = w0.clone().requires_grad_(True)
    opt = torch.optim.Adam([w], lr=lr)
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * lr_schedule(step, steps)
        image = G.synthesis(w, noise_mode="const", force_fp32=True)
        per_crop = (image - target).square().mean(dim=[1, 2, 3])
        loss = (per_crop + ssim_weight * (1 - ms_ssim(image, target))).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return w.detach().cpu()


def project(
    G: Generator,
    crop: np.ndarray,
    start: torch.Tensor,
    *,
    steps: int = 400,
    lr: float = 0.02,
    per_layer: bool = True,
    optimize_noise: bool = False,
    noise_weight: float = 1e3,
    ssim_weight: float = 0.1,
) -> Projection:
    """Fit S(w) to `crop` (uint8 [C, H, W]) from w = `start`: [w_dim] (the source centroid), or
    [num_ws, w_dim] (an encoder's W+ guess, with `per_layer`).

    `lr` is in units of the spread of W around `start` (so one setting suits every model)."""
    if crop.shape != (G.img_channels, G.img_resolution, G.img_resolution):
        raise PhenexplainError(
            f"crop of shape {list(crop.shape)} does not match the generator's "
            f"[{G.img_channels}, {G.img_resolution}, {G.img_resolution}]"
        )
    G = copy.deepcopy(G).eval().requires_grad_(False)
    device = next(G.parameters()).device
    if start.dim() == 2 and not per_layer:
        raise PhenexplainError("a W+ start (one w per layer) needs per_layer")
    lr = lr * _w_scale(G, start.mean(0) if start.dim() == 2 else start)
    target = from_uint8(crop[None]).to(device)
    if start.dim() == 2:
        w = start.to(device).float().unsqueeze(0).clone()
    else:
        w = start.to(device).float().reshape(1, 1, -1).repeat(1, G.num_ws if per_layer else 1, 1)
    w.requires_grad_(True)
    layers = _noise_layers(G)
    maps = []
    if optimize_noise:
        for layer in layers.values():
            layer.noise_const.requires_grad_(True)
            maps.append(layer.noise_const)
    opt = torch.optim.Adam([w, *maps], lr=lr, betas=(0.9, 0.999))
    losses = []
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * lr_schedule(step, steps)
        ws = w.expand(1, G.num_ws, -1)
        image = G.synthesis(ws, noise_mode="const", force_fp32=True)
        loss = F.mse_loss(image, target) + ssim_weight * (1 - ms_ssim(image, target)).mean()
        if maps:
            loss = loss + noise_weight * _noise_regulariser(maps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        with torch.no_grad():
            for n in maps:  # keep the noise maps standard normal
                n.sub_(n.mean()).div_(n.std())
    with torch.no_grad():
        ws = w.detach().expand(1, G.num_ws, -1).contiguous()
        image = G.synthesis(ws, noise_mode="const", force_fp32=True)
        quality = float(ssim(image, target)[0])
        recon = to_uint8(image)[0].cpu().numpy()
    noise = {n: layer.noise_const.detach().clone() for n, layer in layers.items()} if maps else {}
    return Projection(ws[0].cpu(), noise, recon, psnr(recon, crop), quality, losses)


def translate(
    G: Generator,
    projection: Projection,
    shift: torch.Tensor,
    steps: int,
) -> np.ndarray:
    """Frames of the projected crop moved by t * `shift` (w̄2 - w̄1, eq. 5), t = 0..1:
    uint8 [steps + 1, C, H, W]; the optimised noise maps (if any) are kept."""
    G = copy.deepcopy(G).eval()
    for name, layer in _noise_layers(G).items():
        if name in projection.noise:
            layer.noise_const.copy_(projection.noise[name])
    t = torch.linspace(0, 1, steps + 1).view(-1, 1, 1)
    ws = projection.ws.unsqueeze(0) + t * shift.view(1, 1, -1)
    device = next(G.parameters()).device
    with torch.no_grad():
        images = G.synthesis(ws.to(device), noise_mode="const", force_fp32=True)
    return to_uint8(images).cpu().numpy()
