"""Feature extractors for FID/KID.

`cnn` (offline, no download): the penultimate layer of a small CNN -- four convolutional layers,
as in the paper's discriminability test -- trained on the real crops to tell the conditions
apart, so its features encode what differs between conditions. It is trained once per crop set,
resolution and seed, cached next to the crop set, and identified by a hash of its weights, so
FIDs are only compared for the same extractor.

The standard Inception extractor is not available yet: it needs the weights file with a
verified hash (see the closing notes of the training issue).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file


class ConditionCNN(torch.nn.Module):
    """4 conv layers (stride-2 after each pair), global average pooling, a 128-d feature layer."""

    def __init__(
        self, channels: int, conditions: int, width: int = 32, features: int = 128
    ) -> None:
        super().__init__()
        self.convs = torch.nn.ModuleList(
            [
                torch.nn.Conv2d(channels, width, 3, padding=1),
                torch.nn.Conv2d(width, width, 3, padding=1, stride=2),
                torch.nn.Conv2d(width, 2 * width, 3, padding=1),
                torch.nn.Conv2d(2 * width, 2 * width, 3, padding=1, stride=2),
            ]
        )
        self.features = torch.nn.Linear(2 * width, features)
        self.head = torch.nn.Linear(features, conditions)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Images [N, C, H, W] in [-1, 1] -> features [N, 128]."""
        for conv in self.convs:
            x = F.relu(conv(x))
        return F.relu(self.features(x.mean(dim=[2, 3])))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


def train_condition_cnn(
    images: np.ndarray,
    labels: np.ndarray,
    conditions: int,
    *,
    epochs: int = 10,
    seed: int = 0,
    batch: int = 64,
) -> tuple[ConditionCNN, float]:
    """Train on uint8 images [N, C, H, W] and integer labels; returns (model, train accuracy)."""
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ConditionCNN(images.shape[1], conditions)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    x = torch.from_numpy(np.ascontiguousarray(images)).float() / 127.5 - 1
    y = torch.from_numpy(np.asarray(labels)).long()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=g)
        for start in range(0, len(x), batch):
            idx = order[start : start + batch]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(x).argmax(1) == y).float().mean())
    return model, accuracy


class CNNExtractor:
    """Features of a cached `ConditionCNN`; `name` is the metric suffix, `id` the weights hash."""

    name = "cnn"

    def __init__(self, model: ConditionCNN) -> None:
        self.model = model.eval().requires_grad_(False)
        digest = hashlib.sha256()
        for key, value in sorted(model.state_dict().items()):
            digest.update(key.encode())
            digest.update(value.numpy().tobytes())
        self.id = f"cnn-{digest.hexdigest()[:12]}"

    @classmethod
    def for_data(
        cls, images: np.ndarray, labels: np.ndarray, conditions: int, cache: Path, seed: int = 0
    ):
        """Load the extractor cached at `cache` or train it on the real images and cache it."""
        channels = images.shape[1]
        if cache.is_file():
            model = ConditionCNN(channels, conditions)
            model.load_state_dict(load_file(str(cache)))
            return cls(model)
        model, _ = train_condition_cnn(images, labels, conditions, seed=seed)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.name}.tmp-{os.getpid()}")
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
        os.replace(tmp, cache)
        return cls(model)

    def __call__(self, images: torch.Tensor, batch: int = 256) -> np.ndarray:
        """Images float [N, C, H, W] in [-1, 1] -> float64 features [N, 128]."""
        out = []
        with torch.no_grad():
            for start in range(0, len(images), batch):
                out.append(
                    self.model.embed(images[start : start + batch].float().cpu()).double().numpy()
                )
        return np.concatenate(out)
