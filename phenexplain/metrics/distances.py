"""Frechet distance and kernel (MMD) distance between two feature sets [N, D].

FID = |mu_r - mu_g|^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2)) (Heusel et al. 2017).
KID = unbiased MMD^2 with the polynomial kernel k(x, y) = (x.y / D + 1)^3, averaged over
`num_subsets` random subsets of `subset_size` (Binkowski et al. 2018), as stylegan2-ada computes it.
"""

from __future__ import annotations

import numpy as np


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean [D], covariance [D, D]) of features [N, D], float64."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"need at least two feature vectors [N, D], got shape {x.shape}")
    return x.mean(axis=0), np.atleast_2d(np.cov(x, rowvar=False))


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """Frechet distance between the Gaussians N(mu1, sigma1) and N(mu2, sigma2).

    Tr((S1 S2)^(1/2)) is the sum of the square roots of the eigenvalues of the symmetric PSD
    matrix S1^(1/2) S2 S1^(1/2); unlike a general matrix square root (which can return NaN) this
    stays finite when the covariances are singular (fewer samples than features, dead features).
    """
    lam, vec = np.linalg.eigh((sigma1 + sigma1.T) / 2)
    root1 = (vec * np.sqrt(np.clip(lam, 0, None))) @ vec.T
    middle = root1 @ ((sigma2 + sigma2.T) / 2) @ root1
    trace_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    diff = mu1 - mu2
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_covmean
    return float(max(value, 0.0))


def kernel_distance(
    real: np.ndarray,
    fake: np.ndarray,
    num_subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> float:
    """KID: mean over subsets of the unbiased polynomial-kernel MMD^2 between the feature sets."""
    real = np.asarray(real, dtype=np.float64)
    fake = np.asarray(fake, dtype=np.float64)
    n = real.shape[1]
    m = min(len(real), len(fake), subset_size)
    if m < 2:
        raise ValueError("KID needs at least two samples in each set")
    rng = np.random.RandomState(seed)
    total = 0.0
    for _ in range(num_subsets):
        x = fake[rng.choice(len(fake), m, replace=False)]
        y = real[rng.choice(len(real), m, replace=False)]
        a = (x @ x.T / n + 1) ** 3 + (y @ y.T / n + 1) ** 3
        b = (x @ y.T / n + 1) ** 3
        total += (a.sum() - np.diag(a).sum()) / (m - 1) - b.sum() * 2 / m
    return float(total / num_subsets / m)
