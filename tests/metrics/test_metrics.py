"""FID/KID against independent computations, and the offline CNN extractor."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from phenexplain.data.cropset import CropSet
from phenexplain.metrics.distances import feature_stats, frechet_distance, kernel_distance
from phenexplain.metrics.evaluate import fid_kid
from phenexplain.metrics.extractors import RandomCNNExtractor, train_condition_cnn
from phenexplain.nets import Generator
from phenexplain.training.data import TrainingData


def _fid_by_sqrtm(a: np.ndarray, b: np.ndarray) -> float:
    """Independent route (the reference's): scipy's general matrix square root of S1 S2."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = np.real(scipy.linalg.sqrtm(s1 @ s2))
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean))


def test_frechet_distance_matches_an_independent_computation():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 8)) @ rng.normal(size=(8, 8))
    b = rng.normal(loc=0.3, size=(400, 8)) @ rng.normal(size=(8, 8))
    fid = frechet_distance(*feature_stats(a), *feature_stats(b))
    assert fid == pytest.approx(_fid_by_sqrtm(a, b), rel=1e-6)
    assert frechet_distance(*feature_stats(a), *feature_stats(a)) == pytest.approx(0, abs=1e-6)
    # 1-D closed form: (m1 - m2)^2 + (s1 - s2)^2
    x, y = rng.normal(1, 2, (20000, 1)), rng.normal(-1, 1, (20000, 1))
    assert frechet_distance(*feature_stats(x), *feature_stats(y)) == pytest.approx(4 + 1, rel=0.05)
    # fewer samples than features (singular covariances): finite, and zero for identical sets
    few = rng.normal(size=(20, 50))
    assert frechet_distance(*feature_stats(few), *feature_stats(few)) == pytest.approx(0, abs=1e-6)
    assert np.isfinite(frechet_distance(*feature_stats(few), *feature_stats(few + 0.1)))


def test_kernel_distance_is_unbiased_mmd():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(300, 4)), rng.normal(size=(300, 4))
    same = kernel_distance(a, b, num_subsets=20, subset_size=200)
    shifted = kernel_distance(a, b + 1.0, num_subsets=20, subset_size=200)
    assert abs(same) < 0.02 and shifted > 10 * abs(same)
    # direct unbiased MMD^2 with the same kernel on full sets (one "subset" of everything)
    k = lambda x, y: (x @ y.T / 4 + 1) ** 3  # noqa: E731
    kxx, kyy, kxy = k(b + 1.0, b + 1.0), k(a, a), k(b + 1.0, a)
    m = 300
    direct = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (
        m * (m - 1)
    ) - 2 * kxy.mean()
    assert kernel_distance(a, b + 1.0, num_subsets=1, subset_size=300) == pytest.approx(
        direct, rel=1e-9
    )


def test_condition_cnn_learns_the_planted_phenotype(tiny_crops):
    data = TrainingData(CropSet(tiny_crops), resolution=16)
    images = np.stack([data.image(i) for i in range(len(data.crops))])
    _, accuracy = train_condition_cnn(images, data.labels.numpy(), 2, epochs=10, seed=0)
    assert accuracy > 0.8  # TNF vs control is visible to a small CNN


def test_random_extractor_is_reproducible_and_fid_sees_quality(tiny_crops):
    data = TrainingData(CropSet(tiny_crops), resolution=16)
    extractor = RandomCNNExtractor(2)
    assert RandomCNNExtractor(2).id == extractor.id != RandomCNNExtractor(2, seed=1).id
    real = (
        torch.from_numpy(np.stack([data.image(i) for i in range(len(data.crops))])).float() / 127.5
        - 1
    )
    stats = feature_stats(extractor(real[::2]))
    other_half = frechet_distance(*stats, *feature_stats(extractor(real[1::2])))
    blurred = torch.nn.functional.avg_pool2d(real[1::2], 3, stride=1, padding=1)
    noisy = (
        real[1::2] + 0.3 * torch.randn(real[1::2].shape, generator=torch.Generator().manual_seed(0))
    ).clamp(-1, 1)
    assert other_half < frechet_distance(*stats, *feature_stats(extractor(blurred)))
    assert other_half < frechet_distance(*stats, *feature_stats(extractor(noisy)))
    torch.manual_seed(0)
    G = Generator(
        16, 2, 16, 16, 2, {"num_layers": 2}, {"channel_base": 128, "channel_max": 16}
    ).eval()
    result = fid_kid(G, data, extractor, n=200)
    assert (
        set(result) == {"fid_rand", "kid_rand", "extractor_rand"}
        and result["extractor_rand"] == extractor.id
    )
    assert result["fid_rand"] > other_half and np.isfinite(result["kid_rand"])
