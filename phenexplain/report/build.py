"""`phenexplain report CKPT CROPSET OUT`: the validation report of a model on its crop set.

OUT receives report.html (one file, offline: images and plotly.js embedded, so its interactive
figures draw wherever it is opened; its first table is the verdict table of `report.verdicts`; the
page is assembled by `report.html.Page` from Jinja2 templates, its figures made by
`report.plots`), explorer.html (interactive, static), summary.json (every headline number), a
CSV per table (stats.csv: the verdict table; assay_tests.csv: the per-cell tests;
feature_shifts.csv: the feature panel's shifts, each flagged by `measure.stats.flag_shifts`), and
figures/ and traversals/ with what the page embeds (condition names in file names are spelled by
`fsutil.safe_name`). Every feature carries its plain and CellProfiler-style name
(`measure.names`): tables of features in ``feature_name`` and ``cellprofiler_name`` columns, the
wide measurement tables (cells_/crops_ real/synthetic) in CellProfiler-style headers explained by
feature_names.csv. The provenance section shows the saturated pixels ingest recorded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel

import phenexplain
from phenexplain.config import ReportParams, TrainParams
from phenexplain.data.cropset import CropSet
from phenexplain.data.saturation import (
    over_limit,
    recorded_limit,
    saturation_table,
    saturation_warning,
)
from phenexplain.display import IntensityMapping, composite, default_colours
from phenexplain.errors import PhenexplainError
from phenexplain.explain import figures as explain_figures
from phenexplain.explain import latent
from phenexplain.explain.jobs import (
    Model,
    dose_response,
    lda_map,
    render_traversal,
    write_traversal,
)
from phenexplain.fsutil import git_commit, mark_output, prepare_folder, safe_name, write_json
from phenexplain.measure import effects
from phenexplain.measure.discriminability import discriminability
from phenexplain.measure.features import measure_crops
from phenexplain.measure.names import with_names
from phenexplain.measure.stats import SIGNIFICANT_Q, compare_shifts, count_flags
from phenexplain.report import analysis, explorer, plots, resolution, validation, verdicts
from phenexplain.report.html import Page, file_uri, png_uri
from phenexplain.training.checkpoint import CheckpointMeta

log = logging.getLogger(__name__)
KIND = "report"  # the kind in the folder's output marker (see fsutil)


def provenance(checkpoint: Path, crops: CropSet, meta: CheckpointMeta, control: str) -> dict:
    """Where the model and the data come from."""
    training = meta.training
    counts = crops.manifest["condition"].value_counts().sort_index()
    return {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "phenexplain_version": phenexplain.__version__,
        "git_commit": git_commit(Path(phenexplain.__file__).parent),
        "checkpoint": str(checkpoint),
        "kimg": training.kimg,
        "trained_on_crop_set": training.crop_set_id,
        "crop_set": str(crops.root),
        "crop_set_id": crops.content_id,
        "same_crop_set": training.crop_set_id in (None, crops.content_id),
        "resolution": meta.resolution,
        "channels": meta.channels,
        "conditions": meta.conditions,
        "control": control,
        "crops_per_condition": {k: int(v) for k, v in counts.items()},
        "saturation": _saturation(crops),
    }


def _saturation(crops: CropSet) -> dict:
    """The saturated percent per condition and channel that ingest recorded, those above the
    ingest's limit, and the warning sentence (None when no condition is above it)."""
    limit = recorded_limit(crops.info)
    recorded = crops.metadata.saturation
    over = over_limit(recorded or {}, limit)
    return {
        "recorded": recorded is not None,
        "limit_percent": limit,
        "table": saturation_table(recorded or {}).to_dict(orient="records"),
        "over_limit": over.to_dict(orient="records"),
        "warning": saturation_warning(over, limit),
    }


