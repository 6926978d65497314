"""The FID Inception extractor: hash pinning, safe loading, file search, network layout.

The real weights are not downloaded: tests save our own network's (random) state dict and pin
its hash through `known_files`. `test_real_weights` runs only where $PHENEXPLAIN_INCEPTION
points at a real file.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from phenexplain.errors import PhenexplainError
from phenexplain.metrics import inception
from phenexplain.metrics.distances import feature_stats, frechet_distance
from phenexplain.metrics.extractors import make_extractor
from phenexplain.metrics.inception import (
    FIDInceptionV3,
    InceptionExtractor,
    InceptionWeightsError,
    InceptionWeightsNotFoundError,
    KnownFile,
    load_inception,
)

PTH = "pt_inception-2015-12-05-6726825d.pth"
REAL = os.environ.get(inception.ENV_VAR)  # read before the fixture below clears it


@pytest.fixture(autouse=True)
def _no_real_caches(tmp_path, monkeypatch):
    """Every searched folder points into tmp_path, so a real cache never leaks into a test."""
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("TORCH_HOME", str(home / "torch"))
    monkeypatch.setenv("PHENEXPLAIN_CACHE", str(home / "phx"))
    monkeypatch.setenv("DNNLIB_CACHE_DIR", str(home / "dnnlib"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv(inception.ENV_VAR, raising=False)


@pytest.fixture(scope="module")
def weights_bytes(tmp_path_factory) -> bytes:
    """A seeded state dict of our network, as torch.save writes it. He-normal convolutions keep
    activations of order 1 through the 94 layers (the default init shrinks them to ~1e-7)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = FIDInceptionV3()
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(m.weight)
    path = tmp_path_factory.mktemp("weights") / "state.pth"
    torch.save(model.state_dict(), path)
    return path.read_bytes()


def _pin(path: Path, kind: str = "state_dict") -> list[KnownFile]:
    return [KnownFile(path.name, hashlib.sha256(path.read_bytes()).hexdigest(), kind)]


def test_a_file_named_like_the_weights_with_another_hash_is_refused(
    tmp_path, weights_bytes, monkeypatch
):
    path = tmp_path / PTH
    path.write_bytes(weights_bytes)
    with pytest.raises(InceptionWeightsError) as err:
        load_inception(path)
    message = str(err.value)
    assert str(path) in message and "6726825d0af5" in message and "not 6726825d" in message
    assert isinstance(err.value, PhenexplainError)
    # the same file is also found, and refused, through the environment variable
    monkeypatch.setenv(inception.ENV_VAR, str(path))
    with pytest.raises(InceptionWeightsError, match="refusing"):
        InceptionExtractor()


def test_a_pinned_file_loads_and_gives_deterministic_2048_features(tmp_path, weights_bytes):
    path = tmp_path / "renamed.pth"  # the hash decides, not the name
    path.write_bytes(weights_bytes)
    ex = InceptionExtractor(path, known_files=_pin(path))
    assert ex.name == "inception"
    assert ex.id == f"inception-{hashlib.sha256(weights_bytes).hexdigest()[:12]}"
    g = torch.Generator().manual_seed(0)
    grey = torch.rand([2, 1, 32, 32], generator=g) * 2 - 1
    rgb = torch.rand([1, 3, 32, 32], generator=g) * 2 - 1
    five = torch.rand([1, 5, 32, 32], generator=g) * 2 - 1
    features = {c: ex(x) for c, x in ((1, grey), (3, rgb), (5, five))}
    for c, n in ((1, 2), (3, 1), (5, 1)):
        assert features[c].shape == (n, 2048) and features[c].dtype == np.float64
        assert np.isfinite(features[c]).all() and features[c].std() > 1e-3
    np.testing.assert_array_equal(ex(grey), features[1])  # deterministic
    # 5 channels: the mean of the features of each channel given as a 1-channel image
    per_channel = ex(five.reshape(5, 1, 32, 32)).mean(0, keepdims=True)
    np.testing.assert_allclose(features[5], per_channel, rtol=1e-5, atol=1e-6)


def test_missing_file_error_lists_folders_names_and_urls(tmp_path):
    with pytest.raises(InceptionWeightsNotFoundError) as err:
        load_inception()
    message = str(err.value)
    for folder in inception.search_folders():
        assert str(folder) in message
    assert str(tmp_path / "home" / "torch" / "hub" / "checkpoints") in message
    assert str(tmp_path / "home" / "dnnlib" / "downloads") in message
    for known in inception.KNOWN_FILES:
        assert known.name in message and known.url in message and known.sha256 in message
    assert inception.ENV_VAR in message
    with pytest.raises(InceptionWeightsNotFoundError, match="does not exist"):
        load_inception(tmp_path / "nowhere.pth")


def test_files_are_found_in_the_caches(tmp_path, weights_bytes):
    hub = tmp_path / "home" / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / PTH).write_bytes(weights_bytes)
    pinned = [KnownFile(PTH, hashlib.sha256(weights_bytes).hexdigest()[:8], "state_dict")]
    assert inception.find_inception_file(known_files=pinned) == hub / PTH
    (hub / PTH).unlink()
    # dnnlib's cache: "<md5 of the URL>_<sanitised URL>"
    url = "https://example.org/x/inception-2015-12-05.pt"
    downloads = tmp_path / "home" / "dnnlib" / "downloads"
    downloads.mkdir(parents=True)
    cached = downloads / (hashlib.md5(url.encode()).hexdigest() + "_https___example.org_x_i.pt")
    cached.write_bytes(b"x")
    table = [KnownFile("inception-2015-12-05.pt", "0" * 64, "torchscript", url)]
    assert inception.find_inception_file(known_files=table) == cached


