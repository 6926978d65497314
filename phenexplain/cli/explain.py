"""Explain commands: traversal videos, latent analyses in W, projection of real crops.

Defaults: params.yaml `explain` (traversals, LDA, dose response, the centroids' K) and `project`.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from phenexplain.cli.common import (
    Checkpoint,
    Device,
    DeviceOption,
    from_params,
    names,
    params,
    progress,
    resolve,
    say,
    seeds,
)

latent_app = typer.Typer(help="Latent analysis in W: LDA maps and dose response (paper Fig. 4b-d).")


class View(StrEnum):
    composite = "composite"
    channels = "channels"


class Contrast(StrEnum):
    fixed = "fixed"
    auto = "auto"


Centroids = Annotated[
    int | None,
    typer.Option(help=from_params("explain.centroid_samples", "K random z per centroid (eq. 4).")),
]


def explain(
    checkpoint: Checkpoint,
    out: Annotated[Path, typer.Argument(help="Folder for the videos, LDA and dose response.")],
    control: Annotated[
        str | None,
        typer.Option(
            help=from_params("report.control", "The control, when explain.source is null.")
        ),
    ] = None,
    device: DeviceOption = Device.cpu,
) -> None:
    """The `explain` section of params.yaml: traversal videos, LDA map and dose response."""
    from phenexplain.explain.jobs import explain_run

    control = resolve("report", control=control).control  # as the pipeline's explain stage
    result = explain_run(checkpoint, out, params().explain, control=control, device=device.value)
    for video in result["videos"]:
        say(f"wrote {video['path']} ({video['frames']} frames)")
    if "dose" in result:
        say(f"dose response: Spearman rho {result['dose']['spearman_rho_median_vs_dose']:.3f}")


def traverse(
    checkpoint: Checkpoint,
    out: Annotated[
        Path,
        typer.Option(
            help=".gif, .mp4, .png (APNG), .tif (RGB stack), or a folder of PNGs; the raw "
            "channels go beside it as <name>.ome.tif (an .ome.tif --out: those alone)."
        ),
    ],
    source: Annotated[
        str | None,
        typer.Option(
            "--from",
            help=from_params("explain.source", "Source condition (column 0); null: the control."),
        ),
    ] = None,
    targets: Annotated[
        str | None,
        typer.Option(
            "--to",
            help=from_params(
                "explain.targets", "Target condition(s): B or B,C,...; null: all others."
            ),
        ),
    ] = None,
    method: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=3,
            help=from_params(
                "explain.method",
                "1 label embedding (eq. 3), 2 centroid shift (eq. 5), 3 W (eq. 6).",
            ),
        ),
    ] = None,
    seed_list: Annotated[
        str | None,
        typer.Option(
            "--seeds", help=from_params("explain.seeds", "Seeds, one row each: '0-3' or '1,5,7'.")
        ),
    ] = None,
    steps: Annotated[
        int | None, typer.Option(help=from_params("explain.steps", "Steps: steps + 1 frames."))
    ] = None,
    truncation: Annotated[
        float | None,
        typer.Option(help=from_params("explain.truncation", "Truncation psi (1 = none).")),
    ] = None,
    centroid_samples: Centroids = None,
    colours: Annotated[
        str | None, typer.Option(help="Colour per channel, e.g. blue,green (default: DNA blue).")
    ] = None,
    view: Annotated[
        View | None,
        typer.Option(
            help=from_params(
                "explain.view", "composite, or channels (composite + each channel in grey)."
            )
        ),
    ] = None,
    contrast: Annotated[
        Contrast | None,
        typer.Option(
            help=from_params(
                "explain.contrast", "fixed (uint8 range) or auto (one stretch for the video)."
            )
        ),
    ] = None,
    fps: Annotated[
        float | None, typer.Option(help=from_params("explain.fps", "Frames per second."))
    ] = None,
    scale: Annotated[int | None, typer.Option(help="Enlarge each image this many times.")] = None,
    device: DeviceOption = Device.cpu,
) -> None:
    """Latent traversal grid video: a row per seed, column 0 the source, a column per target."""
    from phenexplain.explain.jobs import traversal_video
    from phenexplain.explain.latent import pick_control
    from phenexplain.training.checkpoint import read_config

    cfg = resolve(
        "explain", source=source, targets=names(targets), method=method, seeds=seed_list,
        steps=steps, truncation=truncation, centroid_samples=centroid_samples, view=view,
        contrast=contrast, fps=fps,
    )  # fmt: skip
    conditions = read_config(checkpoint).conditions
    start = cfg.source or pick_control(conditions, resolve("report").control)
    with progress("centroids") as update:
        info = traversal_video(
            checkpoint, out, source=start,
            targets=cfg.targets or [c for c in conditions if c != start], seeds=seeds(cfg.seeds),
            method=cfg.method, steps=cfg.steps, truncation_psi=cfg.truncation,
            centroid_samples=cfg.centroid_samples, colours=colours, view=cfg.view,
            contrast=cfg.contrast, fps=cfg.fps, scale=scale, device=device.value, progress=update,
        )  # fmt: skip
    say(f"wrote {info['frames']} frames of {info['size'][0]}x{info['size'][1]} px to {out}")
    if info.get("raw") and info["raw"] != str(out):
        say(f"raw channels (OME-TIFF, a series per seed and target): {info['raw']}")


@latent_app.command("lda")
def latent_lda(
    checkpoint: Checkpoint,
    fit: Annotated[str, typer.Option(help="Conditions the LDA is fitted on: A,B,C.")],
    out: Annotated[Path, typer.Option(help="Folder for lda.png and lda.csv.")],
    project: Annotated[
        str, typer.Option(help="Conditions projected onto the plane (e.g. each dose).")
    ] = "",
    n_fit: Annotated[
        int | None,
        typer.Option(help=from_params("explain.lda_samples", "Samples per fitted condition.")),
    ] = None,
    n_project: Annotated[
        int | None, typer.Option(help="Samples per projected condition (default: n-fit / 10).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the z samples.")] = 0,
    device: DeviceOption = Device.cpu,
) -> None:
    """LDA of W of generated samples (paper Fig. 4b)."""
    from phenexplain.explain.jobs import lda_job

    cfg = resolve("explain", lda_samples=n_fit)
    info = lda_job(
        checkpoint, out, fit=names(fit), project_names=names(project), n_fit=cfg.lda_samples,
        n_project=n_project, seed=seed, device=device.value,
    )  # fmt: skip
    say(f"wrote {info['png']} and {info['csv']} ({info['points']} points)")


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
    n: Annotated[
        int | None, typer.Option(help=from_params("explain.dose_samples", "Samples per dose."))
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the z samples.")] = 0,
    projection_seeds: Annotated[
        str, typer.Option(help="Seeds shown projected onto the traversal (Fig. 4c).")
    ] = "0-2",
    centroid_samples: Centroids = None,
    device: DeviceOption = Device.cpu,
) -> None:
    """Dose response: W distances to the control centroid (Fig. 4d) and projections (Fig. 4c)."""
    from phenexplain.explain.jobs import dose_job

    cfg = resolve("explain", dose_samples=n, centroid_samples=centroid_samples)
    with progress("centroids") as update:
        summary = dose_job(
            checkpoint, out, control=control, doses=names(doses), n=cfg.dose_samples, seed=seed,
            projection_seeds=seeds(projection_seeds), centroid_samples=cfg.centroid_samples,
            device=device.value, progress=update,
        )  # fmt: skip
    medians = ", ".join(f"{k} {v:.3f}" for k, v in summary["median_distance"].items())
    say(f"median W distance to {control}: {medians}")
    say(f"Spearman rho (median distance vs dose): {summary['spearman_rho_median_vs_dose']:.3f}")


def project(
    checkpoint: Checkpoint,
    source: Annotated[
        Path, typer.Argument(help="A crop image (PNG/TIFF, uint8) or a crop set folder.")
    ],
    condition: Annotated[str, typer.Option(help="The crop's condition.")],
    to: Annotated[str, typer.Option(help="Condition to translate it to (method 2).")],
    out: Annotated[Path, typer.Option(help="Folder for the GIFs and projection.json.")],
    crops: Annotated[
        str | None,
        typer.Option(
            help=from_params("project.crops", "With a crop set: which of its --condition crops.")
        ),
    ] = None,
    steps: Annotated[
        int | None, typer.Option(help=from_params("project.steps", "Optimisation steps per crop."))
    ] = None,
    frames: Annotated[
        int | None, typer.Option(help=from_params("project.frames", "Translation steps."))
    ] = None,
    per_layer: Annotated[
        bool | None,
        typer.Option(help=from_params("project.per_layer", "Optimise one w per layer (W+).")),
    ] = None,
    noise: Annotated[
        bool | None,
        typer.Option(help=from_params("project.optimize_noise", "Also optimise the noise maps.")),
    ] = None,
    centroid_samples: Centroids = None,
    encoder: Annotated[
        Path | None,
        typer.Option(
            help="Start from this encoder's guess (encoder train's RUN_DIR/encoder) instead of "
            "the condition's centroid."
        ),
    ] = None,
    device: DeviceOption = Device.cpu,
) -> None:
    """Project real crops into W and translate them to another condition; reports PSNR/SSIM."""
    from phenexplain.explain.jobs import pick_crops, project_job

    cfg = resolve("project", crops=crops, steps=steps, frames=frames, per_layer=per_layer,
                  optimize_noise=noise)  # fmt: skip
    k = resolve("explain", centroid_samples=centroid_samples).centroid_samples
    images = pick_crops(source, condition, seeds(cfg.crops))
    with progress("projecting") as update:
        summary = project_job(
            checkpoint, images, out, source=condition, target=to, steps=cfg.steps,
            frames=cfg.frames, per_layer=cfg.per_layer, optimize_noise=cfg.optimize_noise,
            centroid_samples=k, device=device.value, progress=update, inputs=[source],
            encoder=encoder,
        )  # fmt: skip
    say(
        f"projected {len(summary['crops'])} crop(s): PSNR {summary['mean_psnr_db']:.2f} dB, "
        f"SSIM {summary['mean_ssim']:.3f}; results in {out}"
    )


def register(app: typer.Typer) -> None:
    app.command()(explain)
    app.command()(traverse)
    app.command("project")(project)
    app.add_typer(latent_app, name="latent")
