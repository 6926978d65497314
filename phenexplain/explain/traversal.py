"""Latent traversals between conditions: the paper's three methods (eq. 3 to 6).

Notation as in the paper: G(z, c) = S(M(z, c)), M the mapping network, S the synthesis network,
E the label embedding inside M (normalised, then concatenated to the normalised z), w a point of
W. A traversal of `steps` + 1 frames goes from the source condition c1 (fraction t = 0) to the
target c2 (t = 1); the paper indexes its frames the other way round, which changes nothing else.

- method 1 (eq. 3): M(z, (1 - t) E(c1) + t E(c2)), the same z with an interpolated embedding; as
  in the authors' code, the raw embeddings are interpolated and M normalises the result;
- method 2 (eq. 4, 5): M(z, c1) + t (w̄2 - w̄1), where w̄j is the mean of M over K random z under
  condition j (the centroid);
- method 3 (eq. 6): (1 - t) M(z, c1) + t M(z, c2). (Eq. 6 as printed wraps the interpolation in
  a second M; the interpolated point is already in W and goes to S directly.)

Truncation (psi < 1) pulls every w towards the tracked mean w_avg after the traversal is built;
it is off (psi = 1) by default.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import torch

from phenexplain.errors import PhenexplainError
from phenexplain.fsutil import atomic_write_bytes, file_sha256, user_cache
from phenexplain.nets import Generator
from phenexplain.nets.sampling import one_hot, z_batches
from phenexplain.training.checkpoint import WEIGHTS

log = logging.getLogger(__name__)

METHODS = (1, 2, 3)
CENTROIDS = "centroids"  # the cache folder's name, in the user cache or a served checkpoint


def fractions(steps: int) -> torch.Tensor:
    """t = i / steps for i = 0..steps, float32 [steps + 1]."""
    if steps < 1:
        raise PhenexplainError(f"steps must be at least 1, got {steps}")
    return torch.arange(steps + 1, dtype=torch.float64).div(steps).float()


def map_w(G: Generator, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """w = M(z, c) without truncation, one w per sample: [N, w_dim] (every layer gets the same)."""
    return G.mapping(z, c, update_w_avg=False)[:, 0]


def centroids(
    G: Generator,
    num_samples: int = 100_000,
    *,
    seed: int = 0,
    batch: int = 10_000,
    progress=None,
) -> torch.Tensor:
    """w̄_j (eq. 4) for every condition j: float32 [c_dim, w_dim], one `condition_centroid` per
    row.

    z is drawn from a seeded torch generator in batches; the same z serve every condition, and the
    sums are kept in float64, so the result depends only on (G, num_samples, seed).
    """

    def row_progress(j: int):
        if progress is None:
            return None
        return lambda done, _: progress(j * num_samples + done, G.c_dim * num_samples)

    return torch.stack([
        condition_centroid(G, j, num_samples, seed=seed, batch=batch, progress=row_progress(j))
        for j in range(G.c_dim)
    ])  # fmt: skip


def condition_centroid(
    G: Generator,
    index: int,
    num_samples: int = 100_000,
    *,
    seed: int = 0,
    batch: int = 10_000,
    progress=None,
) -> torch.Tensor:
    """w̄_j of condition `index` alone: float32 [w_dim], the row `centroids` returns for it (the
    same seeded z, the same float64 sums), so conditions can be computed apart, in parallel."""
    if num_samples < 1:
        raise PhenexplainError(f"centroids need at least 1 sample, not {num_samples}")
    device = next(G.parameters()).device
    total = torch.zeros([G.w_dim], dtype=torch.float64)
    done = 0
    with torch.no_grad():
        for z in z_batches(num_samples, G.z_dim, seed, batch, device):
            w = map_w(G, z, one_hot(index, G.c_dim, len(z), device))
            total += w.double().sum(dim=0).cpu()
            done += len(z)
            if progress is not None:
                progress(done, num_samples)
    return (total / num_samples).float()


def _weights_digest(checkpoint: Path) -> str:
    return file_sha256(checkpoint / WEIGHTS)[:16]


def cached_centroids(
    checkpoint: str | Path,
    G: Generator,
    num_samples: int = 100_000,
    *,
    seed: int = 0,
    progress=None,
    store: Path | None = None,
) -> torch.Tensor:
    """`centroids`, cached by the weights' hash, K and seed: read from the checkpoint's
    ``centroids/`` when it ships them (a served model), else from `store` (default: the user
    cache, `fsutil.user_cache`), where new ones are written; never into the checkpoint, an input.
    """
    checkpoint = Path(checkpoint)
    path = centroid_cache_path(checkpoint, num_samples, seed, store)
    shipped = checkpoint / CENTROIDS / path.name
    for cached in (shipped, path):
        if cached.is_file():
            return torch.from_numpy(np.load(cached, allow_pickle=False))
    result = centroids(G, num_samples, seed=seed, progress=progress)
    store_centroids(path, result)
    return result


def centroid_cache_path(
    checkpoint: str | Path, num_samples: int, seed: int = 0, store: Path | None = None
) -> Path:
    """Where `cached_centroids` keeps the centroids of `checkpoint` for (K, seed)."""
    key = f"k{num_samples}-seed{seed}-{_weights_digest(Path(checkpoint))}"
    return (store or user_cache(CENTROIDS)) / f"{key}.npy"


def store_centroids(path: Path, result: torch.Tensor) -> None:
    """Write centroids [c_dim, w_dim] to the cache file `path` (atomically; a read-only cache
    is warned about, not an error)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        np.save(buffer, result.numpy())
        atomic_write_bytes(path, buffer.getvalue())
    except OSError as exc:
        log.warning("centroids not cached in %s: %s", path.parent, exc.strerror)