def _sample_rows(
    images: np.ndarray, n: int, colours: list[str], conditions: list[str]
) -> list[tuple[str, list[str]]]:
    """Generated crops [K * n, C, R, R] (condition-major) -> per condition its name and n PNG
    data URIs, for `Page.gallery`.

    Shown with a 1-99 % stretch per channel, one for the whole grid so that conditions compare:
    the crops' own scale leaves room above the brightest condition and looks dim.
    """
    rgb = composite(images, colours, IntensityMapping.fit(images, (1.0, 99.0)))  # [K * n, R, R, 3]
    return [
        (name, [png_uri(crop) for crop in rgb[i * n : (i + 1) * n]])
        for i, name in enumerate(conditions)
    ]


class VerdictSummary(BaseModel):
    """The first table: real vs synthetic effect per planted feature and condition."""

    table: list[dict]  # one row per (feature, condition): `verdicts.VERDICT_COLUMNS` and more
    counts: dict[str, int]  # verdict -> rows
    headline: str
    crops_without_centre_cell: dict[str, int]  # source (real, synthetic) -> crops
    crops_measured: dict[str, int]


class AssaySummary(BaseModel):
    """Per-crop assay statistics and the real vs synthetic shift correlation."""

    statistics: list[dict]
    shift_correlation: list[dict]


class ReportSummary(BaseModel):
    """summary.json: what `build_report` measured, section by section."""

    provenance: dict  # checkpoint, crop set, control, versions, saturation
    verdict: VerdictSummary
    fid_kid: dict[str, Any]
    assays: AssaySummary
    feature_shifts: dict[str, Any]  # empty when the feature panel is off
    cnn: dict[str, Any]
    latent: dict[str, Any]
    translation: dict[str, Any] | None = None  # with a translation crop set


def build_report(
    checkpoint: str | Path,
    cropset: str | Path,
    out: str | Path,
    params: ReportParams,
    *,
    device: str = "cpu",
    stage: Callable[[str], None] = lambda s: None,
    synthetic: list[analysis.ConditionSample] | None = None,
    translation: str | Path | None = None,
    fid: dict[str, Any] | None = None,
    fid_images: int | None = None,
) -> ReportSummary:
    """Compute everything, write the files, return summary.json's content. `synthetic`: the
    conditions' generated and measured crops when they were made elsewhere (see `validate`).
    `fid`: this checkpoint's FID/KID as `metrics.evaluate.evaluate_checkpoint` measured it (the
    flow's evaluate step, which the registry records), shown as it is; None: measured here the
    same way, with `fid_images` generated images (None: train.metric_images' default), so one
    checkpoint has one FID everywhere.
    `translation`: a crop set `phenexplain translate` made from `cropset` with this checkpoint,
    scored in a "real-cell translation" section (`report.translation`)."""
    checkpoint, out = Path(checkpoint), Path(out)
    inputs = [checkpoint, cropset] + ([translation] if translation else [])
    foreign = prepare_folder(out, KIND, inputs)
    (out / "figures").mkdir(exist_ok=True)
    (out / "traversals").mkdir(exist_ok=True)
    model = Model.load(checkpoint, device)
    G, meta = model.G, model.meta
    crops = CropSet(cropset)
    conditions, channels = meta.conditions, meta.channels
    if sorted(crops.conditions) != sorted(conditions) or crops.channels != channels:
        raise PhenexplainError(
            f"{cropset} (conditions {sorted(crops.conditions)}, channels {crops.channels}) does "
            f"not match the checkpoint (conditions {conditions}, channels {channels})"
        )
    control = latent.pick_control(conditions, params.control)
    colours = default_colours(channels)
    summary: dict = {"provenance": provenance(checkpoint, crops, meta, control)}
    page = Page(f"Phenexplain report: {crops.root.name}")

    stage("measuring real and generated crops")
    v = validation.validate(G, crops, conditions, control, params, synthetic=synthetic)
    analysis.write_measurements({"real": v.real, "synthetic": v.synthetic}, out)
    if v.check is not None:
        v.check.to_csv(out / "resolution_check.csv", index=False)
    summary["verdict"] = _verdict_section(page, v, control, params, out)
    _provenance_section(page, summary["provenance"])

    stage("FID/KID")
    summary["fid_kid"] = _fid_section(
        page, checkpoint, crops, fid, fid_images or TrainParams().metric_images, device
    )

    stage("samples and traversals")
    _samples_section(page, model, control, colours, params, out)

    summary["assays"] = _assay_section(
        page, v.real, v.synthetic, conditions, control, params, out, crops.resolution
    )
    if translation is not None:
        stage("real-cell translation")
        summary["translation"] = _translation_section(page, translation, crops, params, out)

    stage("feature panel")
    summary["feature_shifts"] = _feature_section(
        page,
        analysis.enlarge(v.real_small, v.factor),
        v.real_names,
        analysis.enlarge(v.fake_small, v.factor),
        v.fake_names,
        channels,
        control,
        params,
        out,
    )

    stage("CNN discriminability")
    summary["cnn"] = _cnn_section(page, crops, G.img_resolution, params, out)

    stage("latent analysis")
    summary["latent"] = _latent_section(page, model, crops, control, params, out)

    stage("explorer")
    real_for_explorer = explorer.real_crops(
        crops, conditions, params.explorer_real_crops, G.img_resolution, params.seed
    )
    data = explorer.explorer_data(
        G,
        conditions,
        control,
        colours,
        list(range(params.explorer_seeds)),
        params.traversal_steps,
        real_for_explorer,
        channels,
    )
    explorer.write_explorer(data, out / "explorer.html", f"Phenexplain explorer: {crops.root.name}")
    page.heading("Explorer")
    page.link(
        "explorer.html",
        "Open the interactive explorer",
        " (static page: choose conditions and a seed, scrub along the traversal, compare with "
        "real crops).",
    )

    result = ReportSummary.model_validate(summary)  # the sections' contract, checked
    write_json(out / "summary.json", summary)
    page.write(out / "report.html")
    mark_output(out, KIND, exclude=foreign)
    return result


