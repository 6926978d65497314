"""`phenexplain` command line. Logging is configured here and nowhere in the library.

One module per family of commands: `data` (synth, ingest, stylegan zips, summarize), `model`
(train, generate, evaluate, convert-nvlabs, params), `explain` (explain, traverse, latent,
project), `translate` (encoder train, translate), `report` (report, serve) and `bench`; `common`
holds the one rule by which every command resolves its parameters (params.yaml's section, then
the flags given) and the shared argument types. Heavy dependencies are imported inside the
commands, so `phenexplain --help` stays fast. To add a command: write it in its family's module
with options that default to None, resolve them with `common.resolve(section, ...)`, and list it
in that module's `register`.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from phenexplain.cli import data, explain, model, report, translate
from phenexplain.cli.bench import bench_app
from phenexplain.cli.common import State, err
from phenexplain.errors import PhenexplainError

app = typer.Typer(
    name="phenexplain",
    help="Make invisible cell phenotypes visible: synthetic plates, ingest, a conditional "
    "StyleGAN2, latent traversals and validation reports.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root(
    params: Annotated[
        Path | None,
        typer.Option(
            "--params",
            help="params.yaml to read defaults from (CLI flags override it; default: "
            "params.yaml, if present).",
        ),
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log what the library does.")
    ] = False,
) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.WARNING,  # third-party libraries speak only when something is wrong
        format="%(message)s",
        handlers=[RichHandler(console=err, show_path=False)],
        force=True,
    )
    logging.getLogger("phenexplain").setLevel(logging.DEBUG if verbose else logging.WARNING)
    if params is not None and not params.is_file():
        raise PhenexplainError(
            f"--params {params}: {'not a file' if params.exists() else 'no such file'}; give "
            "an existing params.yaml, or leave --params out to use ./params.yaml or the defaults"
        )
    State.params_path = params or Path("params.yaml")


for family in (data, model, explain, translate, report):
    family.register(app)
app.add_typer(bench_app, name="bench")


def main() -> None:
    """Console-script entry point: user errors become one clear line and exit status 1."""
    try:
        app()
    except PhenexplainError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(1)
