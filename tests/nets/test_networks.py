"""Networks: shapes, conditioning, truncation, and numbers produced by the reference implementation.

`golden_sg2ada.json` holds outputs of NVlabs stylegan2-ada-pytorch's G and D (computed once, on the
CPU in float32, with the weights `fill_deterministic` writes); no reference code is in this repo.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from phenexplain.nets import Discriminator, Generator

GOLDEN = Path(__file__).with_name("golden_sg2ada.json")
GOLDEN_G = dict(
    z_dim=32, c_dim=3, w_dim=32, img_resolution=16, img_channels=2,
    mapping_kwargs=dict(num_layers=2),
    synthesis_kwargs=dict(channel_base=256, channel_max=32, conv_clamp=256),
)  # fmt: skip
GOLDEN_D = dict(
    c_dim=3, img_resolution=16, img_channels=2, channel_base=256, channel_max=32, conv_clamp=256,
    mapping_kwargs=dict(num_layers=2), epilogue_kwargs=dict(mbstd_group_size=2),
)  # fmt: skip


def fill_deterministic(module: torch.nn.Module) -> None:
    """Overwrite every parameter and buffer (but the FIR filters) from a seeded generator."""
    g = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for name, tensor in sorted(module.state_dict().items()):
            if name.endswith("resample_filter"):
                continue
            tensor.copy_(
                torch.randn(tensor.shape, generator=g) * (0.2 if tensor.ndim <= 1 else 1.0)
            )


def golden_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(99)
    z = torch.randn([4, 32], generator=g)
    c = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 1]), 3).float()
    img = torch.randn([4, 2, 16, 16], generator=g)
    return z, c, img


def golden_outputs(G: torch.nn.Module, D: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, scores) of `G` and `D` (ours or the reference's, built with GOLDEN_G and
    GOLDEN_D) once `fill_deterministic` has written their weights."""
    G, D = G.eval(), D.eval()
    fill_deterministic(G)
    fill_deterministic(D)
    z, c, img = golden_inputs()
    with torch.no_grad():
        return G(z, c, truncation_psi=0.8, noise_mode="const"), D(img, c)


def test_generator_and_discriminator_reproduce_the_reference_numbers():
    golden = json.loads(GOLDEN.read_text())
    image, scores = golden_outputs(Generator(**GOLDEN_G), Discriminator(**GOLDEN_D))
    corner = torch.tensor(golden["G_image_corner"])
    assert torch.allclose(image[:, :, :4, :4].flatten(), corner, atol=1e-4, rtol=0)
    assert abs(image.std().item() - golden["G_image_std"]) < 1e-4
    # D's condition map goes through two layers at lr multiplier 0.01, so its scores are small:
    # compare them relative to their own size
    assert torch.allclose(scores.flatten(), torch.tensor(golden["D_scores"]), rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("channels", [1, 2, 3, 4, 5])
def test_any_number_of_image_channels(channels):
    G = Generator(
        16, 2, 16, 16, channels, {"num_layers": 2}, {"channel_base": 128, "channel_max": 16}
    ).eval()
    D = Discriminator(
        2, 16, channels, channel_base=128, channel_max=16, epilogue_kwargs={"mbstd_group_size": 2}
    )
    z = torch.randn(2, 16)
    c = torch.eye(2)
    image = G(z, c)
    assert image.shape == (2, channels, 16, 16) and torch.isfinite(image).all()
    assert D(image, c).shape == (2, 1)


def _small_g() -> Generator:
    torch.manual_seed(0)
    return Generator(
        16, 3, 16, 16, 2, {"num_layers": 2}, {"channel_base": 128, "channel_max": 16}
    ).eval()


def test_mapping_conditions_and_truncation():
    G = _small_g()
    G.mapping.w_avg.copy_(torch.randn(16))
    z = torch.randn(3, 16)
    c = torch.eye(3)
    ws = G.mapping(z, c)
    assert ws.shape == (3, G.num_ws, 16) and torch.equal(ws[:, 0], ws[:, -1])  # broadcast
    assert not torch.allclose(G.mapping(z, c[[1, 2, 0]]), ws)  # the condition matters
    assert torch.allclose(G.mapping(z, c, truncation_psi=0.0), G.mapping.w_avg.expand_as(ws))
    cut = G.mapping(z, c, truncation_psi=0.0, truncation_cutoff=2)
    assert torch.allclose(cut[:, :2], G.mapping.w_avg.expand(3, 2, 16)) and torch.equal(
        cut[:, 2:], ws[:, 2:]
    )
    e = G.mapping.embed_condition(c)
    assert torch.allclose(G.mapping(z, None, embedding=e), ws)  # eq. 3 acts on this embedding


def test_w_avg_tracks_the_mean_in_training_only():
    G = _small_g()
    z, c = torch.randn(8, 16), torch.eye(3)[torch.arange(8) % 3]
    G.mapping(z, c)
    assert torch.count_nonzero(G.mapping.w_avg) == 0
    G.mapping.train()
    w = G.mapping(z, c)[:, 0]
    assert torch.allclose(G.mapping.w_avg, w.mean(0) * (1 - 0.995), atol=1e-6)


def test_fused_and_unfused_modulation_agree_and_const_noise_is_deterministic():
    G = _small_g()
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.3)
    z, c = torch.randn(2, 16), torch.eye(3)[:2]
    a = G(z, c, noise_mode="const", fused_modconv=True)
    b = G(z, c, noise_mode="const", fused_modconv=False)
    assert torch.allclose(a, b, atol=1e-5)
    assert torch.equal(b, G(z, c, noise_mode="const"))  # batches > 1 default to unfused
    r1 = G(z, c, noise_mode="random", generator=torch.Generator().manual_seed(5))
    r2 = G(z, c, noise_mode="random", generator=torch.Generator().manual_seed(5))
    assert torch.equal(r1, r2) and not torch.allclose(r1, a)


def test_state_dict_names_follow_the_reference_layout():
    keys = set(Generator(**GOLDEN_G).state_dict()) | {
        f"D.{k}" for k in Discriminator(**GOLDEN_D).state_dict()
    }
    for key in (
        "mapping.embed.weight", "mapping.fc1.bias", "mapping.w_avg", "synthesis.b4.const",
        "synthesis.b4.conv1.noise_const", "synthesis.b16.conv0.affine.weight",
        "synthesis.b16.torgb.weight",
        "D.b16.fromrgb.weight", "D.b8.skip.weight", "D.mapping.embed.weight", "D.b4.out.weight",
    ):  # fmt: skip
        assert key in keys, key


def test_bad_shapes_are_reported():
    G = _small_g()
    with pytest.raises(ValueError, match=r"z must be \[N, 16\]"):
        G(torch.randn(2, 8), torch.eye(3)[:2])
    D = Discriminator(
        3, 16, 2, channel_base=128, channel_max=16, epilogue_kwargs={"mbstd_group_size": 4}
    )
    with pytest.raises(ValueError, match="images must be"):
        D(torch.randn(2, 3, 16, 16), torch.eye(3)[:2])
    with pytest.raises(ValueError, match="multiple of the minibatch-std group size"):
        D(torch.randn(6, 2, 16, 16), torch.eye(3)[[0, 1, 2, 0, 1, 2]])
