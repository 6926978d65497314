"""The explain jobs as the CLI and the flows run them: checkpoint in, files out.

- `traversal_video`: a traversal grid video (GIF, MP4, APNG, TIFF stack or PNG frames);
- `lda_job`: the LDA map (PNG + CSV);
- `dose_job`: dose response distances and projections (PNGs + CSVs + JSON summary);
- `project_job`: projection of real crops and their translation to another condition.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from phenexplain.display import IntensityMapping, composite, parse_colours
from phenexplain.errors import PhenexplainError
from phenexplain.explain import figures, latent
from phenexplain.explain.project import project, translate
from phenexplain.explain.render import render_frames, traversal_grid, write_video
from phenexplain.explain.traversal import cached_centroids
from phenexplain.fsutil import check_output_file, mark_output, prepare_folder, write_json
from phenexplain.generate import condition_indices
from phenexplain.training.checkpoint import CheckpointMeta, load_network, read_config

log = logging.getLogger(__name__)

CONTRAST = ("fixed", "auto")
FRAMES_KIND = "traversal frames"  # output-marker kinds (see fsutil)


def _load(checkpoint: str | Path, device: str) -> tuple[torch.nn.Module, CheckpointMeta]:
    meta = read_config(checkpoint)
    return load_network(checkpoint, "G_ema", device), meta


def traversal_video(
    checkpoint: str | Path,
    out: str | Path,
    *,
    source: str,
    targets: list[str],
    seeds: list[int],
    method: int = 3,
    steps: int = 16,
    truncation_psi: float = 1.0,
    centroid_samples: int = 100_000,
    centroid_seed: int = 0,
    colours: str | None = None,
    view: str = "composite",
    contrast: str = "fixed",
    fps: float = 8.0,
    scale: int | None = None,
    noise_mode: str = "const",
    device: str = "cpu",
    progress=None,
) -> dict:
    """Render and write a traversal video; returns what was written (JSON-able)."""
    if contrast not in CONTRAST:
        raise PhenexplainError(f"unknown contrast {contrast!r}; choose one of {CONTRAST}")
    out = Path(out)
    folder = out.suffix == ""  # write_video's folder of PNG frames
    if folder:
        foreign = prepare_folder(out, FRAMES_KIND, [checkpoint])
    else:
        check_output_file(out, [checkpoint])
    G, meta = _load(checkpoint, device)
    centroid = None
    if method == 2:
        centroid = cached_centroids(
            checkpoint, G, centroid_samples, seed=centroid_seed, progress=progress
        )
    grid = traversal_grid(
        G, meta.conditions, seeds, source, targets, method=method, steps=steps,
        centroid=centroid, truncation_psi=truncation_psi, noise_mode=noise_mode,
    )  # fmt: skip
    mapping = (
        IntensityMapping.fit(grid.images)
        if contrast == "auto"
        else IntensityMapping.identity(grid.images.shape[3])
    )
    palette = parse_colours(colours, meta.channels)
    frames = render_frames(grid, palette, mapping=mapping, view=view, scale=scale)
    path = write_video(frames, out, fps=fps)
    if folder:
        mark_output(out, FRAMES_KIND, exclude=foreign)
    return {
        "path": str(path),
        "frames": len(frames),
        "size": [int(frames[0].shape[1]), int(frames[0].shape[0])],
        "method": method,
        "source": source,
        "targets": targets,
        "seeds": seeds,
        "colours": dict(zip(meta.channels, palette, strict=True)),
        "intensity": {"lo": list(mapping.lo), "hi": list(mapping.hi)},
    }


def lda_job(
    checkpoint: str | Path,
    out: str | Path,
    *,
    fit: list[str],
    project_names: list[str] = (),
    n_fit: int = 3000,
    n_project: int = 300,
    seed: int = 0,
    device: str = "cpu",
) -> dict:
    """lda.csv (every point) and lda.png in `out`."""
    out = Path(out)
    foreign = prepare_folder(out, "LDA map", [checkpoint])
    G, meta = _load(checkpoint, device)
    points = latent.lda_map(
        G, meta.conditions, fit, list(project_names), n_fit=n_fit, n_project=n_project,
        seed=seed,
    )  # fmt: skip
    points.to_csv(out / "lda.csv", index=False)
    figures.plot_lda(points, out / "lda.png", order=[*fit, *project_names])
    mark_output(out, "LDA map", exclude=foreign)
    return {"csv": str(out / "lda.csv"), "png": str(out / "lda.png"), "points": len(points)}


def dose_job(
    checkpoint: str | Path,
    out: str | Path,
    *,
    control: str,
    doses: list[str] | None = None,
    n: int = 1000,
    seed: int = 0,
    projection_seeds: list[int] = (0, 1, 2),
    centroid_samples: int = 100_000,
    device: str = "cpu",
    progress=None,
) -> dict:
    """Dose response (distances to the control centroid) and projections onto the traversal."""
    out = Path(out)
    foreign = prepare_folder(out, "dose response", [checkpoint])
    G, meta = _load(checkpoint, device)
    conditions = meta.conditions
    if doses is None:
        doses = latent.dose_order([c for c in conditions if c != control])
    centroid = cached_centroids(checkpoint, G, centroid_samples, progress=progress)
    rows, summary = latent.dose_distances(
        G, conditions, control, doses, centroid=centroid, n=n, seed=seed
    )
    table, images = latent.dose_projection(G, conditions, control, doses, list(projection_seeds))
    rows.to_csv(out / "dose_distances.csv", index=False)
    table.to_csv(out / "dose_projection.csv", index=False)
    write_json(out / "dose_summary.json", summary)
    figures.plot_dose_distances(rows, summary, out / "dose_response.png")
    palette = parse_colours(None, meta.channels)
    figures.plot_dose_projection(
        images, [control, *doses], list(projection_seeds), palette, out / "dose_projection.png"
    )
    mark_output(out, "dose response", exclude=foreign)
    return summary


def read_crop(path: str | Path) -> np.ndarray:
    """A crop image file as uint8 [C, H, W]: PNG (grey or RGB) or TIFF ([C, H, W] or [H, W])."""
    path = Path(path)
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        image = tifffile.imread(path)
        image = image[None] if image.ndim == 2 else image
    else:
        from PIL import Image

        with Image.open(path) as im:
            image = np.asarray(im)
        image = image[None] if image.ndim == 2 else np.moveaxis(image, -1, 0)
    if image.dtype != np.uint8 or image.ndim != 3:
        raise PhenexplainError(
            f"{path}: expected a uint8 crop [C, H, W] (as `phenexplain ingest` or `generate` "
            f"write them), got {image.dtype} of shape {list(image.shape)}"
        )
    return image


def project_job(
    checkpoint: str | Path,
    crops: np.ndarray,
    out: str | Path,
    *,
    source: str,
    target: str,
    steps: int = 400,
    frames: int = 16,
    per_layer: bool = True,
    optimize_noise: bool = False,
    centroid_samples: int = 100_000,
    device: str = "cpu",
    progress=None,
    inputs: Iterable[str | Path] = (),
) -> dict:
    """Project uint8 crops [N, C, S, S] (S a multiple of the model's resolution), write each
    reconstruction and its translation to `target`; return PSNR/SSIM per crop and their means.
    `inputs` are the files the crops were read from, which `out` may not be or hold."""
    from phenexplain.training.data import downsample

    out = Path(out)
    foreign = prepare_folder(out, "projection", [checkpoint, *inputs])
    G, meta = _load(checkpoint, device)
    src, dst = condition_indices(meta.conditions, [source, target])
    size, r = crops.shape[-1], G.img_resolution
    if crops.shape[1] != G.img_channels or size % r:
        raise PhenexplainError(
            f"crops of shape {list(crops.shape[1:])} do not fit the model ({G.img_channels} "
            f"channels, {r} px or a multiple)"
        )
    crops = downsample(crops, size // r)
    centroid = cached_centroids(checkpoint, G, centroid_samples)
    shift = centroid[dst] - centroid[src]
    palette = parse_colours(None, meta.channels)
    results = []
    for i, crop in enumerate(crops):
        p = project(G, crop, centroid[src], steps=steps, per_layer=per_layer,
                    optimize_noise=optimize_noise)  # fmt: skip
        video = translate(G, p, shift, frames)
        mapping = IntensityMapping.identity(crop.shape[0])
        strip = [composite(np.stack([crop, p.image, frame]), palette, mapping) for frame in video]
        write_video([np.concatenate(list(s), axis=1) for s in strip], out / f"crop{i:03d}.gif")
        results.append({"crop": i, "psnr_db": p.psnr, "ssim": p.ssim, "final_loss": p.losses[-1]})
        if progress is not None:
            progress(i + 1, len(crops))
    summary = {
        "source": source,
        "target": target,
        "steps": steps,
        "per_layer": per_layer,
        "optimize_noise": optimize_noise,
        "crops": results,
        "mean_psnr_db": float(np.mean([r["psnr_db"] for r in results])),
        "mean_ssim": float(np.mean([r["ssim"] for r in results])),
    }
    write_json(out / "projection.json", summary)
    mark_output(out, "projection", exclude=foreign)
    log.info("projected %d crops: PSNR %.2f dB", len(results), summary["mean_psnr_db"])
    return summary


def explain_run(
    checkpoint: str | Path,
    out: str | Path,
    params,
    *,
    control: str | None = None,
    device: str = "cpu",
) -> dict:
    """What `params` (an `ExplainParams`) asks for: a traversal video per format from the source
    to the targets, and, with 3 or more conditions, the LDA map and (doses in the names) the dose
    response. Returns explain.json's content."""
    from phenexplain.generate import parse_seeds

    out = Path(out)
    foreign = prepare_folder(out, "explanation", [checkpoint])
    conditions = read_config(checkpoint).conditions
    source = params.source or latent.pick_control(conditions, control)
    targets = params.targets or [c for c in conditions if c != source]
    suffix = {"gif": ".gif", "mp4": ".mp4", "png": ".png", "tif": ".tif", "frames": ""}
    result: dict = {"source": source, "targets": targets, "videos": []}
    for fmt in params.formats:
        info = traversal_video(
            checkpoint, out / f"traversal_method{params.method}{suffix[fmt]}", source=source,
            targets=targets, seeds=parse_seeds(params.seeds), method=params.method,
            steps=params.steps, truncation_psi=params.truncation,
            centroid_samples=params.centroid_samples, view=params.view,
            contrast=params.contrast, fps=params.fps, device=device,
        )  # fmt: skip
        result["videos"].append(info)
    if len(conditions) >= 3:
        try:
            doses = latent.dose_order([c for c in conditions if c != source])
        except PhenexplainError:
            doses = None
        fit, others = latent.lda_conditions(conditions, source, doses)
        result["lda"] = lda_job(checkpoint, out / "lda", fit=fit, project_names=others,
                                n_fit=params.lda_samples, n_project=params.lda_samples // 10,
                                device=device)  # fmt: skip
        if doses:
            result["dose"] = dose_job(
                checkpoint, out / "dose", control=source, doses=doses, n=params.dose_samples,
                centroid_samples=params.centroid_samples, device=device,
            )  # fmt: skip
    write_json(out / "explain.json", result)
    mark_output(out, "explanation", exclude=foreign)
    return result
