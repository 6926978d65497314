"""Prefect 3 flows of the Phenexplain service. Each task calls one library function.

- `phenexplain_pipeline`: ingest plates -> train -> evaluate -> explain -> report -> register,
  tracked in MLflow (one experiment per crop set; the report's validation numbers logged as the
  run's ``val.*`` metrics; the model registered as ``phenexplain-<crop set>``, alias ``champion``
  on the best FID among the versions whose verdicts pass params.yaml's ``registry.champion``).
  The evaluate step measures the checkpoint's FID once: the run, the registry and the report
  show that number.
- `retrain_on_new_plates`: ingest the deliveries of an inbox (local folder or s3://bucket/prefix)
  that the ledger does not hold yet, then run the pipeline on the grown crop set; nothing to do
  when nothing is new. Safe to run twice at once (the ledger is locked while ingesting).

Retries only where a retry can help (the tracking server, S3); none on bad data or training.
The same steps are `dvc.yaml`'s stages, run by the same library functions.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.conditions import map_centroids, synthetic_samples, traversal_columns
from phenexplain.config import ChampionParams, Params, load_params, with_overrides
from phenexplain.data.ingest import IngestSummary
from phenexplain.errors import ConfigError
from phenexplain.training.callbacks import Callback

if TYPE_CHECKING:  # the report's imports are heavy: loaded by the task that builds it
    from phenexplain.report.build import ReportSummary

REPO = Path(__file__).resolve().parents[1]


@task(retries=0, cache_policy=NO_CACHE)
def ingest_plates(source: str, cropset: str, params: Params) -> IngestSummary:
    """Check plates, quarantine bad images and add crops of new plates to the crop set."""
    from phenexplain.integrations.gx_validation import ingest_with_expectations

    summary = ingest_with_expectations(source, cropset, params.ingest)
    get_run_logger().info("crop set %s: plates added %s", cropset, summary.plates_added)
    return summary


@task(retries=2, retry_delay_seconds=10, cache_policy=NO_CACHE)
def start_tracking(cropset: str, params: Params, run_name: str) -> str:
    """An MLflow run in the crop set's experiment, with the resolved training params (the
    profile trained only) and the crop set as its dataset input."""
    from phenexplain.data.cropset import CropSet
    from phenexplain.integrations.mlflow_tracking import start_training_run, training_params

    name = Path(cropset).name
    tracked = training_params(params.train, CropSet(cropset).resolution)
    return start_training_run(name, tracked, crop_set=cropset, repo=REPO, run_name=run_name)


class LogProgress(Callback):
    """A training callback that reports each tick (and each snapshot's FID) to the flow's log."""

    def __init__(self, kimg: float) -> None:
        self.kimg, self.logger = kimg, get_run_logger()

    def on_tick(self, stats: dict) -> None:
        self.logger.info("training: %.2f / %g kimg, %.0f img/s, G loss %.3f, D loss %.3f",
                         stats["kimg"], self.kimg, stats.get("img_per_s", 0.0),
                         stats.get("Loss/G/loss", float("nan")),
                         stats.get("Loss/D/loss", float("nan")))  # fmt: skip

    def on_snapshot(self, stats: dict, grid, checkpoint) -> None:
        fids = {k: round(v, 4) for k, v in stats.items() if k.startswith("fid_")}
        self.logger.info("snapshot %s %s", Path(checkpoint).name, fids)


@task(retries=0, cache_policy=NO_CACHE)
def train_model(cropset: str, run_dir: str, params: Params, run_id: str | None) -> str:
    """Train (resuming the run folder if it has a checkpoint); returns the latest checkpoint.
    With `train.nproc` above 1 (or auto on several GPUs) the task launches torchrun and streams
    the processes' progress into its log; rank 0 reports to the MLflow run."""
    from phenexplain.training.checkpoint import latest_checkpoint
    from phenexplain.training.launch import train_with_params

    logger = get_run_logger()
    callbacks: list[Callback] = [LogProgress(params.train.kimg)]
    if run_id is not None:
        from phenexplain.integrations.mlflow_tracking import MlflowCallback

        callbacks.append(MlflowCallback(run_dir, run_id))
    resume = latest_checkpoint(Path(run_dir)) is not None
    reached = train_with_params(
        cropset, run_dir, params.train, resume=resume, callbacks=callbacks,
        mlflow_run_id=run_id, on_line=logger.info,
    )  # fmt: skip
    logger.info("trained to %.3f kimg in %s", reached, run_dir)
    return str(latest_checkpoint(Path(run_dir)))


@task(retries=0, cache_policy=NO_CACHE)
def evaluate_model(checkpoint: str, cropset: str, params: Params) -> dict:
    """FID/KID of the checkpoint against its crop set."""
    from phenexplain.metrics.evaluate import evaluate_checkpoint

    train = params.train
    return evaluate_checkpoint(checkpoint, cropset, list(train.metrics), n=train.metric_images,
                               inception_weights=train.inception_weights)  # fmt: skip


def champion_metric(metrics: dict, rule: ChampionParams) -> str:
    """The FID the registry ranks by: `rule.metric`, else the first one evaluated."""
    evaluated = [k for k in metrics if k.startswith("fid_")]
    name = rule.metric or (evaluated[0] if evaluated else "fid_rand")
    if name not in metrics:
        raise ConfigError(
            f"registry.champion.metric is {name}, which was not evaluated (train.metrics gives "
            f"{evaluated}); add {name.removeprefix('fid_')} to train.metrics or change the metric"
        )
    return name


@task(retries=2, retry_delay_seconds=10, cache_policy=NO_CACHE)
def register_model(
    checkpoint: str, cropset: str, run_id: str, metrics: dict, report: ReportSummary,
    rule: ChampionParams,
) -> dict:  # fmt: skip
    """Log the final FID and the report's validation numbers to the run, then log the model and
    register it with its verdicts; alias champion only if the champion rule accepts its
    verdicts and its FID is the best."""
    from phenexplain.integrations.mlflow_tracking import (
        VerdictCounts,
        log_and_register,
        log_results,
        validation_metrics,
    )

    name = champion_metric(metrics, rule)
    extractor = metrics[f"extractor_{name[4:]}"]
    final = {f"final_{k}": v for k, v in metrics.items()}
    log_results(run_id, metrics=final | validation_metrics(report))
    verdicts = VerdictCounts.from_table(report.verdict.table)
    reg = log_and_register(checkpoint, run_id, Path(cropset).name, name, metrics[name], extractor,
                           verdicts=verdicts, rule=rule)  # fmt: skip
    why = f"; not champion: {reg.refused}" if reg.refused else ""
    get_run_logger().info("registered %s version %s (champion: %s%s)", reg.name, reg.version,
                          reg.is_champion, why)  # fmt: skip
    return {"name": reg.name, "version": reg.version, "champion": reg.is_champion,
            "model_uri": reg.model_uri, "refused": reg.refused,
            "verdicts": verdicts.as_dict()}  # fmt: skip


@task(retries=0, cache_policy=NO_CACHE)
def explain_model(checkpoint: str, out: str, params: Params, columns: list) -> dict:
    """Traversal videos from the mapped `columns` (and LDA / dose response with 3+
    conditions)."""
    from phenexplain.explain.jobs import explain_run

    return explain_run(checkpoint, out, params.explain, control=params.report.control,
                       columns=columns)  # fmt: skip


@task(retries=0, cache_policy=NO_CACHE)
def report_model(
    checkpoint: str, cropset: str, out: str, params: Params, synthetic: list, metrics: dict
) -> ReportSummary:
    """The validation report and the explorer page, on the mapped `synthetic` samples, showing
    the evaluate step's FID/KID (`metrics`) of the checkpoint."""
    from phenexplain.report.build import build_report

    logger = get_run_logger()
    return build_report(checkpoint, cropset, out, params.report, stage=logger.info,
                        synthetic=synthetic, fid=metrics)  # fmt: skip


@task(retries=2, retry_delay_seconds=10, cache_policy=NO_CACHE)
def log_outputs(run_id: str, artifacts: dict[str, str]) -> None:
    """Report, traversal videos and Data Docs as artifacts of the training run."""
    from phenexplain.integrations.mlflow_tracking import log_results

    log_results(run_id, artifacts=artifacts)


@flow(name="phenexplain-pipeline", log_prints=True)
def phenexplain_pipeline(
    source: str | None = "data",
    cropset: str = "cropsets/default",
    run_dir: str | None = None,
    params_file: str = "params.yaml",
    kimg: float | None = None,
    track: bool = True,
    minutes: float | None = None,
) -> dict:
    """Plates -> crop set -> model -> registry -> traversals -> report. `source` None skips
    ingest (the crop set is used as it is); `track` False runs without MLflow; `kimg` and
    `minutes` override params.yaml's training budget (`minutes`: stop at the first tick after
    it, `kimg` then the cap)."""
    params = load_params(params_file)
    train = with_overrides(params.train, kimg=kimg, minutes=minutes)
    params = params.model_copy(update={"train": train})
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    run_dir = run_dir or f"runs/pipeline-{stamp}"
    if source is not None:
        ingest_plates(source, cropset, params)
    run_id = start_tracking(cropset, params, Path(run_dir).name) if track else None
    checkpoint = train_model(cropset, run_dir, params, run_id)
    metrics = evaluate_model(checkpoint, cropset, params)
    # per-condition work, one task per condition, on params.yaml's flow.task_runner: the
    # centroids, the traversal's columns and the report's generated crops with their measurements
    map_centroids(checkpoint, [params.explain.centroid_samples, params.report.centroid_samples],
                  params.flow)  # fmt: skip
    columns = traversal_columns(checkpoint, params.explain, params.flow, params.report.control)
    explained = explain_model(checkpoint, f"{run_dir}/explain", params, columns)
    synthetic = synthetic_samples(checkpoint, cropset, params.report, params.flow)
    report = report_model(checkpoint, cropset, f"{run_dir}/report", params, synthetic, metrics)
    registration = None
    if run_id is not None:  # after the report: the champion rule reads its verdicts
        registration = register_model(checkpoint, cropset, run_id, metrics, report,
                                      params.registry.champion)  # fmt: skip
        log_outputs(run_id, {"report": f"{run_dir}/report", "explain": f"{run_dir}/explain",
                             "data_docs": f"{cropset}/report", "checkpoint": checkpoint,
                             "config": f"{run_dir}/training_options.json"})  # fmt: skip
    return {
        "run_dir": run_dir,
        "checkpoint": checkpoint,
        "metrics": metrics,
        "registration": registration,
        "mlflow_run_id": run_id,
        "videos": [v["path"] for v in explained["videos"]],
        "report": f"{run_dir}/report/report.html",
        "explorer": f"{run_dir}/report/explorer.html",
        "assays": report.assays.statistics,
        "verdict": report.verdict.headline,
        "verdict_table": report.verdict.table,
    }


@task(retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def list_deliveries(inbox: str) -> list:
    """The inbox's deliveries (S3 listing is retried; a local folder is read directly)."""
    if inbox.startswith("s3://"):
        from phenexplain.integrations.s3_inbox import s3_deliveries

        return s3_deliveries(inbox)
    from phenexplain.data.inbox import local_deliveries

    return local_deliveries(inbox)


@task(retries=0, cache_policy=NO_CACHE)
def ingest_new_deliveries(deliveries: list, cropset: str, state: str, params: Params) -> list:
    """Ingest the deliveries the ledger does not hold (under its lock); their plate ids."""
    from phenexplain.data.inbox import Ledger, ingest_new
    from phenexplain.integrations.gx_validation import ingest_with_expectations

    return ingest_new(deliveries, cropset, params.ingest, Ledger(state), ingest_with_expectations)


@flow(name="retrain-on-new-plates", log_prints=True)
def retrain_on_new_plates(
    inbox: str = "inbox",
    cropset: str = "cropsets/default",
    state: str = "state",
    params_file: str = "params.yaml",
    kimg: float | None = None,
    track: bool = True,
) -> dict:
    """Ingest new plates from `inbox` and, if there were any, retrain, register, explain and
    report; otherwise do nothing."""
    params = load_params(params_file)
    added = ingest_new_deliveries(list_deliveries(inbox), cropset, state, params)
    if not added:
        print(f"no new plates in {inbox}: nothing to do")
        return {"added": [], "pipeline": None}
    print(f"new plates {added}: retraining on {cropset}")
    result = phenexplain_pipeline(source=None, cropset=cropset, params_file=params_file,
                                  kimg=kimg, track=track)  # fmt: skip
    return {"added": added, "pipeline": result}