VERDICT_COLUMNS = {  # verdict table column -> heading on the page
    "feature_name": "feature",
    "cellprofiler_name": "CellProfiler-style name",
    "condition": "condition",
    "d_real": "d real",
    "d_real_ci_low": "CI low",
    "d_real_ci_high": "CI high",
    "d_synthetic": "d synthetic",
    "d_synthetic_ci_low": "CI low ",
    "d_synthetic_ci_high": "CI high ",
    "ratio": "ratio syn/real",
    "ratio_ci_low": "CI low  ",
    "ratio_ci_high": "CI high  ",
    "verdict": "verdict",
    "d_real_native": "d real at native size",
    "well_p": "p (well means)",
    "n_cells_treated": "n cells",
    "n_crops_treated": "n crops",
    "n_wells_treated": "n wells",
    "n_cells_control": "n cells ctrl",
    "n_crops_control": "n crops ctrl",
    "n_wells_control": "n wells ctrl",
    "n_images_treated": "n images syn",
    "n_images_control": "n images syn ctrl",
}


# verdict-table columns left blank on the page where the model's resolution cannot carry the assay
AT_MODEL_RESOLUTION = [
    c for c in VERDICT_COLUMNS if c.startswith(("d_real_ci", "d_synth", "ratio"))
]


def _verdict_section(
    page: Page, v: validation.Validation, control: str, params: ReportParams, out
) -> dict:
    """The report's first table: real and synthetic effect sizes side by side, with verdicts."""
    real, fake, check = v.real, v.synthetic, v.check
    table = v.verdict_table(control, params.seed)
    table.to_csv(out / "stats.csv", index=False)
    counts = verdicts.disagreements(table)
    headline = verdicts.sentence(counts)
    page.heading("Verdict: do generated cells reproduce the real effects?")
    if len(table):
        shown = table[list(VERDICT_COLUMNS)].astype(object)
        below = table["verdict"].map(verdicts.below_resolution)
        shown.loc[below, ["d_real", *AT_MODEL_RESOLUTION]] = ""  # no number where none holds
        page.table(shown.rename(columns=VERDICT_COLUMNS), digits=3)
    else:
        page.table(table)
    page.text(headline)
    measurable = table[~table["verdict"].map(verdicts.below_resolution)] if len(table) else table
    if len(measurable):
        page.plot(
            plots.verdict_scatter(measurable),
            "One point per assay and condition: d (treated - control) on real against "
            "generated crops, with their CIs; rows without both numbers (or not measurable at "
            "the model's resolution) left out. Hover a point for its numbers.",
        )
    if check is not None and len(check):
        page.text(
            f"The model draws {int(check['resolution'].iloc[0])} px crops; every number in the "
            "table is measured on crops at the model's resolution (real "
            "crops box-downsampled, then all crops enlarged back to the crop set's native size "
            "so that the assays' pixel parameters hold). 'd real at native size' is the same "
            "real crops measured at full resolution. An assay is not measurable at R px where "
            "its stated limit is above R or where, on these crops, d real at R px has another "
            f"sign or keeps less than {resolution.MIN_KEPT:.0%} of its native value "
            "(resolution_check.csv).",
            "note",
        )
    missing = {
        name: int((m.crops["centre_object"] == 0).sum()) if "centre_object" in m.crops else 0
        for name, m in (("real", real), ("synthetic", fake))
    }
    page.text(
        f"Crops without a centre cell (no nucleus at or near the crop centre; counted, not "
        f"measured for cell assays): {missing['real']} of {len(real.crops)} real, "
        f"{missing['synthetic']} of {len(fake.crops)} generated."
    )
    level = f"{effects.DEFAULT_LEVEL:.0%}"
    page.text(
        f"Each condition against {control}. d: Cohen's d (treated - control, pooled SD); real: "
        f"{level} CI by a bootstrap over wells; synthetic: over generated images; ratio: "
        "d synthetic / d real. One value per crop (its centre cell; cell count and background "
        "per crop). p: Welch's t-test on well means (the well is the replicate). Verdict: wrong "
        "sign (synthetic CI on the other side of 0), inflated or deflated (ratio CI above or "
        "below 1), agrees (ratio CI includes 1), not measurable (too few wells or images, or a "
        "real CI that includes 0), not measurable at R px (the model's resolution cannot carry "
        "the assay); stats.csv has each reason.",
        "note",
    )
    return {
        "table": table.to_dict(orient="records"),
        "counts": counts,
        "headline": headline,
        "crops_without_centre_cell": missing,
        "crops_measured": {"real": len(real.crops), "synthetic": len(fake.crops)},
    }


