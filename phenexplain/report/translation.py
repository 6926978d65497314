"""Real-cell translation scored against the crop set it came from (`phenexplain translate`'s
output: each source crop of condition A with its reconstruction and its translation to each B).

A translation is right when the translated cells look like real B cells in what B changes, and
are still the same cells in everything else. Measured with the report's own assays, at the
model's resolution enlarged back to the native size (as `validation.validate` measures), on up
to `real_per_condition` source crops and as many real crops of each condition:

- effects, per (target B, feature measurable at the model's resolution), Cohen's d with a
  bootstrap CI over wells (the source crops' wells for the translations and the sources):
  ``d_real`` (real B vs the source crops, which are the real A), ``d_vs_real_target``
  (translated vs real B: near 0 when the translation lands on B), ``d_vs_sources``
  (translated vs their own sources: should match d_real; the ratio and its CI),
  ``d_vs_reconstruction`` (translated vs the sources' reconstructions: the shift alone, without
  the encoder's error). ``changed``: whether the real effect's CI excludes 0. The sources and
  their translations share wells but the bootstrap resamples them independently, so the CIs of
  d_vs_sources are conservative;
- identity, per (target, feature): the correlation over crops of the source's value with its
  translation's, and with its reconstruction's (the encoder's ceiling); where the nuclei are
  (position and size of every nucleus in the crop, not only the centre one, which every crop
  has at its centre): the median Dice overlap of the translation's nucleus masks with the
  source's, beside the same for the reconstruction and for a random other source crop (what
  "not the same cells" scores);
- reconstruction: PSNR and SSIM of the sources against their reconstructions, over all and over
  the crops the encoder held out of its training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from phenexplain.config import ReportParams
from phenexplain.data.cropset import CropSet
from phenexplain.errors import PhenexplainError
from phenexplain.explain.translate import LAYOUT, RECONSTRUCTION
from phenexplain.measure import effects
from phenexplain.measure.crops import check_stains, cropset_stains, segment_crop, to_intensity
from phenexplain.measure.stats import correlate
from phenexplain.report.analysis import (
    Measurements,
    assay_names,
    assay_table,
    enlarge,
    measure,
    well_labels,
)
from phenexplain.report.resolution import at_resolution, is_real, stated_measurable, well_effect
from phenexplain.training.data import downsample

SOURCE, RECON = "source", "reconstruction"


def _real(condition: str) -> str:
    return f"real:{condition}"


def _translated(condition: str) -> str:
    return f"translated:{condition}"


@dataclass
class TranslationScores:
    """`score_translation`'s result (see the module's docstring)."""

    source: str
    targets: list[str]
    crops: int  # source crops scored
    resolution: int
    native_size: int
    effects: pd.DataFrame
    identity: pd.DataFrame
    reconstruction: dict

    def summary(self) -> dict:
        """The scores as JSON-ready values."""
        return {
            "source": self.source,
            "targets": self.targets,
            "crops": self.crops,
            "resolution": self.resolution,
            "native_size": self.native_size,
            "reconstruction": self.reconstruction,
            "effects": self.effects.to_dict(orient="records"),
            "identity": self.identity.to_dict(orient="records"),
        }


def open_translation(translated: str | Path) -> CropSet:
    """The crop set `phenexplain translate` wrote; a clear error for any other."""
    tr = CropSet(translated)
    needed = {"source_crop_id", "source_condition", "translation"}
    if tr.info.get("layout") != LAYOUT or not needed <= set(tr.manifest.columns):
        raise PhenexplainError(
            f"{translated} is not a translation (no {sorted(needed)} columns or layout "
            f"{LAYOUT!r} in its cropset.json); make one with `phenexplain translate`"
        )
    if tr.manifest["source_condition"].nunique() != 1:
        raise PhenexplainError(f"{translated}: translations of several source conditions")
    return tr


def score_translation(
    translated: str | Path,
    cropset: str | Path | None = None,
    params: ReportParams | None = None,
    *,
    holdout: list[str] | None = None,
    progress=None,
) -> TranslationScores:
    """Score the translation crop set `translated` against the real crop set `cropset` (default:
    the one it was made from); `holdout`: crop ids the encoder held out (default: read from the
    encoder folder the translation names, where it still exists)."""
    params = params or ReportParams()
    tr = open_translation(translated)
    real = CropSet(cropset or tr.info.get("source") or "")
    rows = tr.manifest
    source = str(rows["source_condition"].iloc[0])
    targets = list(dict.fromkeys(rows.loc[rows["translation"] != RECONSTRUCTION, "condition"]))
    native, resolution = real.resolution, tr.resolution
    if native % resolution or real.channels != tr.channels:
        raise PhenexplainError(
            f"{translated} ({resolution} px, channels {tr.channels}) was not made from {real.root} "
            f"({native} px, channels {real.channels}); pass the crop set it was made from"
        )
    missing = [c for c in [source, *targets] if c not in real.conditions]
    if missing:
        raise PhenexplainError(f"{real.root} has no crops of {missing}")
    factor = native // resolution
    ids = rows["source_crop_id"].drop_duplicates().to_numpy()
    rng = np.random.default_rng(params.seed)
    ids = np.sort(rng.choice(ids, size=min(params.real_per_condition, len(ids)), replace=False))
    position = {cid: i for i, cid in enumerate(real.manifest["crop_id"])}
    unknown = [cid for cid in ids if cid not in position]
    if unknown:
        raise PhenexplainError(
            f"{translated}: source crops {unknown[:3]} are not in {real.root}; pass the crop set "
            "it was made from"
        )
    pairs = zip(rows["source_crop_id"], rows["condition"], strict=True)
    at = {pair: i for i, pair in enumerate(pairs)}  # (source crop, condition) -> row
    wells = well_labels(real)
    source_index = np.array([position[cid] for cid in ids])
    blocks = [(SOURCE, at_resolution(_images(real, source_index), resolution))]
    blocks.append((RECON, enlarge(_images(tr, [at[(c, source)] for c in ids]), factor)))
    for target in targets:
        index = [at[(c, target)] for c in ids]
        blocks.append((_translated(target), enlarge(_images(tr, index), factor)))
    n = len(ids)
    block_wells = [wells[source_index]] * len(blocks)
    for condition in targets:  # real A is the sources themselves: d_real and d_vs_sources share it
        of = np.flatnonzero(real.manifest["condition"].to_numpy() == condition)
        pick = np.sort(rng.choice(of, size=min(params.real_per_condition, len(of)), replace=False))
        blocks.append((_real(condition), at_resolution(_images(real, pick), resolution)))
        block_wells.append(wells[pick])
    images = np.concatenate([b for _, b in blocks])
    names = np.concatenate([np.full(len(b), label) for label, b in blocks])
    m = measure(images, names, real.channels, params.workers, progress,
                wells=np.concatenate(block_wells))  # fmt: skip
    features = [f for f in m.assays if stated_measurable(f, native, resolution)]
    effect_rows = _effects(m, features, targets, rng)
    changed = {(r["target"], r["feature"]): r["changed"] for r in effect_rows}
    stains = check_stains(real.channels, cropset_stains(real))
    masks = _nuclei(images[: n * (2 + len(targets))], stains)
    identity = _identity(m, features, targets, n, masks, changed, rng)
    recon = _reconstruction(real, source_index, tr, [at[(c, source)] for c in ids], factor, ids,
                            holdout if holdout is not None else _holdout(tr))  # fmt: skip
    return TranslationScores(
        source, targets, n, resolution, native, pd.DataFrame(effect_rows), identity, recon
    )


def _images(crops: CropSet, index) -> np.ndarray:
    return np.stack([crops[int(i)][0] for i in index])


def _effects(m: Measurements, features: list[str], targets: list[str], rng):
    rows = []
    for target in targets:
        for feature in features:
            d_real = well_effect(m, feature, _real(target), SOURCE, rng)
            vs_target = well_effect(m, feature, _translated(target), _real(target), rng)
            vs_sources = well_effect(m, feature, _translated(target), SOURCE, rng)
            vs_recon = well_effect(m, feature, _translated(target), RECON, rng)
            ratio = effects.effect_ratio(d_real, vs_sources)
            plain, _ = assay_names(feature)
            row: dict = {"target": target, "feature": feature, "feature_name": plain}
            named = {"d_real": d_real, "d_vs_real_target": vs_target,
                     "d_vs_sources": vs_sources, "d_vs_reconstruction": vs_recon}  # fmt: skip
            for key, d in named.items():
                row |= {key: d.d, f"{key}_ci_low": d.ci_low, f"{key}_ci_high": d.ci_high}
            row |= {"ratio": ratio.ratio, "ratio_ci_low": ratio.ci_low,
                    "ratio_ci_high": ratio.ci_high,
                    "changed": is_real(d_real),
                    "measurable": d_real.measurable and vs_sources.measurable}  # fmt: skip
            rows.append(row)
    return rows


def _nuclei(images: np.ndarray, stains: dict[str, str]) -> np.ndarray:
    """bool [N, H, W]: where each crop's segmentation finds nuclei."""
    return np.stack([segment_crop(to_intensity(image), stains).nuclei > 0 for image in images])


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    """Median over crops of the Dice overlap of two stacks of nucleus masks."""
    both = (a & b).sum(axis=(1, 2))
    total = a.sum(axis=(1, 2)) + b.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(np.nanmedian(np.where(total > 0, 2 * both / total, np.nan)))


