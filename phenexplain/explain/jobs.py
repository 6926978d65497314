"""The explain jobs: a loaded `Model` in, a typed result out; writing it is a separate step.

The CLI, the flows and the report run the same jobs, so dose order, centroid caching and rendering
have one implementation each:

- `render_traversal` -> `Traversal` (frames rendered once; `write_traversal` writes any format,
  and the raw pixels beside it as an OME-TIFF, `write_raw_traversal`);
- `lda_map` -> `LdaMap` (the LDA of W, paper Fig. 4b);
- `dose_response` -> `DoseResponse` (distances to the control centroid, Fig. 4d, and projections
  onto the traversal, Fig. 4c);
- `project_crops` -> `Projections` (real crops projected into W and translated, method 2).

`traversal_video`, `lda_job`, `dose_job`, `project_job` and `explain_run` are the path-to-files
wrappers the CLI and the flows call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from phenexplain.config import ExplainParams
from phenexplain.data.ome_tiff import Series, is_ome_tiff, ome_path, write_ome_series
from phenexplain.display import IntensityMapping, composite, parse_colours
from phenexplain.errors import PhenexplainError
from phenexplain.explain import figures, latent
from phenexplain.explain.project import project, translate
from phenexplain.explain.render import TraversalGrid, render_frames, traversal_grid, write_video
from phenexplain.explain.traversal import cached_centroids
from phenexplain.fsutil import check_output_file, output_folder, prepare_folder, write_json
from phenexplain.generate import condition_indices, parse_seeds
from phenexplain.nets import Generator
from phenexplain.training.checkpoint import CheckpointMeta, load_network, read_config

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
CONTRAST = ("fixed", "auto")
FRAMES_KIND = "traversal frames"  # output-marker kinds (see fsutil)
VIDEO_SUFFIX = {"gif": ".gif", "mp4": ".mp4", "png": ".png", "tif": ".tif", "frames": ""}


@dataclass(frozen=True)
class Model:
    """A checkpoint's G_ema with its metadata; `checkpoint` keys the centroid cache."""

    G: Generator
    meta: CheckpointMeta
    checkpoint: Path

    @classmethod
    def load(cls, checkpoint: str | Path, device: str = "cpu") -> Model:
        checkpoint = Path(checkpoint)
        meta = read_config(checkpoint)
        return cls(load_network(checkpoint, "G_ema", device), meta, checkpoint)

    @property
    def conditions(self) -> list[str]:
        return list(self.meta.conditions)

    @property
    def channels(self) -> list[str]:
        return list(self.meta.channels)

    def centroids(
        self, num_samples: int, *, seed: int = 0, progress: Progress | None = None
    ) -> torch.Tensor:
        """w̄ of every condition (eq. 4), from the cache when this K and seed were computed."""
        return cached_centroids(self.checkpoint, self.G, num_samples, seed=seed, progress=progress)


# --- traversals -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Traversal:
    """A rendered traversal grid: the raw images, and the labelled RGB frames made from them."""

    grid: TraversalGrid
    frames: list[np.ndarray]
    colours: dict[str, str]  # channel name -> colour, in channel order
    mapping: IntensityMapping
    pixel_size_um: float | None = None  # of G's images, when the checkpoint knows it

    @property
    def channels(self) -> list[str]:
        return list(self.colours)

    def series(self) -> list[Series]:
        """The raw traversals: one [T, C, H, W] per seed and target, frame t the image at
        fraction t from the source (t = 0) to the target (t = 1), in G's uint8 (the crop set's
        scale, no display mapping)."""
        grid = self.grid
        source = grid.columns[0]
        steps = ",".join(f"{t:g}" for t in grid.fractions)
        series = []
        for row, seed in enumerate(grid.seeds):
            for k, target in enumerate(grid.columns[1:], start=1):
                about = {"seed": str(seed), "source": source, "target": target,
                         "method": str(grid.method), "fractions": steps}  # fmt: skip
                name = f"seed {seed}: {source} -> {target}"
                series.append(Series(grid.images[:, row, k], "TCYX", name, about))
        return series

    def info(self, path: Path) -> dict:
        """What was written, JSON-able (explain.json, the CLI's message)."""
        return {
            "path": str(path),
            "frames": len(self.frames),
            "size": [int(self.frames[0].shape[1]), int(self.frames[0].shape[0])],
            "method": self.grid.method,
            "source": self.grid.columns[0],
            "targets": self.grid.columns[1:],
            "seeds": self.grid.seeds,
            "colours": self.colours,
            "intensity": {"lo": list(self.mapping.lo), "hi": list(self.mapping.hi)},
        }