def _provenance_section(page: Page, prov: dict) -> None:
    page.heading("Provenance")
    saturation = prov["saturation"]
    if saturation["warning"]:
        page.text(saturation["warning"], "warning")
    rows = [(k, str(v)) for k, v in prov.items() if k not in ("crops_per_condition", "saturation")]
    page.table(pd.DataFrame(rows, columns=["field", "value"]))
    page.table(
        pd.DataFrame(list(prov["crops_per_condition"].items()), columns=["condition", "real crops"])
    )
    if not prov["same_crop_set"]:
        page.text("Warning: the model was trained on another crop set than the one compared here.")
    page.heading("Saturated pixels (%) per condition and channel", 3)
    if not saturation["recorded"]:
        page.text("Not recorded: this crop set was ingested before saturation was; re-ingest it.")
        return
    table = pd.DataFrame(saturation["table"])
    page.table(table.pivot(index="condition", columns="channel", values="saturated_percent")
               .reset_index().rename_axis(columns=None), digits=3)  # fmt: skip
    page.text(
        f"Percent of each condition's crop pixels at 255 (clipped by the 8-bit scaling), as "
        f"ingest recorded it; above {saturation['limit_percent']:g} % "
        "(ingest.qc.crop_saturation_percent) a phenotype is clipped.",
        "note",
    )


