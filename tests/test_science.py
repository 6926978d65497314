"""`phenexplain bench science`: a small-budget run of the command, its resume, and its targets."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from phenexplain.config import load_params
from phenexplain.errors import PhenexplainError
from phenexplain.science import TARGETS, result_rows, run_science
from tests.conftest import REPO, write_small_params


@pytest.fixture(scope="module")
def small_params(tmp_path_factory):
    path = write_small_params(REPO / "params.yaml", tmp_path_factory.mktemp("p") / "params.yaml")
    params = load_params(path)
    report = params.report.model_copy(update={"centroid_samples": 200, "dose_samples": 20})
    profiles = dict(params.train.profiles)
    profiles["fast-map"] = profiles["cpu-small"].model_copy(update={"map_lr": 0.1})
    train = params.train.model_copy(update={"profiles": profiles})
    return params.model_copy(update={"report": report, "train": train})


def test_science_runs_resumes_and_summarises(small_params, tmp_path):
    said: list[str] = []
    profiles = ["cpu-small", "fast-map@0.2"]  # side by side, on the same plates
    rows, md, png = run_science(tmp_path, small_params, assays=["nfkb", "dose"], seeds=1,
                                profiles=profiles, sites_per_well=1, say=said.append)  # fmt: skip
    assert md.is_file() and png.is_file() and png.stat().st_size > 1000
    text = (tmp_path / "results.jsonl").read_text()
    assert text == "".join(json.dumps(r, default=float) + "\n" for r in rows)
    lines = [json.loads(x) for x in text.splitlines()]
    ratio = [r for r in lines if r["assay"] == "nfkb" and r["feature"] == "log_nc_ratio"]
    assert [r["profile"] for r in ratio] == profiles
    assert ratio[0]["condition"] == "TNF" and ratio[0]["seed"] == 0
    assert 0.2 <= ratio[1]["kimg"] < 0.3  # its own budget
    assert ratio[0]["d_real"] == ratio[1]["d_real"]  # one plate, one crop sample
    assert sum(s == "nfkb: ingesting" for s in said) == 1
    assert {"d_real", "d_real_ci", "d_synthetic", "d_synthetic_ci", "ratio", "verdict", "fid_rand",
            "kimg", "training_minutes", "target", "target_met"} <= set(ratio[0])  # fmt: skip
    assert small_params.train.kimg <= ratio[0]["kimg"] < 2 * small_params.train.kimg
    assert ratio[0]["d_real_ci"][0] > 0  # the planted translocation, on real crops
    dose = [r for r in lines if r["feature"] == "dose_response"]
    assert len(dose) == 2 and -1 <= dose[0]["rho_w_distance"] <= 1
    assert np.isfinite(dose[0]["rho_cytoplasm_area_synthetic"])  # (32 px crops cut the cells)
    summary = md.read_text()
    assert all(f"| {p} | nfkb | log_nc_ratio | TNF | 1 |" in summary for p in profiles)
    assert "| fast-map@0.2 | nfkb | log_nc_ratio | |d_syn - d_real| <= 0.3 |" in summary
    # a second call re-trains nothing and gives the same rows
    record = tmp_path / "fast-map@0.2" / "nfkb" / "seed-0" / "science.json"
    assert json.loads(record.read_text())["profile_name"] == "fast-map"
    stamp = record.stat().st_mtime_ns
    again: list[str] = []
    rows2, _, _ = run_science(tmp_path, small_params, assays=["nfkb", "dose"], seeds=1,
                              profiles=profiles, sites_per_well=1, say=again.append)  # fmt: skip
    assert record.stat().st_mtime_ns == stamp
    assert sum("finished earlier" in s for s in again) == 4
    assert not any(": training (" in s for s in again) and any(": training (" in s for s in said)
    assert json.dumps(rows2, default=float) == json.dumps(rows, default=float)
    # a new seed on a plate of another size would compare unlike runs: refused before training
    with pytest.raises(PhenexplainError, match="other settings \\(sites_per_well\\)"):
        run_science(tmp_path, small_params, assays=["nfkb"], seeds=2, profiles=profiles,
                    sites_per_well=2, say=again.append)  # fmt: skip
    assert not (tmp_path / "cpu-small" / "nfkb" / "seed-1").exists()
    # --translate on finished runs: an encoder, the control crops translated and scored, once
    encoder = small_params.encoder.model_copy(
        update={"synthetic_steps": 20, "real_steps": 10, "channels": 16, "centroid_samples": 500}
    )
    fast = small_params.model_copy(update={"encoder": encoder})
    said = []
    run_science(tmp_path, fast, assays=["nfkb"], seeds=1, profiles=["cpu-small"],
                sites_per_well=1, translate=True, say=said.append)  # fmt: skip
    assert any("training an encoder" in s for s in said)
    lines = [json.loads(x) for x in (tmp_path / "translation.jsonl").read_text().splitlines()]
    nfkb = next(r for r in lines if r["feature"] == "log_nc_ratio")
    assert nfkb["source"] == "control" and nfkb["target"] == "TNF" and nfkb["d_real"] > 0
    assert {"d_vs_real_target", "d_vs_sources", "ratio", "r_translation", "nuclei_dice",
            "psnr_db", "held_out_psnr_db"} <= set(nfkb)  # fmt: skip
    assert "## Real-cell translation" in md.read_text()
    check = tmp_path / "cpu-small" / "nfkb" / "seed-0" / "translation.json"
    stamp = check.stat().st_mtime_ns
    run_science(tmp_path, fast, assays=["nfkb"], seeds=1, profiles=["cpu-small"],
                sites_per_well=1, translate=True, say=said.append)  # fmt: skip
    assert check.stat().st_mtime_ns == stamp


def test_unknown_assays_and_seeds_are_refused(small_params, tmp_path):
    with pytest.raises(PhenexplainError, match="unknown assay"):
        run_science(tmp_path, small_params, assays=["nfkbb"], seeds=1)
    with pytest.raises(PhenexplainError, match="at least 1"):
        run_science(tmp_path, small_params, assays=["nfkb"], seeds=0)
    with pytest.raises(PhenexplainError, match="unknown training profile 'nope'"):
        run_science(tmp_path, small_params, assays=["nfkb"], seeds=1, profiles=["nope"])
    for bad in ("plates", "../up"):
        with pytest.raises(PhenexplainError, match="cannot name a benchmark folder"):
            run_science(tmp_path, small_params, assays=["nfkb"], seeds=1, profiles=[bad])
    for bad in ("cpu-small@", "cpu-small@-1", "cpu-small@inf", "cpu-small@x"):
        with pytest.raises(PhenexplainError, match="positive kimg"):
            run_science(tmp_path, small_params, assays=["nfkb"], seeds=1, profiles=[bad])


def _row(feature, d_real, d_syn, verdict="agrees"):
    nan = float("nan")
    return {"feature": feature, "feature_name": feature, "cellprofiler_name": feature,
            "condition": "B", "d_real": d_real, "d_real_ci_low": d_real - 0.2,
            "d_real_ci_high": d_real + 0.2, "d_synthetic": d_syn, "d_synthetic_ci_low": nan,
            "d_synthetic_ci_high": nan, "ratio": d_syn / d_real, "ratio_ci_low": nan,
            "ratio_ci_high": nan, "verdict": verdict}  # fmt: skip


@pytest.mark.parametrize(
    ("assay", "row", "met", "inflated"),
    [
        ("nfkb", _row("log_nc_ratio", 2.9, 2.65), True, False),
        ("nfkb", _row("log_nc_ratio", 2.9, 2.5), False, False),
        ("golgi", _row("spot_count", 1.2, 1.7), True, False),  # ratio 1.42
        ("golgi", _row("spot_count", 1.2, 1.9), False, True),  # ratio 1.58: inflated too
        ("golgi", _row("spot_count", 1.2, -0.5), False, False),
        ("golgi", _row("spot_area", -0.9, -0.2), True, False),  # the sign is all it needs
        ("golgi", _row("spot_area", -0.9, 0.3, "not measurable at 32 px"), None, False),
        ("subtle", _row("nucleus_area", 0.4, 0.21), True, False),
        ("subtle", _row("nucleus_area", 0.4, 0.19), False, False),
        ("subtle", _row("nucleus_area", 0.4, -0.1), False, False),
    ],
)
def test_targets_have_known_answers(assay, row, met, inflated):
    record = {"profile": "p", "assay": assay, "seed": 0, "kimg": 1.0, "training_minutes": 1.0, "fid_rand": 0.1,
              "resolution": 32, "table": [row]}  # fmt: skip
    (out,) = result_rows(record)
    assert out["target_met"] is met and out["inflated_above_1_5"] is inflated
    assert {t.feature for t in TARGETS[assay]} >= {row["feature"]}


def test_dose_target_needs_both_rhos():
    record = {"profile": "p", "assay": "dose", "seed": 0, "kimg": 1.0, "training_minutes": 1.0, "fid_rand": 0.1,
              "resolution": 32, "table": [],
              "dose_response": {"rho_cytoplasm_area_real": -0.9, "rho_cytoplasm_area_synthetic": -0.85,
                                "rho_w_distance": 0.75}}  # fmt: skip
    (out,) = result_rows(record)
    assert out["target_met"] is False
    record["dose_response"]["rho_w_distance"] = 0.9
    assert result_rows(record)[0]["target_met"] is True
    assert np.isnan(pd.DataFrame([out]).get("ratio", pd.Series([np.nan])).iloc[0])
