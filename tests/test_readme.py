"""README.md's shell examples run as written on a fresh clone after `make demo`: every
`phenexplain` command names a real command and real options; every run folder or crop set it
reads is one the demo makes (runs/demo, cropsets/default) or an earlier example makes; and the
cheap examples really run, on a tiny model laid out as the demo lays out its run."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer

from phenexplain.cli import app

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DEMO_RUN, DEMO_CROPS = "runs/demo", "cropsets/default"  # what `make demo` makes (flows/demo.py)
MADE_BY_OPTION = ("--run-dir",)  # options whose value is a folder the command makes
MAKERS = {"synth": 0, "ingest": 1, "import-impa": 1, "encoder train": None}  # output positional
CHEAP = ("phenexplain traverse runs/demo ",)  # examples that run in seconds on a tiny model


def shell_commands(text: str) -> list[str]:
    """The commands of the ```bash blocks of `text`: continuation lines joined, comments cut."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip() if not line.lstrip().startswith("#") else ""
            if line:
                commands.append(" ".join(line.split()))
    return commands


def _leaf(words: list[str]) -> tuple[Any, list[str], list[str]]:
    """The (click) command `words` (after `phenexplain`) names, its name and the words left."""
    command: Any = typer.main.get_command(app)
    name: list[str] = []
    while hasattr(command, "commands") and words and words[0] in command.commands:
        name.append(words[0])
        command = command.commands[words.pop(0)]
    return command, name, words


def phenexplain_commands() -> list[list[str]]:
    return [shlex.split(c)[1:] for c in shell_commands(README.read_text()) if c.startswith(
        "phenexplain ")]  # fmt: skip


def test_the_demo_makes_what_the_readme_reads():
    demo = (ROOT / "flows" / "demo.py").read_text()
    assert f'"--run-dir", default="{DEMO_RUN}"' in demo
    assert f'cropset="{DEMO_CROPS}"' in demo
    assert len(phenexplain_commands()) > 20


@pytest.mark.parametrize("words", phenexplain_commands(), ids=" ".join)
def test_readme_commands_and_options_exist(words):
    command, name, rest = _leaf(list(words))
    assert name and not hasattr(command, "commands"), f"no command: phenexplain {words[0]}"
    options = {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
    for word in rest:
        if word.startswith("-"):
            assert word.split("=")[0] in options, f"phenexplain {' '.join(name)}: no {word}"


def test_every_run_and_crop_set_read_is_made_first():
    made = {DEMO_RUN, DEMO_CROPS}
    for words in phenexplain_commands():
        command, name, rest = _leaf(list(words))
        key = " ".join(name)
        positional = [w for i, w in enumerate(rest) if not w.startswith("-") and
                      not (i and rest[i - 1].startswith("-") and rest[i - 1] not in
                           _flags(command))]  # fmt: skip
        outputs = {rest[i + 1] for i, w in enumerate(rest[:-1]) if w in MADE_BY_OPTION}
        if key in MAKERS and MAKERS[key] is not None and len(positional) > MAKERS[key]:
            outputs.add(positional[MAKERS[key]])
        for word in positional:
            if word in outputs or not word.startswith(("runs/", "cropsets/")):
                continue
            root = "/".join(word.split("/")[:2])
            assert root in made, f"`phenexplain {' '.join(words)}` reads {word}: nothing makes it"
        made |= {"/".join(o.split("/")[:2]) for o in outputs}


def _flags(command: Any) -> set[str]:
    return {o for p in command.params if getattr(p, "is_flag", False) for o in p.opts}


def _demo_like_run(tmp_path: Path) -> None:
    """A tiny random model at runs/demo/checkpoints/<name>, with the latest pointer training
    writes, for the conditions and channels of the demo."""
    import torch

    from phenexplain.nets import Generator
    from phenexplain.training.checkpoint import LATEST, CheckpointMeta, save_checkpoint

    kw = dict(z_dim=8, c_dim=2, w_dim=8, img_resolution=16, img_channels=2,
              mapping_kwargs={"num_layers": 2},
              synthesis_kwargs={"channel_base": 64, "channel_max": 8})  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        G = Generator(**kw).eval()
    meta = CheckpointMeta(kwargs={"G_ema": kw}, conditions=["TNF", "control"],
                          channels=["DNA", "NFkB"], resolution=16)  # fmt: skip
    checkpoints = tmp_path / DEMO_RUN / "checkpoints"
    save_checkpoint(checkpoints / "kimg00001.000", {"G_ema": G}, meta)
    (checkpoints / LATEST).write_text("kimg00001.000")


def test_cheap_readme_examples_run_as_written(tmp_path):
    examples = [c for c in shell_commands(README.read_text()) if c.startswith(CHEAP)]
    assert examples, "the README lost its traverse example on the demo's run"
    _demo_like_run(tmp_path)
    script = Path(sys.executable).with_name("phenexplain")
    for example in examples:
        words = shlex.split(example)
        command = [str(script), *words[1:]] if script.is_file() else [
            sys.executable, "-m", "phenexplain.cli", *words[1:]]  # fmt: skip
        done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{example}\n{done.stderr}"
        out = words[words.index("--out") + 1]
        assert (tmp_path / out).stat().st_size > 0, example
