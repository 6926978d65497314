"""Per-condition work of the downstream flow as Prefect tasks mapped over the conditions.

With dozens of conditions (BBBC021: 73 compound-concentration pairs) the work of the explain and
report steps grows with the conditions: the centroids of eq. 4 (K latents mapped under every
condition), the traversal's columns (one per target) and the report's generated crops and their
measurements (one sample per condition). Each is mapped here, one task per condition, computing
what the library computes in one process for that condition alone, so the files are byte for byte
those of the sequential run:

- `centroids_flow`: `condition_centroid` per condition, written to the centroid cache, where the
  traversals, the report and the pyfunc read them;
- `traversal_columns`: `render.traversal_column` per target, handed to `explain_run`;
- `synthetic_samples`: `analysis.sample_condition` per condition (generate, enlarge, measure),
  handed to `build_report`.

They run on the task runner that params.yaml's `flow` section names (`task_runner`): Prefect's
thread pool by default, or Dask through prefect-dask, on a local cluster or an existing one
(`dask_address`), to spread the conditions over machines.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import flow, get_run_logger, task, unmapped
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from phenexplain.config import ExplainParams, FlowParams, ReportParams

if TYPE_CHECKING:
    import numpy as np

    from phenexplain.report.analysis import ConditionSample


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


@task(cache_policy=NO_CACHE)
def traversal_column(checkpoint: str, source: str, target: str, params: ExplainParams,
                     centroids: str | None) -> np.ndarray:  # fmt: skip
    """The explain stage's traversal column from `source` to `target` (`centroids`: the cache
    file of method 2)."""
    import numpy as np
    import torch

    from phenexplain.explain.render import traversal_column as compute
    from phenexplain.generate import parse_seeds
    from phenexplain.training.checkpoint import load_network, read_config

    G = load_network(checkpoint, "G_ema")
    centroid = torch.from_numpy(np.load(centroids, allow_pickle=False)) if centroids else None
    column = compute(
        G, read_config(checkpoint).conditions, parse_seeds(params.seeds), source, target,
        method=params.method, steps=params.steps, centroid=centroid,
        truncation_psi=params.truncation,
    )  # fmt: skip
    get_run_logger().info("traversal column %s -> %s in process %d", source, target, os.getpid())
    return column


def traversal_columns(
    checkpoint: str,
    params: ExplainParams,
    flow_params: FlowParams,
    control: str | None = None,
    store: str | None = None,
) -> list[np.ndarray]:
    """The explain stage's traversal columns, one task per target, on the task runner of
    `flow_params`, in the order `explain_run` takes them (method 2: the centroids are mapped
    first, into `store`)."""
    from phenexplain.explain.jobs import traversal_targets
    from phenexplain.training.checkpoint import read_config

    source, targets = traversal_targets(read_config(checkpoint).conditions, params, control)
    centroids = None
    if params.method == 2:
        (centroids,) = map_centroids(checkpoint, [params.centroid_samples], flow_params, store)
    run = columns_flow.with_options(task_runner=task_runner(flow_params))
    return run(checkpoint, source, targets, params, centroids)


@flow(name="traversal-columns")
def columns_flow(checkpoint: str, source: str, targets: list[str], params: ExplainParams,
                 centroids: str | None) -> list:  # fmt: skip
    """One `traversal_column` task per target."""
    futures = traversal_column.map(
        checkpoint, unmapped(source), targets, unmapped(params), unmapped(centroids)
    )
    return [future.result() for future in futures]


@task(cache_policy=NO_CACHE)
def synthetic_sample(checkpoint: str, index: int, params: ReportParams, factor: int
                     ) -> ConditionSample:  # fmt: skip
    """The report's generated crops of condition `index`, measured (in this task's process)."""
    from phenexplain.report.analysis import sample_condition
    from phenexplain.training.checkpoint import load_network, read_config

    G = load_network(checkpoint, "G_ema")
    sample = sample_condition(
        G, index, params.synthetic_per_condition, params.seed, factor=factor,
        channels=read_config(checkpoint).channels, workers=1,
    )  # fmt: skip
    get_run_logger().info("synthetic sample of condition %d in process %d", index, os.getpid())
    return sample


def synthetic_samples(
    checkpoint: str, cropset: str, params: ReportParams, flow_params: FlowParams
) -> list[ConditionSample]:
    """The report's generated and measured crops, one task per condition, on the task runner of
    `flow_params`, in the checkpoint's condition order (`build_report`'s `synthetic`)."""
    from phenexplain.data.cropset import CropSet
    from phenexplain.training.checkpoint import read_config

    meta = read_config(checkpoint)
    factor = CropSet(cropset).resolution // int(meta.kwargs["G_ema"]["img_resolution"])
    run = samples_flow.with_options(task_runner=task_runner(flow_params))
    return run(checkpoint, len(meta.conditions), params, factor)


@flow(name="synthetic-samples")
def samples_flow(checkpoint: str, conditions: int, params: ReportParams, factor: int) -> list:
    """One `synthetic_sample` task per condition."""
    futures = synthetic_sample.map(
        checkpoint, range(conditions), unmapped(params), unmapped(factor)
    )
    return [future.result() for future in futures]
