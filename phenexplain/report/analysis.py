"""The numbers of the validation report: real crops and generated crops, measured alike.

Real crops are sampled per condition from the crop set and box-downsampled to the model's
resolution, exactly as training saw them; generated crops come from G_ema with seeded z and
constant noise. Both are then enlarged back to the crop set's size (bilinear) before measuring, so
segmentation runs with the same parameters on both and neither source gets an advantage: one
normalisation (uint8 / 255, `phenexplain.measure.crops`) for real and synthetic alike.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from phenexplain.data.cropset import CropSet
from phenexplain.measure.crops import measure_assays
from phenexplain.measure.names import (
    ASSAY_NAMES,
    FeatureName,
    assay_names,
    describe,
    with_names,
)
from phenexplain.measure.stats import (
    benjamini_hochberg,
    compare_shifts,
    condition_shifts,
    correlate,
)
from phenexplain.nets import Generator
from phenexplain.nets.ops import to_uint8
from phenexplain.nets.sampling import one_hot, z_batches

log = logging.getLogger(__name__)

# per-cell assays (nc_ratio compared on a log scale: see phenexplain.measure.crops), measured on
# the centre cell of each crop, and per-crop assays
CELL_ASSAYS = ("log_nc_ratio", "spot_count", "spot_area", "cytoplasm_area", "nucleus_area")
CROP_ASSAYS = ("cell_count", "background_fraction")
SYNTHETIC_PLATE = "synthetic"  # Metadata_Plate of generated crops, which have no plate
IMAGE_IDS = ("crop_id", "Metadata_Plate", "Metadata_Well", "Metadata_Site")  # one set per crop
IDENTIFIERS = {  # columns of the measurement tables that are no measurement -> plain name
    "ImageNumber": "CellProfiler's image number: the crop's number in this table, from 1",
    "ObjectNumber": "CellProfiler's object number: the centre cell's label in its crop",
    "crop_id": "crop id, as in the crop set's manifest.parquet (generated crops: "
    "synthetic_<condition>_<k>, the k-th crop generated of the condition, from 0)",
    "Metadata_Plate": f"plate (generated crops: {SYNTHETIC_PLATE!r})",
    "Metadata_Well": "well (empty for generated crops)",
    "Metadata_Site": "site (field) of the well (empty for generated crops)",
    "crop": "crop number in this sample (a cells_ row and a crops_ row with one number: one crop)",
    "object": "label of the centre cell in the crop's segmentation",
    "centre_object": "label of the crop's centre cell (0: no centre cell, and no cells_ row)",
    "condition": "condition",
    "well": "well of the real crop (plate_well)",
}


def well_labels(crops: CropSet) -> np.ndarray:
    """Each crop's well as ``<plate>_<well>`` (a well name repeats across plates)."""
    manifest = crops.manifest
    return (manifest["plate"].astype(str) + "_" + manifest["well"].astype(str)).to_numpy()


def sample_index(crops: CropSet, conditions: list[str], n: int, seed: int) -> np.ndarray:
    """Manifest positions of up to `n` crops per condition, drawn with `seed`, in condition order
    (and manifest order within one)."""
    rng = np.random.default_rng(seed)
    names = crops.manifest["condition"].to_numpy()
    picked = []
    for name in conditions:
        index = np.flatnonzero(names == name)
        picked.append(np.sort(rng.choice(index, size=min(n, len(index)), replace=False)))
    return np.concatenate(picked)


