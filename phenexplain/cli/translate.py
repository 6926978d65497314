"""Real-cell translation: `encoder train` (an encoder of real crops into W+ of a checkpoint) and
`translate` (a condition's crops shown under the others, written as a crop set)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from phenexplain.cli.common import Checkpoint, from_params, names, progress, resolve, say, seeds

encoder_app = typer.Typer(help="An encoder of real crops into W+ of a trained generator.")


def _option(key: str, what: str):
    return typer.Option(help=from_params(f"encoder.{key}", what))


@encoder_app.command("train")
def encoder_train(
    checkpoint: Checkpoint,
    cropset: Annotated[Path, typer.Argument(help="The crop set the checkpoint was trained on.")],
    run_dir: Annotated[Path, typer.Option(help="Run folder; the encoder goes to RUN_DIR/encoder.")],
    synthetic_steps: Annotated[
        int | None, _option("synthetic_steps", "Steps on generated images.")
    ] = None,
    real_steps: Annotated[int | None, _option("real_steps", "Steps on real crops.")] = None,
    batch: Annotated[int | None, _option("batch", "Images per step.")] = None,
    channels: Annotated[int | None, _option("channels", "Feature maps per encoder level.")] = None,
    lr: Annotated[float | None, _option("lr", "Adam learning rate.")] = None,
    holdout: Annotated[float | None, _option("holdout", "Fraction of crops held out.")] = None,
    seed: Annotated[int | None, _option("seed", "Seed of weights and batches.")] = None,
    centroid_samples: Annotated[
        int | None, _option("centroid_samples", "K random z per centroid (eq. 4).")
    ] = None,
    track: Annotated[
        bool, typer.Option(help="Log the encoder as its own MLflow run (MLFLOW_TRACKING_URI).")
    ] = False,
) -> None:
    """Train an encoder for CHECKPOINT: first on generated images whose w is known, then on the
    real crops of CROPSET; reports PSNR/SSIM on the held-out crops."""
    from phenexplain.explain.encoder import encoder_job

    cfg = resolve(
        "encoder",
        synthetic_steps=synthetic_steps,
        real_steps=real_steps,
        batch=batch,
        channels=channels,
        lr=lr,
        holdout=holdout,
        seed=seed,
        centroid_samples=centroid_samples,
    )
    total = cfg.synthetic_steps + cfg.real_steps
    losses: list[tuple[str, int, float]] = []
    with progress("training the encoder") as update:

        def on_step(stage: str, step: int, loss: float) -> None:
            losses.append((stage, step, loss))
            update(len(losses), total)

        info = encoder_job(checkpoint, cropset, run_dir, cfg, on_step=on_step)
    scores = info.scores
    if track:
        from phenexplain.integrations.mlflow_registry import log_encoder_run

        run_id = log_encoder_run(run_dir / "encoder", info, losses)
        say(f"MLflow run {run_id}; its model (traversals and translations): runs:/{run_id}/model")
    if scores.get("crops"):
        start = scores["centroid_start"]
        say(
            f"held-out crops: {scores['crops']}, PSNR {scores['mean_psnr_db']:.2f} dB, SSIM "
            f"{scores['mean_ssim']:.3f} (from the centroid alone: {start['mean_psnr_db']:.2f} dB, "
            f"{start['mean_ssim']:.3f})"
        )
    say(f"wrote {run_dir / 'encoder'} in {scores['train_seconds']:.0f} s")


def translate(
    checkpoint: Checkpoint,
    cropset: Annotated[Path, typer.Argument(help="Crop set holding the crops to translate.")],
    out: Annotated[Path, typer.Argument(help="New crop set folder for the translations.")],
    source: Annotated[str, typer.Option("--from", help="The condition of the crops.")],
    encoder: Annotated[
        Path,
        typer.Option(help="Encoder folder of the checkpoint (encoder train's RUN_DIR/encoder)."),
    ],
    to: Annotated[
        str | None, typer.Option("--to", help="Target conditions A,B (default: all the others).")
    ] = None,
    crops: Annotated[
        str | None,
        typer.Option(help="Which of the source's crops: '0-99' or '1,5,7' (default: all)."),
    ] = None,
    refine_steps: Annotated[
        int | None, _option("refine_steps", "Optimisation steps from the encoder's guess.")
    ] = None,
    batch: Annotated[int, typer.Option(help="Crops per batch (and per resumable part).")] = 64,
) -> None:
    """Encode the crops of --from, render them at their reconstruction and moved to each target
    (method 2), and write them as a crop set OUT (resumable: rerun the same command)."""
    from phenexplain.explain.translate import translate_cropset

    cfg = resolve("encoder", refine_steps=refine_steps)
    with progress("translating") as update:
        summary = translate_cropset(
            checkpoint,
            cropset,
            out,
            source=source,
            encoder=encoder,
            targets=names(to),
            select=seeds(crops) if crops else None,
            refine_steps=cfg.refine_steps,
            batch=batch,
            progress=update,
        )
    resumed = f", {summary.resumed} batch(es) resumed" if summary.resumed else ""
    say(
        f"translated {summary.crops} crops of {source} to {', '.join(summary.columns[1:])} "
        f"({summary.crops_per_s:.1f} crops/s{resumed}); wrote {out}"
    )


def register(app: typer.Typer) -> None:
    app.add_typer(encoder_app, name="encoder")
    app.command()(translate)
