"""Per-condition work of the downstream flow as Prefect tasks mapped over the conditions.

With dozens of conditions (BBBC021: 73 compound-concentration pairs) the centroids of eq. 4 (K
latents mapped under every condition) dominate the explain and report steps. `centroids_flow`
computes one condition per task (`condition_centroid`: the same seeded z and float64 sums as the
all-at-once computation, so the file is byte for byte the same) and writes them to the centroid
cache, where the traversals, the report and the pyfunc read them. It runs on the task runner that
params.yaml's `flow` section names (`task_runner`): Prefect's thread pool by default, or Dask
through prefect-dask, on a local cluster or an existing one (`dask_address`), to spread the
conditions over machines.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task, unmapped
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from phenexplain.config import FlowParams


def task_runner(params: FlowParams) -> Any:  # a TaskRunner (Prefect's generics do not unify)
    """The task runner `params.task_runner` names (Dask: a local cluster on loopback, or the
    scheduler at `dask_address`)."""
    if params.task_runner == "dask":
        from prefect_dask import DaskTaskRunner

        if params.dask_address:
            return DaskTaskRunner(address=params.dask_address)
        return DaskTaskRunner(
            cluster_kwargs={
                "n_workers": params.dask_workers, "threads_per_worker": 1, "processes": True,
                "host": "127.0.0.1", "dashboard_address": None,
            }
        )  # fmt: skip
    return ThreadPoolTaskRunner(max_workers=params.max_workers)


@task(cache_policy=NO_CACHE)
def condition_centroid(checkpoint: str, index: int, samples: int, seed: int) -> list[float]:
    """w̄ of condition `index` (eq. 4) for K = `samples` latents."""
    from phenexplain.explain.traversal import condition_centroid as compute
    from phenexplain.training.checkpoint import load_network

    G = load_network(checkpoint, "G_ema")
    row = compute(G, index, samples, seed=seed).tolist()
    get_run_logger().info("centroid of condition %d (K=%d) in process %d", index, samples,
                          os.getpid())  # fmt: skip
    return row


@flow(name="condition-centroids")
def centroids_flow(checkpoint: str, samples: int, seed: int = 0, store: str | None = None) -> str:
    """Every condition's centroid, one task each, written to the centroid cache (`store`, default
    the user cache) unless it holds them already; returns the cache file."""
    import torch

    from phenexplain.explain.traversal import centroid_cache_path, store_centroids
    from phenexplain.training.checkpoint import read_config

    path = centroid_cache_path(checkpoint, samples, seed, Path(store) if store else None)
    if path.is_file():
        return str(path)
    conditions = read_config(checkpoint).conditions
    futures = condition_centroid.map(
        checkpoint, range(len(conditions)), unmapped(samples), unmapped(seed)
    )
    rows = [future.result() for future in futures]
    store_centroids(path, torch.tensor(rows, dtype=torch.float32))
    return str(path)


def map_centroids(
    checkpoint: str, samples: list[int], params: FlowParams, store: str | None = None
) -> list[str]:
    """`centroids_flow` for each K in `samples`, on the task runner of `params`."""
    return [
        centroids_flow.with_options(task_runner=task_runner(params))(checkpoint, k, 0, store)
        for k in sorted(set(samples))
    ]
