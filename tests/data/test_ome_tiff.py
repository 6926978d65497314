"""The OME-TIFF writer, read back by other readers: tifffile's OME parser, the OME-XML itself
(ElementTree) and PIL, which knows nothing of OME and sees the pages in file order."""

from __future__ import annotations

from xml.etree import ElementTree

import numpy as np
import pytest
import tifffile
from PIL import Image

from phenexplain.data.ome_tiff import Series, ome_path, write_ome_series, write_ome_tiff
from phenexplain.errors import PhenexplainError

OME = "{http://www.openmicroscopy.org/Schemas/OME/2016-06}"


def _pixels(path) -> list[ElementTree.Element]:
    with tifffile.TiffFile(path) as tif:
        return ElementTree.fromstring(tif.ome_metadata).findall(f"{OME}Image/{OME}Pixels")


def test_planes_lie_in_the_order_the_ome_xml_declares(tmp_path):
    """Bio-Formats (Fiji, CellProfiler) finds plane (t, c) by DimensionOrder: check that order
    against the pages as PIL reads them, so a channel is never shown as a time point."""
    rng = np.random.default_rng(0)
    stack = rng.integers(0, 2**16, (3, 2, 5, 7), dtype=np.uint16)  # [T, C, Y, X]
    path = write_ome_tiff(tmp_path / "s.ome.tif", stack, "TCYX", ["DNA", "Actin"],
                          pixel_size_um=0.65, name="cell", annotations={"seed": 4})  # fmt: skip
    (pixels,) = _pixels(path)
    order = pixels.get("DimensionOrder").replace("Z", "")  # Z is 1: where it sits is moot
    assert order == "XYCT" and pixels.get("Type") == "uint16"
    assert (pixels.get("SizeX"), pixels.get("SizeY"), pixels.get("SizeC"), pixels.get("SizeT")) == (
        "7",
        "5",
        "2",
        "3",
    )
    assert [c.get("Name") for c in pixels.findall(f"{OME}Channel")] == ["DNA", "Actin"]
    assert float(pixels.get("PhysicalSizeX")) == float(pixels.get("PhysicalSizeY")) == 0.65
    assert pixels.get("PhysicalSizeXUnit") == "µm"
    assert pixels.find(f"{OME}TiffData").get("PlaneCount") == "6"
    with Image.open(path) as im:
        assert im.n_frames == 6
        for page in range(6):  # XYCT: C varies fastest, then T
            im.seek(page)
            assert np.array_equal(np.asarray(im), stack[page // 2, page % 2])
    with tifffile.TiffFile(path) as tif:
        assert tif.series[0].name == "cell"
        assert (
            tifffile.xml2dict(tif.ome_metadata)["OME"]["StructuredAnnotations"]["MapAnnotation"][
                "Value"
            ]["M"]["value"]
            == 4
        )


def test_several_series_keep_their_own_planes_and_names(tmp_path):
    a = np.full((2, 1, 4, 4), 10, np.uint8)
    b = np.full((2, 1, 4, 4), 20, np.uint8)
    path = write_ome_series(tmp_path / "x.ome.tif", [Series(a, "TCYX", "a"), Series(b, "TCYX", "b")],
                            ["DNA"])  # fmt: skip
    assert [p.find(f"{OME}TiffData").get("IFD") for p in _pixels(path)] == ["0", "2"]
    with tifffile.TiffFile(path) as tif:
        assert [s.name for s in tif.series] == ["a", "b"]
        assert int(tif.series[1].asarray().max()) == 20
    # the same pixels give the same bytes (the UUID is a digest, not random): reruns compare equal
    again = write_ome_series(tmp_path / "y.ome.tif", [Series(a, "TCYX", "a"), Series(b, "TCYX", "b")],
                             ["DNA"])  # fmt: skip
    assert again.read_bytes() == path.read_bytes()


@pytest.mark.parametrize(
    ("array", "axes", "names", "message"),
    [
        (np.zeros((2, 4, 4), np.uint8), "CYX", ["DNA"], "2 channels"),
        (np.zeros((2, 4, 4), np.float32), "CYX", ["a", "b"], "uint8 or uint16"),
        (np.zeros((2, 4, 4), np.uint8), "ZYX", ["a", "b"], "CYX or TCYX"),
        (np.zeros((4, 4), np.uint8), "CYX", ["a"], "does not have axes"),
    ],
)
def test_bad_images_are_refused_and_nothing_is_written(tmp_path, array, axes, names, message):
    with pytest.raises(PhenexplainError, match=message):
        write_ome_tiff(tmp_path / "x.ome.tif", array, axes, names)
    assert list(tmp_path.iterdir()) == []


def test_names_and_pixel_sizes_are_checked(tmp_path):
    image = np.zeros((1, 4, 4), np.uint8)
    with pytest.raises(PhenexplainError, match=r"\.ome\.tif"):
        write_ome_tiff(tmp_path / "x.tif", image, "CYX", ["DNA"])
    with pytest.raises(PhenexplainError, match="positive"):
        write_ome_tiff(tmp_path / "x.ome.tif", image, "CYX", ["DNA"], pixel_size_um=0)
    assert [ome_path(p).name for p in ("v.gif", "v.ome.tif", "frames", "v.OME.TIFF")] == [
        "v.ome.tif",
        "v.ome.tif",
        "frames.ome.tif",
        "v.OME.TIFF",
    ]
