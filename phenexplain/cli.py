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
from rich.markup import escape

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
latent_app = typer.Typer(help="Latent analysis in W: LDA maps and dose response (paper Fig. 4b-d).")
app.add_typer(latent_app, name="latent")

err = Console(stderr=True, soft_wrap=True)  # messages stay one line each, for logs and tests
log = logging.getLogger("phenexplain")


def _say(message: str) -> None:
    """A line on stderr, printed as is: paths and condition names are never Rich markup."""
    err.print(message, markup=False)


class _State:
    params_path = Path("params.yaml")  # the implicit default may be absent: defaults then


@app.callback()
def _root(
    params: Annotated[
        Path | None,
        typer.Option(
            "--params",
            help="params.yaml to read defaults from (CLI flags override it) [default: "
            "params.yaml, if present].",
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
    _State.params_path = params or Path("params.yaml")


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
    height: Annotated[int | None, typer.Option(help="Field height, px (64 to 4096).")] = None,
    width: Annotated[int | None, typer.Option(help="Field width, px (64 to 4096).")] = None,
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
    _say(
        f"wrote {summary['fields']} fields ({'+'.join(summary['channels'])}) of assay "
        f"{summary['assay']} to {out}; cells per condition: {cells}"
    )


@app.command()
def ingest(
    source: Annotated[
        Path, typer.Argument(help="Plate source: a folder, or a CSV for manifest/bbbc021.")
    ],
    out: Annotated[
        Path, typer.Argument(help="Crop set folder (created, or extended with new plates).")
    ],
    layout: Annotated[str | None, typer.Option(help="folders, bbbc021 or manifest.")] = None,
    channels: Annotated[
        str | None, typer.Option(help="Comma-separated channel names, in order.")
    ] = None,
    dna_channel: Annotated[
        str | None, typer.Option(help="Channel used for nuclei and blur QC.")
    ] = None,
    conditions: Annotated[
        str | None, typer.Option(help="Comma-separated expected conditions ('' accepts any).")
    ] = None,
    crop_size: Annotated[int | None, typer.Option(help="Crop side, px.")] = None,
    precropped: Annotated[
        bool | None, typer.Option(help="Images are crops already: no nucleus detection.")
    ] = None,
    illumination_correction: Annotated[
        bool | None, typer.Option(help="Per-plate illumination correction.")
    ] = None,
    workers: Annotated[int | None, typer.Option(help="Parallel processes.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Rebuild the crop set from scratch.")] = False,
) -> None:
    """Check plates (QC, great-expectations), quarantine bad images and cut nucleus-centred crops.

    Defaults come from the `ingest` section of params.yaml. Re-running adds only new plates.
    """
    from phenexplain.config import load_params, with_overrides
    from phenexplain.integrations.gx_validation import ingest_with_expectations

    params = with_overrides(
        load_params(_State.params_path).ingest,
        layout=layout,
        channels=channels.split(",") if channels else None,
        dna_channel=dna_channel,
        conditions=None if conditions is None else [c for c in conditions.split(",") if c],
        crop_size=crop_size,
        precropped=precropped,
        illumination_correction=illumination_correction,
        workers=workers,
    )
    with _progress("ingest") as update:
        summary = ingest_with_expectations(
            source,
            out,
            params,
            overwrite=overwrite,
            progress=lambda stage, done, total: update(done, total),
        )
    if not summary["plates_added"]:
        _say(f"{out} is up to date: no new or changed plate in {source}")
        return
    added = ", ".join(summary["plates_added"])
    _say(
        f"ingested plate(s) {added} into {out}: {summary['fields']} fields, {summary['crops']} "
        f"crops, {summary['quarantined']} field(s) quarantined (see {out}/quarantine.csv)"
    )


@app.command("export-stylegan")
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

    n = run(cropset, out)
    _say(f"wrote {n} images with class labels to {out}")


@app.command("import-stylegan")
def import_stylegan(
    source: Annotated[Path, typer.Argument(help="stylegan2-ada dataset zip with labels.")],
    out: Annotated[Path, typer.Argument(help="Crop set folder to create.")],
    channels: Annotated[str | None, typer.Option(help="Comma-separated channel names.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty output folder.")] = False,
) -> None:
    """Read a stylegan2-ada-pytorch dataset zip into a crop set (class names from conditions.json
    when the zip has one, else class_<i>)."""
    from phenexplain.data.stylegan_zip import import_stylegan as run

    n = run(source, out, channels=channels.split(",") if channels else None, overwrite=overwrite)
    _say(f"imported {n} crops into {out}")


@app.command("convert-nvlabs")
def convert_nvlabs(
    snapshot: Annotated[Path, typer.Argument(help="stylegan2-ada-pytorch network-snapshot-*.pkl.")],
    out: Annotated[Path, typer.Argument(help="Checkpoint folder to create.")],
    conditions: Annotated[
        str | None, typer.Option(help="Comma-separated condition names in class-index order.")
    ] = None,
    class_index: Annotated[
        Path | None, typer.Option(help="phenexplain-style dataset.json naming the conditions.")
    ] = None,
    channels: Annotated[str | None, typer.Option(help="Comma-separated channel names.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty output folder.")] = False,
) -> None:
    """Convert a stylegan2-ada-pytorch snapshot into a phenexplain checkpoint, without running any
    code from the pickle (a restricted unpickler reads tensors and constructor arguments only)."""
    from phenexplain.nets.convert import conditions_from_dataset_json, convert_snapshot

    names = conditions.split(",") if conditions else None
    if class_index is not None:
        names = conditions_from_dataset_json(class_index)
    meta = convert_snapshot(
        snapshot,
        out,
        conditions=names,
        channels=channels.split(",") if channels else None,
        overwrite=overwrite,
        inputs=[class_index] if class_index is not None else [],
    )
    g = meta.kwargs["G_ema"]
    _say(
        f"wrote {out}: {g['img_resolution']} px, {g['img_channels']} channel(s), "
        f"{g['c_dim']} condition(s) ({', '.join(meta.conditions)})"
    )


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _checkpoint(path: Path) -> Path:
    from phenexplain.training.checkpoint import resolve_checkpoint

    return resolve_checkpoint(path)


Checkpoint = Annotated[
    Path,
    typer.Argument(
        help="Checkpoint folder (train or convert-nvlabs), or a run folder (its latest).",
        callback=_checkpoint,
    ),
]


@app.command()
def train(
    cropset: Annotated[
        Path, typer.Argument(help="Crop set folder written by `phenexplain ingest`.")
    ],
    run_dir: Annotated[
        Path, typer.Option("--run-dir", help="Run folder: checkpoints, stats, samples.")
    ],
    profile: Annotated[
        str | None, typer.Option(help="cpu-small, paper256, auto or a profile in params.yaml.")
    ] = None,
    kimg: Annotated[
        float | None, typer.Option(help="Train until this many thousand real images.")
    ] = None,
    minutes: Annotated[
        float | None,
        typer.Option(help="Wall-clock budget: stop at the first tick after it (kimg is the cap)."),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    tick_kimg: Annotated[float | None, typer.Option(help="Report every this many kimg.")] = None,
    snapshot_ticks: Annotated[
        int | None, typer.Option(help="Checkpoint every this many ticks.")
    ] = None,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads.")] = None,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    resume: Annotated[
        bool, typer.Option(help="Continue the run in --run-dir from its latest checkpoint.")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option(help="Discard an earlier run in --run-dir and start afresh.")
    ] = False,
) -> None:
    """Train the conditional StyleGAN2 on a crop set (defaults: the `train` section of params.yaml).

    Under torchrun the global batch is split across the processes (DDP semantics, gloo or NCCL).
    """
    import os

    import torch.distributed as dist

    from phenexplain.config import load_params, with_overrides
    from phenexplain.training.run import run_training

    params = with_overrides(
        load_params(_State.params_path).train,
        profile=profile,
        kimg=kimg,
        minutes=minutes,
        seed=seed,
        tick_kimg=tick_kimg,
        snapshot_ticks=snapshot_ticks,
        threads=threads,
    )
    distributed = "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1
    if distributed:
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
        if device == "cuda":
            import torch

            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    try:
        progress = run_training(
            cropset, run_dir, params, resume=resume, overwrite=overwrite, device=device
        )
    finally:
        if distributed:
            dist.destroy_process_group()
    _say(f"trained to {progress.cur_nimg / 1000:.3f} kimg; run folder {run_dir}")


@app.command()
def generate(
    checkpoint: Checkpoint,
    out: Annotated[Path, typer.Argument(help="Folder for the images.")],
    condition: Annotated[str, typer.Option(help="Condition name (as in the checkpoint).")],
    seeds: Annotated[str, typer.Option(help="Seeds: '0-99' or '1,5,7'.")] = "0-7",
    truncation: Annotated[float, typer.Option(help="Truncation psi (1 = none).")] = 1.0,
    noise_mode: Annotated[str, typer.Option(help="const, random or none.")] = "const",
) -> None:
    """One image per seed; z = numpy RandomState(seed).randn(z_dim), as the reference draws it."""
    from phenexplain.generate import generate_images, parse_seeds

    paths = generate_images(
        checkpoint, out, condition, parse_seeds(seeds), truncation=truncation, noise_mode=noise_mode
    )
    _say(f"wrote {len(paths)} images to {out}")


@app.command()
def evaluate(
    checkpoint: Checkpoint,
    cropset: Annotated[Path, typer.Argument(help="Crop set to compare with.")],
    out: Annotated[Path | None, typer.Option(help="Write the metrics as JSON here.")] = None,
    metrics: Annotated[
        str | None, typer.Option(help="Extractors: rand, inception (default: train.metrics).")
    ] = None,
    images: Annotated[int | None, typer.Option(help="Generated images per metric.")] = None,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
) -> None:
    """FID/KID of a checkpoint (or a run's latest) against a crop set."""
    from phenexplain.config import load_params
    from phenexplain.fsutil import check_output_file, write_json
    from phenexplain.metrics.evaluate import evaluate_checkpoint

    if out is not None:  # before the work, so that a refused path costs nothing
        check_output_file(out, [checkpoint, cropset])
    train = load_params(_State.params_path).train
    result = evaluate_checkpoint(
        checkpoint, cropset, _names(metrics) if metrics else list(train.metrics),
        n=images or train.metric_images, inception_weights=train.inception_weights, device=device,
    )  # fmt: skip
    if out is not None:
        write_json(out, result)
    typer.echo(json.dumps(result))


@app.command()
def explain(
    checkpoint: Checkpoint,
    out: Annotated[Path, typer.Argument(help="Folder for the videos, LDA and dose response.")],
    control: Annotated[
        str | None, typer.Option(help="The control (when explain.source is null).")
    ] = None,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
) -> None:
    """The `explain` section of params.yaml: traversal videos, LDA map and dose response."""
    from phenexplain.config import load_params
    from phenexplain.explain.jobs import explain_run

    result = explain_run(checkpoint, out, load_params(_State.params_path).explain, control=control,
                         device=device)  # fmt: skip
    for video in result["videos"]:
        _say(f"wrote {video['path']} ({video['frames']} frames)")
    if "dose" in result:
        _say(f"dose response: Spearman rho {result['dose']['spearman_rho_median_vs_dose']:.3f}")


@app.command()
def traverse(
    checkpoint: Checkpoint,
    source: Annotated[str, typer.Option("--from", help="Source condition (column 0).")],
    targets: Annotated[str, typer.Option("--to", help="Target condition(s): B or B,C,...")],
    out: Annotated[
        Path, typer.Option(help=".gif, .mp4, .png (APNG), .tif (stack), or a folder of PNGs.")
    ],
    method: Annotated[
        int, typer.Option(help="1 label embedding (eq. 3), 2 centroid shift (eq. 5), 3 W (eq. 6).")
    ] = 3,
    seeds: Annotated[str, typer.Option(help="Seeds, one row each: '0-3' or '1,5,7'.")] = "0-3",
    steps: Annotated[int, typer.Option(help="Steps: steps + 1 frames.")] = 16,
    truncation: Annotated[float, typer.Option(help="Truncation psi (1 = none).")] = 1.0,
    centroid_samples: Annotated[
        int, typer.Option(help="K random z per centroid (method 2).")
    ] = 100_000,
    colours: Annotated[
        str | None, typer.Option(help="Colour per channel, e.g. blue,green (default: DNA blue).")
    ] = None,
    view: Annotated[
        str, typer.Option(help="composite, or channels (composite + each channel in grey).")
    ] = "composite",
    contrast: Annotated[
        str, typer.Option(help="fixed (uint8 range) or auto (one stretch for the whole video).")
    ] = "fixed",
    fps: Annotated[float, typer.Option(help="Frames per second.")] = 8.0,
    scale: Annotated[int | None, typer.Option(help="Enlarge each image this many times.")] = None,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
) -> None:
    """Latent traversal grid video: a row per seed, column 0 the source, a column per target."""
    from phenexplain.explain.jobs import traversal_video
    from phenexplain.generate import parse_seeds

    with _progress("centroids") as update:
        info = traversal_video(
            checkpoint, out, source=source, targets=_names(targets), seeds=parse_seeds(seeds),
            method=method, steps=steps, truncation_psi=truncation,
            centroid_samples=centroid_samples, colours=colours, view=view, contrast=contrast,
            fps=fps, scale=scale, device=device, progress=update,
        )  # fmt: skip
    _say(f"wrote {info['frames']} frames of {info['size'][0]}x{info['size'][1]} px to {out}")


@latent_app.command("lda")
def latent_lda(
    checkpoint: Checkpoint,
    fit: Annotated[str, typer.Option(help="Conditions the LDA is fitted on: A,B,C.")],
    out: Annotated[Path, typer.Option(help="Folder for lda.png and lda.csv.")],
    project: Annotated[
        str, typer.Option(help="Conditions projected onto the plane (e.g. each dose).")
    ] = "",
    n_fit: Annotated[int, typer.Option(help="Samples per fitted condition.")] = 3000,
    n_project: Annotated[int, typer.Option(help="Samples per projected condition.")] = 300,
    seed: Annotated[int, typer.Option(help="Seed of the z samples.")] = 0,
) -> None:
    """LDA of W of generated samples (paper Fig. 4b)."""
    from phenexplain.explain.jobs import lda_job

    info = lda_job(
        checkpoint, out, fit=_names(fit), project_names=_names(project), n_fit=n_fit,
        n_project=n_project, seed=seed,
    )  # fmt: skip
    _say(f"wrote {info['png']} and {info['csv']} ({info['points']} points)")


@latent_app.command("dose")
def latent_dose(
    checkpoint: Checkpoint,
    control: Annotated[str, typer.Option(help="The control condition (e.g. DMSO).")],
    out: Annotated[Path, typer.Option(help="Folder for the plots, CSVs and summary.")],
    doses: Annotated[
        str | None,
        typer.Option(
            help="Doses in increasing order (default: the others, by the number in their names)."
        ),
    ] = None,
    n: Annotated[int, typer.Option(help="Samples per dose.")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the z samples.")] = 0,
    projection_seeds: Annotated[
        str, typer.Option(help="Seeds shown projected onto the traversal (Fig. 4c).")
    ] = "0-2",
    centroid_samples: Annotated[int, typer.Option(help="K random z per centroid.")] = 100_000,
) -> None:
    """Dose response: W distances to the control centroid (Fig. 4d) and projections (Fig. 4c)."""
    from phenexplain.explain.jobs import dose_job
    from phenexplain.generate import parse_seeds

    with _progress("centroids") as update:
        summary = dose_job(
            checkpoint, out, control=control, doses=_names(doses) if doses else None, n=n,
            seed=seed, projection_seeds=parse_seeds(projection_seeds),
            centroid_samples=centroid_samples, progress=update,
        )  # fmt: skip
    medians = ", ".join(f"{k} {v:.3f}" for k, v in summary["median_distance"].items())
    _say(f"median W distance to {control}: {medians}")
    _say(f"Spearman rho (median distance vs dose): {summary['spearman_rho_median_vs_dose']:.3f}")


@app.command("project")
def project_cmd(
    checkpoint: Checkpoint,
    source: Annotated[
        Path, typer.Argument(help="A crop image (PNG/TIFF, uint8) or a crop set folder.")
    ],
    condition: Annotated[str, typer.Option(help="The crop's condition.")],
    to: Annotated[str, typer.Option(help="Condition to translate it to (method 2).")],
    out: Annotated[Path, typer.Option(help="Folder for the GIFs and projection.json.")],
    crops: Annotated[
        str, typer.Option(help="With a crop set: which of its --condition crops ('0-7').")
    ] = "0-3",
    steps: Annotated[int, typer.Option(help="Optimisation steps per crop.")] = 400,
    frames: Annotated[int, typer.Option(help="Translation steps.")] = 16,
    per_layer: Annotated[bool, typer.Option(help="Optimise one w per layer (W+).")] = True,
    noise: Annotated[bool, typer.Option(help="Also optimise the noise maps.")] = False,
    centroid_samples: Annotated[int, typer.Option(help="K random z per centroid.")] = 100_000,
) -> None:
    """Project real crops into W and translate them to another condition; reports PSNR/SSIM."""
    import numpy as np

    from phenexplain.explain.jobs import project_job, read_crop
    from phenexplain.generate import parse_seeds

    if source.is_dir():
        from phenexplain.data.cropset import CropSet

        cs = CropSet(source)
        if condition not in cs.conditions:
            raise PhenexplainError(
                f"{source} has no crops of {condition!r}: {sorted(cs.conditions)}"
            )
        of_condition = np.flatnonzero(cs.labels == cs.conditions[condition])
        wanted = parse_seeds(crops)
        if max(wanted) >= len(of_condition):
            raise PhenexplainError(
                f"{source} has {len(of_condition)} crops of {condition!r}; --crops asks for "
                f"number {max(wanted)}"
            )
        picked = [cs[int(of_condition[i])] for i in wanted]
        images = np.stack([image for image, _ in picked])
    else:
        images = read_crop(source)[None]
    with _progress("projecting") as update:
        summary = project_job(
            checkpoint, images, out, source=condition, target=to, steps=steps, frames=frames,
            per_layer=per_layer, optimize_noise=noise, centroid_samples=centroid_samples,
            progress=update, inputs=[source],
        )  # fmt: skip
    _say(
        f"projected {len(summary['crops'])} crop(s): PSNR {summary['mean_psnr_db']:.2f} dB, "
        f"SSIM {summary['mean_ssim']:.3f}; results in {out}"
    )


@app.command()
def report(
    checkpoint: Checkpoint,
    cropset: Annotated[Path, typer.Argument(help="The crop set the model was trained on.")],
    out: Annotated[Path, typer.Argument(help="Folder for report.html, explorer.html, CSVs.")],
    control: Annotated[str | None, typer.Option(help="The control condition.")] = None,
    real_per_condition: Annotated[
        int | None, typer.Option(help="Real crops per condition.")
    ] = None,
    synthetic_per_condition: Annotated[
        int | None, typer.Option(help="Generated crops per condition.")
    ] = None,
    cnn_epochs: Annotated[int | None, typer.Option(help="Epochs of the CNN check.")] = None,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
) -> None:
    """Validation report: FID/KID, samples, traversals, real-vs-synthetic assays and statistics,
    feature shifts, CNN discriminability, LDA and dose response (defaults: params.yaml report)."""
    import time

    from phenexplain.config import load_params, with_overrides
    from phenexplain.report.build import build_report

    params = with_overrides(
        load_params(_State.params_path).report,
        control=control,
        real_per_condition=real_per_condition,
        synthetic_per_condition=synthetic_per_condition,
        cnn_epochs=cnn_epochs,
    )
    start = time.perf_counter()

    def stage(name: str) -> None:
        _say(f"[{time.perf_counter() - start:6.1f} s] {name}")

    build_report(checkpoint, cropset, out, params, device=device, stage=stage)
    _say(f"report: {out / 'report.html'}  explorer: {out / 'explorer.html'}")


@app.command()
def serve(
    folder: Annotated[Path, typer.Argument(help="A report folder (report.html, explorer.html).")],
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
) -> None:
    """Serve a report folder over HTTP (the pages also work opened as files): its regular files
    only, never a listing, a hidden file or anything a link points to outside it."""
    from phenexplain.report.serve import serve_report

    serve_report(
        folder,
        host,
        port,
        on_ready=lambda bound: _say(f"serving {folder} at http://{host}:{bound}/explorer.html"),
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


@bench_app.command("ingest")
def bench_ingest(
    fields: Annotated[int, typer.Option(help="Fields to ingest (1024x1280, 3 channels).")] = 28,
    workers: Annotated[str, typer.Option(help="Comma-separated worker counts to measure.")] = "1,2",
) -> None:
    """Ingest speed (read + QC + nuclei + crops), in fields/s."""
    from phenexplain.bench import bench_ingest as run

    for line in run(fields=fields, workers=[int(w) for w in workers.split(",")]):
        typer.echo(json.dumps(line))


@bench_app.command("measure")
def bench_measure(
    crops: Annotated[int, typer.Option(help="Crops measured (128 px, 3 channels).")] = 64,
    workers: Annotated[str, typer.Option(help="Comma-separated worker counts to measure.")] = "1,2",
) -> None:
    """Crops/s through segmentation + the full feature panel, and through the assays alone."""
    from phenexplain.bench import bench_measure as run

    for line in run(crops=crops, workers=[int(w) for w in workers.split(",")]):
        typer.echo(json.dumps(line))


@bench_app.command("explain")
def bench_explain(
    resolution: Annotated[int, typer.Option(help="Image size, px.")] = 64,
    centroid_samples: Annotated[int, typer.Option(help="K for the centroid timing.")] = 100_000,
) -> None:
    """Traversal frames/s (5 x 4 grid) and centroid time for K samples, JSON lines."""
    from phenexplain.bench import bench_explain as run

    for line in run(resolution=resolution, centroid_samples=centroid_samples):
        typer.echo(json.dumps(line))


def bench_network(
    ctx: typer.Context,
    resolution: Annotated[int, typer.Option(help="Image size, px.")] = 32,
    channel_base: Annotated[int, typer.Option(help="Channel base.")] = 4096,
    channel_max: Annotated[int, typer.Option(help="Channel max.")] = 128,
    batch: Annotated[int | None, typer.Option(help="Minibatch (train 16, generate 64).")] = None,
    map_layers: Annotated[int, typer.Option(help="Mapping depth.")] = 2,
    conditions: Annotated[int, typer.Option(help="Number of conditions.")] = 4,
    channels: Annotated[int, typer.Option(help="Image channels.")] = 3,
    threads: Annotated[int, typer.Option(help="torch CPU threads.")] = 2,
) -> None:
    """Network speed for one config (the reference anchor's defaults), JSON lines."""
    from phenexplain import bench

    net = (resolution, channel_base, channel_max)
    rest = dict(map_layers=map_layers, conditions=conditions, channels=channels, threads=threads)
    if ctx.info_name == "train":
        lines = bench.bench_train(*net, batch=batch or 16, **rest)
    else:
        lines = bench.bench_generate(*net, batch=batch or 64, **rest)
    for line in lines:
        typer.echo(json.dumps(line))


bench_app.command(
    "train", help="Training speed (img/s, reference schedule, fp32) and peak memory."
)(bench_network)
bench_app.command("generate", help="Inference img/s, time to map 100,000 z, peak memory.")(
    bench_network
)


@bench_app.command("science")
def bench_science(
    out: Annotated[Path, typer.Argument(help="Benchmark folder (created; resumed if it exists).")],
    assays: Annotated[
        str, typer.Option(help="Comma-separated assays: nfkb, golgi, dose, subtle.")
    ] = "nfkb,golgi,dose,subtle",
    seeds: Annotated[int, typer.Option(help="Training seeds per assay (0, 1, ...).")] = 3,
    profile: Annotated[
        str | None,
        typer.Option(
            help="Training profile (params.yaml), or several, comma-separated, to compare side "
            "by side on the same plates; PROFILE@KIMG trains that one for KIMG kimg (e.g. "
            "cpu-small,cpu-small-v1@20: the recipe and the old profile at its old budget)."
        ),
    ] = None,
    kimg: Annotated[
        float | None,
        typer.Option(help="Training budget, kimg (default: params.yaml's, the demo's)."),
    ] = None,
    minutes: Annotated[
        float | None,
        typer.Option(help="Training budget, minutes (kimg is then the cap)."),
    ] = None,
    sites_per_well: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Sites per well of the plates, 8 wells per condition (default 24: about "
            "2,100 crops per condition).",
        ),
    ] = None,
) -> None:
    """Train and validate each profile on each planted assay over training seeds (see
    phenexplain.science); one JSON line per (profile, assay, feature, condition, seed), then
    summary.md and summary.png in OUT. Finished runs are kept, so it resumes."""
    from phenexplain.config import load_params, with_overrides
    from phenexplain.science import ASSAYS, SITES_PER_WELL, run_science

    params = load_params(_State.params_path)
    train = with_overrides(params.train, kimg=kimg, minutes=minutes)  # --minutes: kimg caps it
    params = params.model_copy(update={"train": train})
    names = [a.strip() for a in assays.split(",") if a.strip()] or list(ASSAYS)
    profiles = [p.strip() for p in (profile or "").split(",") if p.strip()] or None
    _, md, png = run_science(
        out, params, assays=names, seeds=seeds, profiles=profiles,
        sites_per_well=sites_per_well or SITES_PER_WELL, say=typer.echo,
    )  # fmt: skip
    _say(f"summary: {md} and {png}")


def main() -> None:
    """Console-script entry point: user errors become one clear line and exit status 1."""
    try:
        app()
    except PhenexplainError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
