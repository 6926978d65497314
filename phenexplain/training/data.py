"""Training data: a crop set as float images in [-1, 1] with one-hot conditions.

Crops are read from the crop set's memory-mapped shards; when the training resolution is below
the crop size, every crop is box-downsampled once, in memory. With `xflip` the dataset is doubled
by horizontal mirrors (the reference's dataset mirroring).

`to(device)` keeps every image on the training device as uint8 (a GPU holds a crop set of
100,000 3 x 128 x 128 crops in 4.9 GB), so a batch is gathered, mirrored and converted to float
there, from indices drawn there: no host work and no copy per step. Without it, batches are
assembled on the host from the shards.
"""

from __future__ import annotations

import numpy as np
import torch

from phenexplain.data.cropset import CropSet
from phenexplain.errors import PhenexplainError
from phenexplain.nets.ops import from_uint8
from phenexplain.nets.sampling import one_hot


def downsample(image: np.ndarray, factor: int) -> np.ndarray:
    """uint8 [..., C, S, S] -> uint8 [..., C, S / factor, S / factor] by box averaging, rounded."""
    if factor == 1:
        return image
    *lead, s = image.shape[:-1]
    r = s // factor
    boxes = image.astype(np.float32).reshape(*lead, r, factor, r, factor)
    return np.clip(np.rint(boxes.mean(axis=(-3, -1))), 0, 255).astype(np.uint8)


class TrainingData:
    """Images uint8 [N, C, R, R] and labels [N]; batches drawn with an explicit torch.Generator."""

    def __init__(self, crops: CropSet, resolution: int | None = None, xflip: bool = False) -> None:
        self.crops = crops
        native = crops.resolution
        self.resolution = resolution or native
        if self.resolution & (self.resolution - 1) or self.resolution < 4:
            raise PhenexplainError(
                f"training resolution must be a power of two >= 4, got {self.resolution}"
            )
        if native % self.resolution:
            raise PhenexplainError(
                f"crop size {native} is not a multiple of the training resolution {self.resolution}"
            )
        self.factor = native // self.resolution
        self.labels = torch.as_tensor(np.array(crops.labels), dtype=torch.int64)
        self.num_conditions = len(crops.conditions)
        self.num_channels = len(crops.channels)
        self.xflip = xflip
        self._images = self._downsampled() if self.factor > 1 else None
        self._resident: torch.Tensor | None = None  # every image, uint8, on the training device

    def _downsampled(self) -> np.ndarray:
        n, c, r = len(self.crops), self.num_channels, self.resolution
        out = np.empty((n, c, r, r), dtype=np.uint8)
        for i in range(n):
            out[i] = downsample(self.crops[i][0], self.factor)
        return out

    def to(self, device: str | torch.device) -> TrainingData:
        """Keep every image (uint8) and label on `device`; batches are then made there."""
        device = torch.device(device)
        if self._images is not None:
            images = torch.from_numpy(self._images)
        else:
            images = torch.from_numpy(np.stack([self.crops[i][0] for i in range(len(self.crops))]))
        self._resident = images.to(device)
        self.labels = self.labels.to(device)
        return self

    def resident_bytes(self) -> int:
        """Bytes that `to` puts on the device (the mirrors are made per batch)."""
        return len(self.crops) * self.num_channels * self.resolution**2

    def __len__(self) -> int:
        return len(self.crops) * (2 if self.xflip else 1)

    def image(self, i: int) -> np.ndarray:
        n = len(self.crops)
        base = self._images[i % n] if self._images is not None else self.crops[i % n][0]
        return base[..., ::-1] if i >= n else base

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images float [B, C, R, R] in [-1, 1] and one-hot conditions [B, c_dim], on the data's
        device (the CPU until `to`)."""
        n = len(self.crops)
        indices = indices.to(self.labels.device)
        if self._resident is not None:
            picked = self._resident[indices % n]
            mirrored = (indices >= n)[:, None, None, None]
            images = torch.where(mirrored, picked.flip(-1), picked)
        else:
            images = torch.as_tensor(np.stack([self.image(int(i)) for i in indices]))
        labels = self.labels[indices % n]
        return from_uint8(images), one_hot(labels, self.num_conditions, device=labels.device)

    def sample_conditions(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """One-hot conditions [n, c_dim] drawn with the crop set's condition frequencies, on
        `generator`'s device."""
        picks = torch.randint(len(self.crops), (n,), generator=generator, device=generator.device)
        labels = self.labels[picks.to(self.labels.device)]
        return one_hot(labels, self.num_conditions, device=labels.device)
