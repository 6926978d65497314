"""Traversal grids: one row per seed, column 0 the source condition, then one column per target;
one frame per step, drawn with condition labels and the step fraction, and written as GIF, MP4,
APNG, a folder of PNG frames or a multi-page TIFF.

All frames of a video share one `IntensityMapping` (see `phenexplain.display`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from phenexplain.display import IntensityMapping, composite, grey
from phenexplain.errors import PhenexplainError
from phenexplain.explain.traversal import fractions, map_w, synthesize, traverse, truncate
from phenexplain.generate import condition_indices
from phenexplain.nets import Generator
from phenexplain.nets.ops import to_uint8
from phenexplain.nets.sampling import one_hot, seed_latent

VIEWS = ("composite", "channels")
GAP = 2  # px between the panels of one cell
CELL_GAP = 8  # px between grid cells
FONT_SIZE = 12
HEADER = 2 * FONT_SIZE + 8  # px above the grid: the frame's label, then the column labels
MARGIN = 5 * FONT_SIZE  # px left of the grid: the row labels


@dataclass
class TraversalGrid:
    """uint8 images [T, rows, cols, C, H, W] and what they show."""

    images: np.ndarray
    seeds: list[int]
    columns: list[str]  # column 0 is the source condition
    fractions: list[float]  # t of each frame
    method: int


def traversal_column(
    G: Generator,
    conditions: list[str],
    seeds: list[int],
    source: str,
    target: str,
    *,
    method: int,
    steps: int,
    centroid: torch.Tensor | None = None,
    truncation_psi: float = 1.0,
    noise_mode: str = "const",
) -> np.ndarray:
    """One target's column of the traversal grid: uint8 [T, rows, C, H, W], frame t the seeds'
    images at fraction t from `source` to `target`. Columns are computed apart (a task each when
    the flow maps them over the targets) and give the same bytes however they are split."""
    src, dst = condition_indices(conditions, [source, target])
    z = _seed_batch(G, seeds)
    w = traverse(G, z, src, dst, method=method, steps=steps, centroid=centroid,
                 truncation_psi=truncation_psi)  # fmt: skip
    return to_uint8(synthesize(G, w, noise_mode=noise_mode)).numpy()


def _seed_batch(G: Generator, seeds: list[int]) -> torch.Tensor:
    """z of the seeds, drawn as the reference's generate.py draws them, on G's device."""
    device = next(G.parameters()).device
    return torch.cat([seed_latent(s, G.z_dim) for s in seeds]).to(device)


def traversal_grid(
    G: Generator,
    conditions: list[str],
    seeds: list[int],
    source: str,
    targets: list[str],
    *,
    method: int,
    steps: int,
    centroid: torch.Tensor | None = None,
    truncation_psi: float = 1.0,
    noise_mode: str = "const",
    columns: list[np.ndarray] | None = None,
) -> TraversalGrid:
    """Render the traversals from `source` to each of `targets` for every seed; `columns`: the
    targets' `traversal_column`s when they were computed elsewhere."""
    if columns is None:
        columns = [
            traversal_column(G, conditions, seeds, source, target, method=method, steps=steps,
                             centroid=centroid, truncation_psi=truncation_psi,
                             noise_mode=noise_mode)
            for target in targets
        ]  # fmt: skip
    if len(columns) != len(targets):
        raise PhenexplainError(f"{len(columns)} traversal columns for {len(targets)} targets")
    (src,) = condition_indices(conditions, [source])
    z = _seed_batch(G, seeds)
    w0 = truncate(G, map_w(G, z, one_hot(src, G.c_dim, len(z), z.device)), truncation_psi)
    still = to_uint8(synthesize(G, w0, noise_mode=noise_mode)).numpy()  # column 0, every frame
    still = np.broadcast_to(still[None, :, None], (steps + 1, len(seeds), 1, *still.shape[1:]))
    images = np.concatenate([still, np.stack(columns, axis=2)], axis=2)  # [T, S, K, C, H, W]
    return TraversalGrid(images, list(seeds), [source, *targets], fractions(steps).tolist(), method)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's bundled font (no system font needed)."""
    return ImageFont.load_default(size=size)


def _cell(
    images: np.ndarray, colours: list[str], mapping: IntensityMapping, view: str, scale: int
) -> np.ndarray:
    """uint8 [C, H, W] -> RGB [H, W', 3]: the composite, then (view "channels") each channel in
    grey, each enlarged `scale` times (nearest neighbour)."""
    panels = [composite(images, colours, mapping)]
    if view == "channels":
        panels += [grey(images, k, mapping) for k in range(images.shape[0])]
    panels = [panel.repeat(scale, axis=0).repeat(scale, axis=1) for panel in panels]
    gap = np.full((panels[0].shape[0], GAP, 3), 255, np.uint8)
    return np.concatenate([p for panel in panels for p in (panel, gap)][:-1], axis=1)


