"""The napari reader plugin, loaded as napari loads it: npe2 reads the manifest, finds the reader
by the path and runs it (no napari, no GUI)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import npe2
import numpy as np
import pytest

import phenexplain
from phenexplain.data.cropset import CropSet
from phenexplain.data.ome_tiff import write_ome_tiff
from phenexplain.explain.jobs import traversal_video
from phenexplain.generate import generate_images

MANIFEST = Path(phenexplain.__file__).parent / "napari.yaml"


@pytest.fixture
def plugins(npe2pm):
    """npe2's plugin manager (discovery blocked) with phenexplain's manifest registered, as an
    installed phenexplain's `napari.manifest` entry point registers it."""
    npe2pm.register(str(MANIFEST))
    return npe2pm


def test_the_manifest_is_declared_and_shipped():
    project = tomllib.loads((Path(phenexplain.__file__).parents[1] / "pyproject.toml").read_text())
    assert project["project"]["entry-points"]["napari.manifest"] == {
        "phenexplain": "phenexplain:napari.yaml"
    }
    assert "napari.yaml" in project["tool"]["setuptools"]["package-data"]["phenexplain"]
    manifest = npe2.PluginManifest.from_file(MANIFEST)
    assert manifest.name == "phenexplain"
    (reader,) = manifest.contributions.readers
    assert reader.accepts_directories and "*.ome.tif" in reader.filename_patterns


def test_a_traversal_opens_as_a_layer_per_seed_and_target_split_per_channel(
    plugins, tmp_path, tiny_checkpoint
):
    ckpt, _ = tiny_checkpoint(channels=["DNA", "NFkB"], conditions=("a", "b", "c"))
    traversal_video(ckpt, tmp_path / "t.gif", source="a", targets=["b", "c"], seeds=[0, 5],
                    method=3, steps=3)  # fmt: skip
    path = tmp_path / "t.ome.tif"
    assert [r.command for r in plugins.iter_compatible_readers([str(path)])] == [
        "phenexplain.get_reader"
    ]
    layers, reader = npe2.read_get_reader([str(path)], stack=False)
    assert reader.command == "phenexplain.get_reader"
    assert len(layers) == 4
    data, kwargs, kind = layers[3]
    assert kind == "image" and data.shape == (4, 2, 8, 8) and data.dtype == np.uint8
    assert kwargs["channel_axis"] == 1
    assert kwargs["name"] == ["seed 5: a -> c DNA", "seed 5: a -> c NFkB"]
    meta = kwargs["metadata"]
    assert meta["channels"] == ["DNA", "NFkB"] and meta["axes"] == "TCYX"
    assert (meta["seed"], meta["source"], meta["target"], meta["method"]) == ("5", "a", "c", "3")
    assert "scale" not in kwargs  # no pixel size recorded: none claimed


def test_generated_images_and_pixel_sizes(plugins, tmp_path, tiny_checkpoint):
    ckpt, _ = tiny_checkpoint(channels=["DNA"], conditions=("ctrl", "drug"))
    (path,) = generate_images(ckpt, tmp_path / "gen", "drug", [7])
    ((data, kwargs, _),) = npe2.read([str(path)], stack=False)
    assert data.shape == (8, 8) and "channel_axis" not in kwargs  # one channel: no C axis
    assert kwargs["name"] == path.name.removesuffix(".ome.tif") + " DNA"
    assert kwargs["metadata"]["condition"] == "drug" and kwargs["metadata"]["seed"] == "7"
    sized = write_ome_tiff(tmp_path / "s.ome.tif", np.zeros((2, 3, 4, 4), np.uint16), "TCYX",
                           ["a", "b", "c"], pixel_size_um=0.5)  # fmt: skip
    ((data, kwargs, _),) = npe2.read([str(sized)], stack=False)
    assert data.shape == (2, 3, 4, 4) and kwargs["scale"] == [1.0, 0.5, 0.5]


def test_a_crop_set_opens_as_a_layer_per_condition_with_its_crops_ids(plugins, tiny_crops):
    crops = CropSet(tiny_crops)
    layers = npe2.read([str(tiny_crops)], stack=False, plugin_name="phenexplain")
    assert [layer[1]["metadata"]["condition"] for layer in layers] == sorted(crops.conditions)
    manifest = crops.manifest
    for data, kwargs, kind in layers:
        meta = kwargs["metadata"]
        rows = manifest[manifest["condition"] == meta["condition"]]
        assert kind == "image" and kwargs["channel_axis"] == 1
        assert data.shape == (len(rows), 2, 32, 32) and data.dtype == np.uint8
        assert kwargs["name"] == [f"{meta['condition']} DNA", f"{meta['condition']} NFkB"]
        assert meta["crop_id"] == rows["crop_id"].tolist()
        assert meta["well"] == rows["well"].tolist() and len(meta["plate"]) == len(rows)
        first = manifest.index.get_loc(rows.index[0])
        assert np.array_equal(data[0], crops[first][0])


def test_other_paths_are_left_to_other_plugins(plugins, tmp_path):
    (tmp_path / "x.tif").write_bytes(b"II*\x00")
    (tmp_path / "folder").mkdir()
    assert list(plugins.iter_compatible_readers([str(tmp_path / "x.tif")])) == []
    with pytest.raises(ValueError, match="refused"):
        npe2.read([str(tmp_path / "folder")], stack=False, plugin_name="phenexplain")