def _fid_section(page: Page, checkpoint: Path, crops: CropSet, fid, n: int, device: str) -> dict:
    """The checkpoint's FID/KID: `fid` (the evaluate step's) or `evaluate_checkpoint` with the
    offline random-CNN extractor on `n` images, the computation the registry's FID comes from."""
    from phenexplain.metrics.evaluate import evaluate_checkpoint

    if fid is None:
        fid = evaluate_checkpoint(checkpoint, crops.root, ["rand"], n=n, device=device)
    result = {k: v for k, v in fid.items() if k.startswith(("fid_", "kid_", "extractor_"))}
    result["metric_images"] = fid["metric_images"]
    page.heading("FID / KID")
    page.table(pd.DataFrame([result]))
    page.text(
        f"{result['metric_images']} generated images against all {len(crops)} real crops, "
        "measured once per checkpoint (the same numbers as in MLflow and the registry). "
        "fid_rand uses the offline random-CNN extractor; its values are not comparable with "
        "Inception FID.",
        "note",
    )
    return result


def _samples_section(page, model: Model, control, colours, params, out: Path) -> None:
    page.heading("Generated samples")
    conditions = model.conditions
    images, _ = analysis.generate(model.G, conditions, params.grid_seeds, params.seed + 1)
    page.gallery(
        _sample_rows(images, params.grid_seeds, colours, conditions),
        "one row per condition, the same z in each column (seed)",
        zoom=explorer.zoom_for(model.G.img_resolution) // 2 or 1,
        size=model.G.img_resolution,
    )
    page.heading("Traversals")
    seeds = list(range(params.traversal_seeds))
    for target in [c for c in conditions if c != control]:
        traversal = render_traversal(
            model, source=control, targets=[target], seeds=seeds, method=3,
            steps=params.traversal_steps,
        )  # fmt: skip
        name = f"{safe_name(control)}_to_{safe_name(target)}.gif"
        path = Path(write_traversal(traversal, out / "traversals" / name, fps=6)["path"])
        page.image(file_uri(path), f"{control} -> {target} (method 3, same intensity mapping)")


TRANSLATION_COLUMNS = {  # translation effects table column -> heading on the page
    "target": "to",
    "feature_name": "feature",
    "d_real": "d real (B vs sources)",
    "d_vs_real_target": "d translated vs real B",
    "d_vs_real_target_ci_low": "CI low",
    "d_vs_real_target_ci_high": "CI high",
    "d_vs_sources": "d translated vs sources",
    "ratio": "ratio to d real",
    "ratio_ci_low": "CI low ",
    "ratio_ci_high": "CI high ",
}


def _translation_section(page, translated, crops: CropSet, params, out: Path) -> dict:
    from phenexplain.report.translation import score_translation

    scores = score_translation(translated, crops.root, params)
    scores.effects.to_csv(out / "translation_effects.csv", index=False)
    scores.identity.to_csv(out / "translation_identity.csv", index=False)
    page.heading("Real-cell translation")
    recon = scores.reconstruction
    page.text(
        f"{scores.crops} real crops of {scores.source} encoded and shown under "
        f"{', '.join(scores.targets)} (method 2), measured at {scores.resolution} px enlarged to "
        f"{scores.native_size} px. A right translation has d near 0 against real crops of the "
        "target, and against its own sources the real effect (ratio near 1; none where the real "
        "effect's CI covers 0); CIs over wells. "
        f"Reconstruction of the sources: PSNR {recon['all'].get('mean_psnr_db', float('nan')):.2f}"
        f" dB, SSIM {recon['all'].get('mean_ssim', float('nan')):.3f} over {recon['all']['crops']}"
        f" crops ({recon['held_out']['crops']} of them held out of the encoder's training).",
        "note",
    )
    shown = scores.effects.copy()
    no_effect = ~shown["changed"].astype(bool)  # a ratio to a d whose CI covers 0 means nothing
    shown.loc[no_effect, ["ratio", "ratio_ci_low", "ratio_ci_high"]] = np.nan
    page.table(shown[list(TRANSLATION_COLUMNS)].rename(columns=TRANSLATION_COLUMNS))
    page.heading("Are they still the same cells?", 3)
    page.text(
        "Per crop, the source's value against its translation's (r translation) and its "
        "reconstruction's (r reconstruction: the encoder's ceiling); features the condition "
        "does not change (changed: no) should keep r near the reconstruction's. Nuclei Dice: "
        "overlap of the nucleus masks with the source's (chance: a random other source crop).",
        "note",
    )
    identity = scores.identity[["target", "feature_name", "changed", "r_translation",
                                "r_reconstruction", "nuclei_dice", "nuclei_dice_reconstruction",
                                "nuclei_dice_chance"]]  # fmt: skip
    page.table(identity)
    return scores.summary()


