"""Typed configuration loaded from `params.yaml`, one section per pipeline stage.

Every section is a pydantic model that forbids unknown keys and checks types strictly, so a typo
or a wrong type fails at load time with a message naming the file and the dotted key. CLI flags
override values through `with_overrides`, which validates the overrides the same way.
"""

from __future__ import annotations

import reprlib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from phenexplain.errors import ConfigError

DEFAULT_PARAMS = Path("params.yaml")
MAX_CROP_SIZE = 1024  # px: the largest crop an ingest or a dataset import makes


class Section(BaseModel):
    """Base of every section: strict types, no unknown keys, immutable, finite numbers only
    (``.inf`` and ``.nan`` are refused: no setting means "forever" or "undefined")."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class SynthParams(Section):
    """`phenexplain synth`: synthetic plates with planted phenotypes."""

    assay: Literal["nfkb", "golgi", "dose", "subtle"] = "nfkb"
    seed: int = Field(0, ge=0)
    # Upper bounds keep a run within a workstation: a worker peaks at about 0.5 GB for a
    # 2048 x 2048 field (measured), some 1.5 GB at 4096 x 4096; a plate has 308 inner wells (see
    # synthetic.plate); 2000 cells per million px is over three times confluence (a cell covers
    # about 1700 px).
    plates: int = Field(1, gt=0, le=100)
    wells_per_condition: int = Field(4, gt=0, le=308)
    sites_per_well: int = Field(4, gt=0, le=100)
    height: int = Field(1024, ge=64, le=4096, description="field height, px")
    width: int = Field(1280, ge=64, le=4096, description="field width, px")
    cells_per_mpx: float = Field(
        50.0, gt=0, le=2000, description="mean cells per million px (control)"
    )
    workers: int = Field(2, gt=0, description="processes generating fields in parallel")


class NucleiParams(Section):
    """Nucleus detection on the DNA channel."""

    smoothing: float = Field(1.5, ge=0, description="Gaussian sigma before thresholding, px")
    min_area: int = Field(40, gt=0, description="smallest nucleus kept, px^2")
    min_distance: int = Field(6, gt=0, description="closest two touching nuclei's centres, px")


class QCParams(Section):
    """Per-image quality flags (images flagged go to quarantine, nothing is deleted)."""

    blur_z: float = Field(
        3.0, gt=0, description="robust z below which PowerLogLogSlope means blurred"
    )
    saturation_percent: float = Field(
        1.0, gt=0, description="PercentMaximal above which a channel is saturated"
    )
    min_nuclei: int = Field(
        1, ge=0, description="fewer nuclei than this: quarantined as 'no nuclei'"
    )
    min_fields_for_z: int = Field(
        5, gt=1, description="plates with fewer fields skip z-score flags"
    )
    crop_saturation_percent: float = Field(
        1.0,
        gt=0,
        le=100,
        description="percent of a condition's crop pixels at 255 in a channel above which ingest "
        "warns (the scaling clips its phenotype)",
    )


class IngestParams(Section):
    """`phenexplain ingest`: plates -> QC -> nucleus-centred crops -> crop set."""

    layout: Literal["folders", "bbbc021", "manifest", "loaddata", "ome-tiff", "ome-zarr"] = (
        "manifest"
    )
    channels: list[str] = Field(default_factory=lambda: ["DNA"], min_length=1, max_length=5)
    dna_channel: str = "DNA"
    conditions: list[str] = Field(default_factory=list, description="expected conditions; [] = any")
    min_images_per_condition: int = Field(4, gt=0)
    precropped: bool = False
    crop_size: int = Field(128, ge=16, le=MAX_CROP_SIZE)
    border: Literal["skip", "pad"] = "skip"
    illumination_correction: bool = False
    percentiles: list[float] = Field(
        default_factory=lambda: [1.0, 99.99],
        min_length=2,
        max_length=2,
        description="(low, high) percentiles of each condition's good fields; per plate and "
        "channel, the lowest low and the highest high map to 0 and 255, so that no condition "
        "saturates (a [1, 99] stretch is for display, not for data)",
    )
    max_megapixels: float = Field(100.0, gt=0, description="refuse images larger than this")
    condition_column: str = Field(
        "Metadata_Condition",
        min_length=1,
        description="layout loaddata: the column holding each field's condition",
    )
    masks: str | None = Field(
        None,
        description="label images to use instead of nucleus detection: a folder (one label "
        "image per field) or a CSV with ObjectsPathName_Nuclei / ObjectsFileName_Nuclei; "
        "None = detect nuclei",
    )
    pixel_size_um: float | None = Field(
        None,
        gt=0,
        description="µm per pixel of the fields; None: from the files' OME metadata (layouts "
        "ome-tiff, ome-zarr) when every field gives one and they agree, else unknown",
    )
    workers: int = Field(2, gt=0)
    nuclei: NucleiParams = NucleiParams()
    qc: QCParams = QCParams()

    @model_validator(mode="after")
    def _check(self) -> IngestParams:
        if self.dna_channel not in self.channels:
            raise ValueError(
                f"dna_channel {self.dna_channel!r} is not one of channels {self.channels}"
            )
        if len(set(self.channels)) != len(self.channels):
            raise ValueError(f"channel names repeat: {self.channels}")
        if self.masks is not None and self.precropped:
            raise ValueError(
                "masks are label images of whole fields; precropped images are not segmented "
                "(unset one of masks and precropped)"
            )
        low, high = self.percentiles
        if not 0 <= low < high <= 100:
            raise ValueError(
                f"percentiles must satisfy 0 <= low < high <= 100, got {self.percentiles}"
            )
        return self


class TrainProfile(Section):
    """Network size and optimisation settings of one training profile."""

    resolution: int | None = Field(
        None, ge=4, le=2048, description="training resolution, a power of two; None = the crop size"
    )
    batch: int = Field(32, gt=0, description="global minibatch (split across processes)")
    z_dim: int = Field(512, gt=0)
    w_dim: int = Field(512, gt=0)
    map_layers: int = Field(2, gt=0, description="depth of G's mapping network (z, c -> w)")
    map_lr: float = Field(
        0.01,
        gt=0,
        le=1,
        description="learning-rate multiplier of both mapping networks (G's and D's condition "
        "mapping); the reference's 0.01 keeps W steady over long runs and slows down how fast "
        "the condition is learned",
    )
    d_map_layers: int = Field(8, gt=0, description="depth of D's condition mapping (reference: 8)")
    cmap_dim: int | None = Field(
        None,
        gt=0,
        description="width of D's condition projection; None: its 4x4 feature maps (reference)",
    )
    channel_base: int = Field(16384, gt=0)
    channel_max: int = Field(512, gt=0)
    mbstd_group: int = Field(4, gt=0)
    glr: float = Field(0.0025, gt=0)
    dlr: float = Field(0.0025, gt=0)
    r1_gamma: float = Field(1.0, ge=0)
    pl_weight: float = Field(2.0, ge=0)
    style_mixing: float = Field(0.9, ge=0, le=1)
    ema_kimg: float = Field(10.0, gt=0)
    ema_rampup: float | None = 0.05
    augment: bool = True
    ada_target: float = Field(0.6, gt=0, lt=1)
    ada_kimg: float = Field(500.0, gt=0)
    ada_interval: int = Field(4, gt=0)
    xflip: bool = True
    num_fp16_res: int = Field(4, ge=0, description="fp16 for the N highest resolutions (GPU only)")
    conv_clamp: float | None = 256.0
    g_reg_interval: int = Field(4, gt=0)
    d_reg_interval: int = Field(16, gt=0)
    tf32: bool = Field(
        False,
        description="TF32 matmuls and convolutions on NVIDIA GPUs (faster, ~10 bits of mantissa); "
        "off, as in the reference",
    )
    sync_free: bool | None = Field(
        None,
        description="keep the step free of device-to-host transfers (statistics, the divergence "
        "flag and ADA stay on the device until the tick; augmentation never skips on the host); "
        "None: on for GPUs, off on the CPU, where a transfer costs nothing",
    )

    @field_validator("resolution")
    @classmethod
    def _power_of_two(cls, value: int | None) -> int | None:
        if value is not None and value & (value - 1):
            raise ValueError(f"resolution must be a power of two (4, 8, ..., 2048), got {value}")
        return value


class TrainParams(Section):
    """`phenexplain train`: which profile, how long, how often to report."""

    profile: str = "cpu-small"
    kimg: float = Field(10.0, gt=0, description="thousands of real images shown to D")
    minutes: float | None = Field(
        None,
        gt=0,
        description="wall-clock budget of one train call: stop at the first tick after it (kimg "
        "stays the upper bound; the kimg reached is recorded); None: train for kimg",
    )
    seed: int = Field(0, ge=0)
    tick_kimg: float = Field(0.5, gt=0)
    snapshot_ticks: int = Field(4, gt=0)
    sample_seeds: int = Field(6, gt=0, description="images per condition in sample grids")
    threads: int | None = Field(None, gt=0, description="torch CPU threads; None = all cores")
    metrics: list[Literal["rand", "inception"]] = Field(
        default_factory=lambda: ["rand"],  # type: ignore[arg-type]  # a list of Literals
        description="FID/KID extractors evaluated at each snapshot (fid_rand, fid_inception, ...)",
    )
    inception_weights: str | None = Field(
        None,
        description="Inception weights file or folder for the 'inception' metric (never "
        "downloaded, hash-checked); None: $PHENEXPLAIN_INCEPTION, then the torch hub cache",
    )
    metric_images: int = Field(1000, gt=1, description="generated images per FID/KID evaluation")
    on_divergence: Literal["stop", "rollback"] = Field(
        "stop",
        description="when a loss or weight becomes NaN/inf: stop with an error, or reload the "
        "last good checkpoint, reseed the training generators and continue",
    )
    max_rollbacks: int = Field(
        3, ge=0, description="rollbacks allowed in one `train` call before stopping anyway"
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="where to train; auto: the GPU when one is visible, else the CPU"
    )
    nproc: int | Literal["auto"] = Field(
        1,
        description="training processes: above 1, the flow (and `phenexplain train`) launch "
        "torchrun --nproc-per-node N and the processes split each batch; auto: one per visible "
        "GPU (1 on the CPU)",
    )
    profiles: dict[str, TrainProfile] = Field(default_factory=dict)

    @field_validator("nproc")
    @classmethod
    def _positive(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError(f"nproc must be at least 1 or 'auto', got {value}")
        return value


class SummarizeParams(Section):
    """`phenexplain summarize`: per-condition measurements of a plate folder."""

    max_fields_per_condition: int = Field(16, gt=0, description="fields measured per condition")


class GenerateParams(Section):
    """`phenexplain generate`: one image per seed of a condition."""

    seeds: str = Field("0-7", description="one image per seed: '0-99' or '1,5,7'")
    truncation: float = Field(1.0, ge=0, le=1, description="truncation psi (1 = none)")
    noise_mode: Literal["const", "random", "none"] = "const"


class ExplainParams(Section):
    """`phenexplain explain`, `traverse` and `latent`: the traversal videos and latent analyses of
    a model (the centroids' K also serves `project`)."""

    source: str | None = Field(None, description="source condition; None: the control")
    targets: list[str] | None = Field(None, description="target conditions; None: all others")
    method: Literal[1, 2, 3] = Field(3, description="1 embedding (eq. 3), 2 centroid shift, 3 W")
    seeds: str = Field("0-3", description="one grid row per seed: '0-3' or '1,5,7'")
    steps: int = Field(16, gt=0, description="steps of each traversal (steps + 1 frames)")
    truncation: float = Field(1.0, ge=0, le=1, description="truncation psi (1 = none)")
    formats: list[Literal["gif", "mp4", "png", "tif", "frames"]] = Field(
        default_factory=lambda: ["gif", "mp4"],  # type: ignore[arg-type]  # a list of Literals
        description="video formats written",
    )
    view: Literal["composite", "channels"] = "composite"
    contrast: Literal["fixed", "auto"] = "fixed"
    fps: float = Field(8.0, gt=0)
    centroid_samples: int = Field(100_000, gt=0, description="K random z per centroid (eq. 4)")
    lda_samples: int = Field(3000, gt=1, description="samples per fitted condition (Fig. 4b)")
    dose_samples: int = Field(1000, gt=1, description="samples per dose (Fig. 4d)")


class ProjectParams(Section):
    """`phenexplain project`: real crops projected into W and translated (method 2)."""

    crops: str = Field("0-3", description="with a crop set: which crops of the condition")
    steps: int = Field(400, gt=0, description="optimisation steps per crop")
    frames: int = Field(16, gt=0, description="steps of the translation")
    per_layer: bool = Field(True, description="optimise one w per layer (W+)")
    optimize_noise: bool = Field(False, description="also optimise the noise maps")


class EncoderParams(Section):
    """`phenexplain encoder train` and `phenexplain translate`: an encoder of real crops into W+
    of a trained generator, and the translation of a condition's crops to the others."""

    channels: int = Field(64, gt=0, le=1024, description="feature maps of each encoder level")
    batch: int = Field(16, gt=0, description="images per optimisation step")
    synthetic_steps: int = Field(
        1500, ge=0, description="steps on generated images whose w is known (no labels needed)"
    )
    real_steps: int = Field(
        2000, ge=0, description="steps adapting on real crops (reconstruction: MSE + MS-SSIM)"
    )  # 500 -> 2000 raised held-out PSNR from 24.1 to 24.9 dB (nfkb, cpu-small 60 kimg)
    lr: float = Field(0.001, gt=0, description="Adam learning rate")
    ssim_weight: float = Field(0.1, ge=0, description="weight of 1 - MS-SSIM in the image loss")
    latent_weight: float = Field(
        0.1, ge=0, description="on real crops: pull of W+ towards the condition's centroid"
    )
    holdout: float = Field(
        0.1, ge=0, lt=1, description="fraction of the crop set's crops held out of the encoder's "
        "training, for its reconstruction scores"
    )  # fmt: skip
    seed: int = Field(0, ge=0, description="seed of the encoder's weights and batches")
    refine_steps: int = Field(
        0, ge=0, description="translate: optimisation steps from the encoder's guess (0: none)"
    )
    centroid_samples: int = Field(100_000, gt=0, description="K random z per centroid (eq. 4)")


class ReportParams(Section):
    """`phenexplain report`: real-vs-synthetic validation of a model on its crop set."""

    control: str | None = Field(
        None, description="control condition; None: a name like control/ctrl/DMSO/untreated"
    )
    real_per_condition: int = Field(300, ge=3, description="real crops measured per condition")
    synthetic_per_condition: int = Field(300, ge=3, description="generated crops per condition")
    seed: int = Field(0, ge=0, description="seed of the crop sample and of the generated z")
    level: float = Field(0.9999, gt=0, lt=1, description="confidence level of the intervals")
    feature_panel: list[
        Literal["intensity", "sizeshape", "zernike", "texture", "granularity", "radial"]
    ] = Field(
        default_factory=lambda: ["intensity", "sizeshape"],  # type: ignore[arg-type]  # a list of Literals
        description="cp-measure feature families for the real-vs-synthetic shift correlation",
    )
    grid_seeds: int = Field(8, gt=0, description="samples per condition in the sample grids")
    traversal_seeds: int = Field(4, gt=0, description="rows of each traversal animation")
    traversal_steps: int = Field(16, gt=0, description="steps of each traversal animation")
    cnn_folds: int = Field(4, ge=2, description="cross-validation folds, grouped by well")
    cnn_epochs: int = Field(10, gt=0, description="epochs of the discriminability CNN")
    explorer_seeds: int = Field(6, gt=0, description="seeds offered in the explorer page")
    explorer_real_crops: int = Field(
        12, gt=0, description="real crops per condition in the explorer, from distinct fields"
    )
    lda_samples: int = Field(1000, gt=1, description="samples per condition in the LDA map")
    dose_samples: int = Field(500, gt=1, description="samples per dose in the dose response")
    centroid_samples: int = Field(100_000, gt=0, description="K random z per centroid (eq. 4)")
    workers: int = Field(2, gt=0, description="processes for the measurements")


class ChampionParams(Section):
    """Which registered version may hold the alias ``champion``: the lowest FID among the
    comparable versions whose validation verdicts (the report's real vs synthetic effect sizes)
    pass the limits below."""

    metric: Literal["fid_rand", "fid_inception"] | None = Field(
        None,
        description="the FID the versions are ranked by; None: the first of train.metrics",
    )
    require_validation: bool = Field(
        True,
        description="a version registered without validation verdicts never becomes champion",
    )
    max_wrong_sign: int | None = Field(
        0,
        ge=0,
        description="most (feature, condition) verdicts 'wrong sign' a champion may have; "
        "None: no limit",
    )
    max_disagreeing: int | None = Field(
        None,
        ge=0,
        description="most verdicts that disagree (inflated, deflated or wrong sign) a champion may "
        "have; None: no limit",
    )
    min_agreeing: int = Field(0, ge=0, description="fewest verdicts 'agrees' a champion must have")


class RegistryParams(Section):
    """The model registry: ``phenexplain-<crop set>`` and its alias ``champion``."""

    champion: ChampionParams = ChampionParams()


class FlowParams(Section):
    """The Prefect flows: where the tasks mapped over conditions run."""

    task_runner: Literal["threads", "dask"] = Field(
        "threads",
        description="threads: Prefect's thread pool in the flow's process; dask: a Dask cluster "
        "(prefect-dask), local or at dask_address",
    )
    max_workers: int | None = Field(None, gt=0, description="thread pool size; None: Prefect's")
    dask_address: str | None = Field(
        None,
        description="scheduler of an existing Dask cluster (tcp://host:8786); None: start "
        "a local cluster of dask_workers processes on loopback for the flow run",
    )
    dask_workers: int = Field(2, gt=0, description="workers of the local Dask cluster")


class Params(Section):
    """All sections of params.yaml."""

    synth: SynthParams = SynthParams()
    ingest: IngestParams = IngestParams()
    train: TrainParams = TrainParams()
    summarize: SummarizeParams = SummarizeParams()
    generate: GenerateParams = GenerateParams()
    explain: ExplainParams = ExplainParams()
    project: ProjectParams = ProjectParams()
    encoder: EncoderParams = EncoderParams()
    report: ReportParams = ReportParams()
    registry: RegistryParams = RegistryParams()
    flow: FlowParams = FlowParams()


def format_errors(
    exc: ValidationError, source: str, prefix: tuple[str, ...] = (), *, sep: str = "\n"
) -> str:
    """One message per validation error, each naming `source` and the dotted key, joined by `sep`
    (values shown abbreviated, so a tampered file cannot flood the message)."""
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in (*prefix, *err["loc"]))
        if err["type"] == "extra_forbidden":
            lines.append(f"{source}: unknown key '{key}'; remove it or fix its spelling")
        elif key:
            lines.append(f"{source}: '{key}': {err['msg']} (got {reprlib.repr(err.get('input'))})")
        else:
            lines.append(f"{source}: {err['msg']}")
    return sep.join(lines)


def load_params(path: str | Path = DEFAULT_PARAMS) -> Params:
    """Load and validate `path`; a missing file gives the defaults."""
    path = Path(path)
    if not path.exists():
        return Params()
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_errors(exc, str(path))) from None


def with_overrides(
    section: Section, /, *, overrides_from: str = "command line", **overrides: Any
) -> Section:
    """A copy of `section` with the non-None `overrides` applied and validated."""
    given = {k: v for k, v in overrides.items() if v is not None}
    if not given:
        return section
    try:
        return type(section).model_validate({**section.model_dump(), **given})
    except ValidationError as exc:
        raise ConfigError(format_errors(exc, overrides_from)) from None
