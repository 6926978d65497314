"""Low-level ops of StyleGAN2 in plain PyTorch: FIR resampling, fused bias + activation, equalised
learning-rate convolutions with up/down-sampling, and modulated convolution.

The sequence of tensor operations follows NVlabs stylegan2-ada-pytorch (read for the facts, written
here anew) so that converted weights give the same images to float32 rounding.

Shapes: x [N, C, H, W]; weights [O, I, kh, kw]; FIR filters [fh, fw] (2-D, normalised to sum 1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

LRELU_ALPHA = 0.2
ACTIVATION_GAIN = {"linear": 1.0, "lrelu": math.sqrt(2.0)}


def make_filter(taps: Sequence[float] = (1, 3, 3, 1)) -> torch.Tensor:
    """2-D FIR filter [k, k] from 1-D taps: their outer product, normalised to sum 1."""
    f = torch.as_tensor(list(taps), dtype=torch.float32)
    f = torch.outer(f, f)
    return f / f.sum()


def _pad4(padding: int | Sequence[int]) -> tuple[int, int, int, int]:
    """(x0, x1, y0, y1) from an int, [x, y] or [x0, x1, y0, y1]."""
    if isinstance(padding, int):
        return padding, padding, padding, padding
    if len(padding) == 2:
        return padding[0], padding[0], padding[1], padding[1]
    x0, x1, y0, y1 = padding
    return x0, x1, y0, y1


def upfirdn2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    up: int = 1,
    down: int = 1,
    padding: int | Sequence[int] = 0,
    gain: float = 1.0,
) -> torch.Tensor:
    """Upsample by zero insertion, pad (negative crops), convolve with `f`, decimate by `down`."""
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    n, c, h, w = x.shape
    x0, x1, y0, y1 = _pad4(padding)
    if up > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(n, c, h * up, w * up)
    x = F.pad(x, [max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)])
    x = x[:, :, max(-y0, 0) : x.shape[2] - max(-y1, 0), max(-x0, 0) : x.shape[3] - max(-x1, 0)]
    kernel = (f * (gain ** (f.ndim / 2))).to(x.dtype).flip([0, 1])  # true convolution
    kernel = kernel[None, None].repeat(c, 1, 1, 1)
    x = F.conv2d(x, kernel, groups=c)
    return x[:, :, ::down, ::down]


def upsample2d(x: torch.Tensor, f: torch.Tensor, up: int = 2) -> torch.Tensor:
    """FIR upsampling that keeps the image centred; output [N, C, H*up, W*up]."""
    fw = f.shape[-1]
    p = [(fw + up - 1) // 2, (fw - up) // 2]
    return upfirdn2d(x, f, up=up, padding=[p[0], p[1], p[0], p[1]], gain=up * up)


def bias_act(
    x: torch.Tensor,
    b: torch.Tensor | None = None,
    act: str = "linear",
    gain: float | None = None,
    clamp: float | None = None,
) -> torch.Tensor:
    """x + b (over dim 1), activation, times `gain` (or the activation's), clamp to +-clamp."""
    if b is not None:
        x = x + b.reshape([-1 if i == 1 else 1 for i in range(x.ndim)])
    if act == "lrelu":
        x = F.leaky_relu(x, LRELU_ALPHA)
    elif act != "linear":
        raise ValueError(f"unknown activation {act!r}")
    gain = ACTIVATION_GAIN[act] if gain is None else gain
    if gain != 1:
        x = x * gain
    if clamp is not None and clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


def _conv(x, w, stride=1, padding=0, groups=1, transpose=False, flip_weight=True):
    """conv2d (correlation) or conv_transpose2d; `flip_weight=False` makes it a true convolution."""
    if not flip_weight:
        w = w.flip([2, 3])
    if transpose:
        return F.conv_transpose2d(x, w, stride=stride, padding=padding, groups=groups)
    return F.conv2d(x, w, stride=stride, padding=padding, groups=groups)


def conv2d_resample(
    x: torch.Tensor,
    w: torch.Tensor,
    f: torch.Tensor | None = None,
    up: int = 1,
    down: int = 1,
    padding: int = 0,
    groups: int = 1,
    flip_weight: bool = True,
) -> torch.Tensor:
    """Convolution with optional FIR up- or down-sampling, padding applied once at the start."""
    out_ch, in_per_group, kh, kw = w.shape
    fw = f.shape[-1] if f is not None else 1
    fh = f.shape[0] if f is not None else 1
    px0, px1, py0, py1 = _pad4(padding)
    if up > 1:
        px0, px1 = px0 + (fw + up - 1) // 2, px1 + (fw - up) // 2
        py0, py1 = py0 + (fh + up - 1) // 2, py1 + (fh - up) // 2
    if down > 1:
        px0, px1 = px0 + (fw - down + 1) // 2, px1 + (fw - down) // 2
        py0, py1 = py0 + (fh - down + 1) // 2, py1 + (fh - down) // 2
    if kw == 1 and kh == 1 and down > 1 and up == 1:
        x = upfirdn2d(x, f, down=down, padding=[px0, px1, py0, py1])
        return _conv(x, w, groups=groups, flip_weight=flip_weight)
    if kw == 1 and kh == 1 and up > 1 and down == 1:
        x = _conv(x, w, groups=groups, flip_weight=flip_weight)
        return upfirdn2d(x, f, up=up, padding=[px0, px1, py0, py1], gain=up * up)
    if down > 1 and up == 1:
        x = upfirdn2d(x, f, padding=[px0, px1, py0, py1])
        return _conv(x, w, stride=down, groups=groups, flip_weight=flip_weight)
    if up > 1:
        if groups == 1:
            w = w.transpose(0, 1)
        else:
            w = w.reshape(groups, out_ch // groups, in_per_group, kh, kw).transpose(1, 2)
            w = w.reshape(groups * in_per_group, out_ch // groups, kh, kw)
        px0, px1, py0, py1 = px0 - (kw - 1), px1 - (kw - up), py0 - (kh - 1), py1 - (kh - up)
        pxt, pyt = max(min(-px0, -px1), 0), max(min(-py0, -py1), 0)
        x = _conv(
            x,
            w,
            stride=up,
            padding=[pyt, pxt],
            groups=groups,
            transpose=True,
            flip_weight=not flip_weight,
        )
        x = upfirdn2d(x, f, padding=[px0 + pxt, px1 + pxt, py0 + pyt, py1 + pyt], gain=up * up)
        return upfirdn2d(x, f, down=down) if down > 1 else x
    if px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
        return _conv(x, w, padding=[py0, px0], groups=groups, flip_weight=flip_weight)
    x = upfirdn2d(x, None, padding=[px0, px1, py0, py1])
    x = _conv(x, w, groups=groups, flip_weight=flip_weight)
    return upfirdn2d(x, f, down=down) if down > 1 else x


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """x / sqrt(mean(x^2) + eps) along `dim`."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    noise: torch.Tensor | None = None,
    up: int = 1,
    padding: int = 0,
    resample_filter: torch.Tensor | None = None,
    demodulate: bool = True,
    flip_weight: bool = True,
    fused: bool = True,
) -> torch.Tensor:
    """StyleGAN2's convolution: weights scaled per sample by `styles` [N, I], optionally demodulated
    to unit output variance, optional `noise` added; x [N, I, H, W] -> [N, O, H', W'].

    `fused` runs one grouped convolution over the batch, as the reference does in inference;
    otherwise the input and output are scaled around one shared convolution and the demodulation
    coefficients come from a matmul (much cheaper for batches > 1; same result up to rounding).
    """
    n = x.shape[0]
    _, in_ch, kh, kw = weight.shape
    if x.dtype == torch.float16 and demodulate:  # pre-normalise against fp16 overflow
        weight = weight * (
            1 / math.sqrt(in_ch * kh * kw) / weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True)
        )
        styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)
    if not fused:
        dcoefs = None
        if demodulate:  # sum over (I, kh, kw) of (w * s)^2 as one matmul: [N, I] @ [I, O]
            dcoefs = (
                styles.square() @ weight.square().sum(dim=[2, 3]).t() + 1e-8
            ).rsqrt()  # [N, O]
        x = x * styles.to(x.dtype).reshape(n, -1, 1, 1)
        x = conv2d_resample(
            x, weight.to(x.dtype), resample_filter, up=up, padding=padding, flip_weight=flip_weight
        )
        if dcoefs is not None and noise is not None:  # dcoefs: set when demodulating
            return torch.addcmul(noise.to(x.dtype), x, dcoefs.to(x.dtype).reshape(n, -1, 1, 1))
        if dcoefs is not None:
            return x * dcoefs.to(x.dtype).reshape(n, -1, 1, 1)
        return x + noise.to(x.dtype) if noise is not None else x
    w = weight.unsqueeze(0) * styles.reshape(n, 1, -1, 1, 1)  # [N, O, I, kh, kw]
    if demodulate:
        w = w * (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt().reshape(n, -1, 1, 1, 1)
    x = x.reshape(1, -1, *x.shape[2:])
    w = w.reshape(-1, in_ch, kh, kw)
    x = conv2d_resample(
        x, w.to(x.dtype), resample_filter, up=up, padding=padding, groups=n, flip_weight=flip_weight
    )
    x = x.reshape(n, -1, *x.shape[2:])
    return x + noise if noise is not None else x


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] -> uint8 on the CPU, as the reference converts: x * 127.5 + 128."""
    return (images.to(torch.float32) * 127.5 + 128).clamp(0, 255).to(torch.uint8).cpu()


def from_uint8(images) -> torch.Tensor:
    """uint8 images (array or tensor, on any device) -> float32 in [-1, 1], the networks'
    convention."""
    if not isinstance(images, torch.Tensor):
        images = torch.as_tensor(np.ascontiguousarray(images))
    return images.to(torch.float32) / 127.5 - 1
