"""The Prefect flows under Prefect's test harness: the whole pipeline on a small plate with MLflow
on a local SQLite store, and the inbox flow that ingests a new plate exactly once."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest

from phenexplain.data.cropset import CropSet
from phenexplain.data.inbox import Ledger, ingest_new, local_deliveries
from tests.conftest import REPO, small_spec, write_small_params


@pytest.fixture(scope="module")
def prefect_harness(tmp_path_factory):
    import os

    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect-home"))
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield


@pytest.fixture
def small_params(tmp_path) -> Path:
    return write_small_params(REPO / "params.yaml", tmp_path / "params.yaml")


def _plate(tmp_path: Path, name: str, seed: int) -> Path:
    from phenexplain.data.synthetic import generate_plates

    out = tmp_path / name
    generate_plates(small_spec("nfkb", seed=seed, wells_per_condition=2, sites_per_well=2,
                               height=256, width=320), out)  # fmt: skip
    return out


def test_pipeline_trains_registers_explains_and_reports(
    prefect_harness, small_params, tmp_path, monkeypatch
):
    from flows.pipeline import phenexplain_pipeline
    from phenexplain.integrations.mlflow_tracking import tracking_uri

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    plate = _plate(tmp_path, "plates", seed=1)
    result = phenexplain_pipeline(source=str(plate), cropset="cropsets/small",
                                  params_file=str(small_params))  # fmt: skip
    assert Path(result["report"]).is_file() and Path(result["explorer"]).is_file()
    assert all(Path(v).is_file() for v in result["videos"])
    assert (Path(result["run_dir"]) / "snapshots.jsonl").is_file()  # the run folder's own record
    registration = result["registration"]
    assert registration["name"] == "phenexplain-small"
    # the first version is the champion unless its verdicts break the champion rule
    assert registration["champion"] == (registration["verdicts"]["wrong_sign"] == 0)
    assert registration["champion"] == (registration["refused"] is None)
    assert result["metrics"]["fid_rand"] > 0
    from flows.demo import verdict_line

    lines = [verdict_line(row) for row in result["verdict_table"]]  # what the demo prints
    ratio = next(x for x in lines if x.startswith("nucleus/cytoplasm NF-kB ratio (log), TNF"))
    assert ("d real +" in ratio and "d synthetic" in ratio) or "not measurable at" in ratio
    import mlflow

    assert tracking_uri().startswith("sqlite:///")
    run = mlflow.MlflowClient().get_run(result["mlflow_run_id"])
    assert "final_fid_rand" in run.data.metrics and "Loss/G/loss" in run.data.metrics
    assert run.data.params["kimg"] == "0.1"
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert {"report", "explain", "data_docs", "samples", "images", "checkpoint",
            "config"} <= artifacts  # fmt: skip
    # only the profile trained; the crop set as the dataset; the verdicts as metrics
    assert {k.split(".")[1] for k in run.data.params if k.startswith("profiles.")} == {"cpu-small"}
    (dataset,) = run.inputs.dataset_inputs
    assert dataset.dataset.digest == CropSet("cropsets/small").content_id
    for name, count in registration["verdicts"].items():
        assert run.data.metrics[f"val.verdict.{name}"] == count
    assert "val.cnn.accuracy_mean" in run.data.metrics
    # one FID for the checkpoint: the run's, the registry's and the report's
    version = mlflow.MlflowClient().get_model_version(registration["name"], registration["version"])
    summary = json.loads((Path(result["run_dir"]) / "report" / "summary.json").read_text())
    fid = result["metrics"]["fid_rand"]
    assert float(version.tags["phenexplain.fid"]) == fid == run.data.metrics["final_fid_rand"]
    assert summary["fid_kid"]["fid_rand"] == fid
    assert summary["fid_kid"]["metric_images"] == result["metrics"]["metric_images"] == 64


def test_champion_metric_is_the_configured_fid_and_must_have_been_evaluated():
    from flows.pipeline import champion_metric
    from phenexplain.config import ChampionParams
    from phenexplain.errors import ConfigError

    metrics = {"kimg": 1.0, "fid_rand": 3.0, "kid_rand": 0.1, "fid_inception": 9.0}
    assert champion_metric(metrics, ChampionParams()) == "fid_rand"  # the first evaluated
    assert champion_metric(metrics, ChampionParams(metric="fid_inception")) == "fid_inception"
    with pytest.raises(ConfigError, match=r"add inception to train\.metrics"):
        champion_metric({"fid_rand": 3.0}, ChampionParams(metric="fid_inception"))


def test_inbox_plate_is_ingested_exactly_once(prefect_harness, small_params, tmp_path, monkeypatch):
    from flows.pipeline import retrain_on_new_plates

    monkeypatch.chdir(tmp_path)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shutil.copytree(_plate(tmp_path, "made", seed=2), inbox / "P01")
    kw = dict(inbox=str(inbox), cropset="cropsets/inbox", state="state",
              params_file=str(small_params), track=False)  # fmt: skip
    first = retrain_on_new_plates(**kw)
    assert first["added"] == ["P01"] and Path(first["pipeline"]["report"]).is_file()
    second = retrain_on_new_plates(**kw)
    assert second == {"added": [], "pipeline": None}
    assert len(Ledger(tmp_path / "state").entries()) == 1
    assert len(CropSet(tmp_path / "cropsets" / "inbox").manifest["plate"].unique()) == 1


def test_two_runs_at_once_ingest_a_delivery_once(tmp_path):
    from phenexplain.config import load_params

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shutil.copytree(_plate(tmp_path, "made", seed=3), inbox / "P02")
    params = load_params(REPO / "params.yaml").ingest.model_copy(
        update={"crop_size": 32, "min_images_per_condition": 2}
    )
    ledger, results = Ledger(tmp_path / "state"), []

    def run() -> None:
        results.append(ingest_new(local_deliveries(inbox), tmp_path / "cs", params, ledger))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [[], ["P02"]]
    assert len(ledger.entries()) == 1


def test_the_training_task_launches_torchrun_when_nproc_is_2(prefect_harness, tiny_crops, tmp_path):
    """`train.nproc: 2` from the flow: torchrun with gloo on 2 CPU processes trains one run, and
    rank 0's progress lines reach the flow run's log."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    from flows.pipeline import train_model
    from phenexplain.config import Params
    from tests.training.test_launch import tiny_params

    params = Params(train=tiny_params(nproc=2))

    @flow
    def train_only(run_dir: str) -> tuple[str, str]:
        from prefect.runtime import flow_run

        return train_model(str(tiny_crops), run_dir, params, None), flow_run.id

    checkpoint, run_id = train_only(str(tmp_path / "run"))
    config = json.loads((Path(checkpoint) / "checkpoint.json").read_text())
    assert config["training"]["progress"]["cur_nimg"] == 64
    options = json.loads((tmp_path / "run" / "training_options.json").read_text())
    assert options["world"] == 2
    APILogHandler().flush()  # logs reach the API in the background: send what is queued first
    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
    messages = [entry.message for entry in logs]
    assert "training in 2 processes (torchrun, cpu)" in messages
    assert any(m.startswith("tick 2: 0.064 kimg") for m in messages), messages


