"""convert-nvlabs: snapshot-shaped pickles become checkpoints that render the same images, and
hostile pickles are refused without running anything."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from phenexplain.errors import PhenexplainError
from phenexplain.nets import Discriminator, Generator
from phenexplain.nets.convert import convert_snapshot
from phenexplain.nets.snapshot import UnsafeSnapshotError, read_snapshot
from phenexplain.training.checkpoint import load_network, read_config
from tests.nets.snapshot_factory import EasyDict, snapshot_bytes

G_KW = dict(
    z_dim=32, c_dim=3, w_dim=32, img_resolution=16, img_channels=2,
    mapping_kwargs=EasyDict(num_layers=2),
    synthesis_kwargs=EasyDict(channel_base=256, channel_max=32, conv_clamp=256, num_fp16_res=2,
                              architecture="skip", fp16_channels_last=False),
)  # fmt: skip
D_KW = dict(
    c_dim=3, img_resolution=16, img_channels=2, channel_base=256, channel_max=32, conv_clamp=256,
    architecture="resnet", block_kwargs=EasyDict(), mapping_kwargs=EasyDict(),
    epilogue_kwargs=EasyDict(mbstd_group_size=2),
)  # fmt: skip


def _networks():
    torch.manual_seed(3)
    strip = lambda kw: {k: v for k, v in kw.items() if k != "architecture"}  # noqa: E731
    ignored = ("architecture", "fp16_channels_last")
    synthesis = {k: v for k, v in G_KW["synthesis_kwargs"].items() if k not in ignored}
    g_kw = {**G_KW, "synthesis_kwargs": synthesis}
    G = Generator(**g_kw)
    D = Discriminator(**strip(D_KW))
    with torch.no_grad():
        for p in [*G.parameters(), *D.parameters()]:
            p.add_(torch.randn_like(p) * 0.2)
        G.mapping.w_avg.normal_()
    return G, D


def _write_snapshot(path, marker, extra=None):
    G, D = _networks()
    src = f"open({str(marker)!r}, 'w').write('source code was executed')\n"
    pipe = torch.nn.Module()
    pipe.register_buffer("p", torch.tensor(0.3))
    networks = {
        "G": (G, G_KW),
        "D": (D, D_KW),
        "G_ema": (G, G_KW),
        "augment_pipe": (pipe, {"xflip": 1}),
    }
    path.write_bytes(snapshot_bytes(networks, src, extra))
    return G, D


def test_converted_generator_renders_the_same_images(tmp_path):
    marker = tmp_path / "PWNED"
    G, D = _write_snapshot(tmp_path / "network-snapshot-000100.pkl", marker)
    config = convert_snapshot(
        tmp_path / "network-snapshot-000100.pkl",
        tmp_path / "ckpt",
        conditions=["DMSO", "taxol", "noco"],
        channels=["DNA", "Tubulin"],
    )  # fmt: skip
    assert not marker.exists()  # the embedded source code was never run
    assert config.training.augment_p == pytest.approx(0.3)
    assert read_config(tmp_path / "ckpt").conditions == ["DMSO", "taxol", "noco"]
    converted = load_network(tmp_path / "ckpt")
    z = torch.randn(4, 32, generator=torch.Generator().manual_seed(0))
    c = torch.eye(3)[[0, 1, 2, 0]]
    with torch.no_grad():
        expected = G.eval()(z, c, noise_mode="const", force_fp32=True)
        got = converted(z, c, noise_mode="const", force_fp32=True)
    assert (got - expected).abs().max() <= 1e-3
    d = load_network(tmp_path / "ckpt", "D")
    img = torch.randn(4, 2, 16, 16)
    with torch.no_grad():
        assert torch.allclose(
            d(img, c, force_fp32=True), D.eval()(img, c, force_fp32=True), atol=1e-6
        )


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_code_running_pickles_are_refused(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pkl"
    _write_snapshot(path, tmp_path / "src-ran", extra={"payload": _Evil(marker)})
    with pytest.raises(UnsafeSnapshotError, match=r"refusing to load (posix|os)\.system"):
        read_snapshot(path)
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"G_ema": _Evil(marker)}))
    with pytest.raises(UnsafeSnapshotError):
        convert_snapshot(plain, tmp_path / "out")
    assert (
        not marker.exists()
        and not (tmp_path / "src-ran").exists()
        and not (tmp_path / "out").exists()
    )


def test_wrong_names_and_garbage_are_clear_errors(tmp_path):
    _write_snapshot(tmp_path / "s.pkl", tmp_path / "m")
    with pytest.raises(PhenexplainError, match="3 conditions, 2 names"):
        convert_snapshot(tmp_path / "s.pkl", tmp_path / "o", conditions=["a", "b"])
    (tmp_path / "junk.pkl").write_bytes(b"not a pickle at all")
    with pytest.raises(PhenexplainError, match="not a readable stylegan2-ada snapshot"):
        read_snapshot(tmp_path / "junk.pkl")


def test_condition_names_from_a_phenexplain_dataset_json(tmp_path):
    import json

    from phenexplain.nets.convert import conditions_from_dataset_json

    path = tmp_path / "dataset.json"
    labels = [
        ["DMSO/img0.png", 0],
        ["taxol/img1.png", 2],
        ["noco/img2.png", 1],
        ["DMSO/img3.png", 0],
    ]
    path.write_text(json.dumps({"labels": labels}))
    assert conditions_from_dataset_json(path) == ["DMSO", "noco", "taxol"]
    path.write_text(json.dumps({"labels": [["DMSO/a.png", 0], ["taxol/b.png", 0]]}))
    with pytest.raises(PhenexplainError, match="several folders"):
        conditions_from_dataset_json(path)
    _write_snapshot(tmp_path / "s.pkl", tmp_path / "m")
    assert convert_snapshot(tmp_path / "s.pkl", tmp_path / "ck").conditions == ["0", "1", "2"]
