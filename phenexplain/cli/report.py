"""Report commands: the validation report of a model, and serving a report folder."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from phenexplain.cli.common import Checkpoint, Device, DeviceOption, from_params, resolve, say


def report(
    checkpoint: Checkpoint,
    cropset: Annotated[Path, typer.Argument(help="The crop set the model was trained on.")],
    out: Annotated[Path, typer.Argument(help="Folder for report.html, explorer.html, CSVs.")],
    control: Annotated[
        str | None, typer.Option(help=from_params("report.control", "The control condition."))
    ] = None,
    real_per_condition: Annotated[
        int | None,
        typer.Option(help=from_params("report.real_per_condition", "Real crops per condition.")),
    ] = None,
    synthetic_per_condition: Annotated[
        int | None,
        typer.Option(
            help=from_params("report.synthetic_per_condition", "Generated crops per condition.")
        ),
    ] = None,
    cnn_epochs: Annotated[
        int | None, typer.Option(help=from_params("report.cnn_epochs", "Epochs of the CNN check."))
    ] = None,
    device: DeviceOption = Device.cpu,
    translation: Annotated[
        Path | None,
        typer.Option(
            help="A crop set `phenexplain translate` made from CROPSET with CHECKPOINT: adds a "
            "real-cell translation section scored against the real crops."
        ),
    ] = None,
) -> None:
    """Validation report: FID/KID, samples, traversals, real-vs-synthetic assays and statistics,
    feature shifts, CNN discriminability, LDA and dose response (and real-cell translation)."""
    from phenexplain.report.build import build_report

    params = resolve(
        "report", control=control, real_per_condition=real_per_condition,
        synthetic_per_condition=synthetic_per_condition, cnn_epochs=cnn_epochs,
    )  # fmt: skip
    start = time.perf_counter()

    def stage(name: str) -> None:
        say(f"[{time.perf_counter() - start:6.1f} s] {name}")

    build_report(checkpoint, cropset, out, params, device=device.value, stage=stage,
                 translation=translation, fid_images=resolve("train").metric_images)  # fmt: skip
    say(f"report: {out / 'report.html'}  explorer: {out / 'explorer.html'}")


def serve(
    folder: Annotated[Path, typer.Argument(help="A report folder (report.html, explorer.html).")],
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
) -> None:
    """Serve a report folder over HTTP (the pages also work opened as files): its regular files
    only, never a listing, a hidden file or anything a link points to outside it."""
    from phenexplain.report.serve import serve_report

    serve_report(
        folder, host, port,
        on_ready=lambda bound: say(f"serving {folder} at http://{host}:{bound}/explorer.html"),
    )  # fmt: skip


def register(app: typer.Typer) -> None:
    app.command()(report)
    app.command()(serve)