def render_traversal(
    model: Model,
    *,
    source: str,
    targets: list[str],
    seeds: list[int],
    method: int = 3,
    steps: int = 16,
    truncation_psi: float = 1.0,
    centroid_samples: int = ExplainParams().centroid_samples,
    centroid_seed: int = 0,
    colours: str | None = None,
    view: str = "composite",
    contrast: str = "fixed",
    scale: int | None = None,
    noise_mode: str = "const",
    progress: Progress | None = None,
    columns: list[np.ndarray] | None = None,
) -> Traversal:
    """The traversal grid (a row per seed, column 0 the source, a column per target), rendered
    with one intensity mapping for all frames: the uint8 range (`fixed`) or one stretch (`auto`).
    `columns`: the targets' `render.traversal_column`s, when they were computed elsewhere."""
    if contrast not in CONTRAST:
        raise PhenexplainError(f"unknown contrast {contrast!r}; choose one of {CONTRAST}")
    palette = parse_colours(colours, model.channels)  # before the work: a typo costs nothing
    centroid = None
    if method == 2 and columns is None:
        centroid = model.centroids(centroid_samples, seed=centroid_seed, progress=progress)
    grid = traversal_grid(
        model.G, model.conditions, seeds, source, targets, method=method, steps=steps,
        centroid=centroid, truncation_psi=truncation_psi, noise_mode=noise_mode, columns=columns,
    )  # fmt: skip
    channels = grid.images.shape[3]
    mapping = (
        IntensityMapping.fit(grid.images)
        if contrast == "auto"
        else IntensityMapping.identity(channels)
    )
    frames = render_frames(grid, palette, mapping=mapping, view=view, scale=scale)
    named = dict(zip(model.channels, palette, strict=True))
    return Traversal(grid, frames, named, mapping, model.meta.pixel_size_um)


def check_video_output(out: Path, inputs: Iterable[str | Path]) -> None:
    """Refuse a video path (or frames folder) and the raw OME-TIFF beside it before any work,
    as `write_traversal` would."""
    check_output_file(ome_path(out), inputs)
    if is_ome_tiff(out):
        return
    if out.suffix:
        check_output_file(out, inputs)
    else:
        prepare_folder(out, FRAMES_KIND, inputs)


def write_raw_traversal(traversal: Traversal, out: str | Path) -> Path:
    """The raw traversals (`Traversal.series`) as the OME-TIFF `out`: one series per seed and
    target, axes TCYX, with the channel names and the pixel size when known."""
    return write_ome_series(
        out, traversal.series(), traversal.channels, pixel_size_um=traversal.pixel_size_um
    )


def write_traversal(
    traversal: Traversal,
    out: str | Path,
    *,
    fps: float = 8.0,
    inputs: Iterable[str | Path] = (),
    raw: bool = True,
) -> dict:
    """Write the frames as `out`'s format (.gif, .mp4, .png APNG, .tif stack, or a folder of
    PNGs when `out` has no suffix) and, with `raw`, the raw pixels beside it as
    ``<name>.ome.tif`` (`write_raw_traversal`); an `out` named .ome.tif gets the raw pixels
    alone. Returns `Traversal.info`, with the OME-TIFF's path under ``raw``."""
    out = Path(out)
    if is_ome_tiff(out):
        check_output_file(out, inputs)
        return {**traversal.info(write_raw_traversal(traversal, out)), "raw": str(out)}
    raw_path = ome_path(out)
    if raw:
        check_output_file(raw_path, inputs)
    if out.suffix:
        check_output_file(out, inputs)
        info = traversal.info(write_video(traversal.frames, out, fps=fps))
    else:
        with output_folder(out, FRAMES_KIND, inputs):
            info = traversal.info(write_video(traversal.frames, out, fps=fps))
    if raw:
        info["raw"] = str(write_raw_traversal(traversal, raw_path))
    return info


