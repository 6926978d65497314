"""The augmentation pipe: identity at p = 0, differentiable, never mixes channels."""

import torch

from phenexplain.training.augment import AugmentPipe


def test_p_zero_is_identity_and_p_one_changes_images():
    pipe = AugmentPipe()
    x = torch.randn(6, 3, 16, 16)
    assert torch.equal(pipe(x, torch.Generator().manual_seed(0)), x)
    pipe.p.fill_(1.0)
    y = pipe(x, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and not torch.allclose(y, x)
    assert torch.equal(y, pipe(x, torch.Generator().manual_seed(0)))  # seeded


def test_geometry_moves_channels_together_and_never_mixes_them():
    pipe = AugmentPipe(brightness=0, contrast=0)
    pipe.p.fill_(1.0)
    x = torch.zeros(8, 2, 32, 32)
    x[:, 0, 8:20, 10:14] = 1.0  # a pattern in channel 0 only
    x[:, 1] = 0.5  # channel 1 is flat
    y = pipe(x, torch.Generator().manual_seed(1))
    assert torch.allclose(y[:, 1], torch.full_like(y[:, 1], 0.5), atol=1e-5)  # nothing leaked in
    assert not torch.allclose(y[:, 0], x[:, 0])


def test_intensity_changes_are_per_channel_and_gradients_flow():
    pipe = AugmentPipe(xflip=0, rotate90=0, xint=0, scale=0, rotate=0, aniso=0, xfrac=0)
    pipe.p.fill_(1.0)
    x = torch.zeros(4, 3, 8, 8, requires_grad=True)
    y = pipe(x, torch.Generator().manual_seed(2))
    per_channel = y.detach().flatten(2)
    assert torch.allclose(
        per_channel, per_channel[..., :1].expand_as(per_channel)
    )  # flat stays flat
    assert (
        per_channel[:, :, 0].unique().numel() > 3
    )  # each channel of each image shifted on its own
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
