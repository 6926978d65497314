"""The field's preprocessed BBBC021 layout (IMPA / CellFlux), on a small folder the test writes:
keys onto files, channels last onto channels first, conditions, quarantine, refused keys."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from phenexplain.data.cropset import CropSet
from phenexplain.data.impa import import_impa, sample_path
from phenexplain.errors import PhenexplainError
from tests.cli_inprocess import one_line_error, run_cli

CELLS = [  # key, compound, dose, moa, split
    ("Week1_22123_1_11_3.0", "DMSO", 0.0, "DMSO", "train"),
    ("Week1_22123_1_11_4.0", "DMSO", 0.0, "DMSO", "test"),
    ("Week1_22123_2_5_1.0", "taxol", 0.3, "Microtubule stabilizers", "train"),
    ("Week1_22123_2_5_2.0", "taxol", 3.0, "Microtubule stabilizers", "test"),
    ("Week2_24121_7_40_9.0", "AZ138", 1.0, "Eg5 inhibitors", "test"),
]


def _layout(root: Path, size: int = 96) -> dict[str, np.ndarray]:
    """The folder as IMPA's Zenodo record lays it out; returns the crops [H, W, 3] by key."""
    rng = np.random.default_rng(0)
    crops = {}
    rows = []
    for i, (key, compound, dose, moa, split) in enumerate(CELLS):
        week, plate, *rest = key.split("_")
        crop = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        path = root / week / plate / ("_".join(rest) + ".npy")
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, crop)
        crops[key] = crop
        rows.append({"SAMPLE_KEY": key, "BATCH": f"{week}_{plate}", "TABLE_NUMBER": rest[0],
                     "IMAGE_NUMBER": rest[1], "OBJECT_NUMBER": rest[2], "CPD_NAME": compound,
                     "SMILES": "C", "DOSE": dose, "ANNOT": moa, "STATE": int(compound != "DMSO"),
                     "PLATE": int(plate), "SPLIT": split, "_i": i})  # fmt: skip
    (root / "metadata").mkdir(parents=True)
    pd.DataFrame(rows).set_index("_i").to_csv(root / "metadata" / "bbbc021_df_all.csv")
    return crops


def test_the_field_layout_reads_as_a_crop_set(tmp_path):
    crops = _layout(tmp_path / "bbbc021_all")
    n, bad = import_impa(tmp_path / "bbbc021_all", tmp_path / "cs")
    out = CropSet(tmp_path / "cs")
    assert (n, bad, len(out), out.resolution) == (5, 0, 5, 96)
    assert out.channels == ["DNA", "Tubulin", "Actin"]
    assert sorted(out.conditions) == ["AZ138", "DMSO", "taxol"]
    rows = out.manifest.set_index("crop_id")
    for i, key in enumerate(out.manifest["crop_id"]):
        np.testing.assert_array_equal(out[i][0], crops[key].transpose(2, 0, 1))
    assert rows.loc["Week1_22123_2_5_2.0", "moa"] == "Microtubule stabilizers"
    assert rows.loc["Week1_22123_2_5_2.0", "dose_um"] == 3.0
    assert rows.loc["Week2_24121_7_40_9.0", "plate"] == "24121"
    assert list(rows["split"]) == [c[4] for c in CELLS]
    by_dose = import_impa(tmp_path / "bbbc021_all", tmp_path / "cs2", condition_by="compound_dose",
                          split="test")  # fmt: skip
    assert by_dose == (3, 0)
    assert sorted(CropSet(tmp_path / "cs2").conditions) == ["AZ138_1uM", "DMSO_0uM", "taxol_3uM"]
    assert CropSet(tmp_path / "cs2").concentrations["taxol_3uM"] == 3.0


def test_bad_rows_are_quarantined_and_escaping_keys_refused(tmp_path):
    root = tmp_path / "bbbc021_all"
    _layout(root)
    sample_path(root, CELLS[0][0]).unlink()  # missing
    np.save(sample_path(root, CELLS[2][0]), np.zeros((96, 96, 3), np.float32))  # not uint8
    code, err = run_cli("import-impa", root, tmp_path / "cs")
    assert code == 0, err
    assert "2 row(s) quarantined" in err
    quarantine = pd.read_csv(tmp_path / "cs" / "quarantine.csv")
    assert list(quarantine["crop_id"]) == [CELLS[0][0], CELLS[2][0]]
    assert "missing file" in quarantine["reasons"][0] and "float32" in quarantine["reasons"][1]
    assert len(CropSet(tmp_path / "cs")) == 3
    for key in ("Week1_.._x", "Week1_/etc_passwd", "Week1"):
        with pytest.raises(PhenexplainError, match="is not of the form"):
            sample_path(root, key)
    table = pd.read_csv(root / "metadata" / "bbbc021_df_all.csv", index_col=0)
    table.loc[table.index[1], "SAMPLE_KEY"] = "Week1_.._.._secret"
    table.to_csv(tmp_path / "evil.csv")
    code, err = run_cli("import-impa", root, tmp_path / "cs3", "--metadata", tmp_path / "evil.csv")
    assert "is not of the form" in one_line_error(code, err)
    assert not (tmp_path / "cs3").exists()
    table.drop(columns="SPLIT").to_csv(tmp_path / "nosplit.csv")
    code, err = run_cli(
        "import-impa", root, tmp_path / "cs4", "--metadata", tmp_path / "nosplit.csv"
    )
    assert "['SPLIT'] missing" in one_line_error(code, err)
