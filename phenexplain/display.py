"""How multi-channel fluorescence images are shown: one intensity mapping and a channel colour map.

Images arrive as uint8 [..., C, H, W] (the reference's conversion of generator output, and the
way crops are stored). `IntensityMapping` maps each channel's [lo, hi] to [0, 1]; it is computed
once for a whole set of frames (a video, a grid, a report figure), never per frame, because a
per-frame stretch hides exactly the intensity phenotypes we want to show. `composite` adds each
channel in its colour (additive, clipped) to give RGB.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from phenexplain.errors import PhenexplainError

COLOURS: dict[str, tuple[float, float, float]] = {
    "blue": (0.0, 0.35, 1.0),
    "green": (0.0, 1.0, 0.0),
    "red": (1.0, 0.0, 0.0),
    "magenta": (1.0, 0.0, 1.0),
    "yellow": (1.0, 1.0, 0.0),
    "cyan": (0.0, 1.0, 1.0),
    "grey": (1.0, 1.0, 1.0),
}
DNA_NAMES = ("dna", "dapi", "hoechst", "nuclei", "nucleus", "h33342")
_ORDER = ("green", "red", "magenta", "yellow", "cyan")


def default_colours(channels: list[str]) -> list[str]:
    """One colour per channel: a single channel is grey; DNA is blue; the others green, red, ..."""
    if len(channels) == 1:
        return ["grey"]
    dna = [name.lower() in DNA_NAMES for name in channels]
    if not any(dna):  # no DNA-like name: the first channel plays that part
        dna[0] = True
    others = iter(_ORDER)
    return ["blue" if is_dna else next(others, "grey") for is_dna in dna]


def parse_colours(text: str | None, channels: list[str]) -> list[str]:
    """'blue,green' (one per channel) or None for the default; checks names and count."""
    if not text:
        return default_colours(channels)
    colours = [c.strip().lower() for c in text.split(",")]
    unknown = [c for c in colours if c not in COLOURS]
    if unknown:
        raise PhenexplainError(f"unknown colour(s) {unknown}; choose from {sorted(COLOURS)}")
    if len(colours) != len(channels):
        raise PhenexplainError(
            f"--colours gives {len(colours)} colours for {len(channels)} channels {channels}"
        )
    return colours


@dataclass(frozen=True)
class IntensityMapping:
    """Per-channel display range: value lo -> 0, hi -> 1 (uint8 units)."""

    lo: tuple[float, ...]
    hi: tuple[float, ...]

    @classmethod
    def identity(cls, channels: int) -> IntensityMapping:
        """The full uint8 range, unchanged (0 -> 0, 255 -> 1)."""
        return cls((0.0,) * channels, (255.0,) * channels)

    @classmethod
    def fit(
        cls, images: np.ndarray, percentiles: tuple[float, float] = (0.5, 99.5)
    ) -> IntensityMapping:
        """One range per channel from all of `images` [..., C, H, W] together."""
        c = images.shape[-3]
        flat = np.moveaxis(images, -3, 0).reshape(c, -1)
        lo, hi = np.percentile(flat, percentiles, axis=1)
        hi = np.maximum(hi, lo + 1.0)
        return cls(tuple(float(v) for v in lo), tuple(float(v) for v in hi))

    def apply(self, images: np.ndarray) -> np.ndarray:
        """uint8 [..., C, H, W] -> float32 in [0, 1], same shape."""
        shape = (len(self.lo), 1, 1)
        lo = np.asarray(self.lo, np.float32).reshape(shape)
        hi = np.asarray(self.hi, np.float32).reshape(shape)
        return np.clip((images.astype(np.float32) - lo) / (hi - lo), 0.0, 1.0)


def composite(
    images: np.ndarray, colours: list[str], mapping: IntensityMapping | None = None
) -> np.ndarray:
    """uint8 [..., C, H, W] -> uint8 RGB [..., H, W, 3], each channel added in its colour."""
    c = images.shape[-3]
    if len(colours) != c:
        raise PhenexplainError(f"{len(colours)} colours for {c} channels")
    mapping = mapping or IntensityMapping.identity(c)
    x = mapping.apply(images)
    rgb = np.zeros(images.shape[:-3] + images.shape[-2:] + (3,), np.float32)
    for k, name in enumerate(colours):
        rgb += x[..., k, :, :, None] * np.asarray(COLOURS[name], np.float32)
    return np.round(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)


def grey(images: np.ndarray, channel: int, mapping: IntensityMapping | None = None) -> np.ndarray:
    """One channel of uint8 [..., C, H, W] as uint8 RGB grey [..., H, W, 3]."""
    mapping = mapping or IntensityMapping.identity(images.shape[-3])
    x = mapping.apply(images)[..., channel, :, :]
    return np.repeat(np.round(x * 255.0).astype(np.uint8)[..., None], 3, axis=-1)
