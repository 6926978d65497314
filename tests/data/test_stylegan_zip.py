"""stylegan2-ada dataset zips: round trip, determinism and hostile archives."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from phenexplain.config import IngestParams
from phenexplain.data.cropset import CropSet
from phenexplain.data.ingest import ingest
from phenexplain.data.stylegan_zip import export_stylegan, import_stylegan
from phenexplain.errors import PhenexplainError


@pytest.fixture(scope="module")
def crops(plate_factory, tmp_path_factory):
    out = tmp_path_factory.mktemp("sg") / "crops"
    p = IngestParams(
        layout="manifest", channels=["DNA", "NFkB"], crop_size=32, min_images_per_condition=2
    )
    ingest(plate_factory("nfkb"), out, p)
    return out


def test_export_import_round_trip(crops, tmp_path):
    zpath = tmp_path / "ds.zip"
    n = export_stylegan(crops, zpath)
    original = CropSet(crops)
    assert n == len(original)
    with zipfile.ZipFile(zpath) as zf:
        labels = json.loads(zf.read("dataset.json"))["labels"]
        assert labels[0][0] == "00000/img00000000.png" and labels[0][1] == original[0][1]
    back = tmp_path / "back"
    import_stylegan(zpath, back, channels=["DNA", "NFkB"])
    imported = CropSet(back)
    assert imported.conditions == original.conditions and len(imported) == n
    assert imported.channels == ["DNA", "NFkB"]
    for i in (0, n // 2, n - 1):
        assert np.array_equal(imported[i][0], original[i][0]) and imported[i][1] == original[i][1]
    again = tmp_path / "again.zip"
    export_stylegan(crops, again)
    assert again.read_bytes() == zpath.read_bytes()


def _zip(path, members: dict[str, bytes], symlink: str | None = None):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = 0o120777 << 16
            zf.writestr(info, "/etc/passwd")


@pytest.mark.parametrize(
    ("members", "symlink", "message"),
    [
        ({"../evil.png": b"x", "dataset.json": b"{}"}, None, "escapes the archive"),
        ({"/abs.png": b"x", "dataset.json": b"{}"}, None, "escapes the archive"),
        ({"a.png": b"x", "dataset.json": b"{}"}, "link.png", "symbolic link"),
        ({"a.png": b"x", "dataset.json": b'{"labels": null}'}, None, "no labels"),
        (
            {"a.png": b"not a png", "dataset.json": b'{"labels": [["a.png", 0]]}'},
            None,
            "cannot decode",
        ),
    ],
)
def test_hostile_or_broken_archives_are_refused(tmp_path, members, symlink, message):
    zpath = tmp_path / "bad.zip"
    _zip(zpath, members, symlink)
    with pytest.raises(PhenexplainError, match=message):
        import_stylegan(zpath, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.zip"]
