"""Bounded memory: small inputs that would decode (or generate) into gigabytes are refused first.

The zip imports run in a subprocess whose address space is capped with ``RLIMIT_AS``: the run must
end in the project's one-line error, never in a ``MemoryError`` or a killed process.
"""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from phenexplain.config import SynthParams, with_overrides
from phenexplain.errors import ConfigError
from tests.conftest import REPO
from tests.reliability.capped import capped_env, preamble

ADDRESS_SPACE = 2 * 2**30

IMPORT = preamble(ADDRESS_SPACE) + textwrap.dedent(
    """
    import sys
    from phenexplain.data.stylegan_zip import import_stylegan
    from phenexplain.errors import PhenexplainError
    try:
        import_stylegan(sys.argv[1], sys.argv[2])
    except PhenexplainError as exc:
        print("PhenexplainError:", exc)
        sys.exit(3)
    except MemoryError:
        print("MemoryError")
        sys.exit(4)
    print("imported")
    """
)


def _blank_png(mode: str, size: int) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (size, size)).save(buffer, format="png")
    return buffer.getvalue()


def _bomb(path: Path, png: bytes, count: int) -> Path:
    """A deflated zip of `count` copies of `png` with their labels: kilobytes on disk."""
    names = [f"00000/img{i:08d}.png" for i in range(count)]
    labels = "[" + ",".join(f'["{n}", {i % 2}]' for i, n in enumerate(names)) + "]"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in names:
            zf.writestr(name, png)
        zf.writestr("dataset.json", f'{{"labels": {labels}}}')
    return path


def _import_capped(archive: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", IMPORT, str(archive), str(out)],
        capture_output=True, text=True, timeout=300, env=capped_env(), cwd=REPO,
    )  # fmt: skip


def test_zip_of_giant_pngs_is_refused_by_the_crop_size_limit(tmp_path):
    """40 blank 4096x4096 RGBA PNGs: 2.7 GB of pixels from a zip of a few hundred kilobytes."""
    archive = _bomb(tmp_path / "bomb.zip", _blank_png("RGBA", 4096), 40)
    assert archive.stat().st_size < 2**20
    result = _import_capped(archive, tmp_path / "out")
    assert result.returncode == 3, result.stdout + result.stderr
    assert "00000/img00000000.png" in result.stdout and "4096x4096" in result.stdout
    assert "1024" in result.stdout  # the limit, named
    assert not (tmp_path / "out").exists()


def test_zip_over_the_total_pixel_budget_is_refused_before_decoding(tmp_path):
    """1100 blank 1024x1024 RGBA PNGs: each within the crop-size limit, 4.6 GB together."""
    archive = _bomb(tmp_path / "many.zip", _blank_png("RGBA", 1024), 1100)
    result = _import_capped(archive, tmp_path / "out")
    assert result.returncode == 3, result.stdout + result.stderr
    assert "GiB" in result.stdout and "1100 images" in result.stdout
    assert not (tmp_path / "out").exists()


def test_zip_within_the_budget_still_imports_under_the_cap(tmp_path):
    archive = _bomb(tmp_path / "ok.zip", _blank_png("RGB", 256), 64)
    result = _import_capped(archive, tmp_path / "out")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "out" / "cropset.json").is_file()


@pytest.mark.parametrize(
    ("key", "value"),
    [("height", 100_000), ("width", 100_000), ("plates", 10**6), ("wells_per_condition", 10**6),
     ("sites_per_well", 10**6), ("cells_per_mpx", 1e9)],
)  # fmt: skip
def test_synth_sizes_have_an_upper_bound_named_in_the_error(key, value):
    with pytest.raises(ConfigError, match=rf"{key}.*less than or equal to \d+"):
        with_overrides(SynthParams(), **{key: value})


def test_synth_cli_refuses_a_giant_field_in_one_line(tmp_path):
    cli = preamble(ADDRESS_SPACE) + "from phenexplain.cli import main; main()"
    result = subprocess.run(
        [sys.executable, "-c", cli, "synth", str(tmp_path / "p"), "--height", "100000",
         "--width", "100000", "--workers", "1"],
        capture_output=True, text=True, timeout=120, cwd=REPO, env=capped_env(),
    )  # fmt: skip
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "height" in result.stderr and "less than or equal to" in result.stderr
    assert not (tmp_path / "p").exists()
