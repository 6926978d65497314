"""The field's protocol for perturbation image generators (CellFlux, ICML 2025; IMPA, 2025): FID
and KID over all treated conditions pooled (FIDo, KIDo) and per condition (FIDc: the unweighted
mean over conditions of each condition's FID; KIDc likewise), so a user with the field's BBBC021
crops (`phenexplain import-impa`) can put our numbers beside the published tables.

As CellFlux's evaluation reads it: the real set is the treated crops (every condition but the
control) of the chosen split, in manifest order, the first `samples` of them (5,120 in its
script; all where there are fewer); the generated set has one image per real crop, of that
crop's condition (z seeded, constant noise), so both sets have the same conditions in the same
proportions. For translations (`phenexplain translate`), the generated set is the translated
crops of each target condition (method 2), against the real crops of that condition. A
condition with fewer than 2 images on either side has no FIDc term (CellFlux skips what fails).
Real crops are box-downsampled to the model's resolution, as training saw them. Each metric is
named with its extractor (``fid_o_inception``). Our Inception extractor (`metrics.inception`)
runs the same TF inception-2015-12-05 weights as the torch-fidelity network behind torchmetrics,
which the published tables used, with its own resizing to 299 px: close, not bit-identical. Their
3-channel crops go in as RGB in file order, as theirs do. KIDc here is each condition's own KID
(CellFlux's script accumulates its per-class KID over classes, a known slip there).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from phenexplain.data.cropset import CropSet
from phenexplain.errors import PhenexplainError
from phenexplain.metrics.distances import feature_stats, frechet_distance, kernel_distance
from phenexplain.metrics.extractors import FeatureExtractor
from phenexplain.nets.ops import from_uint8, to_uint8
from phenexplain.nets.sampling import one_hot
from phenexplain.training.data import downsample

SAMPLES = 5120  # CellFlux's eval_fid.sh --num_to_cal
KID_SUBSET = 100  # torchmetrics' KernelInceptionDistance(subset_size=100)


def real_selection(crops: CropSet, control: str, samples: int, split: str | None) -> np.ndarray:
    """Indices of the real set: treated crops of `split` (where the manifest has a ``split``
    column) in manifest order, the first `samples`."""
    rows = crops.manifest
    keep = rows["condition"].to_numpy() != control
    if split is not None:
        if "split" not in rows:
            raise PhenexplainError(
                f"{crops.root} has no 'split' column; drop --split or import the crops with one "
                "(phenexplain import-impa keeps the field's train/test split)"
            )
        keep &= rows["split"].astype(str).to_numpy() == split
    index = np.flatnonzero(keep)[:samples]
    if len(index) < 2:
        raise PhenexplainError(
            f"{crops.root}: {len(index)} treated crop(s) (not {control!r}"
            f"{f', split {split!r}' if split else ''}); the protocol needs at least 2"
        )
    return index


def _features(extractor: FeatureExtractor, images: np.ndarray, batch: int = 256) -> np.ndarray:
    return np.concatenate(
        [extractor(from_uint8(images[s : s + batch])) for s in range(0, len(images), batch)]
    )


def scores(
    real: np.ndarray, fake: np.ndarray, real_names: np.ndarray, fake_names: np.ndarray, name: str
) -> dict:
    """FIDo/KIDo over the pooled features and FIDc/KIDc over the conditions, named for
    extractor `name`, with the per-condition values and counts."""
    out: dict = {
        f"fid_o_{name}": frechet_distance(*feature_stats(real), *feature_stats(fake)),
        f"kid_o_{name}": kernel_distance(real, fake, subset_size=KID_SUBSET),
    }
    per = {}
    for condition in sorted(set(real_names) & set(fake_names)):
        r, f = real[real_names == condition], fake[fake_names == condition]
        if min(len(r), len(f)) < 2:
            continue
        per[str(condition)] = {
            "fid": frechet_distance(*feature_stats(r), *feature_stats(f)),
            "kid": kernel_distance(r, f, subset_size=KID_SUBSET),
            "real": len(r),
            "generated": len(f),
        }
    if not per:
        raise PhenexplainError("no condition has 2 or more images on both sides: no FIDc")
    out[f"fid_c_{name}"] = float(np.mean([v["fid"] for v in per.values()]))
    out[f"kid_c_{name}"] = float(np.mean([v["kid"] for v in per.values()]))
    out[f"per_condition_{name}"] = per
    return out


def generate_like(G, labels: np.ndarray, seed: int, batch: int = 128) -> np.ndarray:
    """uint8 [N, C, R, R]: one generated image per condition index in `labels` (z seeded)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    with torch.no_grad():
        for start in range(0, len(labels), batch):
            c = torch.as_tensor(labels[start : start + batch], dtype=torch.int64)
            z = torch.randn([len(c), G.z_dim], generator=gen)
            out.append(
                to_uint8(G(z, one_hot(c, G.c_dim), noise_mode="const", force_fp32=True)).numpy()
            )
    return np.concatenate(out)


