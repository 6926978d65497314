"""`phenexplain generate`: the reference's seed -> z rule, uint8 conversion, file formats."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from phenexplain.errors import PhenexplainError
from phenexplain.fsutil import safe_name
from phenexplain.generate import generate_images, parse_seeds, to_uint8
from phenexplain.nets.sampling import seed_latent
from phenexplain.training.checkpoint import load_network


def test_seeds_give_the_reference_latents():
    assert parse_seeds("0-3,7") == [0, 1, 2, 3, 7]
    assert torch.equal(
        seed_latent(42, 5), torch.from_numpy(np.random.RandomState(42).randn(1, 5)).float()
    )
    with pytest.raises(PhenexplainError, match="bad seed"):
        parse_seeds("3-1")


@pytest.mark.parametrize(
    ("channels", "suffix"), [(1, ".png"), (3, ".png"), (2, ".tif"), (5, ".tif")]
)
def test_images_match_the_generator_and_format(tmp_path, tiny_checkpoint, channels, suffix):
    ckpt, G = tiny_checkpoint(channels)
    paths = generate_images(ckpt, tmp_path / "out", "drug", [3, 4])
    assert [p.suffix for p in paths] == [suffix, suffix] and paths[
        0
    ].name == f"{safe_name('drug')}_seed0003{suffix}"
    with torch.no_grad():
        expected = to_uint8(G(seed_latent(3, 8), torch.tensor([[0.0, 1.0]]), noise_mode="const"))[0]
    got = tifffile.imread(paths[0]) if suffix == ".tif" else np.asarray(Image.open(paths[0]))
    got = got[None] if got.ndim == 2 else (np.moveaxis(got, -1, 0) if suffix == ".png" else got)
    assert np.array_equal(got, expected)
    assert torch.equal(load_network(ckpt).mapping.w_avg, G.mapping.w_avg)


def test_unknown_condition_is_named(tmp_path, tiny_checkpoint):
    ckpt, _ = tiny_checkpoint(1)
    with pytest.raises(PhenexplainError, match=r"unknown condition 'taxol'.*ctrl"):
        generate_images(ckpt, tmp_path / "o", "taxol", [0])


def test_uint8_conversion_is_the_references():
    x = torch.tensor([[[[-1.0, 0.0, 1.0, 2.0]]]])
    assert to_uint8(x).tolist() == [[[[0, 128, 255, 255]]]]