def _assay_section(
    page, real, fake, conditions, control, params, out: Path, native_size: int
) -> dict:
    """Per assay the distributions on real and generated crops, then the per-cell tests."""
    page.heading("Assays: real vs synthetic")
    page.text(
        "Per assay and condition, real crops (orange) beside generated ones (violet), measured "
        f"alike at {native_size} px; one value per centre cell (per crop for counts per crop); "
        "box: q1 to q3, median bar, whiskers at 1.5 IQR. Hover a box for its numbers; the "
        "caption is the assay's CellProfiler-style name.",
        "note",
    )
    stats = analysis.assay_statistics(real, fake, control, params.level)
    stats.to_csv(out / "assay_tests.csv", index=False)
    for assay in real.assays:
        if assay not in fake.assays:
            continue
        _, cellprofiler = analysis.assay_names(assay)
        per = "cell" if assay in analysis.CELL_ASSAYS else "crop"  # the centre cell
        figure = plots.real_vs_synthetic(
            analysis.assay_table(real, assay),
            analysis.assay_table(fake, assay),
            assay,
            conditions,
            native_size,
            per,
        )
        page.plot(figure, cellprofiler)
    page.heading("Statistics per cell", 3)
    page.text(
        f"Each condition against {control}, every centre cell as a sample (wells ignored: see the "
        f"verdict table for tests with wells as replicates); t, df and p two-sided; CI of the "
        f"mean difference at {params.level:.2%}; q: Benjamini-Hochberg across the assays.",
        "note",
    )
    page.table(
        stats[
            [
                "source",
                "test",
                "condition",
                "feature_name",
                "cellprofiler_name",
                "n",
                "n_control",
                "difference",
                "ci_low",
                "ci_high",
                "t",
                "df",
                "p",
                "q",
                "cohens_d",
            ]
        ]
    )
    shifts, corr = analysis.shift_correlation(real, fake, control, params.level)
    shifts.to_csv(out / "assay_shifts.csv", index=False)
    student = stats[stats["test"] == "student"] if len(stats) else stats
    return {
        "statistics": student.to_dict(orient="records"),
        "shift_correlation": corr.to_dict(orient="records"),
    }


def _feature_section(
    page, real_img, real_names, fake_img, fake_names, channels, control, params, out: Path
) -> dict:
    tables = {}
    for source, images, names in (
        ("real", real_img, real_names),
        ("synthetic", fake_img, fake_names),
    ):
        t = measure_crops(images, channels, panel=params.feature_panel, workers=params.workers)
        t["condition"] = names[t["crop"].astype(int).to_numpy()] if len(t) else []
        tables[source] = t
    features = [c for c in tables["real"].columns if c not in ("crop", "object", "condition")]
    page.heading("Real vs synthetic feature shifts")
    if tables["real"].empty or tables["synthetic"].empty:
        page.text("no cells measured in one of the sources", "note")
        return {}
    shifts, corr = compare_shifts(
        tables["real"], tables["synthetic"], features, control=control, level=params.level
    )
    shifts = with_names(shifts)
    with_names(corr, others={"all": "all features and conditions"}).to_csv(
        out / "feature_shift_correlation.csv", index=False
    )
    shifts.to_csv(out / "feature_shifts.csv", index=False)
    page.plot(
        plots.shift_scatter(shifts),
        "One point per feature and condition, coloured by where the shift is significant "
        f"(BH q < {SIGNIFICANT_Q:g}); hover a point for its names and numbers.",
    )
    overall = corr.iloc[0].to_dict()
    page.text(
        f"{len(features)} CellProfiler-style features ({', '.join(params.feature_panel)}); "
        f"over {overall['pairs']} (feature, condition) pairs: Pearson r "
        f"{overall['pearson_r']:.3f}, Spearman rho {overall['spearman_r']:.3f}."
    )
    flags = count_flags(shifts["flag"])
    _disagreements(page, shifts, flags)
    return {**overall, "flags": flags, "significant_q": SIGNIFICANT_Q}


