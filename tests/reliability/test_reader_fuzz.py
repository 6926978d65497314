"""Fuzz of the image readers: corrupt TIFF and PNG bytes under a capped address space.

Hypothesis truncates, flips bytes in, and edits the headers of small valid files (including
giant claimed dimensions). A long-lived worker process, with ``RLIMIT_AS`` capped and nothing but
`phenexplain.data.images` imported, decodes each with `load_field`. Every input must either decode
into a well-formed field or raise `UnreadableImageError`: never another exception, a
`MemoryError`, or a crash of the process.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.conftest import REPO
from tests.reliability.capped import capped_env, preamble

ADDRESS_SPACE = 1536 * 2**20

WORKER = preamble(ADDRESS_SPACE) + textwrap.dedent(
    """
    import hashlib, json, logging, sys
    logging.getLogger("tifffile").setLevel(logging.CRITICAL)  # its warnings on every corrupt file
    from pathlib import Path
    from phenexplain.data.images import UnreadableImageError, load_field
    for line in sys.stdin:
        path, channels = line.rstrip("\\n").rsplit(" ", 1)
        try:
            array = load_field((Path(path),), int(channels))
            answer = {"kind": "ok", "shape": list(array.shape), "dtype": str(array.dtype),
                      "sha": hashlib.sha256(array.tobytes()).hexdigest()}
        except UnreadableImageError as exc:
            answer = {"kind": "UnreadableImageError", "message": str(exc)}
        except Exception as exc:  # MemoryError included: that is what the test reports
            answer = {"kind": type(exc).__name__, "message": str(exc)}
        print(json.dumps(answer), flush=True)
    """
)


def _valid_files() -> dict[str, tuple[bytes, str, int, np.ndarray]]:
    """name -> (file bytes, suffix, channels, the [C, H, W] pixels it holds)."""
    rng = np.random.default_rng(0)
    grey8 = rng.integers(0, 256, (24, 20), dtype=np.uint8)
    grey16 = rng.integers(0, 4096, (24, 20), dtype=np.uint16)
    rgb = rng.integers(0, 256, (16, 18, 3), dtype=np.uint8)
    out = {}
    for name, pixels, compression in (
        ("tif8", grey8, None), ("tif16", grey16, None), ("tif16-lzw", grey16, "lzw"),
        ("tif16-deflate", grey16, "zlib"), ("tif8-packbits", grey8, "packbits"),
        ("tif-rgb", rgb, None),
    ):  # fmt: skip
        buffer = io.BytesIO()
        tifffile.imwrite(buffer, pixels, compression=compression)
        out[name] = (buffer.getvalue(), ".tif", 3 if pixels.ndim == 3 else 1, pixels)
    for name, pixels in (("png8", grey8), ("png16", grey16), ("png-rgb", rgb)):
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="png")
        out[name] = (buffer.getvalue(), ".png", 3 if pixels.ndim == 3 else 1, pixels)
    return out


VALID = _valid_files()


def _chw(pixels: np.ndarray) -> np.ndarray:
    return pixels[None] if pixels.ndim == 2 else np.moveaxis(pixels, -1, 0)


def _tiff_set_dimensions(data: bytes, width: int, height: int) -> bytes:
    """`data` with the first page's ImageWidth and ImageLength rewritten in place."""
    raw = bytearray(data)
    page = tifffile.TiffFile(io.BytesIO(data)).pages[0]
    for tag, value in (("ImageWidth", width), ("ImageLength", height)):
        t = page.tags[tag]
        if t.dtype == 3:  # SHORT
            raw[t.valueoffset : t.valueoffset + 2] = struct.pack("<H", min(value, 65535))
        else:
            raw[t.valueoffset : t.valueoffset + 4] = struct.pack("<I", value)
    return bytes(raw)


