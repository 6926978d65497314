"""No command modifies or deletes its input, or a file it did not write.

Every command that writes is run through the CLI (in-process) on tiny inputs laid out as a user
would (``t2/<input>`` next to an unrelated ``t2/keep/notes.txt``). Every file under the test's
folder is hashed before and after. Hostile output paths: the input itself, a folder containing it,
a path inside it, a symlink to it; each with and without ``--overwrite`` where the command has
it. Each must end in the project's one-line error and leave every byte as it was; one ordinary
run per command must succeed and leave the inputs as they were. `--overwrite` replaces only a
folder phenexplain wrote (its ``.phenexplain-output`` marker) that holds nothing else.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
from pathlib import Path
from typing import NamedTuple

import pytest
import yaml
from typer.testing import CliRunner

from phenexplain.cli import app
from phenexplain.data.ome_tiff import ome_path
from phenexplain.data.stylegan_zip import export_stylegan
from phenexplain.errors import PhenexplainError
from phenexplain.fsutil import MARKER
from tests.conftest import REPO, write_small_params
from tests.nets.test_convert import _write_snapshot

TRAIN = "--kimg 0.01 --tick-kimg 0.01 --snapshot-ticks 1 --threads 1"
TRAVERSE = "traverse {ckpt} --from control --to TNF --seeds 0 --steps 2 --out {out}"


class Command(NamedTuple):
    target: str  # the input that the hostile output paths aim at
    argv: str  # with {out} and {<input name>}
    output: str = "folder"  # or the suffix of the file it writes
    overwrite: bool = False  # has --overwrite
    others: tuple[str, ...] = ()  # the other inputs


COMMANDS = {
    "ingest": Command("plate", "ingest {plate} {out} --workers 1", overwrite=True),
    "export-stylegan": Command("crops", "export-stylegan {crops} {out}", ".zip"),
    "import-stylegan": Command("zip", "import-stylegan {zip} {out}", overwrite=True),
    "convert-nvlabs": Command("pkl", "convert-nvlabs {pkl} {out} --conditions a,b,c", overwrite=True),
    "train": Command("crops", "train {crops} --run-dir {out} " + TRAIN, overwrite=True),
    "generate": Command("ckpt", "generate {ckpt} {out} --condition control --seeds 0-1"),
    "evaluate": Command(
        "crops", "evaluate {ckpt} {crops} --out {out} --metrics rand --images 16", ".json",
        others=("ckpt",),
    ),
    "traverse": Command("ckpt", TRAVERSE, ".gif"),
    "traverse-frames": Command("ckpt", TRAVERSE),
    "latent-lda": Command(
        "ckpt3", "latent lda {ckpt3} --fit DMSO,drug_1uM,drug_10uM --n-fit 16 --n-project 4 "
        "--out {out}",
    ),
    "latent-dose": Command(
        "ckpt3", "latent dose {ckpt3} --control DMSO --n 8 --projection-seeds 0 "
        "--centroid-samples 64 --out {out}",
    ),
    "project": Command(
        "crops", "project {ckpt} {crops} --condition control --to TNF --crops 0 --steps 2 "
        "--frames 2 --centroid-samples 64 --out {out}", others=("ckpt",),
    ),
    "explain": Command("ckpt", "explain {ckpt} {out}"),
    "report": Command("crops", "report {ckpt} {crops} {out}", others=("ckpt",)),
}  # fmt: skip
SPELLINGS = ["is-input", "contains-input", "inside-input", "symlink-to-input"]


@pytest.fixture(scope="module")
def assets(tmp_path_factory, plate_factory, tiny_crops, tiny_checkpoint_module) -> dict[str, Path]:
    """One of each input, built once; each test copies what it needs into its own folder."""
    root = tmp_path_factory.mktemp("assets")
    params = yaml.safe_load(write_small_params(REPO / "params.yaml", root / "p.yaml").read_text())
    params["train"].update(metrics=[], sample_seeds=1)
    params["explain"].update(centroid_samples=64)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    ckpt, _ = tiny_checkpoint_module(channels=["DNA", "NFkB"], conditions=("control", "TNF"))
    ckpt3, _ = tiny_checkpoint_module(channels=1, conditions=("DMSO", "drug_1uM", "drug_10uM"))
    export_stylegan(tiny_crops, root / "d.zip")
    _write_snapshot(root / "snapshot.pkl", root / "never-written")
    plate = plate_factory("nfkb", wells_per_condition=2, sites_per_well=1, height=256, width=256)
    return {"plate": plate, "crops": tiny_crops, "ckpt": ckpt, "ckpt3": ckpt3,
            "zip": root / "d.zip", "pkl": root / "snapshot.pkl", "params": root / "params.yaml"}  # fmt: skip


def _copy(src: Path, dest: Path) -> Path:
    if src.is_dir():
        shutil.copytree(src, dest, symlinks=True)
    else:
        shutil.copy2(src, dest)
    return dest


def _workspace(tmp_path: Path, assets: dict[str, Path], names: list[str]) -> dict[str, Path]:
    """``t2/<name>`` for each input (the zip keeps its name), ``t2/keep/notes.txt``, params."""
    t2 = tmp_path / "t2"
    (t2 / "keep").mkdir(parents=True)
    (t2 / "keep" / "notes.txt").write_text("the user's own notes\n")
    paths = {
        n: _copy(assets[n], t2 / (assets[n].name if n in ("zip", "pkl") else n)) for n in names
    }
    return {**paths, "t2": t2, "params": _copy(assets["params"], tmp_path / "params.yaml")}


def _state(root: Path) -> dict[str, str]:
    """Every file, folder and link under `root`: sha256, "folder" or "-> target"."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder, name)
            key = path.relative_to(root).as_posix()
            if path.is_symlink():
                found[key] = "-> " + os.readlink(path)
            elif path.is_dir():
                found[key] = "folder"
            else:
                found[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def _cli(ws: dict[str, Path], template: str, out: Path, *extra: str):
    argv = template.format(out=out, **{k: str(v) for k, v in ws.items()}).split()
    return CliRunner().invoke(app, ["--params", str(ws["params"]), *argv, *extra])


def _assert_one_line_error(result) -> str:
    assert result.exit_code == 1 and isinstance(result.exception, PhenexplainError), (
        f"expected the project's error, got exit {result.exit_code}: {result.exception!r}\n"
        f"{result.output}"
    )
    message = str(result.exception)
    assert "\n" not in message and "Traceback" not in message
    return message


def _hostile_out(ws: dict[str, Path], target: str, spelling: str, suffix: str) -> Path:
    source = ws[target]
    if spelling == "is-input":
        return source
    if spelling == "contains-input":
        return ws["t2"]
    if spelling == "inside-input":
        return source / ("out" + ("" if suffix == "folder" else suffix))
    link = ws["t2"].parent / "link"
    link.symlink_to(source, target_is_directory=source.is_dir())
    return link


def _cases():
    for name, command in COMMANDS.items():
        spellings = ["inside-input"] if name == "report" else SPELLINGS  # report: slow to set up
        for spelling in spellings:
            yield pytest.param(name, spelling, False, id=f"{name}-{spelling}")
            if command.overwrite:
                yield pytest.param(name, spelling, True, id=f"{name}-{spelling}-overwrite")


@pytest.mark.parametrize(("command", "spelling", "overwrite"), list(_cases()))
def test_hostile_output_path_is_refused_and_changes_nothing(
    tmp_path, assets, command, spelling, overwrite
):
    spec = COMMANDS[command]
    ws = _workspace(tmp_path, assets, [spec.target, *spec.others])
    out = _hostile_out(ws, spec.target, spelling, spec.output)
    before = _state(tmp_path)
    result = _cli(ws, spec.argv, out, *(["--overwrite"] if overwrite else []))
    message = _assert_one_line_error(result)
    assert str(out) in message or "input" in message, message
    assert _state(tmp_path) == before


@pytest.mark.parametrize("command", list(COMMANDS)[:-1])  # report: covered by its own test
def test_ordinary_run_leaves_every_input_as_it_was(tmp_path, assets, command):
    spec = COMMANDS[command]
    ws = _workspace(tmp_path, assets, [spec.target, *spec.others])
    out = tmp_path / ("out" if spec.output == "folder" else f"out{spec.output}")
    before = _state(tmp_path)
    result = _cli(ws, spec.argv, out)
    assert result.exit_code == 0, f"{result.exception!r}\n{result.output}"
    after = _state(tmp_path)
    lock = f".{out.name}.lock"  # a crop set's writers' lock, kept next to it (see cropset.py)
    raw = ome_path(out).name  # traverse: the raw channels beside the video
    ours = {k: v for k, v in after.items() if k.startswith(out.name) or k in (lock, raw)}
    assert {k: v for k, v in after.items() if k not in ours} == before
    assert out.exists()
    if spec.output == "folder":
        marker = json.loads((out / MARKER).read_text())
        assert set(marker["entries"]) >= {p.name for p in out.iterdir()} - {MARKER}


# --- --overwrite replaces only what phenexplain wrote ---------------------------------------


OVERWRITING = {  # a command whose output folder can be replaced, its inputs and argv
    "synth": (
        [],
        "synth {out} --wells-per-condition 1 --sites-per-well 1 --height 64 --width 64 --workers 1",
    ),
    "ingest": (["plate"], "ingest {plate} {out} --workers 1"),
    "import-stylegan": (["zip"], "import-stylegan {zip} {out}"),
    "convert-nvlabs": (["pkl"], "convert-nvlabs {pkl} {out} --conditions a,b,c"),
    "train": (["crops"], "train {crops} --run-dir {out} " + TRAIN),
}


@pytest.mark.parametrize("command", list(OVERWRITING))
def test_overwrite_refuses_a_folder_phenexplain_did_not_write(tmp_path, assets, command):
    """A folder of the user's (no marker), not an input: only the marker rule protects it."""
    names, template = OVERWRITING[command]
    ws = _workspace(tmp_path, assets, names)
    out = ws["t2"] / "results"
    out.mkdir()
    (out / "results.csv").write_text("a,b\n1,2\n")
    before = _state(tmp_path)
    message = _assert_one_line_error(_cli(ws, template, out, "--overwrite"))
    assert "was not written by phenexplain" in message, message
    assert _state(tmp_path) == before


@pytest.mark.parametrize("command", ["synth", "import-stylegan", "convert-nvlabs"])
def test_overwrite_replaces_our_output_but_never_a_file_added_to_it(tmp_path, assets, command):
    names, template = OVERWRITING[command]
    ws = _workspace(tmp_path, assets, names)
    out = tmp_path / "out"
    assert _cli(ws, template, out).exit_code == 0
    assert _cli(ws, template, out, "--overwrite").exit_code == 0  # ours only: replaced
    (out / "my-notes.txt").write_text("added by the user\n")
    before = _state(tmp_path)
    message = _assert_one_line_error(_cli(ws, template, out, "--overwrite"))
    assert "my-notes.txt" in message, message
    assert _state(tmp_path) == before


def test_overwrite_refuses_another_kind_of_phenexplain_output(tmp_path, assets):
    """Synthetic plates are the input of other commands: an import may not replace them."""
    ws = _workspace(tmp_path, assets, ["zip"])
    plates = tmp_path / "plates"
    assert _cli(ws, OVERWRITING["synth"][1], plates).exit_code == 0
    before = _state(tmp_path)
    message = _assert_one_line_error(_cli(ws, "import-stylegan {zip} {out}", plates, "--overwrite"))
    assert "synthetic plates" in message, message
    assert _state(tmp_path) == before


# --- training: a fresh run never mixes with an old one -------------------------------------


def test_fresh_train_into_a_killed_runs_folder_needs_resume_or_overwrite(tmp_path, assets):
    ws = _workspace(tmp_path, assets, ["crops"])
    run = tmp_path / "run"
    template = OVERWRITING["train"][1]
    assert _cli(ws, template, run).exit_code == 0
    shutil.rmtree(run / "checkpoints")  # as if killed before its first checkpoint
    lines = (run / "stats.jsonl").read_text().splitlines()
    before = _state(tmp_path)
    message = _assert_one_line_error(_cli(ws, template, run))
    assert "--resume" in message and "--overwrite" in message, message
    assert _state(tmp_path) == before
    assert _cli(ws, template, run, "--overwrite").exit_code == 0
    assert len((run / "stats.jsonl").read_text().splitlines()) == len(lines)  # not appended
    (run / "notes.txt").write_text("mine\n")
    message = _assert_one_line_error(_cli(ws, template, run, "--overwrite"))
    assert "notes.txt" in message and (run / "notes.txt").read_text() == "mine\n"


# --- staging folders of killed writers ------------------------------------------------------


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_stale_staging_folders_of_dead_writers_are_removed_and_nothing_else(tmp_path, assets):
    ws = _workspace(tmp_path, assets, [])
    out = tmp_path / "plates"
    dead, marker = _dead_pid(), {"format": 1, "kind": "synthetic plates", "entries": []}
    ours = tmp_path / f".plates.partial-{dead}-x1"
    ours.mkdir()
    (ours / MARKER).write_text(json.dumps({**marker, "host": socket.gethostname()}))
    (ours / "half.tif").write_bytes(b"\0" * 64)
    not_ours = tmp_path / f".plates.partial-{dead}-x2"  # the pattern but no marker: not ours
    not_ours.mkdir()
    (not_ours / "data.bin").write_bytes(b"1")
    alive = tmp_path / f".plates.partial-{os.getpid()}-x3"  # a writer still running
    alive.mkdir()
    (alive / MARKER).write_text(json.dumps({**marker, "host": socket.gethostname()}))
    other = tmp_path / f".other.partial-{dead}-x4"  # another output's (e.g. a checkpoint's)
    shutil.copytree(ours, other)
    elsewhere = tmp_path / f".other.partial-{dead}-x5"  # of another machine sharing the folder
    shutil.copytree(ours, elsewhere)
    (elsewhere / MARKER).write_text(json.dumps({**marker, "host": "another-host"}))
    assert _cli(ws, OVERWRITING["synth"][1], out).exit_code == 0
    assert not ours.exists() and not other.exists()  # ours, and their writers are dead
    staged = {p.name for p in tmp_path.iterdir() if ".partial-" in p.name}
    assert staged == {not_ours.name, alive.name, elsewhere.name}