class _FakeDetector(torch.nn.Module):
    """Stands in for stylegan2-ada-pytorch's TorchScript: per-channel means of what it gets."""

    def forward(self, img: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        if img.dtype != torch.uint8 or not return_features:
            return torch.zeros(img.shape[0], 1008)
        return img.float().mean(dim=(2, 3)).repeat(1, 683)[:, :2048]


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_torchscript_is_called_on_uint8_with_return_features(tmp_path):
    path = tmp_path / "inception-2015-12-05.pt"
    torch.jit.save(torch.jit.script(_FakeDetector()), str(path))
    ex = InceptionExtractor(path, known_files=_pin(path, "torchscript"))
    rgb = torch.tensor([-1.0, 0.0, 1.0]).reshape(1, 3, 1, 1).expand(1, 3, 8, 8)
    np.testing.assert_array_equal(ex(rgb)[0, :3], [0, 128, 255])  # x * 127.5 + 128, clamped
    grey = torch.zeros(2, 1, 8, 8)
    assert ex(grey).shape == (2, 2048) and (ex(grey) == 128).all()  # repeated to 3 channels


class _Marker:
    """Unpickling it would create a file: proof that code from a weights file ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_a_malicious_pickle_with_a_pinned_hash_runs_nothing(tmp_path, writer):
    marker = tmp_path / "pwned"
    path = tmp_path / PTH
    payload = {"Conv2d_1a_3x3.conv.weight": _Marker(marker)}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    assert not marker.exists()
    with pytest.raises(InceptionWeightsError, match="weights-only"):
        load_inception(path, known_files=_pin(path))
    assert not marker.exists()


def test_a_pinned_file_with_wrong_keys_is_refused(tmp_path):
    path = tmp_path / PTH
    torch.save({"fc.weight": torch.zeros(1008, 2048)}, path)
    with pytest.raises(InceptionWeightsError, match="does not fit"):
        load_inception(path, known_files=_pin(path))


def test_network_layout_matches_the_published_state_dict():
    # Independently written from the reference (pytorch-fid / torchvision Inception3 layout).
    expected = {
        "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
        "Conv2d_1a_3x3.bn.running_mean": (32,),
        "Conv2d_2b_3x3.conv.weight": (64, 32, 3, 3),
        "Conv2d_4a_3x3.conv.weight": (192, 80, 3, 3),
        "Mixed_5b.branch1x1.conv.weight": (64, 192, 1, 1),
        "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
        "Mixed_5d.branch5x5_2.conv.weight": (64, 48, 5, 5),
        "Mixed_6a.branch3x3.conv.weight": (384, 288, 3, 3),
        "Mixed_6b.branch7x7_2.conv.weight": (128, 128, 1, 7),
        "Mixed_6e.branch7x7dbl_5.conv.weight": (192, 192, 1, 7),
        "Mixed_7a.branch7x7x3_4.conv.weight": (192, 192, 3, 3),
        "Mixed_7b.branch3x3_2a.conv.weight": (384, 384, 1, 3),
        "Mixed_7b.branch3x3dbl_3b.conv.weight": (384, 384, 3, 1),
        "Mixed_7c.branch_pool.conv.weight": (192, 2048, 1, 1),
        "Mixed_7c.branch_pool.bn.running_var": (192,),
        "fc.weight": (1008, 2048),
        "fc.bias": (1008,),
    }
    model = FIDInceptionV3()
    state = model.state_dict()
    for key, shape in expected.items():
        assert tuple(state[key].shape) == shape, key
    assert not any("AuxLogits" in k for k in state)
    assert all(m.eps == 0.001 for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    # torchvision's inception_v3 has 27,161,264 parameters; without the aux classifier
    # (128*768 + 2*128 + 768*128*25 + 2*768 + 768*1000 + 1000 = 3,326,696) and with 1008
    # instead of 1000 classes (+ 8*2048 + 8 = 16,392):
    assert sum(p.numel() for p in model.parameters()) == 27_161_264 - 3_326_696 + 16_392
    assert len(state) == 566  # 94 conv+bn layers x 6 tensors, fc weight and bias


def test_make_extractor_builds_each_name(tmp_path, weights_bytes):
    assert make_extractor("rand", 2).name == "rand"
    with pytest.raises(InceptionWeightsNotFoundError):
        make_extractor("inception", 2)  # no file anywhere: refused, nothing downloaded
    with pytest.raises(PhenexplainError, match="unknown feature extractor"):
        make_extractor("vgg", 2)


@pytest.mark.skipif(not REAL, reason=f"${inception.ENV_VAR} does not name the real weights")
def test_real_weights():
    ex = InceptionExtractor(REAL)
    g = torch.Generator().manual_seed(0)
    images = torch.rand([6, 3, 48, 48], generator=g) * 2 - 1
    features = ex(images)
    assert features.shape == (6, 2048) and np.isfinite(features).all()
    assert (features >= 0).all()  # averages of ReLU outputs
    stats = feature_stats(features)
    assert frechet_distance(*stats, *stats) == pytest.approx(0, abs=1e-6)
