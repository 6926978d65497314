"""The field's preprocessed BBBC021 crops (IMPA, Palma et al. 2025; CellFlux, Zhang et al. 2025)
as a crop set, so our numbers can stand beside their published tables.

The layout, as both projects' data loaders read it (IMPA's Zenodo record 8307629):

- ``metadata/bbbc021_df_all.csv`` (first column the row index): one row per cell with
  ``SAMPLE_KEY`` (``Week1_22123_1_11_3.0``), ``CPD_NAME`` (``DMSO`` for the controls), ``DOSE``,
  ``ANNOT`` (mode of action), ``PLATE``, ``SPLIT`` (``train`` / ``test``) and, where present,
  ``BATCH``, ``TABLE_NUMBER``, ``IMAGE_NUMBER``, ``OBJECT_NUMBER``, ``SMILES``, ``STATE``;
- one ``.npy`` per cell at ``<part 1>/<part 2>/<the rest of the key>.npy`` of its key split on
  ``_`` (``Week1/22123/1_11_3.0.npy``): uint8 [96, 96, 3], channels last.

Conditions are compounds (``condition_by="compound"``: CellFlux's FIDc is per compound) or
compound-dose pairs (``"compound_dose"``, ``<CPD_NAME>_<DOSE>uM``, with ``concentration_um``).
The manifest keeps the key (as crop id), compound, ``dose_um``, mode of action (``moa``), split,
batch, plate and the source image number (as the well: the closest replicate unit the table
has). A row whose file is missing, unreadable or not a uint8
[S, S, 3] crop is quarantined (``quarantine.csv``, with the reason), not dropped silently; a key
that would lead outside the folder is refused. The channel order is not named in the projects'
code; BBBC021 stains DNA, beta-tubulin and F-actin, and `channels` defaults to that order.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from phenexplain.data import cropset as cs
from phenexplain.errors import PhenexplainError
from phenexplain.fsutil import check_output

METADATA = Path("metadata") / "bbbc021_df_all.csv"
REQUIRED = ("SAMPLE_KEY", "CPD_NAME", "DOSE", "PLATE", "SPLIT")
CHANNELS = ["DNA", "Tubulin", "Actin"]
LAYOUT = "IMPA/CellFlux BBBC021"
_KEY_PART = re.compile(r"^[A-Za-z0-9.\-]+$")
_CONDITION_BY = ("compound", "compound_dose")


def sample_path(root: Path, key: str) -> Path:
    """The file of sample `key` under `root`; a key that could lead outside it is refused."""
    parts = str(key).split("_")
    if len(parts) < 3 or not all(_KEY_PART.match(p) and p not in (".", "..") for p in parts):
        raise PhenexplainError(
            f"SAMPLE_KEY {key!r} is not of the form <week>_<plate>_<table>_<image>_<object> "
            "(letters, digits, '.', '-' between underscores)"
        )
    return root / parts[0] / parts[1] / ("_".join(parts[2:]) + ".npy")


def condition_names(table: pd.DataFrame, condition_by: str) -> pd.Series:
    """Each row's condition: its compound, or compound and dose."""
    if condition_by not in _CONDITION_BY:
        raise PhenexplainError(
            f"condition_by {condition_by!r}: choose {' or '.join(_CONDITION_BY)}"
        )
    compound = table["CPD_NAME"].astype(str)
    if condition_by == "compound":
        return compound
    dose = pd.to_numeric(table["DOSE"], errors="coerce").map(lambda d: f"{d:g}")
    return compound + "_" + dose + "uM"


def _read_crop(path: Path) -> tuple[np.ndarray | None, str]:
    """(uint8 [3, S, S], "") or (None, why not)."""
    if not path.is_file():
        return None, f"missing file {path.name}"
    try:
        crop = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        return None, f"unreadable .npy ({exc})"
    if crop.dtype != np.uint8 or crop.ndim != 3 or crop.shape[0] != crop.shape[1]:
        return None, f"{crop.dtype} {list(crop.shape)}, not a uint8 [S, S, channels] crop"
    return np.ascontiguousarray(crop.transpose(2, 0, 1)), ""


def _mismatch(crop: np.ndarray, size: int | None, channels: list[str] | None) -> str:
    """Why `crop` cannot join the others ("" when it can)."""
    if size is not None and crop.shape[1:] != (size, size):
        return f"{crop.shape[1]} px, the others {size} px"
    if channels is not None and crop.shape[0] != len(channels):
        return f"{crop.shape[0]} channels, {len(channels)} names given"
    return ""


