"""The pyfunc model and the champion rule against a real MLflow server."""

from __future__ import annotations

import threading
import time
import uuid

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from phenexplain.config import ChampionParams
from phenexplain.generate import condition_vector
from phenexplain.integrations.mlflow_registry import champion_refusal
from phenexplain.integrations.mlflow_tracking import (
    VerdictCounts,
    log_and_register,
    promote_if_better,
    start_training_run,
    tracking_uri,
)
from phenexplain.nets.ops import to_uint8
from phenexplain.nets.sampling import seed_latent
from phenexplain.training.checkpoint import read_config

AGREES = VerdictCounts(rows=3, agree=2, not_measurable=1)  # validation that passes the rule
WRONG_SIGN = VerdictCounts(rows=3, agree=2, wrong_sign=1)


def _register(
    checkpoint, crop_set: str, fid: float, metric="fid_rand", extractor="rand-v1",
    verdicts: VerdictCounts | None = AGREES, rule: ChampionParams | None = None,
):  # fmt: skip
    run_id = start_training_run(crop_set, {"fid": fid})
    return log_and_register(
        checkpoint, run_id, crop_set, metric, fid, extractor, crop_set_id="cs-1",
        verdicts=verdicts, rule=rule, centroid_samples=64,
    )  # fmt: skip


def _champion(name: str) -> str:
    return MlflowClient(tracking_uri()).get_registered_model(name).aliases["champion"]


def test_champion_moves_only_to_a_lower_comparable_fid(mlflow_server, tiny_checkpoint):
    crop_set = f"champ-{uuid.uuid4().hex[:6]}"
    path, _ = tiny_checkpoint()
    first = _register(path, crop_set, 5.0)
    assert first.name == f"phenexplain-{crop_set}" and first.is_champion
    worse = _register(path, crop_set, 7.0)
    assert not worse.is_champion and _champion(first.name) == first.version
    better = _register(path, crop_set, 3.0)
    assert better.is_champion and _champion(first.name) == better.version
    other_metric = _register(path, crop_set, 1.0, metric="fid_inception", extractor="inc-v1")
    other_extractor = _register(path, crop_set, 1.0, extractor="rand-v2")
    assert not other_metric.is_champion and not other_extractor.is_champion
    assert _champion(first.name) == better.version

    client = MlflowClient(tracking_uri())
    tags = client.get_model_version(first.name, better.version).tags
    assert tags["phenexplain.fid"] == "3.0" and tags["phenexplain.fid_metric"] == "fid_rand"
    assert tags["phenexplain.extractor_id"] == "rand-v1"
    assert tags["phenexplain.crop_set_id"] == "cs-1"
    # A registrant that acted on a stale read and moved the alias to its worse version repairs
    # it when it checks again.
    client.set_registered_model_alias(first.name, "champion", worse.version)
    assert promote_if_better(client, first.name, worse.version) == better.version
    assert _champion(first.name) == better.version


def test_champion_rule_refuses_a_wrong_sign_verdict_whatever_its_fid(
    mlflow_server, tiny_checkpoint
):
    crop_set = f"verdict-{uuid.uuid4().hex[:6]}"
    path, _ = tiny_checkpoint()
    client = MlflowClient(tracking_uri())
    good = _register(path, crop_set, 5.0)
    assert good.is_champion and good.refused is None
    wrong = _register(path, crop_set, 0.1, verdicts=WRONG_SIGN)  # the best FID, the wrong biology
    assert not wrong.is_champion and _champion(good.name) == good.version
    assert "1 of 3 verdicts wrong sign" in wrong.refused
    tags = client.get_model_version(good.name, wrong.version).tags
    assert tags["phenexplain.champion_refused"] == wrong.refused
    assert (
        tags["phenexplain.verdict.wrong_sign"] == "1" and tags["phenexplain.verdict.agree"] == "2"
    )
    unvalidated = _register(path, crop_set, 0.2, verdicts=None)
    assert not unvalidated.is_champion and "without validation verdicts" in unvalidated.refused
    # a refused version stays refused when a later registration looks for the best one
    better = _register(path, crop_set, 3.0)
    assert better.is_champion and _champion(good.name) == better.version
    assert promote_if_better(client, good.name, wrong.version) == better.version

    # the rule is configurable: with no limit on wrong signs, the lowest FID wins again
    lenient = ChampionParams(max_wrong_sign=None)
    assert promote_if_better(client, good.name, wrong.version, rule=lenient) == wrong.version
    # a holder the rule refuses gives way to the best version it accepts
    assert promote_if_better(client, good.name, better.version) == better.version
    strict = ChampionParams(max_disagreeing=0, min_agreeing=3)
    refused = _register(path, crop_set, 0.05, rule=strict)
    assert not refused.is_champion and "fewer than registry.champion.min_agreeing = 3" in (
        refused.refused
    )
    assert _champion(good.name) == better.version


def test_champion_refusal_reads_the_verdict_tags_with_the_configured_limits():
    rule = ChampionParams()
    assert champion_refusal(AGREES.tags(), rule) is None
    assert "wrong sign" in champion_refusal(WRONG_SIGN.tags(), rule)
    assert "require_validation" in champion_refusal({}, rule)
    assert champion_refusal({}, ChampionParams(require_validation=False)) is None
    deflated = VerdictCounts(rows=4, agree=2, deflated=2).tags()
    assert champion_refusal(deflated, rule) is None  # no limit on disagreeing by default
    assert (
        champion_refusal(deflated, ChampionParams(max_disagreeing=1))
    ) == "2 of 4 verdicts disagreeing, more than registry.champion.max_disagreeing = 1"
    assert champion_refusal(WRONG_SIGN.tags(), ChampionParams(max_wrong_sign=1)) is None


