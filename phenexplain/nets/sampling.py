"""The latents and condition vectors every sampler feeds the networks.

- `seed_latent`: the z of one seed, as the reference draws it (numpy's RandomState), so seed 7
  here and in stylegan2-ada-pytorch's ``generate.py`` name the same image;
- `z_batches`: many z from one seeded torch stream, in batches (drawn batch by batch, so a
  caller that draws other numbers from the same generator between batches keeps its order);
- `one_hot`: condition vectors c from class indices.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch


def seed_latent(seed: int, z_dim: int) -> torch.Tensor:
    """The reference's z for `seed`: RandomState(seed).randn(z_dim), as float32 [1, z_dim]."""
    return torch.from_numpy(np.random.RandomState(seed).randn(1, z_dim)).to(torch.float32)


def z_batches(
    n: int,
    z_dim: int,
    generator: int | torch.Generator,
    batch: int,
    device: str | torch.device = "cpu",
) -> Iterator[torch.Tensor]:
    """`n` latents [m, z_dim] in batches of at most `batch`, drawn on the CPU from `generator`
    (a seed, or a torch.Generator the caller keeps drawing from) and moved to `device`."""
    if isinstance(generator, int):
        generator = torch.Generator().manual_seed(generator)
    for start in range(0, n, batch):
        m = min(batch, n - start)
        yield torch.randn([m, z_dim], generator=generator).to(device)


def one_hot(
    index: int | Sequence[int] | torch.Tensor,
    c_dim: int,
    n: int | None = None,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Condition vectors float32 [N, c_dim]: one row per index of `index`, or `n` rows of the
    single class `index`."""
    labels = torch.as_tensor(index, dtype=torch.int64)
    if labels.ndim == 0:
        labels = labels.expand(1 if n is None else n)
    elif n is not None and n != len(labels):
        raise ValueError(f"{len(labels)} indices but n={n}")
    return torch.nn.functional.one_hot(labels, c_dim).to(torch.float32).to(device)
