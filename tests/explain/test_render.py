"""Traversal videos: one intensity mapping per video, every format readable by another library."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image
from typer.testing import CliRunner

from phenexplain.cli import app
from phenexplain.display import IntensityMapping, composite, default_colours
from phenexplain.errors import PhenexplainError
from phenexplain.explain import render
from phenexplain.explain.jobs import traversal_video
from phenexplain.explain.render import TraversalGrid, render_frames, write_video
from phenexplain.fsutil import user_cache


def _grid(levels=(40, 80, 160)) -> TraversalGrid:
    """Uniform frames of rising intensity: [T, 1 row, 2 cols, 2 channels, 8, 8]."""
    images = np.stack([np.full((1, 2, 2, 8, 8), v, np.uint8) for v in levels])
    return TraversalGrid(images, [0], ["ctrl", "drug"], [0.0, 0.5, 1.0], 3)


def _pixel(frame: np.ndarray, grid: TraversalGrid) -> np.ndarray:
    """The RGB value inside the image of row 0, column 0 of a rendered frame."""
    return frame[render.HEADER + 4, render.MARGIN + 4]


def test_one_intensity_mapping_for_all_frames():
    grid = _grid()
    mapping = IntensityMapping.fit(grid.images)
    frames = render_frames(grid, ["blue", "green"], mapping=mapping, scale=8)
    greens = [int(_pixel(f, grid)[1]) for f in frames]
    assert greens[0] < greens[1] < greens[2]  # brighter cells stay brighter: no per-frame stretch
    assert greens[0] == 0 and greens[2] == 255  # the stretch spans the whole video
    # the same values always map to the same colour, whatever frame they are in
    assert np.array_equal(composite(grid.images[1], ["blue", "green"], mapping)[0, 0, 4, 4],
                          _pixel(frames[1], grid))  # fmt: skip


def test_channel_views_and_colours():
    grid = _grid()
    one = render_frames(grid, ["blue", "green"], view="composite", scale=4)[0]
    split = render_frames(grid, ["blue", "green"], view="channels", scale=4)[0]
    assert split.shape[1] > 2.5 * one.shape[1] - 100  # composite + 2 channel panels per cell
    assert default_colours(["DNA", "NFkB"]) == ["blue", "green"]
    assert default_colours(["Tubulin", "Hoechst", "Actin"]) == ["green", "blue", "red"]
    assert default_colours(["x"]) == ["grey"]
    with pytest.raises(PhenexplainError, match="view"):
        render_frames(grid, ["blue", "green"], view="stereo")


@pytest.mark.parametrize("suffix", [".gif", ".mp4", ".png", ".tif", ""])
def test_every_format_opens_with_the_right_frames_and_size(tmp_path, tiny_checkpoint, suffix):
    ckpt, _ = tiny_checkpoint(channels=3, conditions=("a", "b", "c"))
    out = tmp_path / f"video{suffix}"
    info = traversal_video(ckpt, out, source="a", targets=["b", "c"], seeds=[0, 1], method=3,
                           steps=4, contrast="auto")  # fmt: skip
    w, h = info["size"]
    assert info["frames"] == 5
    if suffix == ".mp4":
        import imageio.v2 as iio

        reader = iio.get_reader(out, format="FFMPEG")
        assert reader.count_frames() == 5
        assert tuple(reader.get_meta_data()["size"]) == (w + w % 2, h + h % 2)
    elif suffix == ".tif":
        with tifffile.TiffFile(out) as tif:
            assert tif.is_imagej and len(tif.pages) == 5
            assert tif.series[0].shape == (5, h, w, 3)
    elif suffix == "":
        frames = sorted(out.glob("frame_*.png"))
        assert len(frames) == 5 and Image.open(frames[0]).size == (w, h)
    else:
        with Image.open(out) as im:
            assert im.n_frames == 5 and im.size == (w, h) and im.is_animated
            assert im.format == ("GIF" if suffix == ".gif" else "PNG")


def test_unknown_format_is_refused(tmp_path):
    with pytest.raises(PhenexplainError, match=r"\.gif"):
        write_video([np.zeros((4, 4, 3), np.uint8)], tmp_path / "x.avi")


def test_cli_traverse(tmp_path, tiny_checkpoint):
    ckpt, _ = tiny_checkpoint(channels=2, conditions=("ctrl", "drug"))
    out = tmp_path / "t.gif"
    result = CliRunner().invoke(app, ["traverse", str(ckpt), "--from", "ctrl", "--to", "drug",
                                      "--method", "2", "--centroid-samples", "500", "--steps",
                                      "3", "--seeds", "0-2", "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    with Image.open(out) as im:
        assert im.n_frames == 4
    assert list(user_cache("centroids").glob("k500-seed0-*.npy"))
    assert not (ckpt / "centroids").exists()  # the checkpoint is an input: never written
    bad = CliRunner().invoke(app, ["traverse", str(ckpt), "--from", "ctrl", "--to", "taxol",
                                   "--out", str(tmp_path / "u.gif")])  # fmt: skip
    assert bad.exit_code != 0 and "taxol" in str(bad.exception)


OME = "{http://www.openmicroscopy.org/Schemas/OME/2016-06}"


def test_raw_traversal_is_an_ome_tiff_of_named_channels_beside_the_video(tmp_path, tiny_checkpoint):
    """Read back by tifffile and the OME-XML alone: a TCYX series per seed and target, the
    generator's uint8 pixels (frame 0 the source image), channel names, no pixel size claimed."""
    from xml.etree import ElementTree

    from phenexplain.explain.jobs import Model, render_traversal

    ckpt, _ = tiny_checkpoint(channels=["DNA", "NFkB"], conditions=("a", "b", "c"))
    options = dict(source="a", targets=["b", "c"], seeds=[0, 1], method=3, steps=4)
    info = traversal_video(ckpt, tmp_path / "video.gif", **options)
    raw = tmp_path / "video.ome.tif"
    assert info["raw"] == str(raw) and (tmp_path / "video.gif").is_file()
    grid = render_traversal(Model.load(ckpt), **options).grid  # [T, seeds, columns, C, H, W]
    with tifffile.TiffFile(raw) as tif:
        assert tif.is_ome and not tif.is_imagej
        assert [s.axes for s in tif.series] == ["TCYX"] * 4
        assert [s.name for s in tif.series] == [f"seed {s}: a -> {t}" for s in (0, 1) for t in "bc"]
        last = tif.series[3].asarray()  # seed 1, a -> c
        ome = ElementTree.fromstring(tif.ome_metadata)
    assert last.shape == (5, 2, 8, 8) and last.dtype == np.uint8
    assert np.array_equal(last, grid.images[:, 1, 2])
    assert np.array_equal(last[0], grid.images[0, 1, 0])  # t = 0 is the source image
    pixels = ome.findall(f"{OME}Image/{OME}Pixels")
    assert len(pixels) == 4
    for p in pixels:
        assert [c.get("Name") for c in p.findall(f"{OME}Channel")] == ["DNA", "NFkB"]
        assert (p.get("SizeT"), p.get("SizeC"), p.get("SizeZ")) == ("5", "2", "1")
        assert p.get("PhysicalSizeX") is None
    annotations = {m.get("K"): m.text for m in ome.iter(f"{OME}M")}
    assert annotations["method"] == "3" and annotations["fractions"] == "0,0.25,0.5,0.75,1"


def test_an_ome_tif_out_gets_the_raw_channels_alone(tmp_path, tiny_checkpoint):
    ckpt, _ = tiny_checkpoint(channels=1, conditions=("a", "b"))
    out = tmp_path / "raw.ome.tif"
    info = traversal_video(ckpt, out, source="a", targets=["b"], seeds=[3], method=1, steps=2)
    assert info["raw"] == info["path"] == str(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-0", "raw.ome.tif"]
    with tifffile.TiffFile(out) as tif:
        (series,) = tif.series
        assert series.get_shape(False) == (3, 1, 1, 8, 8, 1)  # T, C, Z, Y, X, S: 3 steps, 1 channel
        assert series.name == "seed 3: a -> b"
