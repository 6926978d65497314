"""Shared fixtures: small synthetic plates, generated once per session."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from phenexplain.config import IngestParams, SynthParams
from phenexplain.data.cropset import CropSet
from phenexplain.data.ingest import ingest
from phenexplain.data.synthetic import generate_plates, get_assay
from phenexplain.measure.crops import cropset_stains
from phenexplain.nets import Generator
from phenexplain.training.checkpoint import CheckpointMeta, save_checkpoint

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

REPO = Path(__file__).resolve().parents[1]


def write_small_params(source: Path, dest: Path) -> Path:
    """`source`'s params.yaml with every pipeline stage shrunk to run in about a minute on 2 cores
    (small plates, 0.1 kimg of a narrow cpu-small, tiny explain and report), written to `dest`."""
    import yaml

    p = yaml.safe_load(source.read_text())
    p["synth"].update(wells_per_condition=2, sites_per_well=2, height=256, width=320)
    p["ingest"].update(crop_size=32, min_images_per_condition=2)
    p["train"].update(kimg=0.1, tick_kimg=0.05, snapshot_ticks=1, metric_images=64, sample_seeds=2)
    p["train"]["profiles"]["cpu-small"].update(batch=8, channel_base=256, channel_max=32)
    p["explain"].update(seeds="0-1", steps=2, formats=["gif"], centroid_samples=500)
    p["report"].update(real_per_condition=20, synthetic_per_condition=20, cnn_epochs=1,
                       cnn_folds=2, grid_seeds=2, traversal_seeds=1, traversal_steps=2,
                       explorer_seeds=1, workers=1)  # fmt: skip
    dest.write_text(yaml.safe_dump(p, sort_keys=False))
    return dest


def small_spec(assay: str, **kw) -> SynthParams:
    """A plate small enough for a unit test: 512x640 fields."""
    base = dict(
        assay=assay,
        seed=7,
        plates=1,
        wells_per_condition=3,
        sites_per_well=3,
        height=512,
        width=640,
        cells_per_mpx=60.0,
        workers=2,
    )
    return SynthParams(**{**base, **kw})


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """Derived-data caches (FID extractors, statistics) go to a temporary folder, not ~/.cache."""
    os.environ["PHENEXPLAIN_CACHE"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(autouse=True)
def _no_leaked_module_stand_ins():
    """MLflow puts a stand-in object at ``sys.modules["dbutils"]`` while it runs a model's code
    (logging or loading a pyfunc model), then restores what it found. Two such calls that overlap
    in threads (the registry's race test) can leave the stand-in behind. It answers every
    attribute, ``__file__`` too, and hypothesis, which scans ``sys.modules`` for constants, then
    fails on it in a later test."""
    yield
    for name, module in list(sys.modules.items()):
        if type(module).__name__ == "MockDbutils":
            del sys.modules[name]


@pytest.fixture(scope="session")
def plate_factory(tmp_path_factory):
    """Generate (and cache for the session) a plate for a given assay and overrides."""
    cache: dict[tuple, Path] = {}

    def make(assay: str, **kw) -> Path:
        key = (assay, tuple(sorted(kw.items())))
        if key not in cache:
            out = tmp_path_factory.mktemp(f"plate-{assay}") / "plate"
            generate_plates(small_spec(assay, **kw), out)
            cache[key] = out
        return cache[key]

    return make


@pytest.fixture(scope="session")
def tiny_crops(plate_factory, tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny") / "crops"
    p = IngestParams(
        layout="manifest", channels=["DNA", "NFkB"], crop_size=32, min_images_per_condition=2
    )
    ingest(plate_factory("nfkb"), out, p)
    return out


@pytest.fixture
def tiny_checkpoint(tmp_path):
    """Factory: a checkpoint folder holding a small random G_ema -> (path, G in eval mode)."""
    return _tiny_checkpoint_factory(tmp_path)


@pytest.fixture(scope="module")
def tiny_checkpoint_module(tmp_path_factory):
    """`tiny_checkpoint` for module-scoped fixtures."""
    return _tiny_checkpoint_factory(tmp_path_factory.mktemp("ckpt"))


def _tiny_checkpoint_factory(tmp_path):
    """Factory behind `tiny_checkpoint`: each call writes a new checkpoint folder."""

    def make(
        channels: int | list[str] = 3,
        conditions=("ctrl", "drug"),
        resolution: int = 8,
        seed: int = 0,
    ):
        names = [f"c{i}" for i in range(channels)] if isinstance(channels, int) else channels
        channels = len(names)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            kw = dict(z_dim=8, c_dim=len(conditions), w_dim=8, img_resolution=resolution,
                      img_channels=channels, mapping_kwargs={"num_layers": 2},
                      synthesis_kwargs={"channel_base": 64, "channel_max": 8})  # fmt: skip
            G = Generator(**kw).eval()
        with torch.no_grad():  # a w_avg away from 0, so truncation has something to do
            G.mapping.w_avg.copy_(torch.linspace(-0.5, 0.5, kw["w_dim"]))
        path = tmp_path / f"ckpt-{len(list(tmp_path.glob('ckpt-*')))}"
        meta = CheckpointMeta(
            kwargs={"G_ema": kw}, conditions=list(conditions), channels=names, resolution=resolution
        )
        save_checkpoint(path, {"G_ema": G}, meta)
        return path, G

    return make


@dataclass
class Crops:
    """uint8 crops [N, C, S, S], one manifest row per crop, channel names and their stains."""

    root: Path  # the crop set folder
    images: np.ndarray
    manifest: pd.DataFrame
    channels: list[str]
    stains: dict[str, str]


@pytest.fixture(scope="session")
def assay_crops(plate_factory, tmp_path_factory):
    """Factory: (assay, crop size, plate overrides) -> `Crops`, ingested once per session."""
    cache: dict[tuple, Crops] = {}

    def make(assay: str, size: int = 64, **plate) -> Crops:
        key = (assay, size, tuple(sorted(plate.items())))
        if key not in cache:
            channels = [ch.name for ch in get_assay(assay).channels]
            out = tmp_path_factory.mktemp(f"crops-{assay}-{size}") / "crops"
            params = IngestParams(
                layout="manifest", channels=channels, crop_size=size, min_images_per_condition=2
            )
            ingest(plate_factory(assay, **plate), out, params)
            cs = CropSet(out)
            images = np.stack([cs[i][0] for i in range(len(cs))])
            cache[key] = Crops(out, images, cs.manifest, cs.channels, cropset_stains(cs))
        return cache[key]

    return make
