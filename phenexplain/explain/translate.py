"""Real crops of one condition shown under the others: `phenexplain translate`.

Every crop of the source condition (or a selection) is encoded into W+ by the checkpoint's
encoder (`phenexplain.explain.encoder`), optionally refined by a few optimisation steps from that
guess (`project.refine`), and rendered at its reconstruction (the source condition, t = 0) and
moved by method 2 (eq. 5: w + w̄_B - w̄_A, the encoder's centroids) to each target. The result is
written as a crop set at the model's resolution (`cropset.json`, `conditions.json`,
`manifest.parquet`, one shard), so `report`, `summarize` and the measurements read it like any
other: one row per (source crop, condition), with the source's plate, well, site and position,
and its provenance (`source_crop_id`, `source_condition`, `translation`: reconstruction or
method2).

Work is done in batches written to ``.<OUT>.parts/`` beside the output as they finish, so an
interrupted run resumes where it stopped (the plan of the run is checked against the parts
found); the crop set is assembled at the end and the parts removed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from phenexplain.data import cropset as cs
from phenexplain.errors import PhenexplainError
from phenexplain.explain.encoder import (
    condition_labels,
    encode,
    load_encoder,
    model_images,
    render,
)
from phenexplain.explain.project import refine
from phenexplain.fsutil import atomic_path, check_output, file_sha256, write_json
from phenexplain.training.checkpoint import WEIGHTS

LAYOUT = "phenexplain translation"
SHARD = "translated"
RECONSTRUCTION, METHOD2 = "reconstruction", "method2"  # the manifest's `translation` column


@dataclass(frozen=True)
class TranslationSummary:
    """What `translate_cropset` did."""

    out: str
    source: str
    columns: list[str]  # the source (reconstruction) then the targets
    crops: int  # source crops translated
    resumed: int  # batches found done from an earlier run
    seconds: float
    crops_per_s: float


def translate_batch(
    G, E, images: np.ndarray, source: int, targets: list[int], *, refine_steps: int = 0
) -> np.ndarray:
    """uint8 [1 + len(targets), N, C, R, R]: the crops' reconstruction, then their translation
    to each target (method 2 with the encoder's centroids)."""
    ws = encode(E, images, np.full(len(images), source))
    if refine_steps:
        ws = refine(G, ws, images, steps=refine_steps, w_scale=float(E.w_scale))
    columns = [render(G, ws)]
    for target in targets:
        shift = (E.centroids[target] - E.centroids[source]).view(1, 1, -1)
        columns.append(render(G, ws + shift))
    return np.stack(columns)


def _plan(
    checkpoint: Path,
    encoder: Path,
    crops: cs.CropSet,
    source: str,
    targets: list[str],
    index: np.ndarray,
    refine_steps: int,
    batch: int,
) -> dict:
    return {
        "checkpoint_weights": file_sha256(checkpoint / WEIGHTS)[:16],
        "encoder_weights": file_sha256(encoder / WEIGHTS)[:16],
        "cropset": crops.content_id,
        "source": source,
        "targets": targets,
        "crops": hashlib.sha256(index.astype(np.int64).tobytes()).hexdigest()[:16],
        "refine_steps": refine_steps,
        "batch": batch,
    }


def parts_folder(out: Path) -> Path:
    """Where an unfinished translation into `out` keeps its finished batches."""
    return out.with_name(f".{out.name}.parts")


def translate_cropset(
    checkpoint: str | Path,
    cropset: str | Path,
    out: str | Path,
    *,
    source: str,
    encoder: str | Path,
    targets: list[str] | None = None,
    select: list[int] | None = None,
    refine_steps: int = 0,
    batch: int = 64,
    progress: Callable[[int, int], None] | None = None,
) -> TranslationSummary:
    """Translate the crops of `source` (all, or the `select`-th ones of it) in `cropset` to each
    of `targets` (default: every other condition) and write them, with their reconstructions, as
    the crop set `out` (see the module's docstring); `progress(done, total)` after each batch."""
    from phenexplain.explain.jobs import Model

    checkpoint, out, encoder = Path(checkpoint), Path(out), Path(encoder)
    check_output(out, False, kind=cs.KIND, inputs=[checkpoint, cropset, encoder])
    model = Model.load(checkpoint)
    E, _ = load_encoder(encoder, checkpoint)
    crops = cs.CropSet(cropset)
    conditions = model.conditions
    unknown = [c for c in [source, *(targets or [])] if c not in conditions]
    if unknown:
        raise PhenexplainError(f"condition(s) {unknown} not in the checkpoint's {conditions}")
    targets = targets if targets is not None else [c for c in conditions if c != source]
    if crops.channels != model.channels:
        raise PhenexplainError(
            f"{cropset} has channels {crops.channels}, the checkpoint {model.channels}"
        )
    of_source = np.flatnonzero(crops.manifest["condition"].to_numpy() == source)
    if select is not None:
        bad = [i for i in select if not 0 <= i < len(of_source)]
        if bad:
            raise PhenexplainError(
                f"{cropset} has {len(of_source)} crops of {source!r}; --crops asks for {bad}"
            )
        of_source = of_source[np.asarray(select, dtype=np.int64)]
    if len(of_source) == 0:
        raise PhenexplainError(f"{cropset} has no crops of {source!r} to translate")
    labels = condition_labels(crops, conditions)
    src, dst = labels[of_source[0]], [conditions.index(t) for t in targets]
    plan = _plan(checkpoint, encoder, crops, source, targets, of_source, refine_steps, batch)
    parts = parts_folder(out)
    resumed = _open_parts(parts, plan)
    G = model.G
    starts = list(range(0, len(of_source), batch))
    start_time = time.perf_counter()
    for k, start in enumerate(starts):
        part = parts / f"part-{k:06d}.npy"
        if not part.is_file():
            index = of_source[start : start + batch]
            images = model_images(crops, G.img_resolution, index)
            result = translate_batch(G, E, images, int(src), dst, refine_steps=refine_steps)
            with atomic_path(part) as tmp, open(tmp, "wb") as fh:
                np.save(fh, result, allow_pickle=False)
        if progress:
            progress(min(start + batch, len(of_source)), len(of_source))
    seconds = time.perf_counter() - start_time
    stack = np.concatenate(
        [np.load(parts / f"part-{k:06d}.npy", allow_pickle=False) for k in range(len(starts))],
        axis=1,
    )
    columns = [source, *targets]
    _write(out, crops, of_source, columns, stack, cropset, checkpoint, encoder, plan)
    shutil.rmtree(parts)
    done = len(of_source) - sum(len(of_source[s : s + batch]) for s in starts[:resumed])
    return TranslationSummary(
        str(out),
        source,
        columns,
        len(of_source),
        resumed,
        seconds,
        done / seconds if seconds > 0 else float("inf"),
    )


def _open_parts(parts: Path, plan: dict) -> int:
    """Create the parts folder for `plan`, or reuse the one an interrupted run of the same plan
    left; the number of finished batches found."""
    record = parts / "plan.json"
    if parts.exists():
        try:
            found = json.loads(record.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            found = None
        if found != plan:
            raise PhenexplainError(
                f"{parts} holds an unfinished translation of another plan (checkpoint, encoder, "
                "crops, conditions or batch differ); remove it or choose another output"
            )
        return len(list(parts.glob("part-*.npy")))
    parts.mkdir(parents=True)
    write_json(record, plan)
    return 0


def _write(
    out: Path,
    crops: cs.CropSet,
    of_source: np.ndarray,
    columns: list[str],
    stack: np.ndarray,
    cropset,
    checkpoint: Path,
    encoder: Path,
    plan: dict,
) -> None:
    """The crop set: one row per (source crop, column), source-major."""
    manifest = crops.manifest.iloc[of_source].reset_index(drop=True)
    k, n = stack.shape[:2]
    images = stack.transpose(1, 0, 2, 3, 4).reshape(n * k, *stack.shape[2:])
    rows = manifest.loc[np.repeat(np.arange(n), k)].reset_index(drop=True)
    condition = np.tile(np.asarray(columns), n)
    rows["source_crop_id"] = rows["crop_id"]
    rows["source_condition"] = rows["condition"]
    rows["translation"] = np.tile(np.asarray([RECONSTRUCTION] + [METHOD2] * (k - 1)), n)
    rows["condition"] = condition
    rows["crop_id"] = rows["source_crop_id"] + "~" + rows["condition"]
    shard = cs.shard_name(SHARD)
    rows["shard"], rows["index"] = shard, np.arange(len(rows))
    rows["checksum"] = [cs.crop_checksum(crop) for crop in images]
    if "concentration_um" in rows:  # the condition's dose, not the source crop's
        rows["concentration_um"] = rows["condition"].map(crops.concentrations).astype(float)
    cs.write_cropset(
        out, shard, images, rows, inputs=[checkpoint, cropset, encoder],
        info={"source": str(cropset), "layout": LAYOUT, "channels": crops.channels,
              "plates": {SHARD: {"shard": shard, "crops": len(rows)}},
              "params": {"checkpoint": str(checkpoint), "encoder": str(encoder), **plan}},
    )  # fmt: skip
