"""The paper's three traversal methods on a tiny G: end points, identities, centroids."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from phenexplain.errors import PhenexplainError
from phenexplain.explain.traversal import (
    _weights_digest,
    cached_centroids,
    centroids,
    map_w,
    synthesize,
    traverse,
)
from phenexplain.fsutil import user_cache
from phenexplain.nets.sampling import seed_latent

CONDITIONS = ("ctrl", "drug", "other")


@pytest.fixture
def G(tiny_checkpoint):
    return tiny_checkpoint(channels=2, conditions=CONDITIONS)[1]


def _z(G, seeds=(0, 1, 2)):
    return torch.cat([seed_latent(s, G.z_dim) for s in seeds])


def _images(G, z, condition):
    c = torch.zeros([len(z), G.c_dim])
    c[:, condition] = 1
    with torch.no_grad():
        return G(z, c, noise_mode="const", force_fp32=True)


@pytest.mark.parametrize("method", [1, 3])
def test_end_points_are_the_conditioned_images(G, method):
    z = _z(G)
    w = traverse(G, z, 0, 1, method=method, steps=5)
    assert w.shape == (6, 3, G.w_dim)
    images = synthesize(G, w)
    torch.testing.assert_close(images[0], _images(G, z, 0), atol=1e-5, rtol=0)
    torch.testing.assert_close(images[-1], _images(G, z, 1), atol=1e-5, rtol=0)
    assert not torch.allclose(images[0], images[-1], atol=1e-3)  # the conditions do differ


def test_method1_interpolates_the_raw_embedding_then_normalises(G):
    """As the authors compute eq. 3: lerp of the raw label embeddings, normalised by M."""
    z = _z(G)
    m = G.mapping
    eye = torch.eye(G.c_dim)

    def rms_normalised(x):
        return x * (x.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()

    def fc(x):
        for idx in range(m.num_layers):
            x = getattr(m, f"fc{idx}")(x)
        return x

    with torch.no_grad():
        e1, e2 = (m.embed(eye[j].expand(len(z), -1)) for j in (0, 1))
        raw = rms_normalised(torch.lerp(e1, e2, 0.5))
        expected = fc(torch.cat([rms_normalised(z), raw], dim=1))
        normalised_first = torch.lerp(rms_normalised(e1), rms_normalised(e2), 0.5)
        other = fc(torch.cat([rms_normalised(z), normalised_first], dim=1))
    w = traverse(G, z, 0, 1, method=1, steps=2)
    torch.testing.assert_close(w[1], expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(w[1], other, atol=1e-4)  # the two readings of eq. 3 differ here


def test_method3_is_linear_in_w(G):
    z = _z(G)
    w = traverse(G, z, 0, 2, method=3, steps=4)
    torch.testing.assert_close(w[2], (w[0] + w[4]) / 2, atol=1e-6, rtol=0)


def test_method2_shift_and_identity(G):
    z = _z(G)
    centroid = centroids(G, 500, seed=1, batch=128)
    same = traverse(G, z, 1, 1, method=2, steps=3, centroid=centroid)
    for frame in same:
        torch.testing.assert_close(frame, map_w(G, z, torch.eye(G.c_dim)[1].expand(3, -1)))
    moved = traverse(G, z, 0, 2, method=2, steps=2, centroid=centroid)
    torch.testing.assert_close(moved[2] - moved[0], (centroid[2] - centroid[0]).expand(3, -1))
    with pytest.raises(PhenexplainError, match="centroids"):
        traverse(G, z, 0, 2, method=2, steps=2)


def test_centroids_are_the_mean_and_reproducible(G, tiny_checkpoint):
    a = centroids(G, 700, seed=3, batch=256)
    b = centroids(G, 700, seed=3, batch=100)  # batching changes nothing
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    assert not torch.allclose(a, centroids(G, 700, seed=4), atol=1e-4)
    z = torch.randn([700, G.z_dim], generator=torch.Generator().manual_seed(3))
    expected = map_w(G, z, torch.eye(G.c_dim)[2].expand(700, -1)).double().mean(0).float()
    torch.testing.assert_close(a[2], expected, atol=1e-5, rtol=0)


def test_centroid_cache_is_keyed_by_weights(tiny_checkpoint):
    path, G = tiny_checkpoint(channels=1, conditions=CONDITIONS)
    before = sorted(p.name for p in path.iterdir())
    first = cached_centroids(path, G, 300, seed=0)
    assert sorted(p.name for p in path.iterdir()) == before  # the checkpoint is an input
    (cached,) = user_cache("centroids").glob(f"k300-seed0-{_weights_digest(path)}.npy")
    assert np.array_equal(np.load(cached), first.numpy())
    np.save(cached, np.zeros_like(first.numpy()))  # a cache hit returns the stored values
    assert torch.count_nonzero(cached_centroids(path, G, 300, seed=0)) == 0
    assert torch.count_nonzero(cached_centroids(path, G, 300, seed=1)) > 0  # another key


READ_ONLY_SCRIPT = """
import sys
from pathlib import Path
from phenexplain.explain.jobs import Model
from phenexplain.explain.traversal import cached_centroids
checkpoint = Path(sys.argv[1])
cached_centroids(checkpoint, Model.load(checkpoint).G, 200, seed=0)
"""


def test_centroids_of_a_read_only_checkpoint_go_to_the_cache_folder(tiny_checkpoint):
    """A model store mounted read-only (files 444, folders 555; as root the check runs as
    nobody, since root writes through permissions): the centroids are computed and cached under
    $PHENEXPLAIN_CACHE/centroids, keyed by the weights' hash; the checkpoint is left as it was."""
    import os
    import shutil
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    path, G = tiny_checkpoint(channels=1, conditions=CONDITIONS)
    prefix = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("root writes through read-only permissions and setpriv is missing")
        prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    with tempfile.TemporaryDirectory() as base:
        base = Path(base)
        base.chmod(0o777)  # reachable by nobody
        checkpoint = Path(shutil.copytree(path, base / "store" / "model"))
        for p in [*checkpoint.iterdir()]:
            p.chmod(0o444)
        for folder in (checkpoint, checkpoint.parent):
            folder.chmod(0o555)
        before = sorted(p.name for p in checkpoint.iterdir())
        env = {**os.environ, "PHENEXPLAIN_CACHE": str(base / "cache"), "HOME": str(base),
               "PYTHONPATH": os.pathsep.join(sys.path)}  # fmt: skip
        done = subprocess.run([*prefix, sys.executable, "-c", READ_ONLY_SCRIPT, str(checkpoint)],
                              env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert sorted(p.name for p in checkpoint.iterdir()) == before
        (cached,) = (base / "cache" / "centroids").glob(f"k200-seed0-{_weights_digest(path)}.npy")
        assert np.array_equal(np.load(cached), centroids(G, 200, seed=0).numpy())
        checkpoint.chmod(0o755)
        checkpoint.parent.chmod(0o755)


def test_truncation_pulls_towards_w_avg(G):
    z = _z(G)
    w1 = traverse(G, z, 0, 1, method=3, steps=2)
    w_half = traverse(G, z, 0, 1, method=3, steps=2, truncation_psi=0.5)
    torch.testing.assert_close(w_half, (w1 + G.mapping.w_avg) / 2, atol=1e-6, rtol=0)
    w0 = traverse(G, z, 0, 1, method=1, steps=2, truncation_psi=0.0)
    torch.testing.assert_close(w0, G.mapping.w_avg.expand_as(w0))


def test_bad_method_and_steps(G):
    with pytest.raises(PhenexplainError, match="method 4"):
        traverse(G, _z(G), 0, 1, method=4, steps=2)
    with pytest.raises(PhenexplainError, match="steps"):
        traverse(G, _z(G), 0, 1, method=3, steps=0)