def field_protocol(
    checkpoint: str | Path,
    cropset: str | Path,
    extractors: list[FeatureExtractor],
    *,
    translation: str | Path | None = None,
    control: str | None = None,
    samples: int = SAMPLES,
    split: str | None = None,
    seed: int = 0,
) -> dict:
    """The protocol (module docstring) for `checkpoint`'s generated images against `cropset`,
    or with `translation`, for the translated crops; one set of metrics per extractor."""
    from phenexplain.explain.jobs import Model
    from phenexplain.explain.latent import pick_control

    model = Model.load(checkpoint)
    G = model.G
    crops = CropSet(cropset)
    control = pick_control(model.conditions, control)
    factor = crops.resolution // G.img_resolution
    if factor < 1 or crops.resolution % G.img_resolution:
        raise PhenexplainError(
            f"{cropset}: {crops.resolution} px crops do not reduce to the model's "
            f"{G.img_resolution} px"
        )
    index = real_selection(crops, control, samples, split)
    real_images = downsample(np.stack([crops[int(i)][0] for i in index]), factor)
    real_names = crops.manifest["condition"].to_numpy()[index].astype(str)
    if translation is None:
        labels = np.array([model.conditions.index(n) for n in real_names])
        fake_images, fake_names, source = generate_like(G, labels, seed), real_names, "generated"
    else:
        fake_images, fake_names = _translated(translation, control, samples, G.img_resolution)
        source = "translated"
    result: dict = {
        "protocol": "field (CellFlux FIDo/FIDc)",
        "source": source,
        "checkpoint": str(checkpoint),
        "control": control,
        "split": split,
        "real": len(index),
        "generated": len(fake_images),
        "resolution": G.img_resolution,
    }
    for extractor in extractors:
        real = _features(extractor, real_images)
        fake = _features(extractor, fake_images)
        result.update(scores(real, fake, real_names, fake_names, extractor.name))
        result[f"extractor_{extractor.name}"] = extractor.id
    return result


def _translated(
    translation: str | Path, control: str, samples: int, resolution: int
) -> tuple[np.ndarray, np.ndarray]:
    from phenexplain.explain.translate import METHOD2
    from phenexplain.report.translation import open_translation

    tr = open_translation(translation)
    if tr.resolution != resolution:
        raise PhenexplainError(
            f"{translation} is at {tr.resolution} px, the checkpoint at {resolution} px; "
            "translate with this checkpoint"
        )
    rows = np.flatnonzero(
        (tr.manifest["translation"].to_numpy() == METHOD2)
        & (tr.manifest["condition"].to_numpy() != control)
    )[:samples]
    if len(rows) < 2:
        raise PhenexplainError(
            f"{translation} holds {len(rows)} translation(s) to a treated condition"
        )
    images = np.stack([tr[int(i)][0] for i in rows])
    return images, tr.manifest["condition"].to_numpy()[rows].astype(str)
