"""Model commands: train, generate, evaluate, and bring in a stylegan2-ada-pytorch snapshot."""

from __future__ import annotations

import json
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
    resolve,
    say,
    seeds,
)
from phenexplain.errors import PhenexplainError


class TrainDevice(StrEnum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class NoiseMode(StrEnum):
    const = "const"
    random = "random"
    none = "none"


def _processes(text: str | None) -> int | str | None:
    if text is None or text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise PhenexplainError(f"--nproc {text!r}: give a number of processes or auto") from None


def train(
    cropset: Annotated[
        Path, typer.Argument(help="Crop set folder written by `phenexplain ingest`.")
    ],
    run_dir: Annotated[
        Path, typer.Option("--run-dir", help="Run folder: checkpoints, stats, samples.")
    ],
    profile: Annotated[
        str | None,
        typer.Option(
            help=from_params(
                "train.profile", "cpu-small, paper256, auto or a profile in params.yaml."
            )
        ),
    ] = None,
    kimg: Annotated[
        float | None,
        typer.Option(help=from_params("train.kimg", "Train until this many thousand real images.")),
    ] = None,
    minutes: Annotated[
        float | None,
        typer.Option(
            help=from_params(
                "train.minutes",
                "Wall-clock budget: stop at the first tick after it (kimg caps it).",
            )
        ),
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help=from_params("train.seed", "Random seed."))
    ] = None,
    tick_kimg: Annotated[
        float | None,
        typer.Option(help=from_params("train.tick_kimg", "Report every this many kimg.")),
    ] = None,
    snapshot_ticks: Annotated[
        int | None,
        typer.Option(help=from_params("train.snapshot_ticks", "Checkpoint every this many ticks.")),
    ] = None,
    threads: Annotated[
        int | None, typer.Option(help=from_params("train.threads", "torch CPU threads."))
    ] = None,
    device: Annotated[
        TrainDevice | None,
        typer.Option(help=from_params("train.device", "Where to train (auto: a GPU if visible).")),
    ] = None,
    nproc: Annotated[
        str | None,
        typer.Option(
            help=from_params(
                "train.nproc", "Training processes (a number, or auto: one per visible GPU)."
            )
        ),
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="Continue the run in --run-dir from its latest checkpoint.")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option(help="Discard an earlier run in --run-dir and start afresh.")
    ] = False,
) -> None:
    """Train the conditional StyleGAN2 on a crop set.

    With --nproc above 1 it launches torchrun itself; under torchrun the global batch is split
    across the processes (DDP semantics, gloo or NCCL).
    """
    from phenexplain.training.launch import train_with_params

    train_params = resolve(
        "train", profile=profile, kimg=kimg, minutes=minutes, seed=seed, tick_kimg=tick_kimg,
        snapshot_ticks=snapshot_ticks, threads=threads, device=device and device.value,
        nproc=_processes(nproc),
    )  # fmt: skip
    reached = train_with_params(cropset, run_dir, train_params, resume=resume,
                                overwrite=overwrite, on_line=typer.echo)  # fmt: skip
    say(f"trained to {reached:.3f} kimg; run folder {run_dir}")


def generate(
    checkpoint: Checkpoint,
    out: Annotated[Path, typer.Argument(help="Folder for the images.")],
    condition: Annotated[str, typer.Option(help="Condition name (as in the checkpoint).")],
    seed_list: Annotated[
        str | None,
        typer.Option("--seeds", help=from_params("generate.seeds", "Seeds: '0-99' or '1,5,7'.")),
    ] = None,
    truncation: Annotated[
        float | None,
        typer.Option(help=from_params("generate.truncation", "Truncation psi (1 = none).")),
    ] = None,
    noise_mode: Annotated[
        NoiseMode | None, typer.Option(help=from_params("generate.noise_mode", "Noise inputs."))
    ] = None,
) -> None:
    """One image per seed; z = numpy RandomState(seed).randn(z_dim), as the reference draws it."""
    from phenexplain.generate import generate_images

    cfg = resolve("generate", seeds=seed_list, truncation=truncation, noise_mode=noise_mode)
    paths = generate_images(
        checkpoint, out, condition, seeds(cfg.seeds), truncation=cfg.truncation,
        noise_mode=cfg.noise_mode,
    )  # fmt: skip
    say(f"wrote {len(paths)} images to {out}")


