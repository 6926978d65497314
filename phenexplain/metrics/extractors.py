"""Feature extractors for FID/KID, and the small condition CNN.

`make_extractor` builds one by name:

* ``rand`` (offline: no download, no training): `RandomCNNExtractor`;
* ``inception``: the standard FID Inception-v3 (`phenexplain.metrics.inception`), loaded only
  from a local weights file whose SHA-256 is pinned; nothing is downloaded.

Values of different extractors are never compared: metric names carry the extractor's name
(``fid_rand``, ``fid_inception``). `ConditionCNN` (four convolutional layers, as in the paper's
discriminability test) and `train_condition_cnn` tell conditions apart on real crops.
"""

from __future__ import annotations

import hashlib
import os
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from phenexplain.errors import PhenexplainError
from phenexplain.nets.ops import from_uint8


class FeatureExtractor(Protocol):
    """What `fid_kid` needs: a `name` (in metric names), an `id` (for caches) and a call."""

    name: str
    id: str

    def __call__(self, images: torch.Tensor, batch: int = ...) -> np.ndarray:
        """Images float [N, C, H, W] in [-1, 1] -> float64 features [N, D]."""
        ...


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
    x = from_uint8(images)
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


class RandomCNNExtractor:
    """Multi-scale statistics of a fixed, randomly initialised CNN: per conv layer, the spatial
    mean and standard deviation of every ReLU map (768 features with width 64).

    Needs no download and no training: the weights follow from (channels, seed), so the same
    extractor, and its `id` (a hash of the weights), is rebuilt anywhere. Random convolutional
    features respond to intensity, texture and shape statistics at several scales, which is what
    separates generated fluorescence crops from real ones; a network trained to tell conditions
    apart was tried first and rejected: its features reward fine noise texture over the cells
    themselves, and its FID rose while the samples visibly improved.
    """

    name = "rand"

    def __init__(self, channels: int, seed: int = 0, width: int = 64) -> None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.model = ConditionCNN(channels, 1, width=width).eval().requires_grad_(False)
        digest = hashlib.sha256()
        for key, value in sorted(self.model.state_dict().items()):
            digest.update(key.encode())
            digest.update(value.numpy().tobytes())
        self.id = f"rand-{digest.hexdigest()[:12]}"

    def __call__(self, images: torch.Tensor, batch: int = 256) -> np.ndarray:
        """Images float [N, C, H, W] in [-1, 1] -> float64 features [N, 768]."""
        out = []
        with torch.no_grad():
            for start in range(0, len(images), batch):
                x = images[start : start + batch].float().cpu()
                feats = []
                for conv in self.model.convs:
                    x = F.relu(conv(x))
                    feats += [x.mean(dim=[2, 3]), x.std(dim=[2, 3])]
                out.append(torch.cat(feats, dim=1).double().numpy())
        return np.concatenate(out)


EXTRACTORS = ("rand", "inception")


def make_extractor(
    name: str,
    channels: int,
    weights: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
) -> FeatureExtractor:
    """The extractor called `name` for images with `channels` channels.

    `weights` (inception only): the weights file or a folder holding it; None searches the
    usual places (see `phenexplain.metrics.inception`). `device` is where Inception runs.
    """
    if name == "rand":
        return RandomCNNExtractor(channels)
    if name == "inception":
        from phenexplain.metrics.inception import InceptionExtractor

        return InceptionExtractor(weights, device=device)
    raise PhenexplainError(f"unknown feature extractor {name!r}; choose one of: {EXTRACTORS}")
