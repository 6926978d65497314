"""Reading plates and dataset zips: bad or unusual input is read, quarantined or refused in one
clear line, never a traceback nor a silently wrong crop.

Covers: channel files of different bit depth, plates mixing bit depths, compressed and packed
12-bit TIFFs (common microscope output), very long plate ids, site numbers too large for a table,
and the stylegan2-ada zips that `import-stylegan` must refuse (non-square images, a file labelled
twice, duplicate member names).
"""

from __future__ import annotations

import csv
import io
import json
import struct
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from PIL import Image

from phenexplain.config import IngestParams
from phenexplain.data import cropset as cs
from phenexplain.data.images import UnreadableImageError, load_field
from phenexplain.data.ingest import ingest
from phenexplain.data.readers import StructureError, list_fields
from phenexplain.data.stylegan_zip import import_stylegan
from phenexplain.errors import PhenexplainError

SIZE = 96


def field_image(seed: int, dtype=np.uint16, size: int = SIZE) -> np.ndarray:
    """A [size, size] field with a dim background and five bright nuclei."""
    rng = np.random.default_rng(seed)
    top = np.iinfo(dtype).max
    image = rng.uniform(top / 60, top / 40, (size, size))
    yy, xx = np.mgrid[:size, :size]
    for cy, cx in rng.uniform(20, size - 20, (5, 2)):
        image += top / 2 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 50)
    return np.minimum(image, top).astype(dtype)


