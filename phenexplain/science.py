"""`phenexplain bench science`: does the embedded recipe reproduce planted phenotypes, over seeds?

For each assay and each training seed: a synthetic plate (one fixed plate seed per assay, so seeds
differ only in training; ``OUT/plates/<assay>``), ingest, training for params.yaml's budget (the
demo's, in kimg: the same on any machine), then the report's own measurement
(`report.validation.validate`) of the LAST checkpoint (the snapshot rule is fixed in advance:
never the one whose phenotype looks best). Several profiles can be trained side by side on the
same plates (the recipe and a baseline, or an ablation). Per (profile, assay, seed) the
benchmark writes ``OUT/<profile>/<assay>/seed-<n>/science.json``; a finished one is not run
again, so an interrupted benchmark resumes where it stopped. At the end it gathers them into

- ``OUT/results.jsonl``: one line per (profile, assay, feature, condition, seed): d_real and its CI
  (bootstrap over wells), d_synthetic and its CI (over images), the ratio and its CI, the
  verdict, the target and whether it is met, FID (fid_rand of the last checkpoint), kimg
  reached and training minutes; ``dose`` adds one line per seed (feature ``dose_response``) with
  the Spearman rho of synthetic cytoplasm area and of the median W distance to the control
  centroid against dose;
- ``OUT/summary.md``: the targets met per profile, then median and range over seeds per
  (profile, assay, feature, condition) with the median |d_syn - d_real|;
- ``OUT/summary.png``: one panel per profile, d_synthetic against d_real per feature, one point
  per seed, CI bars and the identity line.

Targets (`TARGETS`, from the faithful-phenotypes issue): nfkb's log ratio |d_syn - d_real| <= 0.3;
golgi's spot count with the right sign and a ratio in [0.67, 1.5], its spot area with the right
sign where it is measurable at the trained resolution; dose's synthetic cytoplasm area falling
with dose (rho <= -0.8) and W distance rising (rho >= 0.8); subtle's nucleus area with the
right sign and a ratio in [0.5, 2]; and nowhere a ratio above 1.5 where the real effect is real.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from phenexplain.config import IngestParams, Params, SynthParams, TrainParams
from phenexplain.data.cropset import CropSet
from phenexplain.data.ingest import ingest
from phenexplain.data.synthetic import generate_plates, get_assay
from phenexplain.errors import PhenexplainError
from phenexplain.fsutil import write_json
from phenexplain.report.verdicts import below_resolution

ASSAYS = ("nfkb", "golgi", "dose", "subtle")
PLATE_SEED = 11  # one plate per assay, the same for every training seed
WELLS_PER_CONDITION = 8
SITES_PER_WELL = 24  # about 2,100 crops per condition (the size of an unseen assay's plate)
MAX_INFLATION = 1.5
RESULT = "science.json"
TRANSLATION = "translation.json"  # with --translate: the real-cell translation of the checkpoint
PLATES = "plates"  # OUT/plates/<assay>: shared by every profile and seed

Say = Callable[[str], None]


@dataclass(frozen=True)
class Target:
    """What a (feature, condition) must show: the sign of d_real and a band of d_syn / d_real,
    or at most `max_abs_diff` between d_syn and d_real."""

    feature: str
    ratio: tuple[float, float] | None = None
    max_abs_diff: float | None = None
    only_if_measurable: bool = False  # judged only where the resolution check allows it

    def met(self, row: dict) -> bool | None:
        """Whether `row` (a verdict-table row) meets the target; None where it is not judged."""
        if self.only_if_measurable and below_resolution(row["verdict"]):
            return None
        d_real, d_syn = row["d_real"], row["d_synthetic"]
        if not (np.isfinite(d_real) and np.isfinite(d_syn)):
            return False
        if self.max_abs_diff is not None:
            return bool(abs(d_syn - d_real) <= self.max_abs_diff)
        ok = np.sign(d_syn) == np.sign(d_real)
        if self.ratio is not None:
            low, high = self.ratio
            ok = ok and low <= d_syn / d_real <= high
        return bool(ok)


TARGETS = {
    "nfkb": [Target("log_nc_ratio", max_abs_diff=0.3)],
    "golgi": [
        Target("spot_count", ratio=(0.67, 1.5)),
        Target("spot_area", only_if_measurable=True),
    ],
    "subtle": [Target("nucleus_area", ratio=(0.5, 2.0))],
    "dose": [],  # judged on the dose response (`dose_response`), not on one condition's d
}
DOSE_RHO = {"cytoplasm_area": -0.8, "w_distance": 0.8}


def plate_spec(assay: str, base: SynthParams, sites_per_well: int = SITES_PER_WELL) -> SynthParams:
    """The benchmark's plate of `assay`: `base`'s fields (params.yaml: synth) with
    `WELLS_PER_CONDITION` wells of `sites_per_well` sites per condition, the fixed plate seed."""
    update = {"assay": assay, "seed": PLATE_SEED, "wells_per_condition": WELLS_PER_CONDITION,
              "sites_per_well": sites_per_well}  # fmt: skip
    return base.model_copy(update=update)


def _ingest_params(assay: str, base: IngestParams) -> IngestParams:
    spec = get_assay(assay)
    channels = [ch.name for ch in spec.channels]
    dna = next(ch.name for ch in spec.channels if ch.stain == "dna")
    return base.model_copy(
        update={"channels": channels, "dna_channel": dna, "conditions": [], "layout": "manifest"}
    )


def prepare_data(
    out: Path, assay: str, params: Params, say: Say, sites_per_well: int = SITES_PER_WELL
) -> Path:
    """Plate and crop set of `assay` under ``OUT/plates/<assay>/`` (made once, reused by every
    profile and seed; a benchmark resumed with another plate is refused)."""
    folder = out / PLATES / assay
    done = folder / "data.json"
    crops = folder / "crops"
    spec = plate_spec(assay, params.synth, sites_per_well).model_dump(mode="json")
    if done.is_file():
        made = json.loads(done.read_text()).get("spec") or spec  # (older folders: no record)
        changed = [k for k in sorted(spec) if k != "workers" and made.get(k) != spec[k]]
        if changed:
            raise PhenexplainError(
                f"{folder} holds a plate made with other settings ({', '.join(changed)}); "
                "resume with the same synth settings and --sites-per-well, or use another OUT"
            )
        return crops
    plate = folder / "plate"
    say(f"{assay}: synthesising the plate")
    generate_plates(SynthParams(**spec), plate, overwrite=plate.exists())
    say(f"{assay}: ingesting")
    summary = ingest(plate, crops, _ingest_params(assay, params.ingest), overwrite=crops.exists())
    write_json(
        done,
        {"plate": str(plate), "crops": str(crops), "spec": spec, "ingest": summary.model_dump()},
    )
    return crops


def _last_snapshot(run: Path) -> dict:
    lines = (run / "snapshots.jsonl").read_text().splitlines()
    return json.loads(lines[-1]) if lines else {}


def _dose_response(model, crops: CropSet, v, control: str, params) -> dict:
    """Spearman rho against dose of the median cytoplasm area (real and synthetic) and of the
    median W distance to the control centroid."""
    from phenexplain.explain.jobs import dose_response
    from phenexplain.explain.latent import ordered_doses

    doses = ordered_doses(model.conditions, control, crops.concentrations)
    if doses is None:
        raise PhenexplainError(f"the dose assay's crop set has no dose series: {model.conditions}")
    order = [control, *doses]
    out: dict = {"doses": doses}
    for source, m in (("real", v.real), ("synthetic", v.synthetic)):
        medians = m.cells.groupby("condition")["cytoplasm_area"].median().reindex(order)
        out[f"rho_cytoplasm_area_{source}"] = float(
            stats.spearmanr(np.arange(len(order)), medians.to_numpy()).statistic
        )
    dose = dose_response(
        model, control=control, doses=doses, n=params.dose_samples, seed=params.seed,
        projection_seeds=(), centroid_samples=params.centroid_samples, centroid_seed=params.seed,
    )  # fmt: skip
    out["rho_w_distance"] = dose.summary["spearman_rho_median_vs_dose"]
    return out


def run_folder(out: Path, profile: str, assay: str, seed: int) -> Path:
    """Where one (profile, assay, seed) is trained and recorded."""
    return out / profile / assay / f"seed-{seed}"


def parse_contender(label: str) -> tuple[str, float | None]:
    """A benchmark contender: ``PROFILE`` (params.yaml's budget) or ``PROFILE@KIMG`` (that
    profile for KIMG kimg, e.g. a baseline at its own demo budget). Returns (profile, kimg)."""
    name, at, kimg = label.partition("@")
    if not re.fullmatch(r"[A-Za-z0-9._-]+", name) or name == PLATES:
        raise PhenexplainError(
            f"profile name {name!r} cannot name a benchmark folder; use letters, digits, "
            f"'-', '_' or '.' (and not {PLATES!r})"
        )
    if not at:
        return name, None
    try:
        value = float(kimg)
    except ValueError:
        value = float("nan")
    if not (np.isfinite(value) and value > 0):
        raise PhenexplainError(f"{label!r}: the budget after '@' must be a positive kimg")
    return name, value


def run_one(
    out: Path, label: str, assay: str, seed: int, params: Params, say: Say, crops_dir: Path
) -> dict:
    """Train contender `label` (`parse_contender`) on `crops_dir` (`prepare_data`), measure and
    record one (assay, seed); returns the record written to science.json."""
    from phenexplain.explain.jobs import Model
    from phenexplain.explain.latent import pick_control
    from phenexplain.report.validation import validate
    from phenexplain.training.checkpoint import latest_checkpoint
    from phenexplain.training.run import run_training

    profile, kimg = parse_contender(label)
    folder = run_folder(out, label, assay, seed)
    run = folder / "run"
    train = params.train.model_copy(
        update={"seed": seed, "profile": profile, "kimg": kimg or params.train.kimg}
    )
    tag = f"{label} {assay} seed {seed}"
    say(f"{tag}: training ({_budget(train)})")
    start = time.perf_counter()
    progress = run_training(crops_dir, run, train, overwrite=run.exists())
    minutes = (time.perf_counter() - start) / 60
    checkpoint = latest_checkpoint(run)  # the last one: fixed in advance, whatever it shows
    if checkpoint is None:
        raise PhenexplainError(f"{run}: training wrote no checkpoint")
    say(f"{tag}: measuring {checkpoint.name}")
    model = Model.load(checkpoint)
    G, conditions = model.G, model.conditions
    crops = CropSet(crops_dir)
    control = pick_control(conditions, get_assay(assay).control)
    v = validate(G, crops, conditions, control, params.report)
    table = v.verdict_table(control, params.report.seed)
    snapshot = _last_snapshot(run)
    record = {
        "assay": assay,
        "seed": seed,
        "checkpoint": str(checkpoint),
        "kimg": progress.cur_nimg / 1000,
        "training_minutes": minutes,
        "img_per_s": progress.cur_nimg / (minutes * 60),
        "fid_rand": snapshot.get("fid_rand"),
        "resolution": G.img_resolution,
        "profile": label,
        "profile_name": profile,
        "table": table.to_dict(orient="records"),
    }
    if assay == "dose":
        record["dose_response"] = _dose_response(model, crops, v, control, params.report)
    write_json(folder / RESULT, record)
    return record


def translation_check(
    out: Path, label: str, assay: str, seed: int, record: dict, params: Params, say: Say
) -> dict:
    """Real-cell translation of a finished run's checkpoint (the one `record` measured): an
    encoder (params.yaml's ``encoder``) trained on the assay's crop set, every control crop
    translated to each other condition (`phenexplain translate`), scored by
    `report.translation.score_translation`. Kept in ``translation.json`` beside science.json
    (each step's output too, so an interrupted check resumes)."""
    from phenexplain.data import cropset as cs
    from phenexplain.explain.encoder import encoder_job, load_encoder
    from phenexplain.explain.latent import pick_control
    from phenexplain.explain.translate import translate_cropset
    from phenexplain.report.translation import score_translation

    folder = run_folder(out, label, assay, seed)
    if (folder / TRANSLATION).is_file():
        return json.loads((folder / TRANSLATION).read_text())
    checkpoint, crops_dir = Path(record["checkpoint"]), out / PLATES / assay / "crops"
    tag = f"{label} {assay} seed {seed}"
    encoder = folder / "encoder-run" / "encoder"
    start = time.perf_counter()
    if not (encoder / "encoder.json").is_file():
        say(f"{tag}: training an encoder")
        encoder_job(checkpoint, crops_dir, folder / "encoder-run", params.encoder)
    _, info = load_encoder(encoder, checkpoint)
    translated = folder / "translated"
    conditions = CropSet(crops_dir).conditions
    control = pick_control(sorted(conditions), get_assay(assay).control)
    crops_per_s = None
    if not (translated / cs.INFO).is_file():
        say(f"{tag}: translating the {control} crops")
        summary = translate_cropset(checkpoint, crops_dir, translated, source=control,
                                    encoder=encoder)  # fmt: skip
        crops_per_s = summary.crops_per_s
    say(f"{tag}: scoring the translation")
    scores = score_translation(translated, crops_dir, params.report)
    result = {"encoder_scores": info.scores, "crops_per_s": crops_per_s,
              "minutes": (time.perf_counter() - start) / 60, **scores.summary()}  # fmt: skip
    write_json(folder / TRANSLATION, result)
    return result


def translation_rows(record: dict, translation: dict) -> list[dict]:
    """One line per (target, feature) of a run's translation check."""
    common = {k: record[k] for k in ("profile", "assay", "seed")}
    recon = translation["reconstruction"]
    identity = {(r["target"], r["feature"]): r for r in translation["identity"]}
    rows = []
    for effect in translation["effects"]:
        same = identity.get((effect["target"], effect["feature"]), {})
        rows.append({
            **common, "source": translation["source"], **effect,
            **{k: same.get(k) for k in ("r_translation", "r_reconstruction", "nuclei_dice",
                                        "nuclei_dice_reconstruction", "nuclei_dice_chance")},
            "psnr_db": recon["all"].get("mean_psnr_db"), "ssim": recon["all"].get("mean_ssim"),
            "held_out_psnr_db": translation["encoder_scores"].get("mean_psnr_db"),
            "held_out_ssim": translation["encoder_scores"].get("mean_ssim"),
        })  # fmt: skip
    return rows


def _budget(train: TrainParams) -> str:
    if train.minutes is not None:
        return f"{train.minutes:g} min, at most {train.kimg:g} kimg"
    return f"{train.kimg:g} kimg"


def result_rows(record: dict) -> list[dict]:
    """The JSON lines of one (assay, seed) record."""
    keys = ("profile", "assay", "seed", "kimg", "training_minutes", "fid_rand")
    common = {k: record[k] for k in keys}
    common["resolution"] = record["resolution"]
    targets = {t.feature: t for t in TARGETS.get(record["assay"], [])}
    rows = []
    for row in record["table"]:
        target = targets.get(row["feature"])
        ratio = row["ratio"]
        real_effect = np.isfinite(row["d_real_ci_low"]) and (
            row["d_real_ci_low"] > 0 or row["d_real_ci_high"] < 0
        )
        rows.append({
            **common,
            "feature": row["feature"],
            "feature_name": row["feature_name"],
            "cellprofiler_name": row["cellprofiler_name"],
            "condition": row["condition"],
            "d_real": row["d_real"],
            "d_real_ci": [row["d_real_ci_low"], row["d_real_ci_high"]],
            "d_synthetic": row["d_synthetic"],
            "d_synthetic_ci": [row["d_synthetic_ci_low"], row["d_synthetic_ci_high"]],
            "ratio": ratio,
            "ratio_ci": [row["ratio_ci_low"], row["ratio_ci_high"]],
            "verdict": row["verdict"],
            "target": None if target is None else _describe(target),
            "target_met": None if target is None else target.met(row),
            "inflated_above_1_5": bool(
                real_effect and np.isfinite(ratio) and ratio > MAX_INFLATION
                and not below_resolution(row["verdict"])
            ),
        })  # fmt: skip
    if "dose_response" in record:
        dr = record["dose_response"]
        met = (
            dr["rho_cytoplasm_area_synthetic"] <= DOSE_RHO["cytoplasm_area"]
            and dr["rho_w_distance"] >= DOSE_RHO["w_distance"]
        )
        rows.append({
            **common,
            "feature": "dose_response",
            "feature_name": "dose response: Spearman rho against dose",
            "condition": "all doses",
            **{k: v for k, v in dr.items() if k.startswith("rho_")},
            "target": "synthetic cytoplasm area rho <= -0.8 and W distance rho >= 0.8",
            "target_met": bool(met),
        })  # fmt: skip
    return rows


def _describe(target: Target) -> str:
    if target.max_abs_diff is not None:
        return f"|d_syn - d_real| <= {target.max_abs_diff:g}"
    text = "sign right"
    if target.ratio is not None:
        text += f", ratio in [{target.ratio[0]:g}, {target.ratio[1]:g}]"
    if target.only_if_measurable:
        text += " (where measurable at the trained resolution)"
    return text


def _summary_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Median and range over seeds per (profile, assay, feature, condition), with the median
    |d_syn - d_real| (the ablation's measure of fidelity)."""
    effects = rows[rows["feature"] != "dose_response"]
    out = []
    for (profile, assay, feature, condition), part in effects.groupby(
        ["profile", "assay", "feature", "condition"], sort=False
    ):
        entry = {"profile": profile, "assay": assay, "feature": feature, "condition": condition,
                 "seeds": len(part)}  # fmt: skip
        for column in ("d_real", "d_synthetic", "ratio"):
            values = part[column].astype(float)
            entry[column] = values.median()
            entry[f"{column}_min"], entry[f"{column}_max"] = values.min(), values.max()
        entry["abs_diff"] = (part["d_synthetic"] - part["d_real"]).astype(float).abs().median()
        entry["verdicts"] = ", ".join(part["verdict"].astype(str))
        out.append(entry)
    return pd.DataFrame(out)


def targets_met(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (profile, target): the seeds that met it, of the seeds judged (none judged: e.g. not
    measurable at the trained resolution)."""
    judged = rows[rows["target"].notna()]
    out = []
    for (profile, assay, feature), part in judged.groupby(
        ["profile", "assay", "feature"], sort=False
    ):
        met = part["target_met"].dropna().astype(bool)
        out.append({"profile": profile, "assay": assay, "feature": feature,
                    "target": part["target"].iloc[0], "met": int(met.sum()),
                    "judged": len(met)})  # fmt: skip
    return pd.DataFrame(out, columns=["profile", "assay", "feature", "target", "met", "judged"])


def _fmt(x) -> str:
    return "" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.2f}"


def write_summary(
    out: Path, rows: pd.DataFrame, translations: pd.DataFrame | None = None
) -> tuple[Path, Path]:
    """summary.md and summary.png of every finished (profile, assay, seed); `translations`:
    `translation_rows` of the runs' translation checks, if any."""
    table = _summary_table(rows)
    runs = rows.drop_duplicates(["profile", "assay", "seed"])
    lines = [
        "# Science benchmark",
        "",
        f"{len(runs)} runs (profile x assay x training seed); the last checkpoint of each. "
        "Median [min, max] over seeds; |diff| is the median of |d_syn - d_real| over seeds.",
        "",
        "## Targets",
        "",
        "| profile | assay | feature | target | seeds that met it |",
        "|---|---|---|---|---|",
    ]
    for r in targets_met(rows).to_dict(orient="records"):
        met = f"{r['met']} of {r['judged']}" if r["judged"] else "not judged"
        lines.append(f"| {r['profile']} | {r['assay']} | {r['feature']} | {r['target']} | {met} |")
    lines += [
        "",
        "## Effects",
        "",
        "| profile | assay | feature | condition | seeds | d real | d synthetic | ratio | |diff| |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table.to_dict(orient="records"):
        cells = [
            f"{_fmt(r[c])} [{_fmt(r[c + '_min'])}, {_fmt(r[c + '_max'])}]"
            for c in ("d_real", "d_synthetic", "ratio")
        ]
        lines.append(
            f"| {r['profile']} | {r['assay']} | {r['feature']} | {r['condition']} | "
            f"{r['seeds']} | " + " | ".join(cells) + f" | {_fmt(r['abs_diff'])} |"
        )
    dose = rows[rows["feature"] == "dose_response"]
    if len(dose):
        lines += [
            "",
            "| profile | dose response, seed | rho cytoplasm area real | synthetic "
            "| rho W distance | met |",
            "|---|---|---|---|---|---|",
        ]
        for r in dose.to_dict(orient="records"):
            lines.append(
                f"| {r['profile']} | {r['seed']} | {_fmt(r['rho_cytoplasm_area_real'])} | "
                f"{_fmt(r['rho_cytoplasm_area_synthetic'])} | {_fmt(r['rho_w_distance'])} | "
                f"{r['target_met']} |"
            )
    lines += [
        "",
        "| profile | assay | seed | kimg | training min | img/s | fid_rand |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in runs.to_dict(orient="records"):
        speed = r["kimg"] * 1000 / (r["training_minutes"] * 60)
        lines.append(
            f"| {r['profile']} | {r['assay']} | {r['seed']} | {r['kimg']:.1f} | "
            f"{r['training_minutes']:.1f} | {speed:.0f} | {_fmt(r['fid_rand'])} |"
        )
    inflated = rows[rows["inflated_above_1_5"].fillna(False).astype(bool)]
    counts = inflated.groupby("profile").size().reindex(rows["profile"].unique(), fill_value=0)
    lines += ["", f"Ratios above {MAX_INFLATION} where the real effect is real: "
              + ", ".join(f"{k} {v}" for k, v in counts.items()) + "."]  # fmt: skip
    if translations is not None and len(translations):
        lines += _translation_summary(translations)
    md = out / "summary.md"
    md.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return md, _plot(rows, out / "summary.png")


def _translation_summary(rows: pd.DataFrame) -> list[str]:
    """summary.md's real-cell translation section: median [min, max] over seeds."""
    lines = [
        "",
        "## Real-cell translation",
        "",
        "Every control crop encoded and moved to each condition (method 2), then measured: d of "
        "the translations against real crops of the target (0: lands on it) and against their "
        "own sources (ratio to d real: 1, where the real effect's CI excludes 0), r: per-crop "
        "correlation of source and translation (with the reconstruction's in brackets), Dice of "
        "the nucleus masks (chance in brackets).",
        "",
        "| profile | assay | to | feature | seeds | d real | d vs real target | ratio | r | Dice |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    keys = ["profile", "assay", "target", "feature_name"]
    for (profile, assay, target, feature), part in rows.groupby(keys, sort=False):

        def span(column: str, part=part) -> str:
            v = part[column].astype(float)
            return f"{_fmt(v.median())} [{_fmt(v.min())}, {_fmt(v.max())}]"

        r = f"{span('r_translation')} ({_fmt(part['r_reconstruction'].astype(float).median())})"
        dice = f"{_fmt(part['nuclei_dice'].median())} ({_fmt(part['nuclei_dice_chance'].median())})"
        ratio = span("ratio") if part["changed"].astype(bool).all() else "no real effect"
        lines.append(
            f"| {profile} | {assay} | {target} | {feature} | {len(part)} | {span('d_real')} | "
            f"{span('d_vs_real_target')} | {ratio} | {r} | {dice} |"
        )
    runs = rows.drop_duplicates(["profile", "assay", "seed"])
    lines += ["", "| profile | assay | seed | PSNR dB (held out) | SSIM (held out) |",
              "|---|---|---|---|---|"]  # fmt: skip
    for r in runs.to_dict(orient="records"):
        lines.append(
            f"| {r['profile']} | {r['assay']} | {r['seed']} | {_fmt(r['psnr_db'])} "
            f"({_fmt(r['held_out_psnr_db'])}) | {_fmt(r['ssim'])} ({_fmt(r['held_out_ssim'])}) |"
        )
    return lines


def _plot(rows: pd.DataFrame, path: Path) -> Path:
    """One panel per profile: d_synthetic against d_real, one point per seed, CI bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    effects = rows[(rows["feature"] != "dose_response") & rows["d_synthetic"].notna()]
    profiles = list(rows["profile"].unique())
    lim = (
        np.nanmax(np.abs(effects[["d_real", "d_synthetic"]].to_numpy(float))) if len(effects) else 1
    )
    lim = 1.1 * max(float(lim), 0.5)
    fig, axes = plt.subplots(1, len(profiles), figsize=(6 * len(profiles), 6), squeeze=False)
    for ax, profile in zip(axes[0], profiles, strict=True):
        mine = effects[effects["profile"] == profile]
        for (assay, feature), part in mine.groupby(["assay", "feature"]):
            real = part["d_real"].to_numpy(float)
            syn = part["d_synthetic"].to_numpy(float)
            xerr = np.abs(np.stack(part["d_real_ci"].to_numpy()).T.astype(float) - real)
            yerr = np.abs(np.stack(part["d_synthetic_ci"].to_numpy()).T.astype(float) - syn)
            ax.errorbar(
                real, syn, xerr=xerr, yerr=yerr, fmt="o", capsize=2, label=f"{assay}: {feature}"
            )
        ax.plot([-lim, lim], [-lim, lim], color="grey", lw=1, label="identity")
        ax.axhline(0, color="grey", lw=0.5)
        ax.axvline(0, color="grey", lw=0.5)
        ax.set(xlim=(-lim, lim), ylim=(-lim, lim), xlabel="d real (CI: wells)",
               ylabel="d synthetic (CI: images)",
               title=f"{profile}: one point per training seed")  # fmt: skip
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def run_science(
    out: str | Path,
    params: Params,
    *,
    assays: list[str] | None = None,
    seeds: int = 3,
    profiles: list[str] | None = None,
    sites_per_well: int = SITES_PER_WELL,
    translate: bool = False,
    say: Say = print,
) -> tuple[list[dict], Path, Path]:
    """Every (profile, assay, seed) not finished yet, then the gathered results and the summary.
    `assays` default to all of `ASSAYS`. `profiles` (contenders: ``PROFILE`` or ``PROFILE@KIMG``,
    see `parse_contender`) defaults to
    ``params.train.profile``; several are trained side by side (each seed of each assay under
    every contender before the next), on the same plates (`plate_spec`: `sites_per_well` sites in
    each of `WELLS_PER_CONDITION` wells per condition).

    With `translate`, each run's checkpoint also translates real crops (`translation_check`):
    ``OUT/translation.jsonl`` and a section of summary.md.

    Returns (all result rows, summary.md, summary.png)."""
    from phenexplain.training.run import resolve_profile

    out = Path(out)
    assays = assays or list(ASSAYS)
    unknown = [a for a in assays if a not in ASSAYS]
    if unknown:
        raise PhenexplainError(f"unknown assay {unknown}; choose from {', '.join(ASSAYS)}")
    if seeds < 1:
        raise PhenexplainError(f"--seeds must be at least 1, got {seeds}")
    profiles = profiles or [params.train.profile]
    for label in profiles:
        name, _ = parse_contender(label)
        resolve_profile(params.train.model_copy(update={"profile": name}), 128)  # known?
    out.mkdir(parents=True, exist_ok=True)
    runs = [(p, a, s) for s in range(seeds) for a in assays for p in profiles]
    rows: list[dict] = []
    translations: list[dict] = []
    for k, (profile, assay, seed) in enumerate(runs, start=1):
        done = run_folder(out, profile, assay, seed) / RESULT
        head = f"[{k}/{len(runs)}] {profile} {assay} seed {seed}"
        if done.is_file():
            say(f"{head}: finished earlier, kept")
            record = json.loads(done.read_text())
        else:
            say(head)
            crops_dir = prepare_data(out, assay, params, say, sites_per_well)
            record = run_one(out, profile, assay, seed, params, say, crops_dir)
        for row in result_rows(record):
            say(json.dumps(row, default=float))
            rows.append(row)
        if translate:
            check = translation_check(out, profile, assay, seed, record, params, say)
            translations += translation_rows(record, check)
    for name, lines in (("results.jsonl", rows), ("translation.jsonl", translations)):
        if lines:
            with (out / name).open("w", encoding="utf-8") as fh:
                fh.writelines(json.dumps(row, default=float) + "\n" for row in lines)
    md, png = write_summary(out, pd.DataFrame(rows), pd.DataFrame(translations))
    return rows, md, png