def _race(checkpoint, crop_set: str, fids: tuple[float, float]) -> dict:
    """Register one model per FID from two threads released at the same instant."""
    run_ids = {fid: start_training_run(crop_set, {"fid": fid}) for fid in fids}
    barrier = threading.Barrier(len(fids))
    results, errors = {}, []

    def register(fid: float) -> None:
        try:
            barrier.wait(timeout=30)
            results[fid] = log_and_register(
                checkpoint, run_ids[fid], crop_set, "fid_rand", fid, "rand-v1",
                crop_set_id="cs-1", verdicts=AGREES, centroid_samples=64,
            )  # fmt: skip
        except Exception as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=register, args=(fid,)) for fid in fids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    return results


def test_racing_registrations_end_on_the_better_model(mlflow_server, tiny_checkpoint, monkeypatch):
    setter = MlflowClient.set_registered_model_alias

    def slow_setter(self, *args, **kwargs):  # widen each registrant's read -> write window
        time.sleep(0.2)
        return setter(self, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", slow_setter)
    path, _ = tiny_checkpoint()
    for _ in range(3):
        results = _race(path, f"race-{uuid.uuid4().hex[:6]}", (2.0, 1.0))
        assert _champion(results[1.0].name) == results[1.0].version != results[2.0].version


def test_champion_loads_and_renders_what_the_checkpoint_renders(mlflow_server, tiny_checkpoint):
    crop_set = f"serve-{uuid.uuid4().hex[:6]}"
    conditions = ["ctrl", "drug", "tnf"]
    path, G = tiny_checkpoint(channels=2, conditions=conditions, resolution=16, seed=3)
    _register(path, crop_set, 4.0)
    model = mlflow.pyfunc.load_model(f"models:/phenexplain-{crop_set}@champion")
    request = pd.DataFrame(
        {"seed": [3, 11, 5], "source": ["ctrl", "drug", "tnf"], "target": ["drug", "ctrl", "ctrl"],
         "method": [3, 2, 1], "steps": [4, 2, 3]}
    )  # fmt: skip
    out = model.predict(request)
    assert list(out["seed"]) == [3, 11, 5]

    def generated(seed: int, condition: str) -> np.ndarray:
        z, c = seed_latent(seed, G.z_dim), condition_vector(conditions, condition)
        return to_uint8(G(z, c, noise_mode="const", force_fp32=True))[0].numpy()

    for row, images in zip(request.itertuples(), out["images"], strict=True):
        assert images.dtype == np.uint8 and images.shape == (row.steps + 1, 2, 16, 16)
        np.testing.assert_array_equal(images[0], generated(row.seed, row.source))
        assert not np.array_equal(images[0], images[-1])
    np.testing.assert_array_equal(out["images"][0][-1], generated(3, "drug"))  # method 3 ends there

    served = model.unwrap_python_model().checkpoint
    assert read_config(served).networks == ["G_ema"]  # no D, no optimizer state
    assert [p.name.split("-")[0] for p in (served / "centroids").glob("*.npy")] == ["k64"]
    with pytest.raises(Exception, match="unknown condition 'mock'"):
        model.predict(request.assign(source="mock"))


def test_embedded_default_store_tracks_registers_and_serves(tmp_path, monkeypatch, tiny_checkpoint):
    """No server: SQLite and artifacts under ./mlruns, as on a fresh machine."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    path, _ = tiny_checkpoint()
    try:
        registration = _register(path, "local", 2.0)
        model = mlflow.pyfunc.load_model("models:/phenexplain-local@champion")
    finally:
        mlflow.set_tracking_uri(None)  # log_and_register pointed MLflow's global URI here
    assert registration.is_champion
    assert (tmp_path / "mlruns" / "mlflow.db").is_file()
    assert list((tmp_path / "mlruns" / "artifacts" / "local").rglob("MLmodel"))
    request = pd.DataFrame(
        {"seed": [1], "source": ["ctrl"], "target": ["drug"], "method": [3], "steps": [1]}
    )
    assert model.predict(request)["images"][0].shape == (2, 3, 8, 8)


def test_writes_a_sqlite_server_refused_for_racing_are_retried_and_other_errors_are_not():
    from mlflow.exceptions import MlflowException

    from phenexplain.integrations.mlflow_registry import retry_locked

    calls = []
    refusals = [
        "(sqlite3.OperationalError) database is locked",
        "(sqlite3.IntegrityError) UNIQUE constraint failed: registered_model_aliases.workspace, "
        "registered_model_aliases.name, registered_model_aliases.alias",
    ]

    def flaky(x):
        calls.append(x)
        if len(calls) <= len(refusals):
            raise MlflowException(refusals[len(calls) - 1])
        return x * 2

    assert retry_locked(flaky, 21) == 42 and calls == [21, 21, 21]

    def refused():
        calls.append("refused")
        raise MlflowException("RESOURCE_DOES_NOT_EXIST")

    with pytest.raises(MlflowException, match="RESOURCE_DOES_NOT_EXIST"):
        retry_locked(refused)
    assert calls.count("refused") == 1
