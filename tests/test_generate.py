"""`phenexplain generate`: the reference's seed -> z rule, uint8 conversion, file formats."""

from __future__ import annotations

from xml.etree import ElementTree

import numpy as np
import pytest
import tifffile
import torch

from phenexplain.errors import PhenexplainError
from phenexplain.fsutil import safe_name
from phenexplain.generate import generate_images, parse_seeds, to_uint8
from phenexplain.nets.sampling import seed_latent
from phenexplain.training.checkpoint import load_network, read_config

OME = "{http://www.openmicroscopy.org/Schemas/OME/2016-06}"


def test_seeds_give_the_reference_latents():
    assert parse_seeds("0-3,7") == [0, 1, 2, 3, 7]
    assert torch.equal(
        seed_latent(42, 5), torch.from_numpy(np.random.RandomState(42).randn(1, 5)).float()
    )
    with pytest.raises(PhenexplainError, match="bad seed"):
        parse_seeds("3-1")


@pytest.mark.parametrize("channels", [1, 2, 3, 5])
def test_images_match_the_generator_as_named_channels(tmp_path, tiny_checkpoint, channels):
    ckpt, G = tiny_checkpoint(channels)
    names = read_config(ckpt).channels
    paths = generate_images(ckpt, tmp_path / "out", "drug", [3, 4])
    assert [p.name for p in paths] == [f"{safe_name('drug')}_seed{s:04d}.ome.tif" for s in (3, 4)]
    with torch.no_grad():
        expected = to_uint8(G(seed_latent(3, 8), torch.tensor([[0.0, 1.0]]), noise_mode="const"))[0]
    with tifffile.TiffFile(paths[0]) as tif:  # tifffile's reader and the OME-XML, not our writer
        assert tif.is_ome and len(tif.series) == 1
        series = tif.series[0]
        assert series.axes == ("CYX" if channels > 1 else "YX")  # tifffile drops a lone C
        assert series.dtype == np.uint8
        assert np.array_equal(series.asarray().reshape(expected.shape), expected.numpy())
        pixels = ElementTree.fromstring(tif.ome_metadata).find(f"{OME}Image/{OME}Pixels")
    assert [c.get("Name") for c in pixels.findall(f"{OME}Channel")] == names
    assert (
        pixels.get("SizeC") == str(channels) and pixels.get("SizeZ") == pixels.get("SizeT") == "1"
    )
    assert pixels.get("PhysicalSizeX") is None  # the checkpoint knows none: none is claimed
    assert sorted(p.suffix for p in paths[0].parent.iterdir() if p.name[0] != ".") == [".tif"] * 2
    assert torch.equal(load_network(ckpt).mapping.w_avg, G.mapping.w_avg)


def test_unknown_condition_is_named(tmp_path, tiny_checkpoint):
    ckpt, _ = tiny_checkpoint(1)
    with pytest.raises(PhenexplainError, match=r"unknown condition 'taxol'.*ctrl"):
        generate_images(ckpt, tmp_path / "o", "taxol", [0])


def test_uint8_conversion_is_the_references():
    x = torch.tensor([[[[-1.0, 0.0, 1.0, 2.0]]]])
    assert to_uint8(x).tolist() == [[[[0, 128, 255, 255]]]]


def test_a_known_pixel_size_is_written_in_micrometres(tmp_path, tiny_checkpoint):
    import json

    ckpt, _ = tiny_checkpoint(2)
    meta = json.loads((ckpt / "checkpoint.json").read_text())
    (ckpt / "checkpoint.json").write_text(json.dumps({**meta, "pixel_size_um": 1.3}))
    (path,) = generate_images(ckpt, tmp_path / "out", "drug", [0])
    with tifffile.TiffFile(path) as tif:
        pixels = ElementTree.fromstring(tif.ome_metadata).find(f"{OME}Image/{OME}Pixels")
    assert float(pixels.get("PhysicalSizeX")) == float(pixels.get("PhysicalSizeY")) == 1.3
    assert pixels.get("PhysicalSizeXUnit") == "\u00b5m"
