"""FID/KID of a generator against a crop set, with cached reference statistics.

Real features are cached in the crop set's cache folder per extractor id and resolution;
generated images are drawn with the crop set's condition frequencies.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from phenexplain.metrics.distances import feature_stats, frechet_distance, kernel_distance
from phenexplain.metrics.extractors import FeatureExtractor
from phenexplain.nets import Generator
from phenexplain.nets.ops import from_uint8, to_uint8
from phenexplain.nets.sampling import z_batches
from phenexplain.training.data import TrainingData


def real_features(data: TrainingData, extractor: FeatureExtractor) -> np.ndarray:
    cache = data.crops.cache_dir / f"features-{extractor.id}-r{data.resolution}.npy"
    if cache.is_file():
        return np.load(cache, allow_pickle=False)
    images = from_uint8(np.stack([data.image(i) for i in range(len(data.crops))]))
    features = extractor(images)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, features)
    return features


def generated_features(
    G: Generator,
    data: TrainingData,
    extractor: FeatureExtractor,
    n: int,
    seed: int = 0,
    batch: int = 64,
) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    out = []
    device = next(G.parameters()).device
    with torch.no_grad():
        for z in z_batches(n, G.z_dim, g, batch, device):  # c drawn from g after each z
            c = data.sample_conditions(len(z), g).to(device)
            img = to_uint8(G(z, c, noise_mode="const", force_fp32=True))  # as reals are stored
            out.append(extractor(from_uint8(img)))
    return np.concatenate(out)


def fid_kid(
    G: Generator, data: TrainingData, extractor: FeatureExtractor, n: int = 1000, seed: int = 0
) -> dict:
    """{"fid_<name>", "kid_<name>", "extractor_<name>" (its id)} for `n` generated images against
    all real crops."""
    real = real_features(data, extractor)
    fake = generated_features(G, data, extractor, n, seed=seed)
    mu_r, sigma_r = feature_stats(real)
    mu_f, sigma_f = feature_stats(fake)
    return {
        f"fid_{extractor.name}": frechet_distance(mu_r, sigma_r, mu_f, sigma_f),
        f"kid_{extractor.name}": kernel_distance(real, fake, num_subsets=100, subset_size=1000),
        f"extractor_{extractor.name}": extractor.id,
    }


def evaluate_checkpoint(
    checkpoint: str | Path,
    cropset: str | Path,
    metrics: list[str],
    *,
    n: int = 1000,
    inception_weights: str | None = None,
    device: str = "cpu",
) -> dict:
    """FID/KID of a checkpoint's G_ema against a crop set for each extractor in `metrics`, with
    the checkpoint's kimg and whether it was trained on this crop set."""
    from phenexplain.data.cropset import CropSet
    from phenexplain.metrics.extractors import make_extractor
    from phenexplain.training.checkpoint import load_network, read_config

    meta = read_config(checkpoint)
    G = load_network(checkpoint, "G_ema", device)
    crops = CropSet(cropset)
    data = TrainingData(crops, resolution=G.img_resolution)
    result = {
        "checkpoint": str(checkpoint),
        "kimg": meta.training.kimg,
        "crop_set_id": crops.content_id,
        "trained_on_this_crop_set": meta.training.crop_set_id in (None, crops.content_id),
        "metric_images": n,
    }
    for name in dict.fromkeys(metrics):
        extractor = make_extractor(
            name, data.num_channels, weights=inception_weights, device=device
        )
        result.update(fid_kid(G, data, extractor, n=n))
    return result
