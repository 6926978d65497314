"""Tracking against a real MLflow server: provenance, no credentials, the callback, outages."""

from __future__ import annotations

import json
import os
import time
import uuid

import numpy as np
import pytest
import torch
import yaml
from mlflow import MlflowClient
from PIL import Image

from phenexplain.config import load_params
from phenexplain.data.cropset import CropSet
from phenexplain.errors import PhenexplainError
from phenexplain.fsutil import git_commit
from phenexplain.integrations.mlflow_tracking import (
    MlflowCallback,
    VerdictCounts,
    flush_outbox,
    log_results,
    start_training_run,
    tracking_uri,
    training_params,
    validation_metrics,
)
from phenexplain.training.callbacks import RunFolderCallback
from phenexplain.training.data import TrainingData
from phenexplain.training.loop import train
from phenexplain.training.trainer import Trainer
from tests.conftest import REPO
from tests.integrations.conftest import SECRET, free_port
from tests.training.conftest import TINY


def _client() -> MlflowClient:
    return MlflowClient(os.environ["MLFLOW_TRACKING_URI"])


def _stats(tick: int) -> dict:
    """What the loop reports at a tick (kimg in steps of 8 images)."""
    return {
        "tick": tick, "kimg": tick * 0.008, "img_per_s": 100.0 + tick, "augment_p": 0.01 * tick,
        "Loss/G/loss": 1.0 / tick, "Loss/D/loss": 0.5 * tick,
    }  # fmt: skip


def _history(run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in _client().get_metric_history(run_id, key))


