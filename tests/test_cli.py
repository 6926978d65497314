"""The console script: help on every command, overrides, and one-line errors with non-zero exit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO


def _command_paths() -> list[list[str]]:
    """Every command and group of the console script, as the words that name it."""
    import typer.main

    from phenexplain import cli

    paths: list[list[str]] = [[]]

    def walk(command, prefix: list[str]) -> None:
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            paths.append([*prefix, name])
            walk(sub, [*prefix, name])

    walk(typer.main.get_command(cli.app), [])
    return paths


COMMANDS = _command_paths()


def run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("phenexplain")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_every_command_is_listed():
    names = {" ".join(c) for c in COMMANDS}
    assert {"train", "report", "bench science", "latent dose"} <= names and len(names) > 25


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "root")
def test_help_on_every_command(command):
    from typer.testing import CliRunner

    from phenexplain import cli

    result = CliRunner().invoke(cli.app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_synth_then_summarize_with_flag_overrides(tmp_path):
    out = tmp_path / "p"
    result = run(
        "synth",
        str(out),
        "--assay",
        "golgi",
        "--seed",
        "5",
        "--wells-per-condition",
        "1",
        "--sites-per-well",
        "2",
        "--height",
        "256",
        "--width",
        "256",
        "--workers",
        "1",
    )
    assert result.returncode == 0, result.stderr
    truth = json.loads((out / "ground_truth.json").read_text())
    assert truth["assay"] == "golgi"
    assert truth["generation"]["seed"] == 5 and truth["generation"]["height"] == 256
    summary = run("summarize", str(out), "--json")
    assert summary.returncode == 0, summary.stderr
    data = json.loads(summary.stdout)
    assert list(data["conditions"]) == ["DMSO", "nocodazole"]
    assert {c["feature"] for c in data["checks"]} == {"spot_count", "spot_area"}


def test_params_flag_reads_another_file(tmp_path):
    params = tmp_path / "p.yaml"
    params.write_text("synth:\n  assay: dose\n")
    result = run("--params", str(params), "params")
    assert json.loads(result.stdout)["synth"]["assay"] == "dose"


def test_an_unknown_choice_is_refused_with_the_choices(tmp_path):
    result = run("synth", str(tmp_path / "out"), "--assay", "bogus")
    assert result.returncode == 2  # a usage error, before any work
    assert "bogus" in result.stderr and "nfkb" in result.stderr and "subtle" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--height", "0"], "'height'"),
        (["--sites-per-well", "-1"], "'sites_per_well'"),
        (["--workers", "0"], "'workers'"),
    ],
)
def test_bad_synth_options_fail_with_one_clear_line(tmp_path, args, message):
    result = run("synth", str(tmp_path / "out"), *args)
    assert result.returncode == 1
    assert message in result.stderr and result.stderr.startswith("error:")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_existing_output_is_refused(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_text("mine")
    result = run("synth", str(tmp_path / "out"))
    assert result.returncode == 1 and "--overwrite" in result.stderr
    assert (tmp_path / "out" / "x").read_text() == "mine"


def test_unwritable_path_is_refused(tmp_path):
    result = run("synth", "/proc/phenexplain-out", "--height", "64", "--width", "64")
    assert result.returncode == 1 and "cannot write to /proc" in result.stderr


def test_bad_params_file_names_file_and_key(tmp_path):
    params = tmp_path / "p.yaml"
    params.write_text("synth:\n  sites: 3\n")
    result = run("--params", str(params), "synth", str(tmp_path / "out"))
    assert result.returncode == 1
    assert str(params) in result.stderr and "synth.sites" in result.stderr


def test_ingest_from_the_command_line_and_its_errors(plate_factory, tmp_path):
    src = plate_factory("golgi")
    out = tmp_path / "crops"
    args = [
        "ingest",
        str(src),
        str(out),
        "--channels",
        "DNA,Golgi",
        "--conditions",
        "",
        "--crop-size",
        "64",
    ]
    result = run(*args)
    assert result.returncode == 0, result.stderr
    assert (
        "ingested plate(s)" in result.stderr
        and (out / "report" / "data_docs" / "index.html").is_file()
    )
    again = run(*args)
    assert again.returncode == 0 and "up to date" in again.stderr
    missing = run("ingest", str(src), str(tmp_path / "other"), "--channels", "DNA,Actin")
    assert missing.returncode == 1 and "missing column(s) path_Actin" in missing.stderr
    assert "Traceback" not in missing.stderr
    unknown = run(
        "ingest",
        str(src),
        str(tmp_path / "y"),
        "--channels",
        "DNA,Golgi",
        "--conditions",
        "DMSO,taxol",
    )
    assert (
        unknown.returncode == 1
        and "unknown condition" in unknown.stderr
        and "condition=nocodazole" in unknown.stderr
    )
    bad = run(
        "ingest",
        str(src),
        str(tmp_path / "x"),
        "--channels",
        "DNA,Golgi",
        "--dna-channel",
        "Hoechst",
    )
    assert bad.returncode == 1 and "dna_channel 'Hoechst'" in bad.stderr


def _params_options() -> list[tuple[str, str]]:
    """(command, option) for every option whose help names the params.yaml key it overrides
    ("default: params.yaml SECTION.KEY")."""
    import typer.main

    from phenexplain import cli

    found = []

    def walk(command, prefix: str) -> None:
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, f"{prefix} {name}".strip())
        for param in getattr(command, "params", []):
            if getattr(param, "param_type_name", "") == "option" and "default: params.yaml " in (
                (getattr(param, "help", None) or "").replace("\n", " ")
            ):
                found.append((prefix, param, command))

    walk(typer.main.get_command(cli.app), "")
    return found


def test_every_params_yaml_option_defaults_to_none_and_names_a_real_key():
    """The one precedence rule: an option backed by params.yaml has no default of its own (None:
    not given, so the section's value holds), and the key its help names exists."""
    import re

    from phenexplain.config import Params

    options = _params_options()
    assert len(options) > 40
    defaults = Params().model_dump()
    for command, option, _ in options:
        assert option.default is None, f"{command} {option.opts}: default {option.default!r}"
        key = re.search(r"params\.yaml ([a-z_]+\.[a-z_]+)", option.help.replace("\n", " "))
        assert key, f"{command} {option.opts}: help names no key"
        section, field = key[1].split(".")
        assert field in defaults[section], f"{command} {option.opts}: no {key[1]}"


def test_generate_reads_its_section_and_flags_override_it(tmp_path, tiny_checkpoint):
    ckpt, _ = tiny_checkpoint(2)
    params = tmp_path / "p.yaml"
    params.write_text('generate:\n  seeds: "3-5"\n')
    result = run("--params", str(params), "generate", str(ckpt), str(tmp_path / "a"),
                 "--condition", "drug")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert sorted(p.name[-16:] for p in (tmp_path / "a").glob("*.tif")) == [
        f"seed{s:04d}.ome.tif" for s in (3, 4, 5)
    ]
    result = run("--params", str(params), "generate", str(ckpt), str(tmp_path / "b"),
                 "--condition", "drug", "--seeds", "7")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert [p.name[-16:] for p in (tmp_path / "b").glob("*.tif")] == ["seed0007.ome.tif"]
