"""An encoder of real crops into W+ of a trained conditional generator, so that a plate's crops
can be translated to another condition in batches (method 2, eq. 5) instead of one optimisation
of about a minute per crop (`phenexplain.explain.project`).

The encoder E(x, c) returns W+ [num_ws, w_dim] as the condition's centroid w̄_c (eq. 4) plus an
offset, in units of the spread of W, so an untrained encoder already starts where the projection
starts. It is trained for one generator in two stages:

1. on generated images whose w is known (no labels needed): z and a condition drawn at random,
   w = mapping(z, c), the image S(w) with random noise; loss ||E(S(w), c) - w||² / spread²;
2. on the real crops of the crop set (box-downsampled to the model's resolution, as training saw
   them), a fraction held out: loss MSE(S(E(x, c)), x) + ssim_weight (1 - MS-SSIM) (no
   downloaded network) + latent_weight ||E(x, c) - w̄_c||² / spread², which keeps the code where
   the generator's conditions live, so the centroid shift stays meaningful.

Saved as a folder (``weights.safetensors``, ``encoder.json``: its constructor arguments, the
generator's weights digest it belongs to, the held-out crop ids and its scores on them).
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from phenexplain.config import EncoderParams
from phenexplain.data.cropset import CropSet
from phenexplain.errors import PhenexplainError
from phenexplain.explain.project import ms_ssim, psnr, ssim
from phenexplain.fsutil import check_output, file_sha256, staged_output, write_json
from phenexplain.nets import Generator
from phenexplain.nets.ops import from_uint8, to_uint8
from phenexplain.nets.sampling import one_hot
from phenexplain.training.checkpoint import WEIGHTS
from phenexplain.training.data import downsample

log = logging.getLogger(__name__)

KIND = "encoder"
CONFIG = "encoder.json"
FORMAT_VERSION = 1
LRELU = 0.2


class Encoder(nn.Module):
    """x [N, C, R, R] in [-1, 1] and condition indices [N] -> W+ [N, num_ws, w_dim].

    A convolutional pyramid (two 3x3 convolutions per level, the second with stride 2) down to
    4x4, then two fully connected layers that also see the condition (one-hot); the output is an
    offset from the condition's centroid (a buffer, so the file is self-contained) in units of
    `w_scale`, the spread of W around it."""

    def __init__(
        self,
        resolution: int,
        img_channels: int,
        c_dim: int,
        num_ws: int,
        w_dim: int,
        channels: int = 64,
    ) -> None:
        super().__init__()
        if resolution < 4 or resolution & (resolution - 1):
            raise PhenexplainError(
                f"the encoder needs a power-of-two resolution >= 4, not {resolution}"
            )
        self.kwargs = dict(
            resolution=resolution,
            img_channels=img_channels,
            c_dim=c_dim,
            num_ws=num_ws,
            w_dim=w_dim,
            channels=channels,
        )
        self.num_ws, self.w_dim, self.c_dim = num_ws, w_dim, c_dim
        layers: list[nn.Module] = [nn.Conv2d(img_channels, channels, 1), nn.LeakyReLU(LRELU)]
        res = resolution
        while res > 4:
            layers += [
                nn.Conv2d(channels, channels, 3, padding=1),
                nn.LeakyReLU(LRELU),
                nn.Conv2d(channels, channels, 3, stride=2, padding=1),
                nn.LeakyReLU(LRELU),
            ]
            res //= 2
        self.features = nn.Sequential(*layers)
        hidden = max(256, w_dim)
        head = nn.Linear(hidden, num_ws * w_dim)
        nn.init.zeros_(head.weight)  # untrained: the centroid itself
        nn.init.zeros_(head.bias)
        self.fc = nn.Sequential(nn.Linear(channels * 16 + c_dim, hidden), nn.LeakyReLU(LRELU), head)
        self.register_buffer("centroids", torch.zeros([c_dim, w_dim]))
        self.register_buffer("w_scale", torch.ones([]))
        self.centroids: torch.Tensor
        self.w_scale: torch.Tensor

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        h = self.features(x).flatten(1)
        h = torch.cat([h, one_hot(c, self.c_dim, device=x.device)], dim=1)
        offset = self.fc(h).view(-1, self.num_ws, self.w_dim) * self.w_scale
        return self.centroids[c].unsqueeze(1) + offset


@dataclass
class EncoderInfo:
    """What `encoder.json` says besides the weights."""

    kwargs: dict
    generator: dict  # checkpoint path and weights digest the encoder was trained for
    conditions: list[str]
    holdout: list[str]  # crop ids held out of training
    scores: dict
    params: dict


def spread(G: Generator, centroids: torch.Tensor, n: int = 2000, seed: int = 0) -> float:
    """RMS distance per dimension of W samples from their condition's centroid."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn([n, G.z_dim], generator=gen)
    c = torch.arange(n) % G.c_dim
    with torch.no_grad():
        w = G.mapping(z, one_hot(c, G.c_dim), update_w_avg=False)[:, 0]
    return float((w - centroids[c]).pow(2).mean().sqrt())


