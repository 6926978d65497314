"""Set up and run one training run from a crop set and the `train` params (CLI and flows)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from phenexplain.config import TrainParams, TrainProfile
from phenexplain.data.cropset import CropSet
from phenexplain.errors import OutputExistsError, PhenexplainError
from phenexplain.fsutil import check_output, mark_output, remove_entries
from phenexplain.training.callbacks import RUN_KIND, RUN_RECORDS, Callback, RunFolderCallback
from phenexplain.training.checkpoint import latest_checkpoint
from phenexplain.training.data import TrainingData
from phenexplain.training.distributed import process_group
from phenexplain.training.loop import train
from phenexplain.training.trainer import Progress, Trainer

log = logging.getLogger(__name__)


def auto_profile(resolution: int, gpus: int = 1) -> TrainProfile:
    """stylegan2-ada-pytorch's `auto` config rules for `resolution` and `gpus`."""
    batch = max(min(gpus * min(4096 // resolution, 32), 64), gpus)
    return TrainProfile(
        resolution=None,
        batch=batch,
        mbstd_group=min(batch // gpus, 4),
        channel_base=int((1 if resolution >= 512 else 0.5) * 32768),
        channel_max=512,
        map_layers=2,
        glr=0.002 if resolution >= 1024 else 0.0025,
        dlr=0.002 if resolution >= 1024 else 0.0025,
        r1_gamma=0.0002 * resolution**2 / batch,
        ema_kimg=batch * 10 / 32,
        ema_rampup=0.05,
    )


def resolve_profile(params: TrainParams, crop_size: int, gpus: int = 1) -> TrainProfile:
    if params.profile == "auto":
        return auto_profile(crop_size, gpus)
    try:
        return params.profiles[params.profile]
    except KeyError:
        known = ", ".join(["auto", *sorted(params.profiles)])
        raise PhenexplainError(
            f"unknown training profile {params.profile!r}; choose one of: {known}"
        ) from None


def run_training(
    cropset: str | Path,
    run_dir: str | Path,
    params: TrainParams,
    *,
    resume: bool = False,
    overwrite: bool = False,
    device: str = "cpu",
    callbacks: list[Callback] | None = None,
) -> Progress:
    """Train on `cropset` into `run_dir` (checkpoints, stats.jsonl, samples); resume if asked.
    Raises `TrainingDivergedError` when the run diverges (see `params.on_divergence`). Under
    torchrun the processes train one run together (`distributed.process_group`).

    A run folder that holds an earlier run (even one killed before its first checkpoint) is
    continued only with `resume`, and discarded (only the files a run writes) only with
    `overwrite`: a fresh run never mixes its records with an old one's."""
    with process_group(device):
        return _run_training(
            cropset, run_dir, params, resume=resume, overwrite=overwrite, device=device,
            callbacks=callbacks,
        )  # fmt: skip


def _run_training(
    cropset: str | Path,
    run_dir: str | Path,
    params: TrainParams,
    *,
    resume: bool,
    overwrite: bool,
    device: str,
    callbacks: list[Callback] | None,
) -> Progress:
    run_dir = Path(run_dir)
    foreign = check_output(run_dir, overwrite, kind=RUN_KIND, inputs=[cropset], extend=True)
    earlier = [name for name in RUN_RECORDS if (run_dir / name).exists()]
    if earlier and not resume and not overwrite:
        raise OutputExistsError(
            f"{run_dir} holds an earlier run ({', '.join(earlier)}); pass --resume to continue "
            "it, --overwrite to discard it and start afresh, or choose another folder"
        )
    crops = CropSet(cropset)
    gpus = torch.cuda.device_count() if device == "cuda" else 1
    profile = resolve_profile(params, crops.resolution, gpus)
    if params.threads:
        torch.set_num_threads(params.threads)
    data = TrainingData(crops, resolution=profile.resolution, xflip=profile.xflip)
    trainer = Trainer(data, profile, seed=params.seed, device=device)
    checkpoint = latest_checkpoint(run_dir)
    if resume:
        if checkpoint is None:
            raise PhenexplainError(f"nothing to resume in {run_dir}: no checkpoint found")
        trainer.load(checkpoint)
        log.info("resumed %s at %.3f kimg", checkpoint, trainer.progress.cur_nimg / 1000)
    if trainer.rank == 0:
        if earlier and not resume:  # overwrite, checked above: nothing foreign is touched
            remove_entries(run_dir, earlier)
        run_dir.mkdir(parents=True, exist_ok=True)
        mark_output(run_dir, RUN_KIND, exclude=foreign)
        mark_output(run_dir, RUN_KIND, RUN_RECORDS)  # written as the run goes
        options = {
            "cropset": str(cropset),
            "crop_set_id": trainer.crop_set_id,
            "params": params.model_dump(),
            "profile": profile.model_dump(),
            "kwargs": trainer.kwargs,
            "device": device,
            "world": trainer.world,
        }
        (run_dir / "training_options.json").write_text(
            json.dumps(options, indent=2, sort_keys=True) + "\n"
        )
    evaluate = None
    if params.metrics and trainer.rank == 0:
        from phenexplain.metrics.evaluate import fid_kid
        from phenexplain.metrics.extractors import make_extractor

        weights = params.inception_weights
        extractors = [  # built now, so a missing weights file stops the run before training
            make_extractor(name, data.num_channels, weights=weights, device=device)
            for name in dict.fromkeys(params.metrics)
        ]

        def evaluate_all(tr: Trainer) -> dict:  # fid_<name>, kid_<name>, extractor_<name>
            out: dict = {}
            for ex in extractors:
                out.update(fid_kid(tr.G_ema, data, ex, n=params.metric_images))
            return out

        evaluate = evaluate_all
    return train(
        trainer,
        run_dir,
        kimg=params.kimg,
        tick_kimg=params.tick_kimg,
        snapshot_ticks=params.snapshot_ticks,
        sample_seeds=params.sample_seeds,
        callbacks=[RunFolderCallback(run_dir), *(callbacks or [])],
        evaluate=evaluate,
        on_divergence=params.on_divergence,
        max_rollbacks=params.max_rollbacks,
        minutes=params.minutes,
    )
