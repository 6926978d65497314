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


def test_resampling_matches_grid_sample_and_is_twice_differentiable():
    import torch.nn.functional as F

    from phenexplain.training.augment import grid_sample_reflect

    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 2, 9, 13, generator=g, requires_grad=True)
    grid = torch.rand(3, 7, 11, 2, generator=g) * 3 - 1.5  # reaches outside: reflection
    expected = F.grid_sample(
        x, grid, mode="bilinear", padding_mode="reflection", align_corners=False
    )
    got = grid_sample_reflect(x, grid)
    assert torch.allclose(got, expected, atol=1e-5)
    (grad,) = torch.autograd.grad(got.square().sum(), x, create_graph=True)
    grad.square().sum().backward()  # R1-style double backward
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_r1_penalty_backpropagates_through_active_augmentation():
    pipe = AugmentPipe()
    pipe.p.fill_(1.0)
    x = torch.randn(4, 2, 16, 16, requires_grad=True)
    y = pipe(x, torch.Generator().manual_seed(4))
    (grad,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)  # D is nonlinear
    grad.square().sum().backward()
    assert torch.isfinite(x.grad).all()
