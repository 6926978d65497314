"""The interactive explorer: one static HTML file (no server needed) to choose a source and a
target condition and a seed, scrub along the traversal with a slider beside its start and end
frames, split the frame into its channels, and compare with real crops of both conditions.

Frames are pre-rendered (method 3, one intensity mapping for the whole page, real crops
included) and embedded as PNG data URIs in a JSON block that the page's script reads; names are
inserted as text, never as markup. Real crops are shown at the model's resolution and at the same
zoom as the generated frames, so one pixel on screen is one pixel of both; they are picked from
as many fields of view as there are (`distinct_crops`), not neighbours of one field.
`phenexplain serve` can also serve the folder over HTTP.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from phenexplain.data.cropset import CropSet
from phenexplain.display import IntensityMapping, composite
from phenexplain.explain.traversal import synthesize, traverse
from phenexplain.nets import Generator
from phenexplain.nets.ops import to_uint8
from phenexplain.nets.sampling import seed_latent
from phenexplain.report.html import png_uri, render_template, script_json
from phenexplain.training.data import downsample

DISPLAY_PX = 128  # about this many screen pixels per frame and per real crop (an integer zoom)


def explorer_pairs(conditions: list[str], control: str) -> list[tuple[str, str]]:
    """Every ordered pair for up to 4 conditions; otherwise control <-> each other condition."""
    if len(conditions) <= 4:
        return [(a, b) for a in conditions for b in conditions if a != b]
    others = [c for c in conditions if c != control]
    return [(control, c) for c in others] + [(c, control) for c in others]


def zoom_for(resolution: int) -> int:
    """The integer zoom that shows a `resolution` px image at about `DISPLAY_PX` screen pixels."""
    return max(1, round(DISPLAY_PX / resolution))


def distinct_crops(crops: CropSet, condition: str, n: int, seed: int = 0) -> np.ndarray:
    """Indices of up to `n` crops of `condition` that are not near-duplicates: taken in turn from
    each field of view (then each well) in a seeded random order, never two with the same
    checksum, and in one field never two whose centres lie closer than a crop's width (their
    crops would overlap)."""
    manifest = crops.manifest
    rows = np.flatnonzero(manifest["condition"].to_numpy() == condition)
    rng = np.random.default_rng(seed)
    rows = rng.permutation(rows)
    group = next((c for c in ("field_id", "well") if c in manifest), None)
    fields: dict[str, list[int]] = {}
    for row in rows.tolist():  # without fields or wells (an imported set): each crop its own
        fields.setdefault(str(manifest[group].iat[row]) if group else str(row), []).append(row)
    order = [fields[k] for k in rng.permutation(sorted(fields))]
    has_xy = {"x", "y"} <= set(manifest.columns)
    picked: list[int] = []
    seen: set[str] = set()
    centres: dict[int, list[tuple[float, float]]] = {}
    while len(picked) < n and any(order):
        for k, queue in enumerate(order):
            while queue:
                i = queue.pop()
                checksum = str(manifest["checksum"].iat[i]) if "checksum" in manifest else str(i)
                xy = (float(manifest["x"].iat[i]), float(manifest["y"].iat[i])) if has_xy else None
                near = xy is not None and any(
                    abs(xy[0] - a) < crops.resolution and abs(xy[1] - b) < crops.resolution
                    for a, b in centres.get(k, [])
                )
                if checksum in seen or near:
                    continue
                picked.append(i)
                seen.add(checksum)
                if xy is not None:
                    centres.setdefault(k, []).append(xy)
                break
            if len(picked) == n:
                break
    return np.asarray(picked, dtype=np.int64)


def real_crops(
    crops: CropSet, conditions: list[str], n: int, resolution: int, seed: int = 0
) -> dict[str, np.ndarray]:
    """`distinct_crops` of each condition, box-downsampled to the model's `resolution` (as the
    model was trained on them): condition -> uint8 [n, C, R, R]."""
    factor = crops.resolution // resolution
    out = {}
    for name in conditions:
        index = distinct_crops(crops, name, n, seed)
        images = np.stack([crops[int(i)][0] for i in index]) if len(index) else None
        out[name] = (
            downsample(images, factor)
            if images is not None
            else np.zeros((0, len(crops.channels), resolution, resolution), np.uint8)
        )
    return out


def _grey(images: np.ndarray, mapping: IntensityMapping, k: int) -> np.ndarray:
    """Channel `k` of uint8 [..., C, H, W] as grey RGB [..., H, W, 3] under `mapping`."""
    one = IntensityMapping((mapping.lo[k],), (mapping.hi[k],))
    return composite(images[..., k : k + 1, :, :], ["grey"], one)


def explorer_data(
    G: Generator,
    conditions: list[str],
    control: str,
    colours: list[str],
    seeds: list[int],
    steps: int,
    real: dict[str, np.ndarray],
    channels: list[str] | None = None,
) -> dict:
    """What the page shows, JSON-able: per "source→target" pair and seed the frames (composite
    data URIs, and per channel in grey), real crops per condition (at the model's resolution),
    the control (the default source), the channel names and the display zoom."""
    device = next(G.parameters()).device
    z = torch.cat([seed_latent(s, G.z_dim) for s in seeds]).to(device)
    pairs = explorer_pairs(conditions, control)
    images = {}
    for source, target in pairs:
        w = traverse(
            G, z, conditions.index(source), conditions.index(target), method=3, steps=steps
        )
        images[(source, target)] = to_uint8(synthesize(G, w)).numpy()  # [T, S, C, H, W]
    everything = np.concatenate([v.reshape(-1, *v.shape[2:]) for v in images.values()])
    mapping = IntensityMapping.fit(everything)  # one mapping for the whole page
    channel_count = everything.shape[1]
    names = list(channels) if channels else [f"channel {k + 1}" for k in range(channel_count)]
    frames, split = {}, {}
    for (s, t), stack in images.items():
        key = f"{s}\u2192{t}"
        frames[key] = [
            [png_uri(composite(stack[i, k], colours, mapping)) for i in range(steps + 1)]
            for k in range(len(seeds))
        ]
        split[key] = [
            [[png_uri(_grey(stack[i, k], mapping, c)) for c in range(channel_count)]
             for i in range(steps + 1)]
            for k in range(len(seeds))
        ]  # fmt: skip
    crops = {name: [png_uri(composite(c, colours, mapping)) for c in x] for name, x in real.items()}
    return {
        "conditions": conditions,
        "control": control,
        "channels": names,
        "colours": colours,
        "seeds": seeds,
        "steps": steps,
        "resolution": int(G.img_resolution),
        "zoom": zoom_for(int(G.img_resolution)),
        "frames": frames,
        "channel_frames": split,
        "real": crops,
    }


def write_explorer(data: dict, out: str | Path, title: str) -> Path:
    """The explorer page (template ``explorer.html.j2``) with `data` embedded as JSON."""
    out = Path(out)
    resolution, zoom = data["resolution"], data["zoom"]
    page = render_template("explorer.html.j2", title=title, data=script_json(data),
                           size=resolution * zoom, resolution=resolution, zoom=zoom)  # fmt: skip
    out.write_text(page, encoding="utf-8")
    return out