def real_crops(crops: CropSet, index: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The crops at manifest positions `index` -> (uint8 [N, C, S, S], condition names [N],
    wells [N])."""
    names = crops.manifest["condition"].to_numpy()
    images = np.stack([crops[int(i)][0] for i in index])
    return images, names[index], well_labels(crops)[index]


def sample_real(
    crops: CropSet, conditions: list[str], n: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Up to `n` crops per condition -> (uint8 [N, C, S, S], condition names [N], wells [N])."""
    return real_crops(crops, sample_index(crops, conditions, n, seed))


def crop_identifiers(crops: CropSet, index: np.ndarray) -> pd.DataFrame:
    """`IMAGE_IDS` of the crops at manifest positions `index`, one row each: what joins a
    measurement table to manifest.parquet (crop_id) and to a CellProfiler table of the plates
    (Metadata_Plate, Metadata_Well, Metadata_Site)."""
    rows = crops.manifest.iloc[np.asarray(index, dtype=np.int64)]
    blank = pd.Series("", index=rows.index)  # import-stylegan and IMPA crop sets have no plates
    site = rows["site"] if "site" in rows else pd.Series(None, index=rows.index)
    return pd.DataFrame(
        {
            "crop_id": rows["crop_id"].astype(str).to_numpy(),
            "Metadata_Plate": rows.get("plate", blank).astype(str).to_numpy(),
            "Metadata_Well": rows.get("well", blank).astype(str).to_numpy(),
            "Metadata_Site": pd.array(site.to_numpy(), dtype="Int64"),
        }
    )


def synthetic_identifiers(names: np.ndarray) -> pd.DataFrame:
    """`IMAGE_IDS` of generated crops of conditions `names` [N]: plate ``synthetic``, no well or
    site, crop_id ``synthetic_<condition>_<k>`` (k: the crop's number among its condition's)."""
    names = np.asarray(names).astype(str)
    k = pd.Series(names).groupby(names).cumcount().to_numpy()
    return pd.DataFrame(
        {
            "crop_id": [f"{SYNTHETIC_PLATE}_{name}_{i}" for name, i in zip(names, k, strict=True)],
            "Metadata_Plate": SYNTHETIC_PLATE,
            "Metadata_Well": "",
            "Metadata_Site": pd.array([None] * len(names), dtype="Int64"),
        }
    )


def generate(
    G: Generator, conditions: list[str], n: int, seed: int, batch: int = 128
) -> tuple[np.ndarray, np.ndarray]:
    """`n` generated crops per condition (the same z for every condition) -> (uint8 [N, C, R, R],
    condition names [N])."""
    images = [generate_condition(G, k, n, seed, batch) for k in range(len(conditions))]
    return np.concatenate(images), np.repeat(np.asarray(conditions), n)


def generate_condition(G: Generator, index: int, n: int, seed: int, batch: int = 128) -> np.ndarray:
    """`generate`'s crops of condition `index` alone: uint8 [n, C, R, R]."""
    device = next(G.parameters()).device
    z = next(z_batches(n, G.z_dim, seed, n, device))  # one draw: the same z for every condition
    images = []
    with torch.no_grad():
        for start in range(0, n, batch):
            zb = z[start : start + batch]
            c = one_hot(index, G.c_dim, len(zb), device)
            images.append(to_uint8(G(zb, c, noise_mode="const", force_fp32=True)).cpu())
    return torch.cat(images).numpy()


def enlarge(images: np.ndarray, factor: int) -> np.ndarray:
    """uint8 [N, C, R, R] -> uint8 [N, C, R * factor, R * factor], bilinear."""
    if factor == 1:
        return images
    x = torch.from_numpy(images).float()
    out = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8).numpy()


@dataclass
class Measurements:
    """Per-cell (centre cells) and per-crop assay tables of one source (real or synthetic).

    Real tables carry each crop's ``well`` (plate_well); generated crops have none. Tables given
    identifiers carry each crop's `IMAGE_IDS` too (`crop_identifiers`, `synthetic_identifiers`).
    """

    cells: pd.DataFrame
    crops: pd.DataFrame
    assays: list[str] = field(default_factory=list)


def measure(
    images: np.ndarray,
    names: np.ndarray,
    channels: list[str],
    workers: int,
    progress=None,
    wells: np.ndarray | None = None,
    ids: pd.DataFrame | None = None,
) -> Measurements:
    """Assays of crops with their condition (and `wells` and `ids`, one per crop, when given);
    log_nc_ratio replaces nc_ratio."""
    cells, per_crop = measure_assays(images, channels, workers=workers, on_progress=progress)
    return labelled(cells, per_crop, names, wells, ids)


