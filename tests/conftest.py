"""Shared fixtures: small synthetic plates, generated once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from phenexplain.config import IngestParams, SynthParams
from phenexplain.data.ingest import ingest
from phenexplain.data.synthetic import generate_plates

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

REPO = Path(__file__).resolve().parents[1]


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