def import_impa(
    root: str | Path,
    out: str | Path,
    *,
    metadata: str | Path | None = None,
    channels: list[str] | None = None,
    condition_by: str = "compound",
    split: str | None = None,
    overwrite: bool = False,
) -> tuple[int, int]:
    """Read the IMPA/CellFlux BBBC021 folder `root` (its ``metadata/bbbc021_df_all.csv``, or
    `metadata`) into the crop set `out`; `split`: only that SPLIT (``train``, ``test``).
    Returns (crops, quarantined rows)."""
    root, out = Path(root), Path(out)
    table_path = Path(metadata) if metadata else root / METADATA
    check_output(out, overwrite, kind=cs.KIND, inputs=[root, table_path])
    if not table_path.is_file():
        raise PhenexplainError(
            f"{table_path} not found: the IMPA/CellFlux layout has {METADATA} under its folder "
            "(or pass --metadata)"
        )
    try:
        table = pd.read_csv(table_path, index_col=0)
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise PhenexplainError(f"{table_path}: not a readable CSV ({exc})") from None
    missing = [c for c in REQUIRED if c not in table.columns]
    if missing:
        raise PhenexplainError(
            f"{table_path}: column(s) {missing} missing; the layout's table has {list(REQUIRED)}"
        )
    if split is not None:
        table = table[table["SPLIT"].astype(str) == split]
        if table.empty:
            raise PhenexplainError(f"{table_path}: no rows with SPLIT == {split!r}")
    table = table.reset_index(drop=True)
    conditions = condition_names(table, condition_by)
    crops, rows, quarantined = [], [], []
    size = None
    for i, row in table.iterrows():
        key = str(row["SAMPLE_KEY"])
        path = sample_path(root, key)
        crop, reason = _read_crop(path)
        if crop is not None:
            reason = _mismatch(crop, size, channels)
        if crop is None or reason:
            quarantined.append({"crop_id": key, "files": str(path.relative_to(root)),
                                "condition": conditions[i], "reasons": reason})  # fmt: skip
            continue
        size = crop.shape[1]
        crops.append(crop)
        rows.append(_row(row, key, conditions[i], path.relative_to(root), crop))
    if not crops:
        raise PhenexplainError(
            f"{root}: none of the {len(table)} rows of {table_path.name} has a readable crop "
            f"(first: {quarantined[0]['reasons'] if quarantined else 'no rows'})"
        )
    n = crops[0].shape[0]
    names = channels or (CHANNELS if n == len(CHANNELS) else [f"ch{k}" for k in range(n)])
    manifest = pd.DataFrame(rows)
    if condition_by == "compound_dose":  # one dose per condition: a dose series can be read
        manifest["concentration_um"] = manifest["dose_um"]
    return _write(out, root, np.stack(crops), manifest, quarantined, names, overwrite), len(
        quarantined
    )


def _row(row: pd.Series, key: str, condition: str, file: Path, crop: np.ndarray) -> dict:
    size = crop.shape[-1]
    image = row.get("IMAGE_NUMBER")
    return {
        "crop_id": key, "field_id": f"{row['PLATE']}_{image}" if image is not None else key,
        "plate": str(row["PLATE"]), "well": str(image) if image is not None else "",
        "site": 0, "condition": condition, "compound": str(row["CPD_NAME"]),
        "dose_um": float(pd.to_numeric(row["DOSE"], errors="coerce")),
        "moa": str(row.get("ANNOT", "")), "split": str(row["SPLIT"]),
        "batch": str(row.get("BATCH", "")), "y": size / 2, "x": size / 2, "top": 0, "left": 0,
        "checksum": cs.crop_checksum(crop), "files": str(file),
    }  # fmt: skip


def _write(out, root, stack, manifest, quarantined, channels, overwrite) -> int:
    shard = cs.shard_name("bbbc021")
    manifest.insert(1, "shard", shard)
    manifest.insert(2, "index", np.arange(len(manifest)))
    columns = ["crop_id", "files", "condition", "reasons"]
    cs.write_cropset(
        out, shard, stack, manifest, inputs=[root], overwrite=overwrite,
        tables={cs.QUARANTINE: pd.DataFrame(quarantined, columns=columns)},
        info={"source": str(root), "layout": LAYOUT, "channels": channels,
              "plates": {"bbbc021": {"shard": shard, "crops": len(manifest),
                                     "quarantined": len(quarantined)}}},
    )  # fmt: skip
    return len(manifest)
