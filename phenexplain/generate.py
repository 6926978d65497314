"""Images from a checkpoint for given seeds, drawn exactly as stylegan2-ada-pytorch's generate.py.

z = numpy.random.RandomState(seed).randn(z_dim); images in [-1, 1] become uint8 as x * 127.5 + 128,
clamped: the crop set's own uint8 scale. Each image is written as an OME-TIFF [C, H, W] with the
checkpoint's channel names (`phenexplain.data.ome_tiff`), named ``<condition>_seed<seed>.ome.tif``
with the condition as `fsutil.safe_name` spells it in file names.
"""

from __future__ import annotations

import re
import reprlib
from pathlib import Path

import torch

from phenexplain.data.ome_tiff import SUFFIX, write_ome_tiff
from phenexplain.errors import PhenexplainError
from phenexplain.fsutil import mark_output, prepare_folder, safe_name
from phenexplain.nets.ops import to_uint8
from phenexplain.nets.sampling import one_hot, seed_latent
from phenexplain.training.checkpoint import load_network, read_config

MAX_SEED = 2**32 - 1  # numpy's RandomState, which draws z, takes seeds 0 .. 2**32 - 1
MAX_SEEDS = 1_000_000  # seeds per list: one image each, so more is a typo or a runaway range
KIND = "generated images"  # the kind in the folder's output marker (see fsutil)


def _seed(digits: str, text: str) -> int:
    """One seed of the list `text`; refuses numbers over `MAX_SEED` before converting them."""
    significant = digits.lstrip("0") or "0"  # int() refuses over 4300 digits, zeros included
    if len(significant) > len(str(MAX_SEED)) or int(significant) > MAX_SEED:
        shown = digits if len(digits) <= 20 else f"{digits[:12]}... ({len(digits)} digits)"
        raise PhenexplainError(
            f"bad seed list {reprlib.repr(text)}: seed {shown} is too large; seeds run from 0 to "
            f"{MAX_SEED}"
        )
    return int(significant)


def parse_seeds(text: str) -> list[int]:
    """'0-3,7' -> [0, 1, 2, 3, 7].

    Seeds run from 0 to 2**32 - 1 (numpy's RandomState range), and a list holds at most
    1,000,000 seeds (`MAX_SEEDS`) in all, so a mistyped range cannot exhaust memory.
    """
    seeds: list[int] = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if match is None:
            raise PhenexplainError(f"bad seed list {reprlib.repr(text)}: use e.g. 0-99 or 1,5,7")
        lo = _seed(match[1], text)
        hi = _seed(match[2], text) if match[2] else lo
        if hi < lo:
            raise PhenexplainError(
                f"bad seed range {reprlib.repr(part)}: the end is before the start"
            )
        if len(seeds) + hi - lo + 1 > MAX_SEEDS:
            raise PhenexplainError(
                f"bad seed list {reprlib.repr(text)}: more than {MAX_SEEDS:,} seeds; ask for "
                "fewer (split the list over several runs)"
            )
        seeds.extend(range(lo, hi + 1))
    return seeds


def condition_indices(conditions: list[str], names: list[str]) -> list[int]:
    """The class index of each of `names`; unknown names raise with the checkpoint's list."""
    unknown = [n for n in names if n not in conditions]
    if unknown:
        what = f"condition {unknown[0]!r}" if len(unknown) == 1 else f"conditions {unknown}"
        raise PhenexplainError(f"unknown {what}; the checkpoint has {conditions}")
    return [conditions.index(n) for n in names]


def condition_vector(conditions: list[str], name: str) -> torch.Tensor:
    """The condition vector c [1, len(conditions)] of `name`; unknown names raise with the list."""
    return one_hot(condition_indices(conditions, [name]), len(conditions))


def generate_images(
    checkpoint: str | Path,
    out: str | Path,
    condition: str,
    seeds: list[int],
    *,
    truncation: float = 1.0,
    noise_mode: str = "const",
    device: str = "cpu",
) -> list[Path]:
    """One OME-TIFF [C, H, W] per seed in `out`, with the checkpoint's channel names; returns
    their paths."""
    out = Path(out)
    meta = read_config(checkpoint)
    c = condition_vector(meta.conditions, condition).to(device)
    G = load_network(checkpoint, "G_ema", device)  # a bad checkpoint creates no output folder
    foreign = prepare_folder(out, KIND, [checkpoint])
    paths = []
    with torch.no_grad():
        for seed in seeds:
            img = G(
                seed_latent(seed, G.z_dim).to(device),
                c,
                truncation_psi=truncation,
                noise_mode=noise_mode,
                force_fp32=True,
            )
            pixels = to_uint8(img)[0].numpy()
            stem = f"{safe_name(condition)}_seed{seed:04d}"
            annotations = {"condition": condition, "seed": str(seed),
                           "truncation_psi": str(truncation), "noise_mode": noise_mode}  # fmt: skip
            path = out / f"{stem}{SUFFIX}"
            paths.append(write_ome_tiff(path, pixels, "CYX", meta.channels, name=stem,
                                        annotations=annotations,
                                        pixel_size_um=meta.pixel_size_um))  # fmt: skip
    mark_output(out, KIND, exclude=foreign)
    return paths
