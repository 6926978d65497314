"""Synthetic plates: format, determinism, and planted phenotypes recovered by measurement."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from scipy import stats

from phenexplain.data.nuclei import segment_nuclei
from phenexplain.data.synthetic import ASSAYS, generate_plates, get_assay
from phenexplain.data.synthetic.assays import SUBTLE_D, WELL_SIGMA
from phenexplain.data.synthetic.field import CAMERA_GAIN_ADU, CAMERA_OFFSET_ADU
from phenexplain.errors import OutputExistsError, PhenexplainError
from phenexplain.measure.assays import measure_field
from phenexplain.measure.stats import t_statistics
from tests.conftest import small_spec


def _rows(path: Path) -> list[dict]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _measure(root: Path) -> dict[str, dict[str, list]]:
    """Per condition: per-cell features and per-field values, measured from the TIFFs alone."""
    truth = json.loads((root / "ground_truth.json").read_text())
    stains = {ch["name"]: ch["stain"] for ch in truth["channels"]}
    out: dict[str, dict[str, list]] = {}
    for row in _rows(root / "metadata.csv"):
        images = {ch: tifffile.imread(root / row[f"path_{ch}"]) for ch in stains}
        cells, field = measure_field(images, stains, segment_nuclei(images["DNA"]))
        acc = out.setdefault(row["condition"], {})
        for cell in cells:
            for k, v in cell.items():
                acc.setdefault(k, []).append(v)
            acc.setdefault("well", []).append(row["well"])
        for k, v in field.items():
            acc.setdefault(f"field_{k}", []).append(v)
    return out


def test_plate_layout_files_and_tiffs(plate_factory):
    root = plate_factory("nfkb")
    rows = _rows(root / "metadata.csv")
    assert len(rows) == 2 * 3 * 3
    assert set(rows[0]) >= {
        "plate",
        "well",
        "row",
        "column",
        "site",
        "condition",
        "path_DNA",
        "path_NFkB",
    }
    assert {r["condition"] for r in rows} == {"control", "TNF"}
    wells = {(r["well"], r["condition"]) for r in rows}
    assert len({w for w, _ in wells}) == len(wells) == 6  # one condition per well
    for row in rows[:4]:
        for ch in ("DNA", "NFkB"):
            path = root / row[f"path_{ch}"]
            assert (
                path.name
                == f"{row['plate']}_{row['well']}_s{row['site']}_w{1 if ch == 'DNA' else 2}.tif"
            )
            image = tifffile.imread(path)
            assert image.shape == (512, 640)
            assert image.dtype == np.uint16
            assert image.min() >= 50  # camera offset
            assert image.max() > (1000 if ch == "DNA" else 300)  # bright nuclei, visible marker
    truth = json.loads((root / "ground_truth.json").read_text())
    assert truth["control"] == "control"
    assert truth["conditions"]["TNF"]["expected_vs_control"] == {"nc_ratio": "up"}
    assert truth["conditions"]["TNF"]["changed_vs_control"] == {"nc_ratio": 3.2}
    assert not list(root.parent.glob(".plate.partial-*"))


def test_same_seed_same_bytes_regardless_of_workers(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    generate_plates(small_spec("golgi", wells_per_condition=1, sites_per_well=2, workers=1), a)
    generate_plates(small_spec("golgi", wells_per_condition=1, sites_per_well=2, workers=2), b)
    generate_plates(small_spec("golgi", wells_per_condition=1, sites_per_well=2, seed=8), c)
    assert _digest(a) == _digest(b)
    da, dc = _digest(a), _digest(c)
    tiffs = [k for k in da if k.endswith(".tif")]
    assert tiffs
    assert not (set(k for k in dc if k.endswith(".tif")) & set(tiffs))  # seed is in the plate name
    first_a = tifffile.imread(a / tiffs[0])
    first_c = tifffile.imread(next(c.rglob("*_s1_w1.tif")))
    assert not np.array_equal(first_a, first_c)


def test_ground_truth_cells_match_detected_nuclei(plate_factory):
    root = plate_factory("nfkb")
    truth = _rows(root / "ground_truth_cells.csv")
    row = _rows(root / "metadata.csv")[0]
    key = (row["plate"], row["well"], row["site"])
    centres = np.array(
        [
            [float(c["y"]), float(c["x"])]
            for c in truth
            if (c["plate"], c["well"], c["site"]) == key and c["centre_in_field"] == "True"
        ]
    )
    labels = segment_nuclei(tifffile.imread(root / row["path_DNA"]))
    hits = sum(labels[int(y), int(x)] > 0 for y, x in centres)
    assert len(centres) > 5
    assert hits / len(centres) > 0.9  # nearly every planted nucleus is found where it was put


def test_nfkb_ratio_rises_under_treatment(plate_factory):
    m = _measure(plate_factory("nfkb"))
    control, treated = np.array(m["control"]["nc_ratio"]), np.array(m["TNF"]["nc_ratio"])
    assert np.nanmedian(treated) > 2.5 * np.nanmedian(control)
    assert np.nanmedian(control) < 1.0 < np.nanmedian(treated)  # marker excluded, then nuclear


def test_golgi_spots_become_many_and_small(plate_factory):
    m = _measure(plate_factory("golgi"))
    # one merged perinuclear ribbon against a few separate stacks (d about 1, as in the paper)
    assert np.median(m["nocodazole"]["spot_count"]) > np.median(m["DMSO"]["spot_count"])
    assert np.mean(m["nocodazole"]["spot_count"]) > 1.5 * np.mean(m["DMSO"]["spot_count"])
    assert np.nanmedian(m["nocodazole"]["spot_area"]) < 0.75 * np.nanmedian(m["DMSO"]["spot_area"])


def test_dose_effects_are_monotonic(plate_factory):
    root = plate_factory("dose", wells_per_condition=2, sites_per_well=3, height=768, width=1024)
    m = _measure(root)
    assay = get_assay("dose")
    doses = [c.concentration_um for c in assay.conditions]
    names = [c.name for c in assay.conditions]
    area = [np.median(m[n]["cytoplasm_area"]) for n in names]
    count = [np.mean(m[n]["field_cell_count"]) for n in names]
    assert stats.spearmanr(doses, area).statistic < -0.8
    assert stats.spearmanr(doses, count).statistic < -0.8
    assert area[-1] < 0.7 * area[0] and count[-1] < 0.6 * count[0]


def test_subtle_assay_planted_effect_size_is_recovered(plate_factory):
    root = plate_factory("subtle", seed=3, wells_per_condition=4, height=1024, width=1280)
    m = _measure(root)
    a, b = np.array(m["corrected"]["nucleus_area"]), np.array(m["mutant"]["nucleus_area"])
    assert len(a) > 500 and len(b) > 500
    pooled = np.sqrt(
        ((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2)
    )
    d = (b.mean() - a.mean()) / pooled
    assert abs(d - SUBTLE_D) <= 0.15, d


@pytest.mark.parametrize("assay", sorted(ASSAYS))
def test_every_assay_declares_a_control_and_an_expected_effect(assay):
    spec = get_assay(assay)
    truth = spec.ground_truth()
    assert truth["conditions"][spec.control]["is_control"]
    treated = [c for c in truth["conditions"].values() if not c["is_control"]]
    assert treated and all(c["expected_vs_control"] and c["changed_vs_control"] for c in treated)


def test_refuses_non_empty_output_and_overwrites_only_its_own(tmp_path):
    out = tmp_path / "plate"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    spec = small_spec("nfkb", wells_per_condition=1, sites_per_well=1, height=64, width=64)
    with pytest.raises(OutputExistsError, match="--overwrite"):
        generate_plates(spec, out)
    with pytest.raises(PhenexplainError, match="not written by phenexplain"):
        generate_plates(spec, out, overwrite=True)  # a folder of the user's is never replaced
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    ours = tmp_path / "ours"
    generate_plates(spec, ours)
    generate_plates(spec, ours, overwrite=True)
    assert (ours / "metadata.csv").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ours", "plate"]  # no staging, no old


def test_failure_midway_leaves_nothing_behind(tmp_path):
    def explode(done: int, total: int) -> None:
        if done == 2:
            raise RuntimeError("interrupted")

    spec = small_spec("nfkb", wells_per_condition=2, sites_per_well=2, height=64, width=64)
    with pytest.raises(RuntimeError):
        generate_plates(spec, tmp_path / "plate", on_field=explode)
    assert list(tmp_path.iterdir()) == []


def test_unknown_assay_and_bad_paths_raise_clear_errors(tmp_path):
    with pytest.raises(PhenexplainError, match="unknown assay 'bogus'; choose one of: dose, golgi"):
        get_assay("bogus")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    spec = small_spec("nfkb", height=64, width=64)
    with pytest.raises(PhenexplainError, match="is a file, not a folder"):
        generate_plates(spec, blocker / "out")


def _cohens_d(control, treated) -> float:
    """Treated - control in units of the pooled SD, by the project's formula (NaNs left out)."""
    a, b = (np.asarray(x, dtype=float) for x in (control, treated))
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    out = t_statistics(
        len(b), b.mean(), b.var(ddof=1), len(a), a.mean(), a.var(ddof=1), welch=False, level=0.95
    )
    return float(out["cohens_d"])