def model_images(crops: CropSet, resolution: int, index: np.ndarray | None = None) -> np.ndarray:
    """uint8 [N, C, R, R]: the crops (all, or `index`) box-downsampled to the model's resolution,
    as training saw them."""
    factor = crops.resolution // resolution
    if factor < 1 or crops.resolution % resolution:
        raise PhenexplainError(
            f"{crops.root}: crops of {crops.resolution} px cannot be box-downsampled to the "
            f"model's {resolution} px"
        )
    index = np.arange(len(crops)) if index is None else index
    return (
        np.stack([downsample(crops[int(i)][0], factor) for i in index])
        if len(index)
        else np.zeros([0, len(crops.channels), resolution, resolution], np.uint8)
    )


def split_holdout(crops: CropSet, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) crop indices: `fraction` of each condition's crops held out, at least one
    where a condition has two or more."""
    rng = np.random.default_rng(seed)
    names = crops.manifest["condition"].to_numpy()
    train, held = [], []
    for name in sorted(set(names)):
        index = rng.permutation(np.flatnonzero(names == name))
        k = min(len(index) - 1, max(1, round(fraction * len(index)))) if fraction > 0 else 0
        held.append(index[:k])
        train.append(index[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(held))


def image_loss(image: torch.Tensor, target: torch.Tensor, ssim_weight: float) -> torch.Tensor:
    """MSE + ssim_weight (1 - MS-SSIM), per batch (images in [-1, 1])."""
    return F.mse_loss(image, target) + ssim_weight * (1 - ms_ssim(image, target)).mean()


def train_encoder(
    G: Generator,
    centroids: torch.Tensor,
    images: np.ndarray,
    labels: np.ndarray,
    params: EncoderParams,
    *,
    on_step: Callable[[str, int, float], None] | None = None,
) -> Encoder:
    """Train an encoder for `G` (stages: the module's docstring) on real `images` (uint8 at the
    model's resolution) with condition indices `labels`; `on_step(stage, step, loss)` is told of
    each step."""
    G = copy.deepcopy(G).eval().requires_grad_(False)
    torch.manual_seed(params.seed)
    gen = torch.Generator().manual_seed(params.seed)
    E = Encoder(G.img_resolution, G.img_channels, G.c_dim, G.num_ws, G.w_dim, params.channels)
    E.centroids.copy_(centroids)
    E.w_scale.fill_(spread(G, centroids, seed=params.seed))
    opt = torch.optim.Adam(E.parameters(), lr=params.lr)
    scale2 = float(E.w_scale) ** 2
    for step in range(params.synthetic_steps):
        z = torch.randn([params.batch, G.z_dim], generator=gen)
        c = torch.randint(G.c_dim, [params.batch], generator=gen)
        with torch.no_grad():
            w = G.mapping(z, one_hot(c, G.c_dim), update_w_avg=False)
            x = G.synthesis(w, noise_mode="random", force_fp32=True)
        loss = (E(x, c) - w).square().mean() / scale2
        value = _step(opt, loss)
        if on_step:
            on_step("synthetic", step, value)
    if params.real_steps and len(images) == 0:
        raise PhenexplainError("no real crops to adapt the encoder on (all held out?)")
    real = from_uint8(images)
    real_c = torch.as_tensor(labels, dtype=torch.int64)
    for step in range(params.real_steps):
        pick = torch.randint(len(real), [params.batch], generator=gen)
        x, c = real[pick], real_c[pick]
        ws = E(x, c)
        image = G.synthesis(ws, noise_mode="const", force_fp32=True)
        loss = image_loss(image, x, params.ssim_weight)
        loss = (
            loss
            + params.latent_weight * (ws - E.centroids[c].unsqueeze(1)).square().mean() / scale2
        )
        value = _step(opt, loss)
        if on_step:
            on_step("real", step, value)
    return E.eval().requires_grad_(False)


def _step(opt: torch.optim.Optimizer, loss: torch.Tensor) -> float:
    """One optimiser step on `loss`; its value."""
    value = float(loss.detach())
    if not np.isfinite(value):
        raise PhenexplainError(f"the encoder's loss became {value}; lower encoder.lr")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return value


def encode(E: Encoder, images: np.ndarray, labels: np.ndarray, batch: int = 256) -> torch.Tensor:
    """W+ [N, num_ws, w_dim] of uint8 images [N, C, R, R] with condition indices [N]."""
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch):
            x = from_uint8(images[start : start + batch])
            c = torch.as_tensor(labels[start : start + batch], dtype=torch.int64)
            out.append(E(x, c))
    return torch.cat(out) if out else torch.zeros([0, E.num_ws, E.w_dim])


def render(G: Generator, ws: torch.Tensor, batch: int = 128) -> np.ndarray:
    """uint8 [N, C, R, R] of W+ codes [N, num_ws, w_dim] (constant noise)."""
    out = []
    with torch.no_grad():
        for start in range(0, len(ws), batch):
            out.append(
                to_uint8(
                    G.synthesis(ws[start : start + batch], noise_mode="const", force_fp32=True)
                )
            )
    if not out:
        return np.zeros([0, G.img_channels, G.img_resolution, G.img_resolution], np.uint8)
    return torch.cat(out).numpy()


def reconstruction_scores(images: np.ndarray, recon: np.ndarray) -> dict:
    """Mean and per-crop PSNR (dB, uint8 range) and SSIM between crops and reconstructions."""
    if len(images) == 0:
        return {"crops": 0}
    db = [psnr(a, b) for a, b in zip(images, recon, strict=True)]
    s = ssim(from_uint8(recon), from_uint8(images)).tolist()
    return {
        "crops": len(images),
        "mean_psnr_db": float(np.mean(db)),
        "mean_ssim": float(np.mean(s)),
        "psnr_db": db,
        "ssim": s,
    }


def save_encoder(E: Encoder, info: EncoderInfo, out: Path, *, overwrite: bool = False) -> Path:
    """Write the encoder folder `out` (staged, swapped into place)."""
    check_output(out, overwrite, kind=KIND)
    with staged_output(out, KIND) as staging:
        save_file({k: v.contiguous() for k, v in E.state_dict().items()}, str(staging / WEIGHTS))
        write_json(staging / CONFIG, {"format_version": FORMAT_VERSION, **info.__dict__})
    return out


def load_encoder(
    folder: str | Path, checkpoint: str | Path | None = None
) -> tuple[Encoder, EncoderInfo]:
    """Read an encoder folder; with `checkpoint`, refuse an encoder trained for other weights."""
    import json

    folder = Path(folder)
    config, weights = folder / CONFIG, folder / WEIGHTS
    for path in (config, weights):
        if not path.is_file():
            raise PhenexplainError(
                f"{folder} is not an encoder folder (no {path.name}); make one with "
                "`phenexplain encoder train CKPT CROPSET --run-dir DIR`"
            )
    try:
        raw = json.loads(config.read_text(encoding="utf-8"))
        if raw.pop("format_version", None) != FORMAT_VERSION:
            raise ValueError(f"format_version is not {FORMAT_VERSION}")
        info = EncoderInfo(**raw)
        E = Encoder(**info.kwargs)
        E.load_state_dict(load_file(str(weights)))
    except (ValueError, TypeError, KeyError, RuntimeError, SafetensorError) as exc:
        raise PhenexplainError(f"{folder}: not a readable encoder ({exc})") from None
    if checkpoint is not None:
        digest = file_sha256(Path(checkpoint) / WEIGHTS)[:16]
        if info.generator.get("weights_sha256") != digest:
            raise PhenexplainError(
                f"{folder} was trained for the generator {info.generator.get('checkpoint')} "
                f"(weights {info.generator.get('weights_sha256')}), not {checkpoint} "
                f"(weights {digest}); train an encoder for this checkpoint"
            )
    return E.eval().requires_grad_(False), info


def encoder_job(
    checkpoint: str | Path,
    cropset: str | Path,
    run_dir: str | Path,
    params: EncoderParams,
    *,
    on_step: Callable[[str, int, float], None] | None = None,
) -> EncoderInfo:
    """`phenexplain encoder train`: train an encoder for `checkpoint` on `cropset`, score it on
    the held-out crops (beside the untrained start, the centroid), write `run_dir/encoder`."""
    from phenexplain.explain.traversal import cached_centroids  # (jobs imports this module)
    from phenexplain.training.checkpoint import load_network, read_config

    out = Path(run_dir) / "encoder"
    check_output(out, False, kind=KIND, inputs=[checkpoint, cropset])
    meta = read_config(checkpoint)
    conditions, channels = list(meta.conditions), list(meta.channels)
    crops = CropSet(cropset)
    if sorted(crops.conditions) != sorted(conditions) or crops.channels != channels:
        raise PhenexplainError(
            f"{cropset} (conditions {sorted(crops.conditions)}, channels {crops.channels}) does "
            f"not match {checkpoint} (conditions {conditions}, channels {channels})"
        )
    G = load_network(checkpoint, "G_ema")
    centroids = cached_centroids(Path(checkpoint), G, params.centroid_samples)
    train, held = split_holdout(crops, params.holdout, params.seed)
    labels = condition_labels(crops, conditions)
    start = time.perf_counter()
    E = train_encoder(
        G,
        centroids,
        model_images(crops, G.img_resolution, train),
        labels[train],
        params,
        on_step=on_step,
    )
    seconds = time.perf_counter() - start
    held_images = model_images(crops, G.img_resolution, held)
    ws = encode(E, held_images, labels[held])
    scores = reconstruction_scores(held_images, render(G, ws))
    start_ws = centroids[labels[held]].unsqueeze(1).expand(-1, G.num_ws, -1)
    at_centroid = reconstruction_scores(held_images, render(G, start_ws.contiguous()))
    summary = {k: v for k, v in scores.items() if k.startswith("mean") or k == "crops"}
    summary["centroid_start"] = {k: v for k, v in at_centroid.items() if k.startswith("mean")}
    summary["train_seconds"] = seconds
    info = EncoderInfo(
        kwargs=E.kwargs,
        generator={
            "checkpoint": str(checkpoint),
            "weights_sha256": file_sha256(Path(checkpoint) / WEIGHTS)[:16],
        },
        conditions=conditions,
        holdout=crops.manifest["crop_id"].to_numpy()[held].tolist(),
        scores=summary,
        params=params.model_dump(),
    )
    save_encoder(E, info, out)
    return info


def condition_labels(crops: CropSet, conditions: list[str]) -> np.ndarray:
    """Each crop's condition as the generator's class index."""
    index = {name: i for i, name in enumerate(conditions)}
    return crops.manifest["condition"].map(index).to_numpy(dtype=np.int64)
