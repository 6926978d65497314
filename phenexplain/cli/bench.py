"""Benchmark commands: each prints one JSON line per figure (name, value, unit, config).

A benchmark's configuration is its library function's defaults (`phenexplain.bench`); the flags
given replace them. `bench science` trains with params.yaml's `train` section like `train` does.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated

import typer

from phenexplain.cli.common import given, integers, names, params, resolve, say

bench_app = typer.Typer(
    help="Benchmarks: each prints one JSON line per figure (name, value, unit, config)."
)

Workers = Annotated[
    str | None, typer.Option(help="Comma-separated worker counts to measure (default: 1,2).")
]


def _print(lines: Iterable[dict]) -> None:
    for line in lines:
        typer.echo(json.dumps(line))


@bench_app.command("synth")
def bench_synth(
    fields: Annotated[
        int | None,
        typer.Option(help="Fields per measurement (1024x1280, 3 channels) (default: 14)."),
    ] = None,
    workers: Workers = None,
    seed: Annotated[
        int | None, typer.Option(help="Seed of the generated plates (default: 0).")
    ] = None,
) -> None:
    """Synthetic plate generation speed, in fields/s (one 1024x1280 3-channel field is the unit)."""
    from phenexplain import bench

    _print(bench.bench_synth(**given(fields=fields, workers=integers(workers), seed=seed)))


@bench_app.command("ingest")
def bench_ingest(
    fields: Annotated[
        int | None, typer.Option(help="Fields to ingest (1024x1280, 3 channels) (default: 28).")
    ] = None,
    workers: Workers = None,
) -> None:
    """Ingest speed (read + QC + nuclei + crops), in fields/s."""
    from phenexplain import bench

    _print(bench.bench_ingest(**given(fields=fields, workers=integers(workers))))


@bench_app.command("measure")
def bench_measure(
    crops: Annotated[
        int | None, typer.Option(help="Crops measured (128 px, 3 channels) (default: 64).")
    ] = None,
    workers: Workers = None,
) -> None:
    """Crops/s through segmentation + the full feature panel, and through the assays alone."""
    from phenexplain import bench

    _print(bench.bench_measure(**given(crops=crops, workers=integers(workers))))


@bench_app.command("explain")
def bench_explain(
    resolution: Annotated[int | None, typer.Option(help="Image size, px (default: 64).")] = None,
    centroid_samples: Annotated[
        int | None, typer.Option(help="K for the centroid timing (default: 100000).")
    ] = None,
) -> None:
    """Traversal frames/s (5 x 4 grid) and centroid time for K samples, JSON lines."""
    from phenexplain import bench

    _print(bench.bench_explain(**given(resolution=resolution, centroid_samples=centroid_samples)))


@bench_app.command("translate")
def bench_translate(
    crops: Annotated[
        int | None, typer.Option(help="Crops translated (128 px, 2 channels) (default: 256).")
    ] = None,
    refine_steps: Annotated[
        int | None, typer.Option(help="Refinement steps of the second figure (default: 20).")
    ] = None,
) -> None:
    """`translate` crops/s with the encoder alone (embedded network), then with refinement."""
    from phenexplain import bench

    _print(bench.bench_translate(**given(crops=crops, refine_steps=refine_steps)))


def bench_network(
    ctx: typer.Context,
    resolution: Annotated[int | None, typer.Option(help="Image size, px (default: 32).")] = None,
    channel_base: Annotated[int | None, typer.Option(help="Channel base (default: 4096).")] = None,
    channel_max: Annotated[int | None, typer.Option(help="Channel max (default: 128).")] = None,
    batch: Annotated[
        int | None, typer.Option(help="Minibatch (default: train 16, generate 64).")
    ] = None,
    map_layers: Annotated[int | None, typer.Option(help="Mapping depth (default: 2).")] = None,
    conditions: Annotated[
        int | None, typer.Option(help="Number of conditions (default: 4).")
    ] = None,
    channels: Annotated[int | None, typer.Option(help="Image channels (default: 3).")] = None,
    z_dim: Annotated[int | None, typer.Option(help="z and w width (default: 512).")] = None,
    repeats: Annotated[
        int | None, typer.Option(help="Timed repeats; the figure is their median (default: 3).")
    ] = None,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads (default: 2).")] = None,
    device: Annotated[str | None, typer.Option(help="cpu or cuda (default: cpu).")] = None,
    compile: Annotated[
        bool,
        typer.Option(
            "--compile",
            help="generate only: G through torch.compile, timed after its first call "
            "(whose seconds are a figure).",
        ),
    ] = False,
) -> None:
    """Network speed for one config (the reference anchor's defaults), JSON lines."""
    from phenexplain import bench

    if compile and ctx.info_name == "train":
        # measured: the training step graph-breaks at every noise draw from an explicit
        # torch.Generator (and at the R1/path-length double backward), ~25x slower, not faster
        raise typer.BadParameter(
            "--compile is measured for `bench generate` only", param_hint="--compile"
        )

    config = given(
        resolution=resolution, channel_base=channel_base, channel_max=channel_max, batch=batch,
        map_layers=map_layers, conditions=conditions, channels=channels, z_dim=z_dim,
        repeats=repeats, threads=threads, device=device,
    )  # fmt: skip
    if ctx.info_name == "train":
        _print(bench.bench_train(**config))
    else:
        _print(bench.bench_generate(**config, compile=compile))


bench_app.command(
    "train",
    help="Training speed (img/s, reference schedule, fp32; median of repeats), effective "
    "GFLOP/s beside the plain-convolution ceiling, peak memory.",
)(bench_network)
bench_app.command(
    "generate", help="Inference img/s and GFLOP/s, time to map 100,000 z, peak memory."
)(bench_network)


@bench_app.command("science")
def bench_science(
    out: Annotated[Path, typer.Argument(help="Benchmark folder (created; resumed if it exists).")],
    assays: Annotated[
        str | None,
        typer.Option(help="Comma-separated assays (default: nfkb,golgi,dose,subtle)."),
    ] = None,
    seeds: Annotated[int, typer.Option(help="Training seeds per assay (0, 1, ...).")] = 3,
    profile: Annotated[
        str | None,
        typer.Option(
            help="Training profile (params.yaml), or several, comma-separated, to compare side "
            "by side on the same plates; PROFILE@KIMG trains that one for KIMG kimg (e.g. "
            "cpu-small,cpu-small-v1@20: the recipe and the old profile at its old budget) "
            "(default: params.yaml train.profile)."
        ),
    ] = None,
    kimg: Annotated[
        float | None, typer.Option(help="Training budget, kimg (default: params.yaml train.kimg).")
    ] = None,
    minutes: Annotated[
        float | None,
        typer.Option(
            help="Training budget, minutes (kimg is then the cap; default: params.yaml "
            "train.minutes)."
        ),
    ] = None,
    sites_per_well: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Sites per well of the plates, 8 wells per condition (default 24: about "
            "2,100 crops per condition).",
        ),
    ] = None,
    translate: Annotated[
        bool,
        typer.Option(
            help="Also translate each run's real control crops with an encoder and score the "
            "translations (translation.jsonl, a section of summary.md); adds a few minutes per "
            "run, and runs on finished runs too."
        ),
    ] = False,
) -> None:
    """Train and validate each profile on each planted assay over training seeds (see
    phenexplain.science); one JSON line per (profile, assay, feature, condition, seed), then
    summary.md and summary.png in OUT. Finished runs are kept, so it resumes."""
    from phenexplain.science import run_science

    train = resolve("train", kimg=kimg, minutes=minutes)  # --minutes: kimg caps it
    _, md, png = run_science(
        out, params().model_copy(update={"train": train}), seeds=seeds, say=typer.echo,
        translate=translate,
        **given(assays=names(assays) or None, profiles=names(profile) or None,
                sites_per_well=sites_per_well),
    )  # fmt: skip
    say(f"summary: {md} and {png}")