class Protocol(StrEnum):
    ours = "ours"
    field = "field"


def evaluate(
    checkpoint: Checkpoint,
    cropset: Annotated[Path, typer.Argument(help="Crop set to compare with.")],
    out: Annotated[Path | None, typer.Option(help="Write the metrics as JSON here.")] = None,
    metrics: Annotated[
        str | None,
        typer.Option(help=from_params("train.metrics", "Extractors: rand, inception.")),
    ] = None,
    images: Annotated[
        int | None,
        typer.Option(help=from_params("train.metric_images", "Generated images per metric.")),
    ] = None,
    device: DeviceOption = Device.cpu,
    protocol: Annotated[
        Protocol,
        typer.Option(
            help="ours: FID/KID of generated images against all crops; field: the CellFlux/IMPA "
            "protocol (FIDo/FIDc, KIDo/KIDc over the treated conditions)."
        ),
    ] = Protocol.ours,
    translation: Annotated[
        Path | None,
        typer.Option(help="--protocol field: score this translation crop set instead."),
    ] = None,
    samples: Annotated[
        int, typer.Option(min=2, help="--protocol field: real crops used (CellFlux: 5120).")
    ] = 5120,
    split: Annotated[
        str | None, typer.Option(help="--protocol field: only crops of this split (e.g. test).")
    ] = None,
) -> None:
    """FID/KID of a checkpoint (or a run's latest) against a crop set."""
    from phenexplain.fsutil import check_output_file, write_json

    if out is not None:  # before the work, so that a refused path costs nothing
        check_output_file(out, [checkpoint, cropset])
    cfg = resolve("train", metrics=names(metrics), metric_images=images)
    if protocol is Protocol.field:
        from phenexplain.data.cropset import CropSet
        from phenexplain.metrics.extractors import make_extractor
        from phenexplain.metrics.field import field_protocol

        channels = len(CropSet(cropset).channels)
        extractors = [
            make_extractor(m, channels, weights=cfg.inception_weights, device=device.value)
            for m in dict.fromkeys(cfg.metrics)
        ]
        result = field_protocol(checkpoint, cropset, extractors, translation=translation,
                                samples=samples, split=split)  # fmt: skip
    else:
        from phenexplain.metrics.evaluate import evaluate_checkpoint

        result = evaluate_checkpoint(
            checkpoint, cropset, list(cfg.metrics), n=cfg.metric_images,
            inception_weights=cfg.inception_weights, device=device.value,
        )  # fmt: skip
    if out is not None:
        write_json(out, result)
    typer.echo(json.dumps(result))


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

    condition_names = names(conditions) or None
    if class_index is not None:
        condition_names = conditions_from_dataset_json(class_index)
    meta = convert_snapshot(
        snapshot, out, conditions=condition_names, channels=names(channels) or None,
        overwrite=overwrite, inputs=[class_index] if class_index is not None else [],
    )  # fmt: skip
    g = meta.kwargs["G_ema"]
    say(
        f"wrote {out}: {g['img_resolution']} px, {g['img_channels']} channel(s), "
        f"{g['c_dim']} condition(s) ({', '.join(meta.conditions)})"
    )


def show_params() -> None:
    """Print the resolved parameters (params.yaml with defaults filled in) as JSON."""
    typer.echo(json.dumps(params().model_dump(), indent=2))


def register(app: typer.Typer) -> None:
    app.command()(train)
    app.command()(generate)
    app.command()(evaluate)
    app.command("convert-nvlabs")(convert_nvlabs)
    app.command("params")(show_params)
