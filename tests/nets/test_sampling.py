"""The shared samplers: per-seed z as the reference draws it, batched z streams, one-hot c."""

import numpy as np
import pytest
import torch

from phenexplain.nets.sampling import one_hot, seed_latent, z_batches


def test_seed_latent_is_numpys_randomstate_draw():
    expected = torch.from_numpy(np.random.RandomState(7).randn(1, 6)).float()
    assert torch.equal(seed_latent(7, 6), expected)


def test_z_batches_are_one_stream_in_pieces():
    batches = list(z_batches(10, 4, 3, 4))
    assert [len(b) for b in batches] == [4, 4, 2]
    g = torch.Generator().manual_seed(3)
    expected = [torch.randn([m, 4], generator=g) for m in (4, 4, 2)]
    assert all(torch.equal(a, b) for a, b in zip(batches, expected, strict=True))


def test_z_batches_leave_the_callers_generator_between_batches():
    g = torch.Generator().manual_seed(5)
    drawn = []
    for z in z_batches(4, 2, g, 2):
        drawn.append((z, torch.randint(10, (2,), generator=g)))
    ref = torch.Generator().manual_seed(5)
    for z, picks in drawn:
        assert torch.equal(z, torch.randn([2, 2], generator=ref))
        assert torch.equal(picks, torch.randint(10, (2,), generator=ref))


def test_one_hot_rows_and_repeats():
    assert one_hot([2, 0], 3).tolist() == [[0, 0, 1], [1, 0, 0]]
    assert one_hot(1, 3, n=2).tolist() == [[0, 1, 0], [0, 1, 0]]
    assert one_hot(torch.tensor([1]), 2).dtype == torch.float32
    with pytest.raises(ValueError, match="2 indices but n=3"):
        one_hot([0, 1], 2, n=3)