def labelled(
    cells: pd.DataFrame,
    per_crop: pd.DataFrame,
    names: np.ndarray,
    wells: np.ndarray | None = None,
    ids: pd.DataFrame | None = None,
) -> Measurements:
    """`measure_assays`' tables with each crop's condition (and well, and the columns of `ids`:
    a row per crop), log_nc_ratio for nc_ratio, and the assays they hold."""
    labels: dict = {"condition": names} if wells is None else {"condition": names, "well": wells}
    if ids is not None:
        if len(ids) != len(names):
            raise ValueError(f"{len(ids)} identifier rows for {len(names)} crops")
        labels.update({column: ids[column].to_numpy() for column in ids.columns})
    for column, values in labels.items():
        values = np.asarray(values)
        cells[column] = values[cells["crop"].astype(int).to_numpy()] if len(cells) else []
        per_crop[column] = values[per_crop["crop"].astype(int).to_numpy()]
    if "nc_ratio" in cells:
        with np.errstate(divide="ignore", invalid="ignore"):
            cells["log_nc_ratio"] = np.log(cells["nc_ratio"].where(cells["nc_ratio"] > 0))
    assays = [a for a in CELL_ASSAYS if a in cells and cells[a].notna().any()]
    assays += [a for a in CROP_ASSAYS if a in per_crop and per_crop[a].notna().any()]
    return Measurements(cells, per_crop, assays)


@dataclass
class ConditionSample:
    """One condition's generated crops (at the model's resolution) and `measure_assays`' tables
    of them: the unit the flow maps over conditions."""

    images: np.ndarray  # uint8 [n, C, R, R]
    cells: pd.DataFrame
    crops: pd.DataFrame


def sample_condition(
    G: Generator, index: int, n: int, seed: int, *, factor: int, channels: list[str], workers: int
) -> ConditionSample:
    """`generate_condition`'s crops, enlarged by `factor` and measured as `validate` measures."""
    images = generate_condition(G, index, n, seed)
    cells, per_crop = measure_assays(enlarge(images, factor), channels, workers=workers)
    return ConditionSample(images, cells, per_crop)


def join_samples(
    samples: list[ConditionSample], conditions: list[str]
) -> tuple[np.ndarray, np.ndarray, Measurements]:
    """The conditions' samples as one: (images, names, measurements), crop numbers running on
    across them, as measuring all the crops at once numbers them."""
    cells: list[pd.DataFrame] = []
    crops: list[pd.DataFrame] = []
    offset = 0
    for sample in samples:
        for parts, table in ((cells, sample.cells), (crops, sample.crops)):
            table = table.copy()
            table["crop"] = table["crop"].astype(int) + offset
            parts.append(table)
        offset += len(sample.images)
    sizes = [len(sample.images) for sample in samples]
    if len(sizes) != len(conditions):
        raise ValueError(f"{len(samples)} condition samples for {len(conditions)} conditions")
    names = np.repeat(np.asarray(conditions), sizes)
    joined = labelled(
        pd.concat(cells, ignore_index=True), pd.concat(crops, ignore_index=True), names,
        ids=synthetic_identifiers(names),
    )  # fmt: skip
    return np.concatenate([sample.images for sample in samples]), names, joined