def render_frames(
    grid: TraversalGrid,
    colours: list[str],
    *,
    mapping: IntensityMapping | None = None,
    view: str = "composite",
    scale: int | None = None,
) -> list[np.ndarray]:
    """One RGB uint8 frame [H, W, 3] per step, with labels; one intensity mapping for all."""
    if view not in VIEWS:
        raise PhenexplainError(f"unknown view {view!r}; choose one of {VIEWS}")
    mapping = mapping or IntensityMapping.identity(grid.images.shape[3])
    t, rows, cols, _, h, _ = grid.images.shape
    scale = scale or max(1, 128 // h)
    font_size, header, margin = FONT_SIZE, HEADER, MARGIN
    font = _font(font_size)
    frames = []
    for i in range(t):
        cells = [
            [_cell(grid.images[i, r, k], colours, mapping, view, scale) for k in range(cols)]
            for r in range(rows)
        ]
        ch, cw = cells[0][0].shape[:2]
        canvas = Image.new(
            "RGB", (margin + cols * (cw + CELL_GAP), header + rows * (ch + CELL_GAP)), "white"
        )
        draw = ImageDraw.Draw(canvas)
        label = "source" if grid.fractions[i] == 0 else f"t = {grid.fractions[i]:.2f}"
        draw.text((4, 2), f"method {grid.method}  {label}", fill="black", font=font)
        for k, name in enumerate(grid.columns):
            x = margin + k * (cw + CELL_GAP)
            text = name if k == 0 else f"-> {name}"
            draw.text((x + 2, font_size + 4), text, fill="black", font=font)
        for r, seed in enumerate(grid.seeds):
            y = header + r * (ch + CELL_GAP)
            draw.text((2, y + ch // 2 - font_size // 2), f"seed {seed}", fill="black", font=font)
            for k in range(cols):
                canvas.paste(Image.fromarray(cells[r][k]), (margin + k * (cw + CELL_GAP), y))
        frames.append(np.asarray(canvas))
    return frames


FORMATS = {
    ".gif": "gif",
    ".mp4": "mp4",
    ".png": "apng",
    ".apng": "apng",
    ".tif": "tiff",
    ".tiff": "tiff",
}


def write_video(frames: list[np.ndarray], out: str | Path, *, fps: float = 8.0) -> Path:
    """Write RGB frames by the suffix of `out`: .gif, .mp4 (H.264), .png/.apng (animated PNG),
    .tif/.tiff (multi-page, ImageJ hyperstack T x Y x X x RGB); no suffix: a folder of PNGs."""
    out = Path(out)
    if not frames:
        raise PhenexplainError("no frames to write")
    out.parent.mkdir(parents=True, exist_ok=True)
    kind = FORMATS.get(out.suffix.lower(), "folder" if out.suffix == "" else None)
    if kind is None:
        raise PhenexplainError(
            f"cannot tell the format of {out}: use .gif, .mp4, .png (APNG), .tif, or no suffix "
            "for a folder of PNG frames"
        )
    duration = round(1000 / fps)
    if kind in ("gif", "apng"):
        images = [Image.fromarray(f) for f in frames]
        images[0].save(
            out,
            format="GIF" if kind == "gif" else "PNG",
            save_all=True,
            append_images=images[1:],
            duration=duration,
            loop=0,
        )
    elif kind == "mp4":
        _write_mp4(frames, out, fps)
    elif kind == "tiff":
        import tifffile

        metadata = {"axes": "TYXS", "finterval": 1 / fps}
        tifffile.imwrite(out, np.stack(frames), imagej=True, photometric="rgb", metadata=metadata)
    else:
        out.mkdir(exist_ok=True)
        for i, frame in enumerate(frames):
            Image.fromarray(frame).save(out / f"frame_{i:04d}.png")
    return out


def _write_mp4(frames: list[np.ndarray], out: Path, fps: float) -> None:
    """H.264 (yuv420p) through imageio-ffmpeg's bundled ffmpeg; frames padded to even sizes."""
    import imageio_ffmpeg

    h, w = frames[0].shape[:2]
    ph, pw = h + h % 2, w + w % 2
    writer = imageio_ffmpeg.write_frames(
        str(out),
        (pw, ph),
        fps=fps,
        codec="libx264",
        pix_fmt_out="yuv420p",
        macro_block_size=1,
        output_params=["-crf", "18"],
    )
    writer.send(None)
    for frame in frames:
        padded = np.full((ph, pw, 3), 255, np.uint8)
        padded[:h, :w] = frame
        writer.send(np.ascontiguousarray(padded))
    writer.close()
