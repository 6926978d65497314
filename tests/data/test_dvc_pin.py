"""The default data under data/ is pinned by data.dvc and regenerates to the same hash."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import REPO


def _tool(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def test_default_data_regenerates_to_the_pinned_hash(tmp_path):
    pinned = yaml.safe_load((REPO / "data.dvc").read_text())["outs"][0]
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    env_run = dict(cwd=tmp_path, check=True, capture_output=True, text=True, timeout=300)
    subprocess.run([_tool("dvc"), "init", "--no-scm", "-q"], **env_run)
    subprocess.run([_tool("phenexplain"), "synth", "data"], **env_run)
    subprocess.run([_tool("dvc"), "add", "-q", "data"], **env_run)
    regenerated = yaml.safe_load((tmp_path / "data.dvc").read_text())["outs"][0]
    assert (regenerated["md5"], regenerated["nfiles"]) == (pinned["md5"], pinned["nfiles"])
    status = subprocess.run([_tool("dvc"), "status", "data.dvc"], **env_run)
    assert "up to date" in status.stdout
