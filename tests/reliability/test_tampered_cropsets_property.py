"""Property: a tampered crop set is refused with the project's error or gives correct results.

Random JSON edits, truncations and byte flips of every file of a tiny crop set, shape and dtype
changes of its shard and edits of its manifest's columns are fed to `CropSet`, `export_stylegan`
and a training of 0.01 kimg. Each either raises `PhenexplainError` (one line) or yields exactly the
crops the crop set was written with, each labelled with its condition's index in
``conditions.json``, never another exception.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from phenexplain.config import TrainParams
from phenexplain.data import cropset as cs
from phenexplain.data.cropset import CropSet
from phenexplain.data.ingest import ingest
from phenexplain.data.stylegan_zip import export_stylegan
from phenexplain.errors import PhenexplainError
from phenexplain.training.run import run_training
from tests.reliability.test_cropset_integrity import PARAMS, tiny_plate
from tests.training.conftest import TINY

TRAIN = TrainParams(
    profile="tiny", profiles={"tiny": TINY}, kimg=0.01, tick_kimg=0.01, snapshot_ticks=1,
    sample_seeds=1, metrics=[], threads=1,
)  # fmt: skip
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=5,
)  # fmt: skip


class Pristine:
    """A tiny crop set's folder and its crops by (shard, index); a short repr for reports."""

    def __init__(self, root: Path) -> None:
        self.root = root
        opened = CropSet(root)
        keys = zip(opened.manifest["shard"], opened.manifest["index"], strict=True)
        self.crops = {(s, int(i)): opened[k][0].copy() for k, (s, i) in enumerate(keys)}

    def __repr__(self) -> str:
        return f"Pristine({self.root})"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Pristine:
    root = tmp_path_factory.mktemp("pristine")
    ingest(tiny_plate(root / "plate", seed=5), root / "crops", PARAMS)
    return Pristine(root / "crops")


def _files(root: Path) -> list[Path]:
    return [
        root / cs.INFO,
        root / cs.CONDITIONS,
        root / cs.MANIFEST,
        *sorted((root / "images").glob("*.npy")),
    ]


def _json_paths(data, prefix=()) -> list[tuple]:
    """Every key path into nested dicts and lists (the root included)."""
    paths = [prefix]
    items = (
        data.items()
        if isinstance(data, dict)
        else enumerate(data)
        if isinstance(data, list)
        else []
    )
    for key, value in items:
        paths += _json_paths(value, (*prefix, key))
    return paths


def _edit_json(path: Path, draw) -> str:
    data = json.loads(path.read_text())
    where = draw(st.sampled_from(_json_paths(data)))
    if not where:
        data = draw(JSON_VALUES)
    else:
        parent = data
        for key in where[:-1]:
            parent = parent[key]
        if draw(st.booleans()):
            del parent[where[-1]]
        else:
            parent[where[-1]] = draw(JSON_VALUES)
    path.write_text(json.dumps(data))
    return f"json {path.name} {where}"


def _edit_shard(path: Path, draw) -> str:
    array = np.load(path)
    change = draw(st.sampled_from(["dtype", "drop", "add", "channels", "size", "ndim", "object"]))
    if change == "dtype":
        array = array.astype(draw(st.sampled_from([np.uint16, np.int8, np.float32, np.bool_])))
    elif change == "drop":
        array = array[1:]
    elif change == "add":
        array = np.concatenate([array, array[:1]])
    elif change == "channels":
        array = array[:, :1]
    elif change == "size":
        array = array[..., :8, :8]
    elif change == "ndim":
        array = array[0] if draw(st.booleans()) else array[None]
    else:
        array = np.array([None, "x"], dtype=object)
    np.save(path, array, allow_pickle=True)
    return f"shard {change}"


def _edit_manifest(path: Path, draw) -> str:
    df = pd.read_parquet(path)
    column = draw(st.sampled_from(list(df.columns)))
    op = draw(st.sampled_from(["drop", "set", "text", "swap", "delete", "duplicate"]))
    row = draw(st.integers(0, len(df) - 1))
    if op == "drop":
        df = df.drop(columns=column)
    elif op == "set":
        value = draw(st.integers(-(2**40), 2**40) | st.text(max_size=12) | st.none() | st.floats())
        df[column] = df[column].astype(object)
        df.loc[row, column] = value
    elif op == "text":
        df[column] = df[column].astype(str)
    elif op == "swap":
        other = draw(st.integers(0, len(df) - 1))
        df.iloc[[row, other]] = df.iloc[[other, row]].to_numpy()
    elif op == "delete":
        df = df.drop(index=row)
    else:
        df = pd.concat([df, df.iloc[[row]]], ignore_index=True)
    try:
        df.to_parquet(path, index=False)
    except (ValueError, TypeError, OverflowError, ArithmeticError, ImportError) as exc:
        event("manifest edit not writable as parquet")
        return f"manifest {op} {column}: unwritable ({type(exc).__name__})"
    return f"manifest {op} {column}"


def _tamper(root: Path, draw) -> str:
    path = draw(st.sampled_from(_files(root)))
    kind = draw(st.sampled_from(["truncate", "flip", "edit"]))
    data = path.read_bytes()
    if kind == "truncate":
        path.write_bytes(data[: draw(st.integers(0, max(len(data) - 1, 0)))])
        return f"truncate {path.name}"
    if kind == "flip":
        at = draw(st.integers(0, len(data) - 1))
        flipped = bytearray(data)
        flipped[at] ^= draw(st.integers(1, 255))
        path.write_bytes(bytes(flipped))
        return f"flip {path.name}"
    if path.suffix == ".json":
        return _edit_json(path, draw)
    if path.suffix == ".npy":
        return _edit_shard(path, draw)
    return _edit_manifest(path, draw)


def _check_correct(root: Path, crops: dict, out: Path) -> None:
    """The crop set as read gives the written crops, with consistent labels, to every reader."""
    opened = CropSet(root)
    conditions = opened.conditions
    assert sorted(conditions.values()) == list(range(len(conditions)))
    rows = opened.manifest
    assert set(rows["condition"]) == set(conditions)
    assert len(opened) == len(crops)
    for k in range(len(opened)):
        image, label = opened[k]
        assert np.array_equal(image, crops[(rows["shard"].iat[k], int(rows["index"].iat[k]))])
        assert label == conditions[rows["condition"].iat[k]]
    n = export_stylegan(root, out / "ds.zip")
    with zipfile.ZipFile(out / "ds.zip") as zf:
        labels = [label for _, label in json.loads(zf.read("dataset.json"))["labels"]]
    assert n == len(opened) and labels == list(opened.labels)
    progress = run_training(root, out / "run", TRAIN)
    assert progress.cur_nimg >= 10


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_tampered_crop_set_is_refused_or_read_correctly(pristine, data):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(shutil.copytree(pristine.root, Path(tmp) / "crops"))
        what = _tamper(root, data.draw)
        note(what)
        try:
            _check_correct(root, pristine.crops, Path(tmp))
        except PhenexplainError as exc:
            assert "\n" not in str(exc), (what, str(exc))
            event("refused")
        else:
            event("accepted")