def truncate(G: Generator, w: torch.Tensor, psi: float) -> torch.Tensor:
    """w_avg + psi (w - w_avg); psi = 1 returns `w` unchanged."""
    if psi == 1:
        return w
    return G.mapping.w_avg.to(w.dtype).lerp(w, psi)


def traverse(
    G: Generator,
    z: torch.Tensor,
    source: int,
    target: int,
    *,
    method: int,
    steps: int,
    centroid: torch.Tensor | None = None,
    truncation_psi: float = 1.0,
) -> torch.Tensor:
    """W along the traversal from condition index `source` to `target` for each z [S, z_dim]:
    [steps + 1, S, w_dim]. Method 2 needs `centroid` [c_dim, w_dim] (see `centroids`)."""
    if method not in METHODS:
        raise PhenexplainError(f"unknown traversal method {method}; choose 1, 2 or 3")
    t = fractions(steps).to(z.device).view(-1, 1, 1)
    c1 = one_hot(source, G.c_dim, len(z), z.device)
    c2 = one_hot(target, G.c_dim, len(z), z.device)
    with torch.no_grad():
        if method == 1:
            e1, e2 = G.mapping.embed_condition(c1), G.mapping.embed_condition(c2)
            e = torch.lerp(e1.unsqueeze(0), e2.unsqueeze(0), t)  # [T, S, E]
            w = torch.stack(
                [G.mapping(z, None, embedding=et, update_w_avg=False)[:, 0] for et in e]
            )
        elif method == 2:
            if centroid is None:
                raise PhenexplainError("method 2 needs the condition centroids (eq. 4)")
            shift = (centroid[target] - centroid[source]).to(z.device)
            w = map_w(G, z, c1).unsqueeze(0) + t * shift
        else:
            w = torch.lerp(map_w(G, z, c1).unsqueeze(0), map_w(G, z, c2).unsqueeze(0), t)
    return truncate(G, w, truncation_psi)


def synthesize(
    G: Generator, w: torch.Tensor, *, noise_mode: str = "const", batch: int = 64
) -> torch.Tensor:
    """Images [..., C, H, W] in [-1, 1] for w [..., w_dim] (each w given to every layer)."""
    lead = w.shape[:-1]
    flat = w.reshape(-1, w.shape[-1])
    out = []
    with torch.no_grad():
        for start in range(0, len(flat), batch):
            ws = flat[start : start + batch].unsqueeze(1).expand(-1, G.num_ws, -1)
            out.append(G.synthesis(ws, noise_mode=noise_mode, force_fp32=True).cpu())
    images = torch.cat(out)
    return images.reshape(*lead, *images.shape[1:])
