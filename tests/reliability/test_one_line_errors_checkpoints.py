"""Tampered checkpoints and snapshots, bad params files and bad serve addresses end in one clear
line (exit 1), never a traceback; user text in that line is printed as typed, not as markup; and
nothing is allocated from constructor arguments before they are checked."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.cli_inprocess import one_line_error, run_cli
from tests.conftest import REPO
from tests.nets.snapshot_factory import EasyDict, snapshot_bytes

# --- tampered checkpoints ------------------------------------------------------------------------


def _edit(path: Path, change) -> None:
    config = json.loads((path / "checkpoint.json").read_text())
    change(config)
    (path / "checkpoint.json").write_text(json.dumps(config))


def _kw(key, value):
    def change(config):
        config["kwargs"]["G_ema"][key] = value

    return change


def _set(key, value):
    def change(config):
        config[key] = value

    return change


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def _weights(path: Path, data: bytes | None) -> None:
    if data is None:
        (path / "weights.safetensors").unlink()
    else:
        (path / "weights.safetensors").write_bytes(data)


def _reshaped(path: Path) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path / "weights.safetensors"))
    key = next(k for k in tensors if k.endswith("fc0.weight"))
    tensors[key] = torch.zeros([3, 3])
    save_file(tensors, str(path / "weights.safetensors"))


def _dropped(path: Path) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path / "weights.safetensors"))
    tensors.pop(next(k for k in tensors if k.endswith("fc0.bias")))
    save_file(tensors, str(path / "weights.safetensors"))


def _truncate(name: str, keep: float):
    def damage(path: Path) -> None:
        data = (path / name).read_bytes()
        (path / name).write_bytes(data[: int(len(data) * keep)])

    return damage


def _json_text(text: str | bytes):
    def damage(path: Path) -> None:
        data = text.encode() if isinstance(text, str) else text
        (path / "checkpoint.json").write_bytes(data)

    return damage


def _as_folder(name: str):
    def damage(path: Path) -> None:
        (path / name).unlink()
        (path / name).mkdir()

    return damage


def _edited(change):
    return lambda path: _edit(path, change)


TAMPERED = {
    "config missing": lambda p: (p / "checkpoint.json").unlink(),
    "config garbage": _json_text(b"\x89PNG\r\n\x1a\n\x00\xff"),
    "config truncated": _truncate("checkpoint.json", 0.5),
    "config a list": _json_text("[1, 2]"),
    "config a folder": _as_folder("checkpoint.json"),
    "config nested 30000 deep": _json_text('{"format_version": 1, "x": ' + _nested(30000) + "}"),
    "kwargs nested 30000 deep": _edited(_kw("mapping_kwargs", "@@")),  # replaced below
    "format version a string": _edited(_set("format_version", "1")),
    "networks missing": _edited(lambda c: c.pop("networks")),
    "networks not a list": _edited(_set("networks", "G_ema")),
    "unknown network name": _edited(_set("networks", ["G_ema", "__class__"])),
    "network without kwargs": _edited(lambda c: c["kwargs"].pop("G_ema")),
    "kwargs not a mapping": _edited(lambda c: c["kwargs"].update(G_ema="z_dim=8")),
    "kwarg of the wrong type": _edited(_kw("z_dim", "8")),
    "unknown kwarg": _edited(_kw("fused", True)),
    "z_dim 10**9": _edited(_kw("z_dim", 10**9)),
    "resolution not a power of two": _edited(_kw("img_resolution", 12)),
    "resolution 0": _edited(_kw("img_resolution", 0)),
    "mapping layers 10**6": _edited(_kw("mapping_kwargs", {"num_layers": 10**6})),
    "channel_max 10**6": _edited(
        _kw("synthesis_kwargs", {"channel_base": 10**7, "channel_max": 10**6})
    ),
    "conditions missing": _edited(lambda c: c.pop("conditions")),
    "conditions a string": _edited(_set("conditions", "ctrl,drug")),
    "conditions not strings": _edited(_set("conditions", [1, 2])),
    "duplicate conditions": _edited(_set("conditions", ["ctrl", "ctrl"])),
    "c_dim != conditions": _edited(_set("conditions", ["ctrl", "drug", "third"])),
    "channels != img_channels": _edited(_set("channels", ["DNA", "NFkB"])),
    "weights missing": lambda p: _weights(p, None),
    "weights garbage": lambda p: _weights(p, b"\xff" * 64),
    "weights truncated": _truncate("weights.safetensors", 0.7),
    "weights a folder": _as_folder("weights.safetensors"),
    "tensor of another shape": _reshaped,
    "tensor missing": _dropped,
}


def _deep_kwargs(path: Path) -> None:
    text = (path / "checkpoint.json").read_text().replace('"@@"', _nested(30000))
    (path / "checkpoint.json").write_text(text)


def _tamper(path: Path, name: str) -> None:
    TAMPERED[name](path)
    if name == "kwargs nested 30000 deep":
        _deep_kwargs(path)


@pytest.mark.parametrize("name", list(TAMPERED))
def test_tampered_checkpoint_is_one_line_error(tmp_path, tiny_checkpoint, name):
    ckpt, _ = tiny_checkpoint(1)
    _tamper(ckpt, name)
    message = one_line_error(
        *run_cli("generate", ckpt, tmp_path / "out", "--condition", "ctrl", "--seeds", "0")
    )
    assert str(ckpt) in message
    assert not (tmp_path / "out").exists()


def test_checkpoint_whose_network_would_not_fit_in_memory_is_refused(tmp_path, tiny_checkpoint):
    """Every kwarg in bounds, but the network would have billions of parameters."""
    ckpt, _ = tiny_checkpoint(1)

    def huge(config):
        config["resolution"] = 2048
        config["kwargs"]["G_ema"].update(
            img_resolution=2048, synthesis_kwargs={"channel_base": 2**20, "channel_max": 2048}
        )

    _edit(ckpt, huge)
    code, stderr = _limited_cli("generate", ckpt, tmp_path / "o", "--condition", "ctrl")
    assert "parameters" in one_line_error(code, stderr)


def _limited_cli(*args, limit_gb: int = 3) -> tuple[int, str]:
    """The console script in a process that may not map more than `limit_gb` GB."""
    code = (
        "import resource, sys; "
        f"resource.setrlimit(resource.RLIMIT_AS, ({limit_gb} << 30, {limit_gb} << 30)); "
        "from phenexplain.cli import main; sys.argv = ['phenexplain', *sys.argv[1:]]; main()"
    )
    result = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True,
                            text=True, timeout=300, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    return result.returncode, result.stderr


# --- convert-nvlabs ------------------------------------------------------------------------------


def _snapshot(tmp_path: Path, g_changes: dict | None = None, nan: bool = False) -> Path:
    from phenexplain.nets import Generator

    kw = dict(z_dim=8, c_dim=2, w_dim=8, img_resolution=8, img_channels=1,
              mapping_kwargs={"num_layers": 2},
              synthesis_kwargs={"channel_base": 64, "channel_max": 8})  # fmt: skip
    G = Generator(**kw)
    if nan:
        with torch.no_grad():
            G.mapping.fc0.weight[0, 0] = float("nan")
    pickled = {**kw, "mapping_kwargs": EasyDict(kw["mapping_kwargs"]),
               "synthesis_kwargs": EasyDict(kw["synthesis_kwargs"]), **(g_changes or {})}  # fmt: skip
    path = tmp_path / "network-snapshot-000000.pkl"
    path.write_bytes(snapshot_bytes({"G_ema": (G, pickled)}, "raise SystemExit\n"))
    return path


@pytest.mark.parametrize(
    "changes",
    [{"z_dim": 10**9}, {"w_dim": 10**9}, {"c_dim": 10**9}, {"img_channels": 10**6},
     {"img_resolution": 2**40}, {"mapping_kwargs": EasyDict(num_layers=10**7)},
     {"synthesis_kwargs": EasyDict(channel_base=2**40, channel_max=2**30)}, {"z_dim": -1},
     {"z_dim": 8.5}, {"surprise": 1}],
    ids=lambda c: ascii(c)[:40],
)  # fmt: skip
def test_convert_checks_kwargs_before_allocating(tmp_path, changes):
    snapshot = _snapshot(tmp_path, changes)
    code, stderr = _limited_cli("convert-nvlabs", snapshot, tmp_path / "ckpt")
    assert str(snapshot) in one_line_error(code, stderr)
    assert not (tmp_path / "ckpt").exists()


def test_convert_refuses_nan_weights(tmp_path):
    snapshot = _snapshot(tmp_path, nan=True)
    message = one_line_error(*run_cli("convert-nvlabs", snapshot, tmp_path / "ckpt"))
    assert "G_ema.mapping.fc0.weight" in message and "NaN" in message
    assert not (tmp_path / "ckpt").exists()


# --- params files --------------------------------------------------------------------------------


def test_explicit_params_file_that_does_not_exist_is_an_error(tmp_path):
    message = one_line_error(*run_cli("--params", tmp_path / "nope.yaml", "params"))
    assert "nope.yaml" in message


def test_params_file_that_cannot_be_read_is_an_error(tmp_path):
    (tmp_path / "folder.yaml").mkdir()
    (tmp_path / "latin1.yaml").write_bytes("train:\n  profile: caf\xe9\n".encode("latin-1"))
    for bad in ("folder.yaml", "latin1.yaml"):
        assert bad in one_line_error(*run_cli("--params", tmp_path / bad, "params"))


def test_implicit_params_file_may_be_absent(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, stderr = run_cli("params")
    assert code == 0, stderr


@pytest.mark.parametrize(
    ("section", "text"),
    [("train", "kimg: .inf"), ("train", "tick_kimg: .nan"), ("train", "kimg: -.inf"),
     ("train", "profiles: {p: {glr: .inf}}"), ("train", "profiles: {p: {resolution: 0}}"),
     ("train", "profiles: {p: {resolution: 12}}"), ("explain", "fps: .inf"),
     ("synth", "cells_per_mpx: .inf")],
)  # fmt: skip
def test_non_finite_or_zero_settings_are_refused(tmp_path, section, text):
    params = tmp_path / "params.yaml"
    params.write_text(f"{section}:\n  {text}\n")
    message = one_line_error(*run_cli("--params", params, "params"))
    assert str(params) in message


# --- serve ---------------------------------------------------------------------------------------


@pytest.fixture
def report_folder(tmp_path):
    (tmp_path / "report.html").write_text("<html></html>")
    return tmp_path


def test_serve_on_a_busy_port_is_one_line_error(report_folder):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        message = one_line_error(*run_cli("serve", report_folder, "--port", port))
    assert str(port) in message


@pytest.mark.parametrize(("host", "port"), [("192.0.2.1", "0"), ("127.0.0.1", "70000"),
                                            ("127.0.0.1", "-1"), ("not a host", "0")])  # fmt: skip
def test_serve_on_a_bad_address_is_one_line_error(report_folder, host, port):
    message = one_line_error(*run_cli("serve", report_folder, "--host", host, "--port", port))
    assert host in message or port in message


# --- user text is not Rich markup ----------------------------------------------------------------


def test_condition_names_in_errors_are_printed_as_typed(tmp_path, tiny_checkpoint):
    ckpt, _ = tiny_checkpoint(1, conditions=("[bold red]TNF", "ctrl"))
    message = one_line_error(
        *run_cli("generate", ckpt, tmp_path / "o", "--condition", "[red]nope[/red]")
    )
    assert "[red]nope[/red]" in message and "[bold red]TNF" in message


def test_json_shapes_in_errors_are_printed_as_typed(tmp_path):
    (tmp_path / "dataset.json").write_text('{"labels": []}')
    snapshot = _snapshot(tmp_path)
    message = one_line_error(*run_cli("convert-nvlabs", snapshot, tmp_path / "c",
                                      "--class-index", tmp_path / "dataset.json"))  # fmt: skip
    assert "[[file, class_index], ...]" in message


def test_success_lines_print_condition_names_as_typed(tmp_path):
    snapshot = _snapshot(tmp_path)
    code, stderr = run_cli("convert-nvlabs", snapshot, tmp_path / "c", "--conditions",
                           "[bold]EGF/TNF,[/]x")  # fmt: skip
    assert code == 0, stderr
    assert "[bold]EGF/TNF, [/]x" in stderr