def _paired(m: Measurements, feature: str, n: int, block: int) -> tuple[np.ndarray, np.ndarray]:
    """The feature's value of each source crop and of the same crop in `block` (NaN: none)."""
    table = assay_table(m, feature)
    values = np.full(n * (block + 1), np.nan)
    crop = table["crop"].astype(int).to_numpy()
    keep = crop < len(values)
    values[crop[keep]] = table[feature].to_numpy(dtype=float)[keep]
    return values[:n], values[block * n : (block + 1) * n]


def _identity(m, features, targets, n, masks, changed, rng) -> pd.DataFrame:
    rows = []
    src = masks[:n]
    chance = _dice(src, src[rng.permutation(n)]) if n > 1 else np.nan
    recon = _dice(src, masks[n : 2 * n])
    for k, target in enumerate(targets, start=2):
        dice = _dice(src, masks[k * n : (k + 1) * n])
        for feature in features:
            a, b = _paired(m, feature, n, k)
            _, r = _paired(m, feature, n, 1)
            plain, _ = assay_names(feature)
            rows.append({
                "target": target, "feature": feature, "feature_name": plain,
                "changed": changed.get((target, feature), False),
                "r_translation": correlate(feature, a, b)["pearson_r"],
                "r_reconstruction": correlate(feature, a, r)["pearson_r"],
                "nuclei_dice": dice, "nuclei_dice_reconstruction": recon,
                "nuclei_dice_chance": chance,
            })  # fmt: skip
    return pd.DataFrame(rows)


def _holdout(tr: CropSet) -> list[str]:
    from phenexplain.explain.encoder import CONFIG

    folder = (tr.info.get("params") or {}).get("encoder")
    path = Path(folder) / CONFIG if folder else None
    if path is None or not path.is_file():
        return []
    import json

    return list(json.loads(path.read_text(encoding="utf-8")).get("holdout", []))


def _reconstruction(real, source_index, tr, recon_index, factor, ids, holdout) -> dict:
    from phenexplain.explain.encoder import reconstruction_scores

    originals = downsample(_images(real, source_index), factor)
    recon = _images(tr, recon_index)
    held = np.isin(ids, np.asarray(holdout, dtype=object))
    out = {}
    for name, keep in (("all", np.ones(len(ids), bool)), ("held_out", held)):
        scores = reconstruction_scores(originals[keep], recon[keep])
        out[name] = {k: v for k, v in scores.items() if k == "crops" or k.startswith("mean")}
    return out
