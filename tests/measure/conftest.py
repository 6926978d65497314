"""Crops of small synthetic plates, as arrays with their manifest, shared by the measure tests."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from phenexplain.config import IngestParams
from phenexplain.data.cropset import CropSet
from phenexplain.data.ingest import ingest
from phenexplain.data.synthetic import get_assay
from phenexplain.measure.crops import cropset_stains


@dataclass
class Crops:
    """uint8 crops [N, C, S, S], one manifest row per crop, channel names and their stains."""

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
            cache[key] = Crops(images, cs.manifest, cs.channels, cropset_stains(cs))
        return cache[key]

    return make
