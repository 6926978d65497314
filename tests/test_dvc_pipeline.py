"""`dvc repro ingest` in a clean copy of the repository produces the crop set; again, nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from phenexplain.data.cropset import CropSet
from tests.conftest import REPO, write_small_params


def _clean_copy(dest: Path) -> None:
    """The tracked files of the working tree (a clone without history), committed in a new repo."""
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout
    for rel in filter(None, files.decode().split("\0")):
        if (REPO / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dest / rel)
    git = ["git", "-c", "user.name=ci", "-c", "user.email=ci@localhost"]
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "clean copy"]):
        subprocess.run([*git, *cmd], cwd=dest, check=True, capture_output=True)


def test_dvc_repro_ingest_from_a_clean_copy(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _clean_copy(repo)
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    run = dict(cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert subprocess.run(["phenexplain", "synth", "data"], **run).returncode == 0
    first = subprocess.run(["dvc", "repro", "ingest"], **run)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Running stage 'ingest'" in first.stdout
    crops = CropSet(repo / "cropsets" / "default")
    assert len(crops) > 100 and crops.verify() == []
    second = subprocess.run(["dvc", "repro", "ingest"], **run)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "Stage 'ingest' didn't change, skipping" in second.stdout
    assert "Running stage" not in second.stdout


def _ran(output: str) -> set[str]:
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}


def test_full_dag_reproduces_and_reruns_only_what_changed(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _clean_copy(repo)
    write_small_params(repo / "params.yaml", repo / "params.yaml")
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    run = dict(cwd=repo, env=env, capture_output=True, text=True, timeout=900)
    git = ["git", "-c", "user.name=ci", "-c", "user.email=ci@localhost"]
    assert subprocess.run(["phenexplain", "synth", "data"], **run).returncode == 0
    subprocess.run([*git, "commit", "-qam", "small params"], **run)
    first = subprocess.run(["dvc", "repro"], **run)
    assert first.returncode == 0, first.stdout + first.stderr
    assert _ran(first.stdout) == {"ingest", "summarize", "train", "evaluate", "explain", "report"}
    metrics = (repo / "reports" / "metrics.json").read_text()
    assert "fid_rand" in metrics and (repo / "reports" / "report" / "report.html").is_file()
    assert (repo / "reports" / "explain" / "traversal_method3.gif").is_file()
    again = subprocess.run(["dvc", "repro"], **run)
    assert again.returncode == 0 and _ran(again.stdout) == set(), again.stdout
    subprocess.run([*git, "add", "-A"], **run)
    subprocess.run([*git, "commit", "-qm", "lock"], **run)
    exp = subprocess.run(["dvc", "exp", "run", "-S", "train.kimg=0.15"], **run)
    assert exp.returncode == 0, exp.stdout + exp.stderr
    assert _ran(exp.stdout) == {"train", "evaluate", "explain", "report"}
    assert json.loads((repo / "reports" / "metrics.json").read_text())["kimg"] >= 0.15