def _png_set_dimensions(data: bytes, width: int, height: int, fix_crc: bool) -> bytes:
    """`data` with IHDR's width and height rewritten (and its CRC fixed when `fix_crc`)."""
    raw = bytearray(data)
    raw[16:24] = struct.pack(">II", width, height)
    if fix_crc:
        raw[29:33] = struct.pack(">I", zlib.crc32(bytes(raw[12:29])))
    return bytes(raw)


@st.composite
def corrupt_files(draw):
    """(name, corrupt bytes, suffix, channels, edit) from one of the valid files."""
    name = draw(st.sampled_from(sorted(VALID)))
    data, suffix, channels, _ = VALID[name]
    edit = draw(st.sampled_from(["none", "truncate", "flip", "header", "giant"]))
    raw = bytearray(data)
    if edit == "truncate":
        raw = raw[: draw(st.integers(0, len(raw) - 1))]
    elif edit == "flip":
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(raw) - 1))
            raw[i] ^= draw(st.integers(1, 255))
    elif edit == "header":  # arbitrary values over the first bytes: signature, IFD, IHDR
        start = draw(st.integers(0, min(len(raw), 200) - 1))
        patch = draw(st.binary(min_size=1, max_size=8))
        raw[start : start + len(patch)] = patch
    elif edit == "giant":
        side = st.sampled_from([0, 1, 46341, 65535, 100_000, 2**31 - 1, 2**32 - 1])
        width, height = draw(side), draw(side)
        if suffix == ".tif":
            raw = bytearray(_tiff_set_dimensions(data, width, height))
        else:
            raw = bytearray(_png_set_dimensions(data, width, height, draw(st.booleans())))
    return name, bytes(raw), suffix, channels, edit


@pytest.fixture(scope="module")
def worker():
    process = subprocess.Popen(
        [sys.executable, "-c", WORKER],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=capped_env(), cwd=REPO,
    )  # fmt: skip
    yield process
    process.stdin.close()
    process.wait(timeout=30)


def _decode(worker, path: Path, channels: int) -> dict:
    worker.stdin.write(f"{path} {channels}\n")
    worker.stdin.flush()
    line = worker.stdout.readline()
    assert line, f"the reader process died on {path} (exit code {worker.poll()})"
    return json.loads(line)


@settings(
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=corrupt_files())
def test_corrupt_images_decode_or_raise_unreadable(worker, tmp_path_factory, case):
    name, data, suffix, channels, edit = case
    path = tmp_path_factory.getbasetemp() / f"fuzz{suffix}"
    path.write_bytes(data)
    answer = _decode(worker, path, channels)
    assert answer["kind"] in ("ok", "UnreadableImageError"), (name, edit, answer)
    if answer["kind"] == "ok":
        assert answer["dtype"] in ("uint8", "uint16"), (name, edit, answer)
        assert answer["shape"][0] == channels and len(answer["shape"]) == 3, (name, edit, answer)
    if edit == "none":
        pixels = np.ascontiguousarray(_chw(VALID[name][3]))
        assert answer["kind"] == "ok" and answer["dtype"] == str(pixels.dtype)
        assert answer["sha"] == hashlib.sha256(pixels.tobytes()).hexdigest(), name


def test_giant_claimed_dimensions_are_refused_by_the_header_check(worker, tmp_path):
    """A claimed 65535 x 65535 image is refused from its header, in the worker's small space."""
    for name in ("tif16", "png8"):
        data, suffix, channels, _ = VALID[name]
        if suffix == ".tif":
            data = _tiff_set_dimensions(data, 65535, 65535)
        else:
            data = _png_set_dimensions(data, 65535, 65535, fix_crc=True)
        (tmp_path / f"giant{suffix}").write_bytes(data)
        answer = _decode(worker, tmp_path / f"giant{suffix}", channels)
        assert answer["kind"] == "UnreadableImageError", (name, answer)
        assert "65535" in answer["message"] or "exceeds limit" in answer["message"], answer