def _feature(m: dict, condition: str, feature: str) -> np.ndarray:
    """Per-cell values of `feature` as the ground truth names it (log_nc_ratio: log nc_ratio)."""
    if feature == "log_nc_ratio":
        ratio = np.array(m[condition]["nc_ratio"], dtype=float)
        return np.log(np.where(ratio > 0, ratio, np.nan))
    return np.array(m[condition][feature], dtype=float)


def _marker_per_cell(root: Path, channel: str) -> dict[str, float]:
    """Per condition: integrated marker photons above each field's median, per cell.

    Summed over the fields of a condition, divided by the cells centred in those fields and by
    each well's recorded expression factor (a biological well effect, not a condition effect).
    """
    wells = {(w["plate"], w["well"]): w for w in _rows(root / "ground_truth_wells.csv")}
    counts: dict[tuple, int] = {}
    for cell in _rows(root / "ground_truth_cells.csv"):
        if cell["centre_in_field"] == "True":
            key = (cell["plate"], cell["well"], cell["site"])
            counts[key] = counts.get(key, 0) + 1
    totals: dict[str, list[float]] = {}
    for row in _rows(root / "metadata.csv"):
        image = (
            tifffile.imread(root / row[f"path_{channel}"]) - CAMERA_OFFSET_ADU
        ) / CAMERA_GAIN_ADU
        signal = float(np.sum(image - np.median(image)))
        factor = float(wells[(row["plate"], row["well"])]["factor_marker_level"])
        acc = totals.setdefault(row["condition"], [0.0, 0.0])
        acc[0] += signal / factor
        acc[1] += counts.get((row["plate"], row["well"], row["site"]), 0)
    return {cond: total / cells for cond, (total, cells) in totals.items()}


