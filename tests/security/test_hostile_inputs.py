"""Hostile inputs against the code that reads files a user did not make.

Covered: stylegan2-ada snapshots (restricted unpickler), dataset zips (import without
extraction), images whose headers claim giant sizes, manifests and readers whose paths leave
their root, non-UTF-8 names and text. No code in the package reads tar archives, so there is no
tar case. Where the library does not yet refuse an input cleanly, the test states the wanted
behaviour and is marked ``xfail(strict=True)`` with the exception it raises today, so that a fix
turns it into an unexpected pass and the marker is removed.
"""

from __future__ import annotations

import csv
import io
import json
import os
import pickle
import subprocess
import sys
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch
from PIL import Image

from phenexplain.config import IngestParams
from phenexplain.data.images import UnreadableImageError, load_field
from phenexplain.data.ingest import ingest
from phenexplain.data.readers import StructureError, list_fields
from phenexplain.data.stylegan_zip import import_stylegan
from phenexplain.errors import PhenexplainError
from phenexplain.nets.convert import conditions_from_dataset_json, convert_snapshot
from phenexplain.nets.snapshot import UnsafeSnapshotError, read_snapshot

REPO = Path(__file__).resolve().parents[2]


# --- pickles -------------------------------------------------------------------------------


class _CreatesMarker:
    """Unpickling this object would create `marker` (through the builtin `open`)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


class _HiddenInStorage:
    """A payload inside bytes that the unpickler hands to an allowed tensor-storage loader."""

    def __init__(self, payload: bytes):
        self.payload = payload

    def __reduce__(self):
        return (torch.storage._load_from_bytes, (self.payload,))


class _ObjectScalar:
    """A numpy scalar of object dtype: numpy would unpickle its bytes."""

    def __reduce__(self):
        from numpy._core.multiarray import scalar

        return (scalar, (np.dtype("O"), b"\x00" * 8))


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_code_running_pickle_is_refused_at_every_protocol(tmp_path, protocol):
    marker = tmp_path / "marker"
    path = tmp_path / "snapshot.pkl"
    path.write_bytes(pickle.dumps({"G_ema": _CreatesMarker(marker)}, protocol=protocol))
    with pytest.raises(UnsafeSnapshotError, match="refusing to load"):
        read_snapshot(path)
    assert not marker.exists()


def test_payload_hidden_in_an_allowed_storage_loader_is_refused(tmp_path):
    marker = tmp_path / "marker"
    torch_archive = io.BytesIO()
    with zipfile.ZipFile(torch_archive, "w") as zf:  # torch.save's layout, with a hostile data.pkl
        zf.writestr("archive/data.pkl", pickle.dumps(_CreatesMarker(marker), protocol=2))
        zf.writestr("archive/version", "3\n")
        zf.writestr("archive/byteorder", "little")
    for payload in (pickle.dumps(_CreatesMarker(marker), protocol=2), torch_archive.getvalue()):
        path = tmp_path / "snapshot.pkl"
        path.write_bytes(pickle.dumps({"G_ema": _HiddenInStorage(payload)}))
        # refused by torch.load(weights_only=True), which the storage loader uses
        with pytest.raises(PhenexplainError, match="not a readable stylegan2-ada snapshot"):
            read_snapshot(path)
        assert not marker.exists()


def test_object_dtype_numpy_scalar_is_refused(tmp_path):
    path = tmp_path / "snapshot.pkl"
    path.write_bytes(pickle.dumps({"G_ema": _ObjectScalar()}))
    with pytest.raises(UnsafeSnapshotError, match="numpy scalar"):
        read_snapshot(path)


def test_cli_refuses_a_code_running_snapshot_in_one_line(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "snapshot.pkl"
    path.write_bytes(pickle.dumps({"G_ema": _CreatesMarker(marker)}))
    out = subprocess.run(
        [sys.executable, "-m", "phenexplain.cli", "convert-nvlabs", str(path), str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert out.returncode == 1
    assert "refusing to load" in out.stderr and "Traceback" not in out.stderr
    assert not marker.exists() and not (tmp_path / "o").exists()
    with pytest.raises(UnsafeSnapshotError):
        convert_snapshot(path, tmp_path / "o")
    assert not marker.exists() and not (tmp_path / "o").exists()


# --- zip archives --------------------------------------------------------------------------


def _png(value: int = 0) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8), value, np.uint8)).save(buffer, format="png")
    return buffer.getvalue()


def _labels(*names: str) -> bytes:
    return json.dumps({"labels": [[name, 0] for name in names]}).encode()


def _write_zip(path: Path, members: dict[str, bytes], symlinks: dict[str, str] | None = None):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o120777 << 16  # S_IFLNK: a symbolic link entry
            zf.writestr(info, target)


def _assert_nothing_written(tmp_path: Path, archive: Path) -> None:
    """Only the archive is in `tmp_path`: no output, no staging folder, no escaped file."""
    assert sorted(p.name for p in tmp_path.iterdir()) == [archive.name]
    assert not (tmp_path.parent / "escaped.png").exists()
    assert not Path("/tmp/escaped.png").exists()


@pytest.mark.parametrize(
    ("members", "symlinks"),
    [
        ({"../escaped.png": _png(), "dataset.json": _labels("../escaped.png")}, None),
        ({"a/../../escaped.png": _png(), "dataset.json": _labels("a/../../escaped.png")}, None),
        ({"/tmp/escaped.png": _png(), "dataset.json": _labels("/tmp/escaped.png")}, None),
        ({"..\\escaped.png": _png(), "dataset.json": _labels("..\\escaped.png")}, None),
        ({"C:/escaped.png": _png(), "dataset.json": _labels("C:/escaped.png")}, None),
        ({"a.png": _png(), "dataset.json": _labels("a.png")}, {"link.png": "/etc/passwd"}),
        ({"a.png": _png(), "dataset.json": _labels("a.png")}, {"dir/link": "../../.."}),
        ({"a.png": _png(), "dataset.json": _labels("../a.png")}, None),
    ],
    ids=[
        "dotdot",
        "nested-dotdot",
        "absolute",
        "backslash",
        "drive",
        "symlink",
        "dir-symlink",
        "label-escapes",
    ],
)
def test_escaping_zip_members_are_refused_and_nothing_is_written(tmp_path, members, symlinks):
    archive = tmp_path / "dataset.zip"
    _write_zip(archive, members, symlinks)
    with pytest.raises(PhenexplainError, match=r"escapes the archive|symbolic link"):
        import_stylegan(archive, tmp_path / "out")
    _assert_nothing_written(tmp_path, archive)


def _flip_a_pixel_byte(archive: Path) -> None:
    data = bytearray(archive.read_bytes())
    at = data.find(b"IDAT") + 6
    data[at] ^= 0xFF  # the member's CRC-32 no longer matches
    archive.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("members", "damage", "named"),
    [
        pytest.param(
            {"a.png": _png(), "dataset.json": b"{not json"},
            None,
            r"dataset\.json .* is not valid JSON",
            id="dataset-json-not-json",
        ),
        pytest.param(
            {"a.png": _png(), "dataset.json": b"[]"},
            None,
            r"dataset\.json .* holds a JSON array; it must be a JSON object",
            id="dataset-json-a-list",
        ),
        pytest.param(
            {"a.png": _png(), "dataset.json": b'{"labels": [["a.png"]]}'},
            None,
            r"dataset\.json .*labels\[0\] is \['a\.png'\]; each label must be \[file, class_index\]",
            id="label-without-class",
        ),
        pytest.param(
            {
                "a.png": _png(),
                "dataset.json": b'{"labels": [["a.png", 3]]}',
                "conditions.json": b'{"ctrl": 0}',
            },
            None,
            r"conditions\.json .* has no name for class\(es\) \[3\]",
            id="class-not-in-conditions",
        ),
        pytest.param(
            {"a.png": _png(), "dataset.json": _labels("a.png"), "conditions.json": b"[1]"},
            None,
            r"conditions\.json .* holds a JSON array; it must be a JSON object",
            id="conditions-json-a-list",
        ),
        pytest.param(
            {"a.png": _png(), "dataset.json": b'{"labels": [["a.png", true]]}'},
            None,
            r"dataset\.json .*labels\[0\] is \['a\.png', True\]",
            id="class-a-boolean",
        ),
        pytest.param(
            {
                "a.png": _png(),
                "dataset.json": _labels("a.png"),
                "conditions.json": b'{"ctrl": 0, "drug": 0}',
            },
            None,
            r"conditions\.json .*: 'ctrl' and 'drug' share class 0",
            id="conditions-share-a-class",
        ),
        pytest.param(
            {"a.png": _png(), "dataset.json": _labels("a.png")},
            _flip_a_pixel_byte,
            r"member 'a\.png' is damaged .*re-create or re-download",
            id="corrupt-member",
        ),
    ],
)
def test_malformed_archive_metadata_is_a_clear_error(tmp_path, members, damage, named):
    archive = tmp_path / "dataset.zip"
    _write_zip(archive, members)
    if damage is not None:
        damage(archive)
    with pytest.raises(PhenexplainError, match=named) as exc:
        import_stylegan(archive, tmp_path / "out")
    assert str(archive) in str(exc.value)
    _assert_nothing_written(tmp_path, archive)


@pytest.mark.parametrize(
    ("labels", "named"),
    [
        pytest.param([["a/x.png"]], r"labels\[0\] is \['a/x\.png'\]", id="label-without-class"),
        pytest.param(
            [["a/x.png", "zz"]], r"labels\[0\] is \['a/x\.png', 'zz'\]", id="class-not-a-number"
        ),
        pytest.param(5, "'labels' is a JSON number; it must be a list", id="labels-not-a-list"),
    ],
)
def test_malformed_dataset_json_for_condition_names_is_a_clear_error(tmp_path, labels, named):
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps({"labels": labels}))
    with pytest.raises(PhenexplainError, match=named) as exc:
        conditions_from_dataset_json(path)
    assert str(path) in str(exc.value)


# --- images with forged sizes --------------------------------------------------------------


def _forged_tiff(path: Path, width: int, height: int) -> Path:
    tifffile.imwrite(path, np.zeros((16, 16), np.uint16))
    with tifffile.TiffFile(path, mode="r+b") as tif:
        tif.pages[0].tags["ImageWidth"].overwrite(width)
        tif.pages[0].tags["ImageLength"].overwrite(height)
    return path


def _forged_png(path: Path, width: int, height: int) -> Path:
    import zlib

    Image.new("L", (16, 16)).save(path)
    data = bytearray(path.read_bytes())
    data[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")  # IHDR width, height
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")  # keep the chunk's CRC valid
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda p: _forged_tiff(p / "f.tif", 200_000, 200_000), id="tiff-40-gigapixel"),
        pytest.param(lambda p: _forged_tiff(p / "f.tif", 2**32 - 1, 1), id="tiff-max-width"),
        # 144 Mpx: over our limit (100) but under Pillow's own bomb error (179), so ours refuses it
        pytest.param(lambda p: _forged_png(p / "f.png", 12_000, 12_000), id="png-144-megapixel"),
    ],
)
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_forged_giant_headers_are_refused_before_allocating(tmp_path, make):
    path = make(tmp_path)
    tracemalloc.start()
    try:
        with pytest.raises(UnreadableImageError, match="over the limit") as exc:
            load_field((path,), 1, max_megapixels=100)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert str(path) in str(exc.value)
    assert peak < 16 * 2**20, f"{peak / 2**20:.0f} MiB allocated before refusing"


def test_one_forged_channel_file_refuses_the_field(tmp_path):
    good = tmp_path / "good.tif"
    tifffile.imwrite(good, np.zeros((16, 16), np.uint16))
    bomb = _forged_tiff(tmp_path / "bomb.tif", 100_000, 100_000)
    with pytest.raises(UnreadableImageError, match=r"bomb\.tif"):
        load_field((good, bomb), 2, max_megapixels=100)


# --- paths outside the root ----------------------------------------------------------------


def _manifest(root: Path, rows: list[list[str]]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "metadata.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["plate", "well", "site", "condition", "path_DNA"])
        writer.writerows(rows)
    return path


@pytest.mark.parametrize(
    "escape",
    ["../x.tif", "../../../../etc/passwd", "/etc/passwd", "sub/../../x.tif", "..", "a/./../../x"],
)
def test_manifest_paths_outside_the_root_are_refused(tmp_path, escape):
    (tmp_path / "x.tif").write_bytes(b"secret")
    manifest = _manifest(tmp_path / "plate", [["P1", "A01", "1", "ctrl", escape]])
    with pytest.raises(StructureError, match="points outside"):
        list_fields(manifest, "manifest", ["DNA"])


@pytest.mark.parametrize("escape", ["../../outside", "/etc"])
def test_bbbc021_path_names_outside_the_root_are_refused(tmp_path, escape):
    root = tmp_path / "bbbc021"
    root.mkdir()
    header = ["Image_Metadata_Plate_DAPI", "Image_Metadata_Well_DAPI", "Image_Metadata_Compound"]
    header += ["Image_Metadata_Concentration", "Image_FileName_DAPI", "Image_PathName_DAPI"]
    row = ["Week1_22123", "B02", "DMSO", "0", "B02_s1_w1.tif", escape]
    with (root / "BBBC021_v1_image.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows([header, row])
    with pytest.raises(StructureError, match="points outside"):
        list_fields(root, "bbbc021", ["DAPI"])


# --- non-UTF-8 names and text --------------------------------------------------------------


def _png_file(path: bytes, seed: int) -> None:
    pixels = (np.random.default_rng(seed).random((32, 32)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="png")
    with open(path, "wb") as fh:
        fh.write(buffer.getvalue())


def _folders_with_bytes_names(root: Path) -> Path:
    """ROOT/<condition>/*.png where half the file names are not valid UTF-8."""
    for c, condition in enumerate((b"ctrl", b"drug")):
        folder = os.fsencode(root) + b"/" + condition
        os.makedirs(folder)
        for i in range(4):
            name = b"\xff\xfe-%d.png" % i if i % 2 else b"ok-%d.png" % i
            _png_file(folder + b"/" + name, seed=10 * c + i)
    return root


def test_non_utf8_file_names_are_listed_and_decoded(tmp_path):
    root = _folders_with_bytes_names(tmp_path / "plate")
    records = list_fields(root, "folders", ["DNA"])
    assert len(records) == 8
    for record in records:
        field = load_field(record.files, 1)
        assert field.shape == (1, 32, 32)
        assert os.path.exists(os.fsencode(record.files[0]))  # the name maps back to the bytes


def test_ingest_of_non_utf8_file_names_records_them_escaped(tmp_path):
    root = _folders_with_bytes_names(tmp_path / "plate")
    params = IngestParams(
        layout="folders",
        channels=["DNA"],
        precropped=True,
        crop_size=32,
        min_images_per_condition=2,
        workers=1,
    )
    summary = ingest(root, tmp_path / "out", params)
    assert (summary.fields, summary.crops, summary.quarantined) == (8, 8, 0)
    files = set(pd.read_parquet(tmp_path / "out" / "manifest.parquet")["files"])
    assert {"ctrl/ok-0.png", "ctrl/\\xff\\xfe-1.png", "drug/\\xff\\xfe-3.png"} <= files
    # the fingerprint of the plate is stable: a second run changes nothing
    assert ingest(root, tmp_path / "out", params).plates_kept == ["plate"]


def test_names_that_collide_once_escaped_are_refused(tmp_path):
    folder = os.fsencode(tmp_path / "plate" / "ctrl")
    os.makedirs(folder)
    _png_file(folder + b"/\xff.png", seed=0)
    _png_file(folder + b"/\\xff.png", seed=1)  # a name that is literally backslash, x, f, f
    params = IngestParams(layout="folders", channels=["DNA"], precropped=True, crop_size=32)
    with pytest.raises(StructureError, match=r"two fields are both named 'ctrl/\\\\xff\.png'"):
        ingest(tmp_path / "plate", tmp_path / "out", params)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plate"]


def test_non_utf8_manifest_is_a_clear_error(tmp_path):
    (tmp_path / "metadata.csv").write_bytes(
        b"plate,well,site,condition,path_DNA\nP1,A01,1,contr\xf4le,a.tif\n"  # Latin-1 text
    )
    with pytest.raises(
        StructureError, match=r"metadata\.csv:2: not UTF-8 text .*save the file as UTF-8"
    ):
        list_fields(tmp_path, "manifest", ["DNA"])


def test_manifest_saved_with_a_byte_order_mark_is_read(tmp_path):
    (tmp_path / "a.tif").write_bytes(b"")
    (tmp_path / "metadata.csv").write_bytes(  # Excel's "CSV UTF-8"
        "plate,well,site,condition,path_DNA\nP1,A01,1,contrôle,a.tif\n".encode("utf-8-sig")
    )
    [record] = list_fields(tmp_path, "manifest", ["DNA"])
    assert (record.plate, record.condition) == ("P1", "contrôle")


def test_manifest_row_with_missing_cells_is_a_clear_error(tmp_path):
    (tmp_path / "metadata.csv").write_text("plate,well,site,condition,path_DNA\nP1,A01\n")
    with pytest.raises(
        PhenexplainError,
        match=r"metadata\.csv:2: the row ends before column\(s\) site, condition, path_DNA",
    ):
        list_fields(tmp_path, "manifest", ["DNA"])


def test_manifest_with_an_oversized_cell_is_a_clear_error(tmp_path):
    (tmp_path / "metadata.csv").write_text(
        "plate,well,site,condition,path_DNA\nP1,A01,1,ctrl," + "a" * 200_000 + "\n"
    )
    with pytest.raises(StructureError, match=r"metadata\.csv:2: unreadable CSV row .*field limit"):
        list_fields(tmp_path, "manifest", ["DNA"])
