"""The `cpu-small` profile learns the planted nfkb phenotype on this machine (slow: ~8 minutes).

Run with `make test-all`. Real 32 px crops of the TNF condition have a higher nucleus/cytoplasm
NFkB ratio than control crops; after training, generated TNF images must too, and the FID
(random-CNN features) must have fallen over training.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from phenexplain.config import IngestParams, load_params
from phenexplain.data.ingest import ingest
from phenexplain.data.nuclei import segment_nuclei
from phenexplain.measure.assays import nc_ratio
from phenexplain.nets.ops import to_uint8
from phenexplain.training.checkpoint import latest_checkpoint, load_network, read_config
from phenexplain.training.run import run_training
from tests.conftest import REPO


def centre_ratio(image: np.ndarray) -> float:
    """NFkB nucleus/cytoplasm ratio of the nucleus at the centre of a 2-channel crop [2, R, R]."""
    labels = segment_nuclei(image[0].astype(np.float32), smoothing=0.5, min_area=4, min_distance=2)
    centre = labels[labels.shape[0] // 2, labels.shape[1] // 2]
    return (
        float(nc_ratio(image[1].astype(np.float32), labels)[centre - 1]) if centre else float("nan")
    )


@pytest.mark.slow
@pytest.mark.timeout(3600)  # about 8 minutes of training on 2 free cores
def test_cpu_small_learns_the_nfkb_translocation(tmp_path):
    from phenexplain.data.synthetic import generate_plates

    params = load_params(REPO / "params.yaml")
    generate_plates(params.synth, tmp_path / "plate")
    ingest(tmp_path / "plate", tmp_path / "crops", IngestParams(**params.ingest.model_dump()))
    train = params.train.model_copy(update={"kimg": 24.0, "threads": 2})
    run_training(tmp_path / "crops", tmp_path / "run", train)
    ckpt = latest_checkpoint(tmp_path / "run")
    G, conditions = load_network(ckpt), read_config(ckpt)["conditions"]
    z = torch.randn(200, G.z_dim, generator=torch.Generator().manual_seed(1))
    medians = {}
    for k, name in enumerate(conditions):
        c = torch.nn.functional.one_hot(torch.full((200,), k), len(conditions)).float()
        with torch.no_grad():
            images = to_uint8(G(z, c, noise_mode="const", force_fp32=True)).numpy()
        medians[name] = np.nanmedian([centre_ratio(im) for im in images])
    assert medians["TNF"] > 1.3 * medians["control"], medians
    snapshots = [
        json.loads(line) for line in (tmp_path / "run" / "snapshots.jsonl").read_text().splitlines()
    ]
    assert snapshots[-1]["fid_rand"] < 0.5 * snapshots[0]["fid_rand"], snapshots