def write_manifest(root: Path, rows: list[dict]) -> Path:
    """`root/metadata.csv` for `rows` (plate, well, site, condition, path_<channel>...)."""
    root.mkdir(parents=True, exist_ok=True)
    with (root / "metadata.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


def tiny_plate(root: Path, *, plate="P1", sites=None, dtypes=None) -> Path:
    """Four one-channel fields (conditions a, a, b, b) as TIFFs, with a manifest."""
    sites = sites or [1, 1, 1, 1]
    dtypes = dtypes or [np.uint16] * 4
    rows = []
    for i, (site, dtype) in enumerate(zip(sites, dtypes, strict=True)):
        root.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(root / f"f{i}.tif", field_image(i, dtype))
        rows.append(
            {
                "plate": plate,
                "well": f"W{i}",
                "site": str(site),
                "condition": "ab"[i // 2],
                "path_DNA": f"f{i}.tif",
            }
        )
    return write_manifest(root, rows)


def params(**kw) -> IngestParams:
    base = dict(layout="manifest", channels=["DNA"], crop_size=32, min_images_per_condition=1)
    return IngestParams(**{**base, "workers": 1, **kw})


# --- bit depth -------------------------------------------------------------------------------


def test_channel_files_of_different_bit_depth_are_refused(tmp_path):
    tifffile.imwrite(tmp_path / "dna.tif", field_image(0, np.uint8))
    tifffile.imwrite(tmp_path / "nfkb.tif", field_image(1, np.uint16))
    with pytest.raises(UnreadableImageError, match="channel files differ in pixel type"):
        load_field((tmp_path / "dna.tif", tmp_path / "nfkb.tif"), 2)


def test_field_with_channels_of_different_bit_depth_is_quarantined(tmp_path):
    root = tmp_path / "src"
    root.mkdir()
    rows = []
    for i in range(4):
        dna_type = np.uint8 if i == 0 else np.uint16  # field 0: DNA exported at 8 bits
        tifffile.imwrite(root / f"d{i}.tif", field_image(i, dna_type))
        tifffile.imwrite(root / f"n{i}.tif", field_image(10 + i, np.uint16))
        rows.append(
            {
                "plate": "P1",
                "well": f"W{i}",
                "site": "1",
                "condition": "ab"[i // 2],
                "path_DNA": f"d{i}.tif",
                "path_NFkB": f"n{i}.tif",
            }
        )
    write_manifest(root, rows)
    summary = ingest(root, tmp_path / "out", params(channels=["DNA", "NFkB"]))
    quarantine = pd.read_csv(tmp_path / "out" / cs.QUARANTINE)
    assert summary.quarantined == 1
    assert quarantine["field_id"].tolist() == ["P1_W0_s1"]
    assert "channel files differ in pixel type" in quarantine["reasons"].iloc[0]


def test_plate_mixing_8_and_16_bit_fields_is_a_clear_error(tmp_path):
    root = tiny_plate(tmp_path / "src", dtypes=[np.uint16, np.uint8, np.uint16, np.uint16])
    with pytest.raises(StructureError, match=r"P1.*uint8.*uint16|P1.*uint16.*uint8") as caught:
        ingest(root, tmp_path / "out", params())
    assert "f1.tif" in str(caught.value)
    assert not (tmp_path / "out").exists()


# --- compressed and packed TIFFs -----------------------------------------------------------------


@pytest.fixture(scope="module")
def compressed(tmp_path_factory) -> dict[str, tuple[Path, np.ndarray]]:
    """One TIFF per compression microscopes write, with the pixels it was written from."""
    folder = tmp_path_factory.mktemp("compressed")
    out = {}
    for name, compression, dtype in (
        ("lzw", "lzw", np.uint16),
        ("deflate", "zlib", np.uint16),
        ("adobe-deflate", "adobe_deflate", np.uint16),
        ("packbits", "packbits", np.uint8),
        ("jpeg", "jpeg", np.uint8),
    ):
        pixels = field_image(3, dtype)
        path = folder / f"{name}.tif"
        tifffile.imwrite(path, pixels, compression=compression)
        out[name] = (path, pixels)
    path = folder / "lzw-predictor.tif"
    tifffile.imwrite(path, field_image(4), compression="lzw", predictor=True)
    out["lzw-predictor"] = (path, field_image(4))
    return out


@pytest.mark.parametrize(
    "name", ["lzw", "lzw-predictor", "deflate", "adobe-deflate", "packbits", "jpeg"]
)
def test_compressed_tiffs_are_read_with_their_pixels(compressed, name):
    path, pixels = compressed[name]
    array = load_field((path,), 1)
    assert array.shape == (1, *pixels.shape) and array.dtype == pixels.dtype
    if name == "jpeg":  # lossy: close, not equal
        assert np.abs(array[0].astype(int) - pixels).mean() < 3
    else:
        np.testing.assert_array_equal(array[0], pixels)


def _packed(values: np.ndarray, bits: int) -> bytes:
    """Rows of `values` packed MSB first at `bits` per sample, each row padded to a byte."""
    out = bytearray()
    for row in values:
        number, n = 0, 0
        for v in row:
            number, n = (number << bits) | int(v), n + bits
        number <<= -n % 8
        out += number.to_bytes((n + 7) // 8, "big")
    return bytes(out)


def packed_tiff(values: np.ndarray, bits: int) -> bytes:
    """A minimal little-endian grey TIFF storing `values` uncompressed at `bits` per sample."""
    height, width = values.shape
    data = _packed(values, bits)
    tags = [(256, width), (257, height), (258, bits), (259, 1), (262, 1), (273, None), (277, 1),
            (278, height), (279, len(data))]  # fmt: skip
    data_offset = 8 + 2 + 12 * len(tags) + 4
    ifd = struct.pack("<H", len(tags))
    for tag, value in tags:
        value = data_offset if value is None else value
        ifd += struct.pack("<HHII", tag, 4, 1, value)  # every value as one LONG
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + data


@pytest.mark.parametrize("bits", [12, 10, 14])
def test_packed_tiffs_are_read_as_16_bit(tmp_path, bits):
    values = np.random.default_rng(bits).integers(0, 2**bits, (21, 37), dtype=np.uint16)
    (tmp_path / "packed.tif").write_bytes(packed_tiff(values, bits))
    array = load_field((tmp_path / "packed.tif",), 1)
    assert array.dtype == np.uint16
    np.testing.assert_array_equal(array[0], values)


@pytest.mark.parametrize(
    "scheme",
    [7, 5, 8, 34925, 50000, 60000],
    ids=["jpeg", "lzw", "deflate", "lzma", "zstd", "unknown"],
)
def test_a_tiff_no_decoder_reads_is_quarantined_and_the_ingest_goes_on(tmp_path, scheme):
    """Raw pixels labelled with a compression scheme they were not written with."""
    root = tiny_plate(tmp_path / "src")
    raw = bytearray((root / "f0.tif").read_bytes())
    page = tifffile.TiffFile(io.BytesIO(bytes(raw))).pages[0]
    offset = page.tags["Compression"].valueoffset
    raw[offset : offset + 2] = struct.pack("<H", scheme)
    (root / "f0.tif").write_bytes(bytes(raw))
    summary = ingest(root, tmp_path / "out", params())
    quarantine = pd.read_csv(tmp_path / "out" / cs.QUARANTINE)
    assert summary.quarantined == 1 and summary.crops > 0
    assert quarantine["reasons"].iloc[0].startswith("unreadable:")


# --- ids and numbers from the readers ------------------------------------------------------------


def test_a_300_character_plate_id_is_ingested(tmp_path):
    plate = "Plate-" + "x" * 294
    root = tiny_plate(tmp_path / "src", plate=plate)
    summary = ingest(root, tmp_path / "out", params())
    assert summary.crops > 0
    manifest = pd.read_parquet(tmp_path / "out" / cs.MANIFEST)
    assert set(manifest["plate"]) == {plate}
    assert all(len(p.name) < 200 for p in (tmp_path / "out").rglob("*"))


@pytest.mark.parametrize("site", ["12345678901234567890123", "-3", "2147483648"])
def test_a_site_number_out_of_range_names_the_row(tmp_path, site):
    root = tiny_plate(tmp_path / "src", sites=[1, 2, site, 4])
    with pytest.raises(StructureError, match=rf"metadata.csv:4: site .*{site}"):
        list_fields(root, "manifest", ["DNA"])


def test_a_bbbc021_site_number_out_of_range_names_the_row(tmp_path):
    columns = ["Image_FileName_DAPI", "Image_PathName_DAPI", "Image_Metadata_Plate_DAPI",
               "Image_Metadata_Well_DAPI", "Image_Metadata_Compound",
               "Image_Metadata_Concentration"]  # fmt: skip
    name = "Week1_B02_s123456789012345678901234_w1.tif"
    with (tmp_path / "BBBC021_v1_image.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        writer.writerow([name, "Week1/P1", "P1", "B02", "DMSO", "0"])
    with pytest.raises(StructureError, match=r"BBBC021_v1_image.csv:2: site .*123456789"):
        list_fields(tmp_path, "bbbc021", ["DAPI"])


# --- import-stylegan refusals --------------------------------------------------------------------


def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (width, height), 7).save(buffer, format="png")
    return buffer.getvalue()


def _zip(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Duplicate name" is what we build
        with zipfile.ZipFile(path, "w") as zf:
            for name, data in members:
                zf.writestr(name, data)
    return path


def _labels(*pairs) -> bytes:
    return json.dumps({"labels": [list(p) for p in pairs]}).encode()


@pytest.mark.parametrize(
    ("members", "message"),
    [
        (
            [("a.png", _png(32, 32)), ("b.png", _png(32, 24)),
             ("dataset.json", _labels(("a.png", 0), ("b.png", 1)))],
            r"'b.png'.*32x24.*square",
        ),
        (
            [("a.png", _png(32, 32)), ("b.png", _png(32, 32)),
             ("dataset.json", _labels(("a.png", 0), ("b.png", 1), ("a.png", 1)))],
            r"'a.png'.*labelled twice",
        ),
        (
            [("a.png", _png(32, 32)), ("b.png", _png(32, 32)), ("a.png", _png(32, 32)),
             ("dataset.json", _labels(("a.png", 0), ("b.png", 1)))],
            r"'a.png'.*more than once",
        ),
        (
            [("a.png", _png(32, 32)), ("dataset.json", _labels(("a.png", 0))),
             ("dataset.json", _labels(("a.png", 1)))],
            r"'dataset.json'.*more than once",
        ),
    ],
    ids=["non-square", "labelled-twice", "duplicate-member", "duplicate-dataset-json"],
)  # fmt: skip
def test_import_stylegan_refuses_ambiguous_archives_naming_the_member(tmp_path, members, message):
    archive = _zip(tmp_path / "d.zip", members)
    with pytest.raises(PhenexplainError, match=message):
        import_stylegan(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()
