"""`phenexplain` command line. Logging is configured here and nowhere in the library.

Heavy dependencies are imported inside the commands, so `phenexplain --help` stays fast.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from phenexplain.errors import PhenexplainError

app = typer.Typer(
    name="phenexplain",
    help="Make invisible cell phenotypes visible: synthetic plates, ingest, a conditional "
    "StyleGAN2, latent traversals and validation reports.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
bench_app = typer.Typer(
    help="Benchmarks: each prints one JSON line per figure (name, value, unit, config)."
)
app.add_typer(bench_app, name="bench")

err = Console(stderr=True)
log = logging.getLogger("phenexplain")


class _State:
    params_path = Path("params.yaml")


@app.callback()
def _root(
    params: Annotated[
        Path,
        typer.Option("--params", help="params.yaml to read defaults from (CLI flags override it)."),
    ] = Path("params.yaml"),
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=err, show_path=False)],
        force=True,
    )
    _State.params_path = params


@contextmanager
def _progress(description: str) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar on stderr, fed by `(done, total)` callbacks."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    ) as progress:
        task = progress.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        yield update


@app.command()
def synth(
    out: Annotated[Path, typer.Argument(help="Output folder (created; must be empty or absent).")],
    assay: Annotated[str | None, typer.Option(help="Assay: nfkb, golgi, dose or subtle.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed; same seed, same bytes.")] = None,
    plates: Annotated[int | None, typer.Option(help="Number of plates.")] = None,
    wells_per_condition: Annotated[
        int | None, typer.Option(help="Wells per condition per plate.")
    ] = None,
    sites_per_well: Annotated[int | None, typer.Option(help="Fields of view per well.")] = None,
    height: Annotated[int | None, typer.Option(help="Field height, px (>= 64).")] = None,
    width: Annotated[int | None, typer.Option(help="Field width, px (>= 64).")] = None,
    cells_per_mpx: Annotated[float | None, typer.Option(help="Mean cells per million px.")] = None,
    workers: Annotated[int | None, typer.Option(help="Parallel processes.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty output folder.")] = False,
) -> None:
    """Generate synthetic fluorescence plates with planted phenotypes and their ground truth.

    Defaults come from the `synth` section of params.yaml.
    """
    from phenexplain.config import load_params, with_overrides
    from phenexplain.data.synthetic import generate_plates

    spec = with_overrides(
        load_params(_State.params_path).synth,
        assay=assay,
        seed=seed,
        plates=plates,
        wells_per_condition=wells_per_condition,
        sites_per_well=sites_per_well,
        height=height,
        width=width,
        cells_per_mpx=cells_per_mpx,
        workers=workers,
    )
    with _progress(f"synth {spec.assay}") as update:
        summary = generate_plates(spec, out, overwrite=overwrite, on_field=update)
    cells = ", ".join(f"{k}: {v}" for k, v in summary["cells_per_condition"].items())
    err.print(
        f"wrote {summary['fields']} fields ({'+'.join(summary['channels'])}) of assay "
        f"[bold]{summary['assay']}[/] to {out}; cells per condition: {cells}"
    )


@app.command()
def summarize(
    plate_dir: Annotated[Path, typer.Argument(help="Plate folder written by `phenexplain synth`.")],
    max_fields_per_condition: Annotated[
        int | None, typer.Option(help="Fields measured per condition.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Measure each condition (nuclei, assay features); check the planted phenotype's direction."""
    from phenexplain.config import load_params, with_overrides
    from phenexplain.measure.plate_summary import summarize_plate

    cfg = with_overrides(
        load_params(_State.params_path).summarize, max_fields_per_condition=max_fields_per_condition
    )
    with _progress("measuring fields") as update:
        summary = summarize_plate(
            plate_dir, max_fields_per_condition=cfg.max_fields_per_condition, on_field=update
        )
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    _print_summary(summary)


def _print_summary(summary: dict) -> None:
    from rich.table import Table

    out = Console(width=None if sys.stdout.isatty() else 150)
    features = sorted({k for c in summary["conditions"].values() for k in c["features"]})
    table = Table(title=f"{summary['root']}  (assay: {summary['assay']})")
    for col in ("condition", "fields", "measured", "cells", *features):
        table.add_column(col, justify="left" if col == "condition" else "right")
    for name, cond in summary["conditions"].items():
        vals = [cond["features"].get(f) for f in features]
        table.add_row(
            name,
            str(cond["fields"]),
            str(cond["fields_measured"]),
            str(cond["cells_measured"]),
            *("-" if v is None else f"{v:.3g}" for v in vals),
        )
    out.print(table)
    for check in summary["checks"]:
        colour = {"agrees": "green", "disagrees": "red"}.get(check["verdict"], "yellow")
        out.print(
            f"{check['condition']}: {check['feature']} planted {check['expected']}, measured "
            f"{check['control']:.3g} -> {check['value']:.3g} "
            f"(Mann-Whitney p = {check['p_value']:.2g}): [{colour}]{check['verdict']}[/]"
        )


@app.command("params")
def show_params() -> None:
    """Print the resolved parameters (params.yaml with defaults filled in) as JSON."""
    from phenexplain.config import load_params

    typer.echo(json.dumps(load_params(_State.params_path).model_dump(), indent=2))


@bench_app.command("synth")
def bench_synth(
    fields: Annotated[
        int, typer.Option(help="Fields per measurement (1024x1280, 3 channels).")
    ] = 14,
    workers: Annotated[str, typer.Option(help="Comma-separated worker counts to measure.")] = "1,2",
    seed: Annotated[int, typer.Option(help="Seed of the generated plates.")] = 0,
) -> None:
    """Synthetic plate generation speed, in fields/s (one 1024x1280 3-channel field is the unit)."""
    from phenexplain.bench import bench_synth as run

    for line in run(fields=fields, workers=[int(w) for w in workers.split(",")], seed=seed):
        typer.echo(json.dumps(line))


def main() -> None:
    """Console-script entry point: user errors become one clear line and exit status 1."""
    try:
        app()
    except PhenexplainError as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