def write_measurements(sources: dict[str, Measurements], out: Path) -> pd.DataFrame:
    """cells_<source>.csv and crops_<source>.csv in `out`, each measurement under its
    CellProfiler-style name, and feature_names.csv, their dictionary: per column, its code name,
    plain name, unit and what it measures (centre cell or crop). Returns the dictionary.

    As CellProfiler exports them: a crop is an image (``ImageNumber``, from 1, and its
    `IMAGE_IDS`: crop_id, Metadata_Plate, Metadata_Well, Metadata_Site), a centre cell an object
    of it (``ObjectNumber``: its label), one row per object in cells_, per image in crops_."""
    rows: dict[str, dict] = {}
    for source, m in sources.items():
        for kind, table in (("cells", m.cells), ("crops", m.crops)):
            file = f"{kind}_{source}.csv"
            missing = [c for c in IMAGE_IDS if c not in table]
            assert not missing, f"{file} lacks the identifiers {missing} (`labelled`'s ids)"
            table = table.assign(ImageNumber=table["crop"].astype(int) + 1)
            if kind == "cells":
                table = table.assign(ObjectNumber=table["object"].astype(int))
            names = {}
            for column in table.columns:
                assert column in IDENTIFIERS or column in ASSAY_NAMES, (
                    f"column {column!r} of {file} has no name: add it to "
                    "measure.names.ASSAY_NAMES or report.analysis.IDENTIFIERS"
                )
                if column in IDENTIFIERS:
                    name = FeatureName(column, IDENTIFIERS[column], "", "")
                else:
                    name = describe(column)
                entry = {
                    "code_name": column,
                    "feature_name": name.plain,
                    "cellprofiler_name": name.cellprofiler,
                    "unit": name.unit,
                    "measured_on": "" if column in IDENTIFIERS
                    else "crop" if column in CROP_ASSAYS else "centre cell",
                }  # fmt: skip
                names[column] = entry["cellprofiler_name"] or column
                rows.setdefault(names[column], {"column": names[column], **entry, "files": []})
                rows[names[column]]["files"].append(file)
            first = [c for c in IDENTIFIERS if c in table]  # identifiers first, then measurements
            table = table[first + [c for c in table.columns if c not in IDENTIFIERS]]
            table.rename(columns=names).to_csv(out / file, index=False)
    dictionary = pd.DataFrame(list(rows.values()))
    dictionary["files"] = dictionary["files"].map(" ".join)
    dictionary.to_csv(out / "feature_names.csv", index=False)
    return dictionary


def assay_table(m: Measurements, assay: str) -> pd.DataFrame:
    """The table an assay lives in: per cell or per crop."""
    return m.cells if assay in CELL_ASSAYS else m.crops


def assay_statistics(
    real: Measurements, synthetic: Measurements, control: str, level: float
) -> pd.DataFrame:
    """Every condition vs control, per assay, on real and on synthetic images, Student and Welch:
    one row per (source, test, condition, assay), with BH q across the assays."""
    frames = []
    for source, m in (("real", real), ("synthetic", synthetic)):
        for welch in (False, True):
            per_assay = []
            for assay in m.assays:
                table = assay_table(m, assay)
                if table["condition"].nunique() < 2 or control not in set(table["condition"]):
                    continue
                per_assay.append(
                    condition_shifts(table, [assay], control=control, welch=welch, level=level)
                )
            if not per_assay:
                continue
            frame = pd.concat(per_assay, ignore_index=True)
            frame = frame.drop(columns="q")
            frame["q"] = np.nan
            for _, part in frame.groupby("condition"):  # BH across the assay panel
                frame.loc[part.index, "q"] = benjamini_hochberg(part["p"].to_numpy())
            names = [assay_names(a) for a in frame["feature"]]
            frame.insert(0, "cellprofiler_name", [cp for _, cp in names])
            frame.insert(0, "feature_name", [plain for plain, _ in names])
            frame.insert(0, "test", "welch" if welch else "student")
            frame.insert(0, "source", source)
            frames.append(frame.rename(columns={"feature": "assay"}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def shift_correlation(
    real: Measurements, synthetic: Measurements, control: str, level: float
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Real vs synthetic condition shifts (Cohen's d, with their names and `flag_shifts` flags)
    over every assay and condition, and their correlation."""
    shifts = []
    for assay in sorted(set(real.assays) & set(synthetic.assays)):
        s, _ = compare_shifts(
            assay_table(real, assay),
            assay_table(synthetic, assay),
            [assay],
            control=control,
            level=level,
        )
        shifts.append(s)
    if not shifts:
        return pd.DataFrame(), pd.DataFrame()
    shifts_df = with_names(pd.concat(shifts, ignore_index=True))
    correlations = [
        correlate(
            "all assays",
            shifts_df["shift_real"].to_numpy(),
            shifts_df["shift_synthetic"].to_numpy(),
        )
    ]
    return shifts_df, pd.DataFrame(correlations)