def test_centroids_mapped_over_conditions_on_dask_equal_the_sequential_file(
    prefect_harness, tiny_checkpoint, tmp_path
):
    """One task per condition, on a local Dask cluster of 2 worker processes on loopback and on
    the thread pool: both write the file `cached_centroids` writes in one process, byte for
    byte."""
    from flows.conditions import map_centroids
    from phenexplain.config import FlowParams
    from phenexplain.explain.traversal import cached_centroids, centroid_cache_path

    checkpoint, G = tiny_checkpoint(conditions=("ctrl", "a", "b", "c", "d"))
    cached_centroids(checkpoint, G, 3000, store=tmp_path / "sequential")
    expected = centroid_cache_path(checkpoint, 3000, store=tmp_path / "sequential").read_bytes()
    for runner in ("dask", "threads"):
        params = FlowParams(task_runner=runner, dask_workers=2)
        (path,) = map_centroids(str(checkpoint), [3000], params, store=str(tmp_path / runner))
        assert Path(path).read_bytes() == expected, runner
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        said = [entry.message for entry in client.read_logs(limit=200)]
    pids = [int(m.rsplit(" ", 1)[1]) for m in said if m.startswith("centroid of condition")]
    elsewhere = [pid for pid in pids if pid != os.getpid()]
    assert len(elsewhere) == 5  # the Dask run's 5 tasks ran in its worker processes


def test_traversal_columns_and_report_samples_mapped_on_dask_equal_the_sequential_files(
    prefect_harness, tiny_checkpoint, tiny_crops, tmp_path
):
    """The explain stage's traversal (one task per target) and the report's generated crops with
    their measurements (one task per condition), on a local 2-worker Dask cluster and on the
    thread pool: the same files as the one-process run."""
    import numpy as np

    from flows.conditions import synthetic_samples, traversal_columns
    from phenexplain.config import ExplainParams, FlowParams, ReportParams
    from phenexplain.explain.jobs import explain_run
    from phenexplain.report import analysis, validation

    crops = CropSet(tiny_crops)
    conditions = sorted(crops.conditions)
    checkpoint, G = tiny_checkpoint(channels=crops.channels, conditions=conditions, resolution=16)
    explain = ExplainParams(method=2, seeds="0-2", steps=4, formats=["tif"], centroid_samples=500)
    report = ReportParams(real_per_condition=5, synthetic_per_condition=6, workers=1)
    control = conditions[0]

    def files(folder: Path) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.suffix in
                (".tif", ".csv")}  # fmt: skip

    def measured(out: Path, v: validation.Validation) -> dict[str, bytes]:
        out.mkdir()
        analysis.write_measurements({"synthetic": v.synthetic}, out)
        np.save(out / "images.npy", v.fake_small)
        return {p.name: p.read_bytes() for p in sorted(out.iterdir())}

    store = tmp_path / "centroids"
    explain_run(checkpoint, tmp_path / "sequential", explain, control=control)
    v = validation.validate(G, crops, conditions, control, report)
    expected = files(tmp_path / "sequential"), measured(tmp_path / "seq-measured", v)
    assert expected[0] and {"cells_synthetic.csv", "crops_synthetic.csv"} <= set(expected[1])
    for runner in ("dask", "threads"):
        params = FlowParams(task_runner=runner, dask_workers=2)
        columns = traversal_columns(str(checkpoint), explain, params, control, str(store))
        explain_run(checkpoint, tmp_path / runner, explain, control=control, columns=columns)
        samples = synthetic_samples(str(checkpoint), str(tiny_crops), report, params)
        v = validation.validate(G, crops, conditions, control, report, synthetic=samples)
        got = files(tmp_path / runner), measured(tmp_path / f"{runner}-measured", v)
        assert got == expected, runner
    from prefect.client.orchestration import get_client

    said: list[str] = []
    with get_client(sync_client=True) as client:
        while page := client.read_logs(limit=200, offset=len(said)):
            said += [entry.message for entry in page]
    for kind in ("traversal column", "synthetic sample of condition"):
        pids = [int(m.rsplit(" ", 1)[1]) for m in said if m.startswith(kind)]
        assert any(pid != os.getpid() for pid in pids), kind  # the Dask tasks ran elsewhere