def traversal_video(
    checkpoint: str | Path, out: str | Path, *, fps: float = 8.0, device: str = "cpu", **options
) -> dict:
    """`render_traversal` of a checkpoint, written to `out` (options: `render_traversal`'s)."""
    check_video_output(Path(out), [checkpoint])
    traversal = render_traversal(Model.load(checkpoint, device), **options)
    return write_traversal(traversal, out, fps=fps, inputs=[checkpoint])


# --- LDA map --------------------------------------------------------------------------------


@dataclass(frozen=True)
class LdaMap:
    points: pd.DataFrame  # one row per sample: condition, fitted, ld1, ld2
    order: list[str]  # fitted conditions, then projected ones

    def write(self, csv: Path, png: Path) -> dict:
        self.points.to_csv(csv, index=False)
        figures.plot_lda(self.points, png, order=self.order)
        return {"csv": str(csv), "png": str(png), "points": len(self.points)}


def lda_map(
    model: Model,
    *,
    fit: list[str],
    project_names: Sequence[str] = (),
    n_fit: int = ExplainParams().lda_samples,
    n_project: int | None = None,
    seed: int = 0,
) -> LdaMap:
    """LDA of W fitted on `fit` with `project_names` projected onto its plane (`n_project`
    defaults to a tenth of `n_fit`)."""
    project_names = list(project_names)
    points = latent.lda_map(
        model.G, model.conditions, fit, project_names, n_fit=n_fit,
        n_project=n_fit // 10 if n_project is None else n_project, seed=seed,
    )  # fmt: skip
    return LdaMap(points, [*fit, *project_names])


def lda_job(checkpoint: str | Path, out: str | Path, *, device: str = "cpu", **options) -> dict:
    """lda.csv (every point) and lda.png in `out` (options: `lda_map`'s)."""
    with output_folder(Path(out), "LDA map", [checkpoint]) as out:
        return lda_map(Model.load(checkpoint, device), **options).write(
            out / "lda.csv", out / "lda.png"
        )


# --- dose response --------------------------------------------------------------------------


@dataclass(frozen=True)
class DoseResponse:
    control: str
    doses: list[str]
    distances: pd.DataFrame  # one row per sample: condition, dose_rank, distance
    summary: dict  # medians and Spearman rho (dose_summary.json)
    projection: pd.DataFrame | None = None  # Fig. 4c's rows, when projection seeds were given
    projection_images: np.ndarray | None = None
    projection_seeds: list[int] = field(default_factory=list)

    def write(self, out: Path, channels: list[str]) -> None:
        """dose_distances.csv, dose_summary.json, dose_response.png, and the projection's CSV and
        figure when there is one."""
        self.distances.to_csv(out / "dose_distances.csv", index=False)
        write_json(out / "dose_summary.json", self.summary)
        figures.plot_dose_distances(self.distances, self.summary, out / "dose_response.png")
        if self.projection is not None and self.projection_images is not None:
            self.projection.to_csv(out / "dose_projection.csv", index=False)
            figures.plot_dose_projection(
                self.projection_images, [self.control, *self.doses], self.projection_seeds,
                parse_colours(None, channels), out / "dose_projection.png",
            )  # fmt: skip


def dose_response(
    model: Model,
    *,
    control: str,
    doses: list[str] | None = None,
    n: int = ExplainParams().dose_samples,
    seed: int = 0,
    projection_seeds: Sequence[int] = (0, 1, 2),
    centroid_samples: int = ExplainParams().centroid_samples,
    centroid_seed: int = 0,
    concentrations: dict[str, float] | None = None,
    progress: Progress | None = None,
) -> DoseResponse:
    """W distances of each dose's samples to the control centroid and, for `projection_seeds`,
    the projections onto the control-to-highest-dose line. `doses` default to the other
    conditions in increasing dose (`latent.ordered_doses`: by `concentrations`, else by name)."""
    if doses is None:
        doses = latent.ordered_doses(model.conditions, control, concentrations)
        if doses is None:
            others = [c for c in model.conditions if c != control]
            raise PhenexplainError(
                f"cannot tell the dose order of {others} (no number in every name, no "
                "concentration given); list the doses in increasing order with --doses"
            )
    centroid = model.centroids(centroid_samples, seed=centroid_seed, progress=progress)
    rows, summary = latent.dose_distances(
        model.G, model.conditions, control, doses, centroid=centroid, n=n, seed=seed
    )
    result = DoseResponse(control, doses, rows, summary)
    if projection_seeds:
        seeds = list(projection_seeds)
        table, images = latent.dose_projection(model.G, model.conditions, control, doses, seeds)
        result = DoseResponse(control, doses, rows, summary, table, images, seeds)
    return result