def test_default_tracking_uri_is_sqlite_under_mlruns(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert tracking_uri() == f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    assert tracking_uri() == "http://tracking.example:5000"


def test_training_run_has_flat_params_provenance_and_no_credentials(mlflow_server, tiny_crops):
    assert os.environ["AWS_SECRET_ACCESS_KEY"] == SECRET
    params = {
        "train": {"kimg": 1.5, "profiles": {"tiny": {"batch": 8}}, "metrics": ["rand"]},
        "storage": {"secret_access_key": SECRET, "endpoint": "http://admin:hunter22@minio:9000"},
        "note": f"pasted {SECRET} by mistake",
    }
    run_id = start_training_run(
        "crops", params, tags={"owner": "tests", "leak": f"x{SECRET}"}, crop_set=tiny_crops,
        extractor_ids={"rand": "rand-123"}, repo=REPO,
    )  # fmt: skip
    run = _client().get_run(run_id)
    assert _client().get_experiment(run.info.experiment_id).name == "crops"
    assert run.data.params["train.kimg"] == "1.5"
    assert run.data.params["train.profiles.tiny.batch"] == "8"
    assert run.data.params["train.metrics"] == '["rand"]'
    assert run.data.params["storage.endpoint"] == "http://***@minio:9000"
    assert "storage.secret_access_key" not in run.data.params and "note" not in run.data.params
    tags = run.data.tags
    assert tags["owner"] == "tests" and "leak" not in tags
    assert tags["phenexplain.crop_set"] == "crops"
    assert tags["phenexplain.crop_set_id"] == CropSet(tiny_crops).content_id
    assert tags["phenexplain.extractor.rand"] == "rand-123"
    dvc = yaml.safe_load((REPO / "data.dvc").read_text())
    assert tags["phenexplain.data_md5"] == dvc["outs"][0]["md5"]
    if (commit := git_commit(REPO)) is not None:
        assert tags["mlflow.source.git.commit"] == commit
    dump = json.dumps(run.to_dictionary())
    assert SECRET not in dump and "hunter22" not in dump


def test_run_records_only_the_profile_trained_and_the_crop_set_as_its_dataset(
    mlflow_server, tiny_crops
):
    train = load_params(REPO / "params.yaml").train
    assert train.profile == "cpu-small" and "paper256" in train.profiles
    run_id = start_training_run(f"profile-{uuid.uuid4().hex[:6]}",
                                training_params(train, crop_size=32), crop_set=tiny_crops)  # fmt: skip
    run = _client().get_run(run_id)
    profiles = {k.split(".")[1] for k in run.data.params if k.startswith("profiles.")}
    assert profiles == {"cpu-small"}
    assert run.data.params["profiles.cpu-small.channel_max"] == "32"
    assert run.data.params["profile"] == "cpu-small" and run.data.params["kimg"] == "60.0"
    auto = training_params(train.model_copy(update={"profile": "auto"}), crop_size=64)
    assert list(auto["profiles"]) == ["auto"] and auto["profiles"]["auto"]["batch"] == 32

    crops = CropSet(tiny_crops)
    (dataset_input,) = run.inputs.dataset_inputs
    dataset = dataset_input.dataset
    assert dataset.name == crops.root.name and dataset.digest == crops.content_id
    assert dataset.source_type == "local" and crops.root.name in dataset.source
    profile = json.loads(dataset.profile)
    assert profile["crops"] == len(crops) and sum(profile["crops_per_condition"].values()) == len(
        crops
    )
    assert {(t.key, t.value) for t in dataset_input.tags} == {("mlflow.data.context", "training")}


def _summary(verdicts: list[str]):
    """A report summary (`ReportSummary`) with one verdict row per entry of `verdicts`."""
    from phenexplain.report.build import ReportSummary

    table = [
        {"feature": f"assay{i}", "condition": "TNF", "d_real": 1.0 + i, "d_synthetic": -0.5,
         "ratio": -0.5 / (1.0 + i) if v != "not measurable" else float("nan"), "verdict": v}
        for i, v in enumerate(verdicts)
    ]  # fmt: skip
    return ReportSummary.model_validate({
        "provenance": {}, "fid_kid": {}, "latent": {},
        "verdict": {"table": table, "counts": {}, "headline": "", "crops_measured": {},
                    "crops_without_centre_cell": {}},
        "assays": {"statistics": [], "shift_correlation": [
            {"name": "all assays", "pearson_r": 0.25, "spearman_r": 0.5, "pairs": 3}]},
        "feature_shifts": {"pearson_r": 0.75, "spearman_r": float("nan"), "pairs": 40},
        "cnn": {"accuracy_mean": 0.875, "group_accuracy_mean": 0.9, "group": "well"},
    })  # fmt: skip


def test_validation_numbers_are_run_metrics(mlflow_server):
    summary = _summary(["wrong sign", "agrees", "deflated", "not measurable at 16 px", "agrees"])
    counts = VerdictCounts.from_table(summary.verdict.table)
    assert counts == VerdictCounts(rows=5, agree=2, deflated=1, wrong_sign=1, not_measurable=1)
    assert counts.disagree == 2 and VerdictCounts.from_tags(counts.tags()) == counts
    run_id = start_training_run(f"val-{uuid.uuid4().hex[:6]}", {"seed": 4})
    log_results(run_id, metrics=validation_metrics(summary))
    metrics = _client().get_run(run_id).data.metrics
    assert metrics["val.verdict.wrong_sign"] == 1 and metrics["val.verdict.agree"] == 2
    assert metrics["val.verdict.disagree"] == 2 and metrics["val.verdict.rows"] == 5
    assert metrics["val.verdict.not_measurable"] == 1 and metrics["val.verdict.inflated"] == 0
    assert metrics["val.d_real.assay1.TNF"] == 2.0 and metrics["val.d_synthetic.assay0.TNF"] == -0.5
    assert metrics["val.ratio.assay0.TNF"] == -0.5 and "val.ratio.assay3.TNF" in metrics
    assert metrics["val.assay_shift.pearson_r"] == 0.25
    assert metrics["val.feature_shift.pearson_r"] == 0.75
    assert "val.feature_shift.spearman_r" not in metrics  # NaN: not measured, not logged
    assert metrics["val.cnn.accuracy_mean"] == 0.875
    assert metrics["val.cnn.group_accuracy_mean"] == 0.9
    # runs sort by them, as in the UI
    ranked = _client().search_runs([_client().get_run(run_id).info.experiment_id],
                                   order_by=["metrics.`val.verdict.wrong_sign` ASC"])  # fmt: skip
    assert ranked[0].info.run_id == run_id


def test_callback_reports_a_real_training_run(mlflow_server, tiny_crops, tmp_path):
    torch.set_num_threads(1)
    trainer = Trainer(TrainingData(CropSet(tiny_crops), resolution=16, xflip=True), TINY, seed=1)
    run_id = start_training_run(f"train-{uuid.uuid4().hex[:6]}", {"seed": 1})
    callback = MlflowCallback(tmp_path, run_id, retry_interval=0)

    def evaluate(_trainer) -> dict:
        return {"fid_rand": 12.5, "kid_rand": 0.25, "extractor_rand": "rand-v1"}

    train(
        trainer, tmp_path, kimg=0.032, tick_kimg=0.008, snapshot_ticks=2, sample_seeds=2,
        callbacks=[RunFolderCallback(tmp_path), callback], evaluate=evaluate,
    )  # fmt: skip
    assert callback.finish()
    run = _client().get_run(run_id)
    assert run.info.status == "FINISHED"
    for key in ("Loss/G/loss", "Loss/D/loss", "img_per_s", "augment_p", "kimg", "tick"):
        assert _history(run_id, key) == [8, 16, 24, 32], key
    assert _history(run_id, "fid_rand") == [16, 32] == _history(run_id, "kid_rand")
    assert run.data.metrics["fid_rand"] == 12.5
    assert run.data.tags["phenexplain.extractor.rand"] == "rand-v1"
    names = [a.path for a in _client().list_artifacts(run_id, "samples")]
    assert names == ["samples/fakes_kimg0000.016.png", "samples/fakes_kimg0000.032.png"]
    got = _client().download_artifacts(run_id, names[-1], str(tmp_path / "dl"))
    local = tmp_path / "samples" / "fakes_kimg0000.032.png"
    assert np.array_equal(np.asarray(Image.open(got)), np.asarray(Image.open(local)))
    assert callback.outbox.pending() == []
    # the same grids as images with steps (the UI's slider), enlarged and labelled
    assert run.data.tags.get("mlflow.loggedImages") == "True"
    images = [a.path for a in _client().list_artifacts(run_id, "images")]
    pngs = sorted(p for p in images if p.endswith(".png"))
    assert [p.split("+")[:3] for p in pngs] == [["images/samples", "step", "16"],
                                                ["images/samples", "step", "32"]]  # fmt: skip
    assert len(images) == 4  # and their compressed copies
    shown = np.asarray(Image.open(_client().download_artifacts(run_id, pngs[-1], str(tmp_path))))
    grid = np.asarray(Image.open(local))
    assert shown.shape[0] > 2 * grid.shape[0] and shown.shape[1] > 2 * grid.shape[1]
    rows = CropSet(tiny_crops).conditions
    band = shown[24:, : shown.shape[1] - 6 * grid.shape[1]]  # left of the enlarged grid
    for row in np.array_split(band, len(rows)):  # each row's name: dark text on white
        assert (row.min(axis=-1) < 100).any()


def test_server_killed_mid_run_loses_and_duplicates_nothing(mlflow_server, tmp_path):
    run_id = start_training_run(f"outage-{uuid.uuid4().hex[:6]}", {"seed": 2})
    grid = np.arange(8 * 12 * 3, dtype=np.uint8).reshape(8, 12, 3)
    callback = MlflowCallback(tmp_path, run_id, retry_interval=0, probe_timeout=1)
    for tick in (1, 2):
        callback.on_tick(_stats(tick))
    assert callback.outbox.pending() == []

    mlflow_server.kill()
    start = time.monotonic()
    for tick in (3, 4):
        callback.on_tick(_stats(tick))
    callback.on_snapshot({**_stats(4), "fid_rand": 3.5, "extractor_rand": "r1"}, grid, tmp_path)
    assert not callback.finish()  # nothing raised, nothing sent, training went on
    assert time.monotonic() - start < 15
    assert len(callback.outbox.pending()) == 6  # 2 ticks, FID, extractor tag, grid, its image

    mlflow_server.start()
    resumed = MlflowCallback(tmp_path, retry_interval=0)  # a restarted process: run id on disk
    resumed.on_tick(_stats(5))
    assert resumed.finish()
    steps = [8, 16, 24, 32, 40]
    for key in ("Loss/G/loss", "img_per_s", "kimg"):
        assert _history(run_id, key) == steps, key
    assert _history(run_id, "fid_rand") == [32]
    assert _client().get_run(run_id).data.tags["phenexplain.extractor.rand"] == "r1"
    assert [a.path for a in _client().list_artifacts(run_id, "samples")] == [
        "samples/fakes_kimg0000.032.png"
    ]
    images = [a.path for a in _client().list_artifacts(run_id, "images")]
    assert len(images) == 2 and all(p.startswith("images/samples+step+32+") for p in images)

    # An acknowledgement lost on the way back: the ledger forgets, everything is sent again.
    (tmp_path / "mlflow-outbox" / "sent.jsonl").write_text("")
    assert flush_outbox(tmp_path)
    for key in ("Loss/G/loss", "img_per_s", "kimg"):
        assert _history(run_id, key) == steps, key
    assert _history(run_id, "fid_rand") == [32]
    assert [a.path for a in _client().list_artifacts(run_id, "images")] == images


def test_callback_without_any_server_never_raises(tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"
    callback = MlflowCallback(tmp_path, "0123abcd", uri=dead, retry_interval=60)
    start = time.monotonic()
    for tick in range(1, 4):
        callback.on_tick(_stats(tick))
    callback.on_snapshot(_stats(3), np.zeros((4, 4, 3), np.uint8), tmp_path)
    assert not callback.flush()
    assert time.monotonic() - start < 10
    assert len(callback.outbox.pending()) == 5
    files = sorted((tmp_path / "mlflow-outbox" / "files").rglob("*.png"))
    assert [f.name for f in files] == ["fakes_kimg0000.024.png", "labelled_fakes_kimg0000.024.png"]
    with pytest.raises(PhenexplainError, match="unsent records of MLflow run 0123abcd"):
        MlflowCallback(tmp_path, "another", uri=dead)
    with pytest.raises(PhenexplainError, match="no MLflow run recorded"):
        MlflowCallback(tmp_path / "elsewhere", uri=dead)


def test_callback_on_another_rank_reports_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    callback = MlflowCallback(tmp_path, "run-x", uri=f"http://127.0.0.1:{free_port()}")
    callback.on_tick(_stats(1))
    callback.on_snapshot(_stats(1), np.zeros((4, 4, 3), np.uint8), tmp_path)
    assert callback.finish() and not (tmp_path / "mlflow-outbox").exists()


def test_a_record_the_server_refuses_does_not_block_the_others(mlflow_server, tmp_path):
    run_id = start_training_run(f"refused-{uuid.uuid4().hex[:6]}", {"seed": 3})
    callback = MlflowCallback(tmp_path, run_id, retry_interval=0)
    callback.outbox.put("metrics", metrics=[["bad(key)", 1.0, int(time.time() * 1000), 1]])
    callback.on_tick({**_stats(1), "odd key (%)": 2.0})
    assert callback.finish() and callback.outbox.pending() == []
    assert _history(run_id, "Loss/G/loss") == [8] == _history(run_id, "odd key ___")


def test_encoder_train_track_logs_its_own_run(mlflow_server, tiny_checkpoint, tmp_path):
    """`encoder train --track`: a run in the experiment `encoders` with the losses of every step,
    the held-out scores, the generator it belongs to and the encoder folder as an artifact."""
    from tests.cli_inprocess import run_cli
    from tests.explain.test_encoder import _cropset_of

    ckpt, G = tiny_checkpoint(["DNA", "NFkB"], ("TNF", "control"), 16)
    crops = _cropset_of(G, tmp_path / "crops", 12, ["TNF", "control"])
    code, err = run_cli("encoder", "train", ckpt, crops, "--run-dir", tmp_path / "run", "--track",
                        "--synthetic-steps", "6", "--real-steps", "4", "--channels", "8")  # fmt: skip
    assert code == 0, err
    run_id = err.split("MLflow run ")[1].split(";")[0]
    run = _client().get_run(run_id)
    assert _client().get_experiment(run.info.experiment_id).name == "encoders"
    assert run.info.status == "FINISHED" and run.data.params["synthetic_steps"] == "6"
    assert (
        run.data.tags["phenexplain.generator_weights"]
        == json.loads((tmp_path / "run" / "encoder" / "encoder.json").read_text())["generator"][
            "weights_sha256"
        ]
    )
    assert _history(run_id, "loss_synthetic") == list(range(6))
    assert _history(run_id, "loss_real") == list(range(6, 10))
    assert run.data.metrics["crops"] == 2 and run.data.metrics["mean_psnr_db"] > 0
    assert "centroid_start.mean_psnr_db" in run.data.metrics
    files = {f.path for f in _client().list_artifacts(run_id, "encoder")}
    assert {"encoder/encoder.json", "encoder/weights.safetensors"} <= files
    # its pyfunc model translates real crops as `translate` does, and still renders traversals
    import io

    import mlflow
    import pandas as pd

    from phenexplain.explain.encoder import load_encoder
    from phenexplain.explain.translate import translate_batch

    model = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    crops = CropSet(crops)
    images = np.stack([crops[i][0] for i in range(3)])

    def npy(a: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        np.save(buffer, a, allow_pickle=False)
        return buffer.getvalue()

    request = pd.DataFrame({"image": [npy(x) for x in images], "source": ["TNF"] * 3,
                            "target": ["control"] * 3})  # fmt: skip
    out = model.predict(request)
    E, _ = load_encoder(tmp_path / "run" / "encoder", ckpt)
    expected = translate_batch(G, E, images, 0, [1])  # TNF is condition 0
    for i, pair in enumerate(out["images"]):
        np.testing.assert_array_equal(pair, expected[:, i])
    frames = model.predict(pd.DataFrame({"seed": [1], "source": ["TNF"], "target": ["control"],
                                         "method": [2], "steps": [2]}))  # fmt: skip
    assert frames["images"][0].shape == (3, 2, 16, 16)
    with pytest.raises(Exception, match="send one uint8 crop"):
        model.predict(request.assign(image=[npy(x.astype(np.float32)) for x in images]))
