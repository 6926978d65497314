"""Property: whatever is done to a checkpoint's files (random JSON edits, truncations, byte flips,
tensors of other shapes), `read_config`, `load_network` and `generate` either give a correct
result or raise the project's error; never another exception."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from phenexplain.errors import PhenexplainError
from phenexplain.generate import generate_images
from phenexplain.nets import Generator
from phenexplain.training.checkpoint import CONFIG, WEIGHTS, load_network, read_config

SETTINGS = settings(max_examples=30, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats()
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)  # fmt: skip


@pytest.fixture(scope="module")
def pristine(tiny_checkpoint_module):
    path, _ = tiny_checkpoint_module(1, conditions=("ctrl", "drug"))
    return path


def _paths(value, prefix=()):
    """Every (key path) inside a JSON value, the root included."""
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*prefix, i))


def _replace(config, path, new):
    if not path:
        return new
    parent = config
    for key in path[:-1]:
        parent = parent[key]
    if new is _DELETE:
        del parent[path[-1]]
    else:
        parent[path[-1]] = new
    return config


_DELETE = object()


def _outcome(ckpt: Path, out: Path) -> None:
    """Each reader in turn: a correct result or a PhenexplainError."""
    try:
        config = read_config(ckpt)
    except PhenexplainError:
        return
    assert isinstance(config.conditions, list)
    try:
        G = load_network(ckpt)
    except PhenexplainError:
        return
    assert isinstance(G, Generator) and G.img_channels == len(config.channels)
    condition = config.conditions[0] if config.conditions else "ctrl"
    try:
        paths = generate_images(ckpt, out, condition, [0, 1])
    except PhenexplainError:
        return
    assert len(paths) == 2 and all(p.parent == out and p.is_file() for p in paths)


def _copy(pristine: Path, tmp: str) -> Path:
    return Path(shutil.copytree(pristine, Path(tmp) / "ckpt"))


@SETTINGS
@given(data=st.data())
def test_random_json_edits(pristine, data):
    config = json.loads((pristine / CONFIG).read_text())
    paths = list(_paths(config))
    edits = data.draw(st.lists(st.tuples(st.integers(0, 10**6), json_values | st.just(_DELETE)),
                               min_size=1, max_size=3))  # fmt: skip
    for index, new in edits:
        paths = list(_paths(config))
        path = paths[index % len(paths)]
        if not path and new is _DELETE:
            continue
        config = _replace(config, path, new)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = _copy(pristine, tmp)
        (ckpt / CONFIG).write_text(json.dumps(config))
        _outcome(ckpt, Path(tmp) / "out")


@SETTINGS
@given(name=st.sampled_from([CONFIG, WEIGHTS]), keep=st.floats(0, 1, exclude_max=True))
def test_truncations(pristine, name, keep):
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = _copy(pristine, tmp)
        data = (ckpt / name).read_bytes()
        (ckpt / name).write_bytes(data[: int(len(data) * keep)])
        _outcome(ckpt, Path(tmp) / "out")


@SETTINGS
@given(
    name=st.sampled_from([CONFIG, WEIGHTS]),
    flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)),
                   min_size=1, max_size=4),
)  # fmt: skip
def test_byte_flips(pristine, name, flips):
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = _copy(pristine, tmp)
        data = bytearray((ckpt / name).read_bytes())
        for where, mask in flips:
            data[int(len(data) * where)] ^= mask
        (ckpt / name).write_bytes(bytes(data))
        _outcome(ckpt, Path(tmp) / "out")


@SETTINGS
@given(
    index=st.integers(0, 10**6),
    shape=st.lists(st.integers(0, 9), max_size=4),
    dtype=st.sampled_from([torch.float32, torch.float16, torch.int64, torch.uint8]),
)
def test_tensors_of_other_shapes(pristine, index, shape, dtype):
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = _copy(pristine, tmp)
        tensors = load_file(str(ckpt / WEIGHTS))
        key = sorted(tensors)[index % len(tensors)]
        tensors[key] = torch.zeros(shape, dtype=dtype)
        save_file(tensors, str(ckpt / WEIGHTS))
        _outcome(ckpt, Path(tmp) / "out")