def test_nfkb_translocation_conserves_the_marker_per_cell(plate_factory):
    per_cell = _marker_per_cell(plate_factory("nfkb"), "NFkB")
    assert 0.9 < per_cell["TNF"] / per_cell["control"] < 1.1, per_cell  # once 1.41


def test_golgi_scattering_conserves_the_integrated_signal(plate_factory):
    per_cell = _marker_per_cell(plate_factory("golgi"), "Golgi")
    assert 0.9 < per_cell["nocodazole"] / per_cell["DMSO"] < 1.1, per_cell  # once about 2.5


def test_ground_truth_lists_the_intensity_changes_that_remain():
    truth = get_assay("nfkb").ground_truth()["conditions"]["TNF"]
    assert truth["intensity_vs_control"]["NFkB integrated per cell"] == "unchanged"
    for assay in ("golgi", "dose", "subtle"):
        spec = get_assay(assay)
        for cond in spec.conditions:
            if cond.name != spec.control:
                assert cond.intensity, (assay, cond.name)


@pytest.mark.parametrize(
    ("assay", "kw"),
    [
        ("nfkb", {}),
        ("golgi", {}),
        ("subtle", {"seed": 3, "wells_per_condition": 4, "height": 1024, "width": 1280}),
    ],
)
def test_realised_effect_sizes_match_the_recorded_ones(plate_factory, assay, kw):
    """The d recorded in the assay (measured once on assays.REFERENCE_PLATE) is what a plate gives.

    A test plate has 3-4 wells per condition with their own well effects, so its d scatters
    around the reference: the tolerance is 0.2 plus 15 % of d.
    """
    spec = get_assay(assay)
    m = _measure(plate_factory(assay, **kw))
    for cond in spec.conditions:
        for feature, expected in cond.expected_d.items():
            d = _cohens_d(_feature(m, spec.control, feature), _feature(m, cond.name, feature))
            assert abs(d - expected) <= 0.2 + 0.15 * abs(expected), (cond.name, feature, d)


def test_paper_sized_effects_are_planted():
    assert get_assay("nfkb").condition("TNF").expected_d["log_nc_ratio"] == pytest.approx(
        2.9, abs=0.3
    )
    golgi = get_assay("golgi").condition("nocodazole").expected_d
    assert 0.4 <= golgi["spot_count"] <= 1.3 and -1.3 <= golgi["spot_area"] <= -0.4
    assert get_assay("subtle").condition("mutant").expected_d["nucleus_area"] == pytest.approx(
        SUBTLE_D, abs=0.1
    )


def test_wells_vary_beyond_cell_sampling_without_a_condition_effect(plate_factory):
    """Within one condition, well means of log nc_ratio spread more than cell sampling allows."""
    root = plate_factory("nfkb", wells_per_condition=8, sites_per_well=2)
    wells = _rows(root / "ground_truth_wells.csv")
    assert len(wells) == 16 and len({(w["plate"], w["well"]) for w in wells}) == 16
    assert all(float(w["factor_nc_ratio"]) > 0 for w in wells)
    assert (
        np.std(np.log([float(w["factor_nc_ratio"]) for w in wells])) > 0.5 * WELL_SIGMA["nc_ratio"]
    )
    m = _measure(root)
    ratios = []
    for cond in ("control", "TNF"):
        values = _feature(m, cond, "log_nc_ratio")
        labels = np.array(m[cond]["well"])
        keep = np.isfinite(values)
        groups = [values[keep & (labels == w)] for w in np.unique(labels)]
        within = np.mean([g.var(ddof=1) for g in groups])
        size = np.mean([len(g) for g in groups])
        between = np.var([g.mean() for g in groups], ddof=1)
        ratios.append(between / (within / size))  # about 1 with no well effect
    assert np.mean(ratios) > 1.8, ratios