def dose_job(checkpoint: str | Path, out: str | Path, *, device: str = "cpu", **options) -> dict:
    """Dose response files in `out` (options: `dose_response`'s); returns the summary."""
    with output_folder(Path(out), "dose response", [checkpoint]) as out:
        model = Model.load(checkpoint, device)
        result = dose_response(model, **options)
        result.write(out, model.channels)
    return result.summary


# --- projection of real crops ---------------------------------------------------------------


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


def pick_crops(source: str | Path, condition: str, numbers: list[int]) -> np.ndarray:
    """uint8 [N, C, S, S]: the crop file `source`, or from the crop set folder `source` the
    `numbers`-th crops of `condition` (in manifest order)."""
    source = Path(source)
    if not source.is_dir():
        return read_crop(source)[None]
    from phenexplain.data.cropset import CropSet

    cs = CropSet(source)
    if condition not in cs.conditions:
        raise PhenexplainError(f"{source} has no crops of {condition!r}: {sorted(cs.conditions)}")
    of_condition = np.flatnonzero(cs.labels == cs.conditions[condition])
    if max(numbers) >= len(of_condition):
        raise PhenexplainError(
            f"{source} has {len(of_condition)} crops of {condition!r}; --crops asks for "
            f"number {max(numbers)}"
        )
    return np.stack([cs[int(of_condition[i])][0] for i in numbers])


@dataclass(frozen=True)
class Projections:
    source: str
    target: str
    summary: dict  # projection.json: options, PSNR/SSIM per crop and their means
    strips: list[list[np.ndarray]]  # per crop, RGB frames: crop | reconstruction | translation

    def write(self, out: Path) -> None:
        for i, strip in enumerate(self.strips):
            write_video(strip, out / f"crop{i:03d}.gif")
        write_json(out / "projection.json", self.summary)


