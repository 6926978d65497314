"""On cpu-small models trained here (slow: 7 to 18 minutes each on 2 cores, depending on load):
the dose response grows with dose, and held-out crops are projected with a stated PSNR.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from phenexplain.config import IngestParams, load_params, with_overrides
from phenexplain.data.cropset import CropSet
from phenexplain.data.ingest import ingest
from phenexplain.data.synthetic import generate_plates
from phenexplain.explain.jobs import dose_job, project_job
from phenexplain.training.checkpoint import latest_checkpoint
from phenexplain.training.run import run_training
from tests.conftest import REPO, small_spec

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]  # trainings of minutes
PROJECTION_PSNR_DB = 20.0  # held-out 32 px crops, 400 steps in W+


def _train(tmp_path, assay: str, channels: list[str], kimg: float, seed: int, **plate):
    spec = small_spec(assay, seed=seed, height=512, width=640, **plate)
    generate_plates(spec, tmp_path / f"{assay}-plate")
    params = IngestParams(layout="manifest", channels=channels, crop_size=64)
    ingest(tmp_path / f"{assay}-plate", tmp_path / f"{assay}-crops", params)
    train = with_overrides(load_params(REPO / "params.yaml").train, kimg=kimg)
    run_training(tmp_path / f"{assay}-crops", tmp_path / f"{assay}-run", train)
    return latest_checkpoint(tmp_path / f"{assay}-run")


def test_dose_response_grows_with_dose(tmp_path):
    ckpt = _train(tmp_path, "dose", ["DNA", "Tubulin", "Actin"], 26.0, 5,
                  wells_per_condition=6, sites_per_well=4)  # fmt: skip
    summary = dose_job(ckpt, tmp_path / "dose", control="DMSO", n=1000)
    assert summary["doses"][0] == "cytoD_0.03uM" and summary["doses"][-1] == "cytoD_10uM"
    assert summary["spearman_rho_median_vs_dose"] > 0.8, json.dumps(summary, indent=1)


def test_projection_of_held_out_crops(tmp_path):
    ckpt = _train(tmp_path, "nfkb", ["DNA", "NFkB"], 26.0, 0, wells_per_condition=4,
                  sites_per_well=4)  # fmt: skip
    generate_plates(small_spec("nfkb", seed=99, wells_per_condition=1, sites_per_well=2),
                    tmp_path / "held-out")  # fmt: skip
    ingest(tmp_path / "held-out", tmp_path / "held-out-crops",
           IngestParams(layout="manifest", channels=["DNA", "NFkB"], crop_size=64))  # fmt: skip
    cs = CropSet(tmp_path / "held-out-crops")
    control = np.flatnonzero(cs.labels == cs.conditions["control"])[:8]
    crops = np.stack([cs[int(i)][0] for i in control])
    summary = project_job(ckpt, crops, tmp_path / "projected", source="control", target="TNF",
                          centroid_samples=10_000)  # fmt: skip
    assert summary["mean_psnr_db"] > PROJECTION_PSNR_DB, summary
