"""The validation report: planted effects found on real images, files written, explorer works."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from phenexplain.config import ReportParams
from phenexplain.errors import PhenexplainError
from phenexplain.explain import latent
from phenexplain.report import analysis
from phenexplain.report.build import ReportSummary, build_report

SMALL = dict(real_per_condition=40, synthetic_per_condition=24, grid_seeds=3, traversal_seeds=2,
             traversal_steps=3, cnn_folds=2, cnn_epochs=2, explorer_seeds=2, lda_samples=60,
             dose_samples=30, centroid_samples=500, workers=1)  # fmt: skip


def _real(crops, n=200, seed=0) -> analysis.Measurements:
    """Assays of up to n real crops per condition, measured as the report measures them."""
    from phenexplain.data.cropset import CropSet

    cs = CropSet(crops.root)
    names = sorted(cs.conditions)
    images, labels, _ = analysis.sample_real(cs, names, n, seed)
    return analysis.measure(images, labels, cs.channels, workers=2)


@pytest.fixture(scope="module")
def nfkb_report(assay_crops, tiny_checkpoint_module, tmp_path_factory):
    crops = assay_crops("nfkb", 64)
    ckpt, _ = tiny_checkpoint_module(["DNA", "NFkB"], ("TNF", "control"), 16)
    out = tmp_path_factory.mktemp("report") / "nfkb"
    summary = build_report(ckpt, crops.root, out, ReportParams(**SMALL))
    return out, summary


def test_report_files_and_numbers(nfkb_report):
    out, summary = nfkb_report
    for name in ("report.html", "explorer.html", "summary.json", "stats.csv", "assay_tests.csv",
                 "cells_real.csv",
                 "cells_synthetic.csv", "feature_shifts.csv", "cnn_folds.csv",
                 "resolution_check.csv"):  # fmt: skip
        assert (out / name).is_file(), name
    assert summary == ReportSummary.model_validate(json.loads((out / "summary.json").read_text()))
    html = (out / "report.html").read_text()
    assert "data:image/gif;base64," in html and "data:image/png;base64," in html
    assert "<script src=" not in html and html.count("Plotly.newPlot") == 1  # one file
    assert html.count("plotly.js v") >= 1 and not (out / "plotly.min.js").exists()
    assert len(html) < 8_000_000  # plotly.js once (4.8 MB), not per figure
    assert 'src="figures/' not in html and "http" not in html.split("<body>")[1][:50]
    tests = pd.read_csv(out / "assay_tests.csv")  # stats.csv is now the verdict table
    assert set(tests["source"]) == {"real", "synthetic"}
    assert set(tests["test"]) == {"student", "welch"}
    assert summary.provenance["control"] == "control"
    assert 0 <= summary.cnn["accuracy_mean"] <= 1
    assert "fid_rand" in summary.fid_kid
    saturation = summary.provenance["saturation"]  # the default scaling clips no condition
    assert (
        saturation["recorded"] and saturation["over_limit"] == [] and saturation["warning"] is None
    )
    assert len(saturation["table"]) == 4 and "Warning: more than" not in html


VERDICT_FIELDS = {"feature_name", "cellprofiler_name", "feature", "condition", "d_real",
                  "d_real_ci_low", "d_real_ci_high", "d_synthetic", "d_synthetic_ci_low",
                  "d_synthetic_ci_high", "ratio", "ratio_ci_low", "ratio_ci_high", "verdict",
                  "well_p", "well_t", "well_df", "n_cells_treated", "n_cells_control",
                  "n_crops_treated", "n_crops_control", "n_wells_treated", "n_wells_control"}  # fmt: skip


def test_summary_carries_the_verdict_table_with_wells_as_replicates(nfkb_report, assay_crops):
    out, summary = nfkb_report
    table = pd.DataFrame(summary.verdict.table)
    assert set(table.columns) >= VERDICT_FIELDS
    assert pd.read_csv(out / "stats.csv")[["feature", "verdict"]].equals(
        table[["feature", "verdict"]]
    )
    ratio = table[table["feature"] == "log_nc_ratio"].iloc[0]
    assert ratio["resolution"] == 16 and ratio["lowest_resolution"] == 64 // 8
    assert ratio["d_real_native_ci_low"] > 0  # 16 px crops of a 64 px crop set: factor 4
    assert ratio["feature_name"] == "nucleus/cytoplasm NF-kB ratio (log)"
    assert ratio["condition"] == "TNF" and ratio["d_real_ci_low"] > 0  # the planted direction
    manifest = assay_crops("nfkb", 64).manifest
    wells = manifest.groupby("condition")["well"].nunique()  # all sampled: 40 crops of 3 wells
    assert (table["n_wells_treated"] == wells["TNF"]).all()
    assert (table["n_wells_control"] == wells["control"]).all()
    cells = pd.read_csv(out / "cells_real.csv")
    assert cells["crop"].is_unique  # one row per crop: its centre cell
    assert ratio["n_cells_treated"] == ratio["n_crops_treated"] <= 40
    crops = pd.read_csv(out / "crops_real.csv")  # every crop, with or without a centre cell
    assert len(crops) == summary.verdict.crops_measured["real"]
    assert summary.verdict.crops_without_centre_cell["real"] == len(crops) - len(cells)
    counts = summary.verdict.counts
    assert counts["rows"] == len(table) and f"{counts['disagree']} of" in summary.verdict.headline


def test_the_first_table_of_the_report_is_the_verdict_table(nfkb_report):
    out, summary = nfkb_report
    html = (out / "report.html").read_text()
    first = html.split("<table>")[1].split("</table>")[0]
    head = first.split("</tr>")[0]
    assert "d real" in head and "d synthetic" in head and "verdict" in head and "n wells" in head
    assert "nucleus/cytoplasm NF-kB ratio (log)" in first and "CellProfiler-style name" in head
    after = html.split("<table>")[1].split("</table>")[1]
    assert summary.verdict.headline in after  # the sentence follows it


def test_every_csv_names_its_features_plainly_and_cellprofiler_style(nfkb_report):
    from phenexplain.measure.names import ASSAY_NAMES

    out, _ = nfkb_report
    for name in ("stats.csv", "assay_tests.csv", "assay_shifts.csv", "feature_shifts.csv",
                 "feature_shift_correlation.csv"):  # fmt: skip
        table = pd.read_csv(out / name, keep_default_na=False)
        assert {"feature_name", "cellprofiler_name"} <= set(table.columns), name
        assert (table["feature_name"] != "").all(), name
        code = table["assay"] if "assay" in table else table["feature"]
        assert not (table["feature_name"] == code).any(), name
    shifts = pd.read_csv(out / "feature_shifts.csv")
    assert (shifts["cellprofiler_name"] == shifts["feature"]).all()
    worded = shifts["feature_name"].str.contains(" in the | of the ")
    assert set(shifts.loc[~worded, "feature_name"]) <= {
        "nucleus area (px^2)",
        "cytoplasm area (px^2)",
    }  # as the assays
    assert worded.mean() > 0.9
    dictionary = pd.read_csv(out / "feature_names.csv", keep_default_na=False)
    assert dictionary["column"].is_unique and (dictionary["feature_name"] != "").all()
    for name in ("cells_real", "cells_synthetic", "crops_real", "crops_synthetic"):
        columns = list(pd.read_csv(out / f"{name}.csv", nrows=0).columns)
        assert not set(columns) & set(ASSAY_NAMES), name  # CellProfiler-style headers instead
        assert set(columns) <= set(dictionary["column"]), name
    cells = list(pd.read_csv(out / "cells_real.csv", nrows=0).columns)
    assert "Math_Log_Ratio_Nuclei_Intensity_MeanIntensity_over_CytoplasmRing_NFkB" in cells
    row = dictionary.set_index("column").loc["Nuclei_AreaShape_Area"]
    assert (row["code_name"], row["feature_name"], row["unit"]) == (
        "nucleus_area",
        "nucleus area (px^2)",
        "px^2",
    )


def test_measurement_tables_join_the_manifest_as_cellprofiler_tables_do(nfkb_report, assay_crops):
    """One row per object with ImageNumber, ObjectNumber and the crop's plate, well, site and
    crop_id: cells_ and crops_ join each other and manifest.parquet, and aggregate per well."""
    out, _ = nfkb_report
    manifest = assay_crops("nfkb", 64).manifest
    ids = ["ImageNumber", "crop_id", "Metadata_Plate", "Metadata_Well", "Metadata_Site"]
    cells = pd.read_csv(out / "cells_real.csv", keep_default_na=False)
    crops = pd.read_csv(out / "crops_real.csv", keep_default_na=False)
    assert list(cells.columns[:6]) == ["ImageNumber", "ObjectNumber", *ids[1:]]
    assert list(crops.columns[:5]) == ids and "ObjectNumber" not in crops  # an image, no object
    assert crops["ImageNumber"].tolist() == list(range(1, len(crops) + 1))
    assert cells[["ImageNumber", "ObjectNumber"]].apply(tuple, axis=1).is_unique
    assert (cells["ObjectNumber"] >= 1).all()
    listed = manifest[["crop_id", "plate", "well", "site", "condition"]]
    joined = crops[[*ids[1:], "condition"]].merge(
        listed.rename(columns={"condition": "listed_condition"}), on="crop_id", how="left",
        validate="one_to_one",
    )  # fmt: skip
    assert joined["plate"].notna().all()  # every crop is in the manifest
    assert (joined["Metadata_Plate"] == joined["plate"].astype(str)).all()
    assert (joined["Metadata_Well"] == joined["well"].astype(str)).all()
    assert (joined["Metadata_Site"] == joined["site"]).all()
    assert (joined["condition"] == joined["listed_condition"]).all()
    per_image = cells.merge(crops[ids], on=ids, how="left", indicator=True)
    assert (per_image["_merge"] == "both").all()  # a cell's identifiers are its crop's
    per_well = crops.groupby(["Metadata_Plate", "Metadata_Well"]).size()
    assert per_well.sum() == len(crops) and len(per_well) == manifest["well"].nunique()
    fake = pd.read_csv(out / "crops_synthetic.csv", keep_default_na=False)
    assert (fake["Metadata_Plate"] == "synthetic").all()
    assert (fake["Metadata_Well"] == "").all() and (fake["Metadata_Site"] == "").all()
    first = fake.groupby("condition")["crop_id"].first().to_dict()
    assert (
        first == {c: f"synthetic_{c}_0" for c in ("TNF", "control")} and fake["crop_id"].is_unique
    )
    dictionary = pd.read_csv(out / "feature_names.csv", keep_default_na=False).set_index("column")
    for column in [*ids, "ObjectNumber"]:
        assert dictionary.loc[column, "feature_name"] != "", column
    assert "synthetic" in dictionary.loc["Metadata_Plate", "feature_name"]


def test_real_measurements_have_no_all_nan_column(nfkb_report):
    out, _ = nfkb_report
    for name in ("cells_real", "crops_real"):  # nfkb has no cell-body stain: no background
        table = pd.read_csv(out / f"{name}.csv")
        assert not [c for c in table.columns if table[c].isna().all()], name
        assert "Image_AreaOccupied_BackgroundFraction" not in table, name


def test_feature_shifts_flag_disagreements_and_the_page_counts_them(nfkb_report):
    from phenexplain.measure.stats import FLAGS, count_flags

    out, summary = nfkb_report
    shifts = pd.read_csv(out / "feature_shifts.csv")
    assert set(shifts["flag"]) <= set(FLAGS)
    synthetic_only = (shifts["q_synthetic"] < 0.05) & ~(shifts["q_real"] < 0.05)
    assert (synthetic_only & shifts["q_real"].notna()).sum() == (
        shifts["flag"] == "synthetic only"
    ).sum()
    counts = summary.feature_shifts["flags"]
    assert counts == count_flags(shifts["flag"]) and counts["pairs"] == len(shifts)
    html = (out / "report.html").read_text()
    assert f"{counts['synthetic only']} of {counts['tested']} feature shifts" in html
    assert f"{counts['opposite sign']} of {counts['tested']}" in html
    assert "real crops (orange) beside generated ones (violet)" in html  # the key, said once
    assert html.count("(orange)") == 1


def test_report_finds_the_nfkb_effect_on_real_images(nfkb_report):
    _, summary = nfkb_report
    rows = [r for r in summary.assays.statistics
            if r["source"] == "real" and r["assay"] == "log_nc_ratio"]  # fmt: skip
    assert len(rows) == 1 and rows[0]["condition"] == "TNF"
    assert rows[0]["difference"] > 0 and rows[0]["p"] < 0.01  # the planted direction: up
    assert rows[0]["ci_low"] > 0  # 99.99% interval excludes no change


def test_golgi_spot_area_falls_and_dose_is_monotone(assay_crops):
    golgi = _real(assay_crops("golgi", 64))
    control = latent.pick_control(sorted(golgi.cells["condition"].unique()), None)
    table = analysis.assay_statistics(golgi, golgi, control, 0.9999)
    row = table[(table.source == "real") & (table.test == "welch") & (table.assay == "spot_area")]
    assert len(row) == 1 and row["difference"].iloc[0] < 0 and row["p"].iloc[0] < 0.01
    dose = _real(assay_crops("dose", 64), n=120)
    area = dose.cells.groupby("condition")["cytoplasm_area"].mean()
    conc = {name: 0.0 if name == "DMSO" else float(name.split("_")[1][:-2]) for name in area.index}
    rho = stats.spearmanr([conc[n] for n in area.index], area.to_numpy()).statistic
    assert rho < -0.8  # cytoplasm contracts monotonically with dose


def test_two_samples_of_one_condition_differ_at_rate_alpha(assay_crops):
    cells = _real(assay_crops("nfkb", 64)).cells
    control = cells[cells["condition"] == "control"].copy()
    rng = np.random.default_rng(1)
    hits, draws, alpha = 0, 200, 0.05
    for _ in range(draws):
        crops = control["crop"].unique()
        half = set(rng.choice(crops, size=len(crops) // 2, replace=False))
        control["condition"] = np.where(control["crop"].isin(half), "control", "other")
        table = analysis.assay_statistics(analysis.Measurements(control, control.iloc[:0], ["log_nc_ratio"]),
                                          analysis.Measurements(control, control.iloc[:0], []),
                                          "control", 0.9999)  # fmt: skip
        hits += int(table.loc[table.test == "student", "p"].iloc[0] < alpha)
    sd = np.sqrt(alpha * (1 - alpha) / draws)
    assert abs(hits / draws - alpha) < 3 * sd + 0.01


def test_report_warns_when_a_condition_saturates(plate_factory, tmp_path):
    """The display stretch [1, 99] as ingest scaling saturates TNF nuclei: the provenance section
    shows the saturated percent per condition and channel and a warning naming TNF and NFkB."""
    from phenexplain.config import IngestParams
    from phenexplain.data.cropset import CropSet
    from phenexplain.data.ingest import ingest
    from phenexplain.report.build import _provenance_section, provenance
    from phenexplain.report.html import Page
    from phenexplain.training.checkpoint import CheckpointMeta

    params = IngestParams(layout="manifest", channels=["DNA", "NFkB"], crop_size=32,
                          min_images_per_condition=2, percentiles=[1.0, 99.0], workers=1)  # fmt: skip
    ingest(plate_factory("nfkb"), tmp_path / "crops", params)
    crops = CropSet(tmp_path / "crops")
    config = CheckpointMeta(kwargs={}, channels=crops.channels, conditions=sorted(crops.conditions))
    saturation = provenance(tmp_path / "ckpt", crops, config, "control")["saturation"]
    assert saturation["limit_percent"] == params.qc.crop_saturation_percent == 1.0
    table = pd.DataFrame(saturation["table"])
    assert len(table) == 4 and set(table["condition"]) == {"TNF", "control"}
    tnf = table[(table["condition"] == "TNF") & (table["channel"] == "NFkB")]
    assert (
        tnf["saturated_percent"].iloc[0]
        == pytest.approx(100 * crops.info["saturation"]["TNF"]["NFkB"])
        and tnf["saturated_percent"].iloc[0] > 1.0
    )
    over = {(r["condition"], r["channel"]) for r in saturation["over_limit"]}
    assert ("TNF", "NFkB") in over
    assert (
        "condition TNF, channel NFkB" in saturation["warning"]
        and "more than 1 %" in saturation["warning"]
    )
    page = Page("report")
    _provenance_section(page, provenance(tmp_path / "ckpt", crops, config, "control"))
    html = page.render()
    assert saturation["warning"] in html and "Saturated pixels (%)" in html


def test_control_is_named_or_refused():
    assert latent.pick_control(["TNF", "control"], None) == "control"
    assert latent.pick_control(["cytoD_1uM", "DMSO"], None) == "DMSO"
    assert latent.pick_control(["a", "b"], "b") == "b"
    with pytest.raises(PhenexplainError, match=r"report\.control"):
        latent.pick_control(["a", "b"], None)
    with pytest.raises(PhenexplainError, match="not a condition"):
        latent.pick_control(["a", "b"], "c")


def test_report_refuses_a_crop_set_of_other_conditions(assay_crops, tiny_checkpoint, tmp_path):
    ckpt, _ = tiny_checkpoint(["DNA", "NFkB"], ("ctrl", "drug"), 16)
    with pytest.raises(PhenexplainError, match="does not match the checkpoint"):
        build_report(ckpt, assay_crops("nfkb", 64).root, tmp_path / "r", ReportParams(**SMALL))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_answers_with_the_explorer(nfkb_report):
    out, _ = nfkb_report
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "phenexplain.cli", "serve", str(out),
                             "--port", str(port)])  # fmt: skip
    try:
        for _ in range(100):
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/explorer.html").read()
                break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail("phenexplain serve did not answer")
        assert b'id="slider"' in body
    finally:
        proc.terminate()
        proc.wait(timeout=10)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed (make browser)")
def test_explorer_slider_changes_the_frame_in_headless_chromium(nfkb_report):
    from playwright.sync_api import sync_playwright

    out, _ = nfkb_report
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox"])  # fmt: skip
        page = browser.new_page()
        page.goto((out / "explorer.html").as_uri())
        first = page.get_attribute("#frame", "src")
        assert first.startswith("data:image/png;base64,")
        assert page.locator("#source-real img").count() > 0  # real crops of the source condition
        page.fill("#slider", "3")  # fires input: the last frame
        last = page.get_attribute("#frame", "src")
        assert page.get_attribute("#frame", "data-index") == "3" and last != first
        assert page.inner_text("#t") == "t = 1.00"
        page.select_option("#seed", "1")
        assert page.get_attribute("#frame", "src") not in (first, last)
        browser.close()


def _figures(html: str) -> dict[str, dict]:
    """The Plotly figures a report page embeds, by the id of their holder."""
    import re

    found = re.findall(r'<script type="application/json" id="(plot-\d+)-data">(.*?)</script>', html)
    return {key: json.loads(text) for key, text in found}


def test_report_figures_are_interactive_with_units_and_short_titles(nfkb_report):
    out, _ = nfkb_report
    figures = _figures((out / "report.html").read_text())
    titles = {f["layout"]["title"]["text"]: f for f in figures.values()}
    assert "Effect sizes: real vs generated crops" in titles
    assert "Feature shifts: real vs generated crops" in titles
    area = titles["nucleus area (px^2)"]
    assert area["layout"]["yaxis"]["title"]["text"] == ("px² of the 64 px crops, per cell")
    ratio = titles["nucleus/cytoplasm NF-kB ratio (log)"]
    assert "natural log" in ratio["layout"]["yaxis"]["title"]["text"]
    assert [t["name"] for t in ratio["data"]] == ["real crops", "generated"]
    for figure in figures.values():  # every axis says what it measures, every title fits
        for axis in ("xaxis", "yaxis"):
            assert figure["layout"][axis]["title"]["text"], axis
        assert all(len(line) <= 52 for line in figure["layout"]["title"]["text"].split("<br>"))
    effects = titles["Effect sizes: real vs generated crops"]
    assert "Cohen's d" in effects["layout"]["xaxis"]["title"]["text"]
    points = [t for t in effects["data"] if t.get("customdata")]
    assert any(row[0] == "nucleus/cytoplasm NF-kB ratio (log)" for t in points
               for row in t["customdata"])  # fmt: skip


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed (make browser)")
def test_report_figures_draw_offline_and_hover_names_the_feature(nfkb_report):
    from playwright.sync_api import sync_playwright

    out, _ = nfkb_report
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox"])  # fmt: skip
        context = browser.new_context(offline=True)
        requests: list[str] = []
        context.on("request", lambda r: requests.append(r.url))
        page = context.new_page()
        page.goto((out / "report.html").as_uri())
        assert page.locator("div.plot .main-svg").count() >= 3  # drawn by the inlined plotly.js
        assert all(url.startswith(("file:", "data:")) for url in requests)
        holder = page.locator("div.plot").first  # the verdict scatter: hover its points
        text = ""
        for point in holder.locator(".scatterlayer .point").all():
            point.hover(force=True)
            text = holder.locator(".hoverlayer").text_content() or ""
            if "nucleus/cytoplasm" in text:
                break
        assert "nucleus/cytoplasm NF-kB ratio (log)" in text and "d synthetic" in text
        browser.close()


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed (make browser)")
def test_docs_screenshots_script_renders_both_pages(nfkb_report, tmp_path):
    import importlib.util
    from pathlib import Path

    from PIL import Image

    out, _ = nfkb_report
    path = Path(__file__).resolve().parents[2] / "docs" / "screenshots.py"
    spec = importlib.util.spec_from_file_location("screenshots", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    shots = module.shoot(out, tmp_path)
    assert [p.name for p in shots] == ["report.png", "explorer.png"]
    for shot in shots:
        with Image.open(shot) as image:
            assert image.size == (module.VIEWPORT["width"], module.VIEWPORT["height"])
        assert shot.stat().st_size < 300_000  # small enough to commit