def project_crops(
    model: Model,
    crops: np.ndarray,
    *,
    source: str,
    target: str,
    steps: int = 400,
    frames: int = 16,
    per_layer: bool = True,
    optimize_noise: bool = False,
    centroid_samples: int = ExplainParams().centroid_samples,
    encoder=None,
    progress: Progress | None = None,
) -> Projections:
    """Project uint8 crops [N, C, S, S] (S a multiple of the model's resolution) from the source
    centroid, or from the `encoder`'s guess (`explain.encoder.Encoder` of this model; its
    centroids then make the shift), and translate each to `target` by the centroid shift
    (method 2)."""
    from phenexplain.training.data import downsample

    G = model.G
    src, dst = condition_indices(model.conditions, [source, target])
    size, r = crops.shape[-1], G.img_resolution
    if crops.shape[1] != G.img_channels or size % r:
        raise PhenexplainError(
            f"crops of shape {list(crops.shape[1:])} do not fit the model ({G.img_channels} "
            f"channels, {r} px or a multiple)"
        )
    crops = downsample(crops, size // r)
    if encoder is not None:
        from phenexplain.explain.encoder import encode

        centroid = encoder.centroids
        starts = encode(encoder, crops, np.full(len(crops), src))
    else:
        centroid = model.centroids(centroid_samples)
        starts = centroid[src].expand(len(crops), -1)
    shift = centroid[dst] - centroid[src]
    palette = parse_colours(None, model.channels)
    results, strips = [], []
    for i, crop in enumerate(crops):
        p = project(G, crop, starts[i], steps=steps, per_layer=per_layer,
                    optimize_noise=optimize_noise)  # fmt: skip
        mapping = IntensityMapping.identity(crop.shape[0])
        strip = [
            np.concatenate(list(composite(np.stack([crop, p.image, frame]), palette, mapping)), 1)
            for frame in translate(G, p, shift, frames)
        ]
        strips.append(strip)
        results.append({"crop": i, "psnr_db": p.psnr, "ssim": p.ssim, "final_loss": p.losses[-1]})
        if progress is not None:
            progress(i + 1, len(crops))
    summary = {
        "source": source,
        "target": target,
        "steps": steps,
        "per_layer": per_layer,
        "optimize_noise": optimize_noise,
        "start": "encoder" if encoder is not None else "centroid",
        "crops": results,
        "mean_psnr_db": float(np.mean([r["psnr_db"] for r in results])),
        "mean_ssim": float(np.mean([r["ssim"] for r in results])),
    }
    log.info("projected %d crops: PSNR %.2f dB", len(results), summary["mean_psnr_db"])
    return Projections(source, target, summary, strips)


def project_job(
    checkpoint: str | Path,
    crops: np.ndarray,
    out: str | Path,
    *,
    device: str = "cpu",
    inputs: Iterable[str | Path] = (),
    **options,
) -> dict:
    """`project_crops` written to `out` (a GIF per crop, projection.json); `inputs` are the files
    the crops were read from, which `out` may not be or hold."""
    encoder = options.pop("encoder", None)
    if encoder is not None:  # a folder: the encoder of this checkpoint
        from phenexplain.explain.encoder import load_encoder

        encoder, _ = load_encoder(encoder, checkpoint)
    with output_folder(Path(out), "projection", [checkpoint, *inputs]) as out:
        result = project_crops(Model.load(checkpoint, device), crops, encoder=encoder, **options)
        result.write(out)
    return result.summary


# --- the explain stage ----------------------------------------------------------------------


def explain_run(
    checkpoint: str | Path,
    out: str | Path,
    params: ExplainParams,
    *,
    control: str | None = None,
    device: str = "cpu",
    columns: list[np.ndarray] | None = None,
) -> dict:
    """What `params` asks for: the traversal from the source to the targets, rendered once and
    written in every format, and, with 3 or more conditions, the LDA map and (a dose series in the
    names) the dose response. Returns explain.json's content. `columns`: the traversal's target
    columns computed elsewhere (`traversal_targets` orders them), as the flow maps them."""
    with output_folder(Path(out), "explanation", [checkpoint]) as out:
        model = Model.load(checkpoint, device)
        result = _explain(model, out, params, control, columns)
        write_json(out / "explain.json", result)
    return result


def traversal_targets(
    conditions: list[str], params: ExplainParams, control: str | None = None
) -> tuple[str, list[str]]:
    """The explain stage's traversal: (source, targets) as `params` and the control name them."""
    source = params.source or latent.pick_control(conditions, control)
    return source, params.targets or [c for c in conditions if c != source]


def _explain(
    model: Model,
    out: Path,
    params: ExplainParams,
    control: str | None,
    columns: list[np.ndarray] | None,
) -> dict:
    conditions = model.conditions
    source, targets = traversal_targets(conditions, params, control)
    traversal = render_traversal(
        model, source=source, targets=targets, seeds=parse_seeds(params.seeds),
        method=params.method, steps=params.steps, truncation_psi=params.truncation,
        centroid_samples=params.centroid_samples, view=params.view, contrast=params.contrast,
        columns=columns,
    )  # fmt: skip
    result: dict = {"source": source, "targets": targets, "videos": []}
    for i, fmt in enumerate(params.formats):  # the raw OME-TIFF once, beside the first
        path = out / f"traversal_method{params.method}{VIDEO_SUFFIX[fmt]}"
        result["videos"].append(write_traversal(traversal, path, fps=params.fps, raw=i == 0))
    if len(conditions) >= 3:
        doses = latent.ordered_doses(conditions, source)
        fit, others = latent.lda_conditions(conditions, source, doses)
        lda = lda_map(model, fit=fit, project_names=others, n_fit=params.lda_samples)
        with output_folder(out / "lda", "LDA map") as folder:
            result["lda"] = lda.write(folder / "lda.csv", folder / "lda.png")
        if doses:
            dose = dose_response(
                model, control=source, doses=doses, n=params.dose_samples,
                centroid_samples=params.centroid_samples,
            )  # fmt: skip
            with output_folder(out / "dose", "dose response") as folder:
                dose.write(folder, model.channels)
            result["dose"] = dose.summary
    return result