SHIFT_COLUMNS = {  # feature_shifts.csv column -> heading on the page
    "feature_name": "feature",
    "cellprofiler_name": "CellProfiler-style name",
    "condition": "condition",
    "shift_real": "d real",
    "q_real": "q real",
    "shift_synthetic": "d synthetic",
    "q_synthetic": "q synthetic",
}


def _disagreements(page: Page, shifts: pd.DataFrame, flags: dict[str, int]) -> None:
    """How many feature shifts real and synthetic images disagree on, and the worst of them."""
    tested, q = flags["tested"], f"q < {SIGNIFICANT_Q:g}"
    page.text(
        f"{flags['synthetic only']} of {tested} feature shifts tested are significant only on "
        f"generated images ({q} there, not on real images): candidate false discoveries. "
        f"{flags['opposite sign']} of {tested} are significant on both with opposite signs; "
        f"{flags['both, same sign']} agree (significant on both, same sign), "
        f"{flags['real only']} are significant only on real images, {flags['neither']} on "
        f"neither; {flags['not tested']} could not be tested. q: Benjamini-Hochberg across the "
        "features of each condition; feature_shifts.csv flags each pair."
    )
    for flag, title in (
        ("opposite sign", "Significant on both, opposite signs"),
        ("synthetic only", "Significant only on generated images (largest d first)"),
    ):
        rows = shifts[shifts["flag"] == flag]
        if rows.empty:
            continue
        rows = rows.reindex(rows["shift_synthetic"].abs().sort_values(ascending=False).index)
        page.heading(title, 3)
        page.table(rows[list(SHIFT_COLUMNS)].rename(columns=SHIFT_COLUMNS), max_rows=15)


def _cnn_section(page, crops: CropSet, resolution: int, params: ReportParams, out: Path) -> dict:
    result = discriminability(
        crops,
        resolution=resolution,
        folds=params.cnn_folds,
        epochs=params.cnn_epochs,
        seed=params.seed,
    )
    result.folds.to_csv(out / "cnn_folds.csv", index=False)
    page.heading("CNN discriminability (real crops)")
    info = result.as_dict()
    page.table(pd.DataFrame([{k: v for k, v in info.items() if k != "folds"}]))
    page.table(result.folds)
    page.text(
        f"4 convolutional layers, {params.cnn_epochs} epochs, {params.cnn_folds}-fold "
        "cross-validation grouped by well (no well on both sides).",
        "note",
    )
    return {k: v for k, v in info.items() if k != "folds"}


def _latent_section(page, model: Model, crops: CropSet, control, params, out: Path) -> dict:
    result: dict = {}
    conditions = model.conditions
    if len(conditions) < 3:
        return result
    page.heading("Latent analysis")
    doses = latent.ordered_doses(conditions, control, crops.concentrations)
    fit, others = latent.lda_conditions(conditions, control, doses)
    lda = lda_map(model, fit=fit, project_names=others, n_fit=params.lda_samples)
    lda.write(out / "lda.csv", out / "figures" / "lda.png")
    page.image(file_uri(out / "figures" / "lda.png"), "LDA of W", width=480)
    if doses:
        dose = dose_response(
            model, control=control, doses=doses, n=params.dose_samples, seed=params.seed,
            projection_seeds=(), centroid_samples=params.centroid_samples,
            centroid_seed=params.seed,
        )  # fmt: skip
        dose.distances.to_csv(out / "dose_distances.csv", index=False)
        path = explain_figures.plot_dose_distances(
            dose.distances, dose.summary, out / "figures" / "dose.png"
        )
        page.image(file_uri(path), "dose response in W", width=480)
        result["dose"] = dose.summary
    return result
