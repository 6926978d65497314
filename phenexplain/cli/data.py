"""Data commands: synthetic plates, ingest into crop sets, stylegan2-ada zips, plate summaries."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from phenexplain.cli.common import from_params, installed, names, progress, resolve, say


class Assay(StrEnum):
    nfkb = "nfkb"
    golgi = "golgi"
    dose = "dose"
    subtle = "subtle"


class Layout(StrEnum):
    folders = "folders"
    bbbc021 = "bbbc021"
    manifest = "manifest"
    loaddata = "loaddata"
    ome_tiff = "ome-tiff"
    ome_zarr = "ome-zarr"


def synth(
    out: Annotated[Path, typer.Argument(help="Output folder (created; must be empty or absent).")],
    assay: Annotated[Assay | None, typer.Option(help=from_params("synth.assay", "Assay."))] = None,
    seed: Annotated[
        int | None,
        typer.Option(help=from_params("synth.seed", "Random seed; same seed, same bytes.")),
    ] = None,
    plates: Annotated[
        int | None, typer.Option(help=from_params("synth.plates", "Number of plates."))
    ] = None,
    wells_per_condition: Annotated[
        int | None,
        typer.Option(
            help=from_params("synth.wells_per_condition", "Wells per condition per plate.")
        ),
    ] = None,
    sites_per_well: Annotated[
        int | None,
        typer.Option(help=from_params("synth.sites_per_well", "Fields of view per well.")),
    ] = None,
    height: Annotated[
        int | None, typer.Option(help=from_params("synth.height", "Field height, px (64 to 4096)."))
    ] = None,
    width: Annotated[
        int | None, typer.Option(help=from_params("synth.width", "Field width, px (64 to 4096)."))
    ] = None,
    cells_per_mpx: Annotated[
        float | None,
        typer.Option(help=from_params("synth.cells_per_mpx", "Mean cells per million px.")),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help=from_params("synth.workers", "Parallel processes."))
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty output folder.")] = False,
) -> None:
    """Generate synthetic fluorescence plates with planted phenotypes and their ground truth."""
    from phenexplain.data.synthetic import generate_plates

    spec = resolve(
        "synth", assay=assay, seed=seed, plates=plates, wells_per_condition=wells_per_condition,
        sites_per_well=sites_per_well, height=height, width=width, cells_per_mpx=cells_per_mpx,
        workers=workers,
    )  # fmt: skip
    with progress(f"synth {spec.assay}") as update:
        summary = generate_plates(spec, out, overwrite=overwrite, on_field=update)
    cells = ", ".join(f"{k}: {v}" for k, v in summary["cells_per_condition"].items())
    say(
        f"wrote {summary['fields']} fields ({'+'.join(summary['channels'])}) of assay "
        f"{summary['assay']} to {out}; cells per condition: {cells}"
    )


def ingest(
    source: Annotated[
        Path,
        typer.Argument(
            help="Plate source: a folder, a .zarr, or a CSV for manifest/bbbc021/loaddata."
        ),
    ],
    out: Annotated[
        Path, typer.Argument(help="Crop set folder (created, or extended with new plates).")
    ],
    layout: Annotated[
        Layout | None,
        typer.Option(help=from_params("ingest.layout", "How the plates are laid out.")),
    ] = None,
    channels: Annotated[
        str | None,
        typer.Option(
            help=from_params("ingest.channels", "Comma-separated channel names, in order.")
        ),
    ] = None,
    dna_channel: Annotated[
        str | None,
        typer.Option(
            help=from_params("ingest.dna_channel", "Channel used for nuclei and blur QC.")
        ),
    ] = None,
    conditions: Annotated[
        str | None,
        typer.Option(
            help=from_params(
                "ingest.conditions", "Comma-separated expected conditions ('' accepts any)."
            )
        ),
    ] = None,
    crop_size: Annotated[
        int | None, typer.Option(help=from_params("ingest.crop_size", "Crop side, px."))
    ] = None,
    precropped: Annotated[
        bool | None,
        typer.Option(
            help=from_params("ingest.precropped", "Images are crops already: no nucleus detection.")
        ),
    ] = None,
    illumination_correction: Annotated[
        bool | None,
        typer.Option(
            help=from_params("ingest.illumination_correction", "Per-plate illumination correction.")
        ),
    ] = None,
    condition_column: Annotated[
        str | None,
        typer.Option(
            help=from_params("ingest.condition_column", "Layout loaddata: the condition column.")
        ),
    ] = None,
    masks: Annotated[
        Path | None,
        typer.Option(
            help=from_params(
                "ingest.masks",
                "Label images to use instead of nucleus detection: a folder or a CSV "
                "(ObjectsPathName_Nuclei / ObjectsFileName_Nuclei).",
            )
        ),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help=from_params("ingest.workers", "Parallel processes."))
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Rebuild the crop set from scratch.")] = False,
) -> None:
    """Check plates (QC, great-expectations), quarantine bad images and cut nucleus-centred crops.

    Re-running adds only new plates.
    """
    from phenexplain.data.ingest import ingest as run

    if installed("great_expectations"):
        from phenexplain.integrations.gx_validation import ingest_with_expectations as run
    else:
        say(
            "great-expectations is not installed (pip install 'phenexplain[service]'): the "
            "built-in QC runs, the expectation suite and Data Docs do not"
        )
    params = resolve(
        "ingest", layout=layout, channels=names(channels) or None, dna_channel=dna_channel,
        conditions=names(conditions), crop_size=crop_size, precropped=precropped,
        illumination_correction=illumination_correction, condition_column=condition_column,
        masks=None if masks is None else str(masks), workers=workers,
    )  # fmt: skip
    with progress("ingest") as update:
        summary = run(
            source, out, params, overwrite=overwrite,
            progress=lambda stage, done, total: update(done, total),
        )  # fmt: skip
    if not summary.plates_added:
        say(f"{out} is up to date: no new or changed plate in {source}")
        return
    added = ", ".join(summary.plates_added)
    say(
        f"ingested plate(s) {added} into {out}: {summary.fields} fields, {summary.crops} "
        f"crops, {summary.quarantined} field(s) quarantined (see {out}/quarantine.csv)"
    )


def export_stylegan(
    cropset: Annotated[
        Path, typer.Argument(help="Crop set folder written by `phenexplain ingest`.")
    ],
    out: Annotated[
        Path, typer.Argument(help="Zip to write (stylegan2-ada dataset with dataset.json).")
    ],
) -> None:
    """Write a crop set as a stylegan2-ada-pytorch dataset zip (PNGs + class labels)."""
    from phenexplain.data.stylegan_zip import export_stylegan as run

    say(f"wrote {run(cropset, out)} images with class labels to {out}")


def import_stylegan(
    source: Annotated[Path, typer.Argument(help="stylegan2-ada dataset zip with labels.")],
    out: Annotated[Path, typer.Argument(help="Crop set folder to create.")],
    channels: Annotated[str | None, typer.Option(help="Comma-separated channel names.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty output folder.")] = False,
) -> None:
    """Read a stylegan2-ada-pytorch dataset zip into a crop set (class names from conditions.json
    when the zip has one, else class_<i>)."""
    from phenexplain.data.stylegan_zip import import_stylegan as run

    n = run(source, out, channels=names(channels), overwrite=overwrite)
    say(f"imported {n} crops into {out}")


def import_impa(
    source: Annotated[
        Path, typer.Argument(help="The IMPA/CellFlux BBBC021 folder (metadata/, Week*/...).")
    ],
    out: Annotated[Path, typer.Argument(help="Crop set folder to create.")],
    metadata: Annotated[
        Path | None, typer.Option(help="The cell table (default: metadata/bbbc021_df_all.csv).")
    ] = None,
    channels: Annotated[
        str | None, typer.Option(help="Channel names in file order (default: DNA,Tubulin,Actin).")
    ] = None,
    condition_by: Annotated[
        str,
        typer.Option(help="Conditions: compound (CellFlux's FIDc) or compound_dose."),
    ] = "compound",
    split: Annotated[
        str | None, typer.Option(help="Only this SPLIT: train or test (default: all rows).")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty output folder.")] = False,
) -> None:
    """Read the field's preprocessed BBBC021 crops (IMPA / CellFlux layout: one .npy per cell and
    its metadata table) into a crop set; unreadable rows are quarantined (quarantine.csv)."""
    from phenexplain.data.impa import import_impa as run

    n, bad = run(source, out, metadata=metadata, channels=names(channels) or None,
                 condition_by=condition_by, split=split, overwrite=overwrite)  # fmt: skip
    quarantined = f", {bad} row(s) quarantined (see {out / 'quarantine.csv'})" if bad else ""
    say(f"imported {n} crops into {out}{quarantined}")


def summarize(
    plate_dir: Annotated[Path, typer.Argument(help="Plate folder written by `phenexplain synth`.")],
    max_fields_per_condition: Annotated[
        int | None,
        typer.Option(
            help=from_params("summarize.max_fields_per_condition", "Fields measured per condition.")
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Measure each condition (nuclei, assay features); check the planted phenotype's direction."""
    from phenexplain.measure.plate_summary import summarize_plate

    cfg = resolve("summarize", max_fields_per_condition=max_fields_per_condition)
    with progress("measuring fields") as update:
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
    table = Table(title=escape(f"{summary['root']}  (assay: {summary['assay']})"))
    for col in ("condition", "fields", "measured", "cells", *features):
        table.add_column(col, justify="left" if col == "condition" else "right")
    for name, cond in summary["conditions"].items():
        vals = [cond["features"].get(f) for f in features]
        table.add_row(
            escape(name),
            str(cond["fields"]),
            str(cond["fields_measured"]),
            str(cond["cells_measured"]),
            *("-" if v is None else f"{v:.3g}" for v in vals),
        )
    out.print(table)
    for check in summary["checks"]:
        colour = {"agrees": "green", "disagrees": "red"}.get(check["verdict"], "yellow")
        out.print(
            escape(f"{check['condition']}: {check['feature']} planted {check['expected']}, ")
            + "measured "
            f"{check['control']:.3g} -> {check['value']:.3g} "
            f"(Mann-Whitney p = {check['p_value']:.2g}): [{colour}]{check['verdict']}[/]"
        )


def register(app: typer.Typer) -> None:
    app.command()(synth)
    app.command()(ingest)
    app.command("export-stylegan")(export_stylegan)
    app.command("import-stylegan")(import_stylegan)
    app.command("import-impa")(import_impa)
    app.command()(summarize)
