"""MLflow for phenexplain: tracking of training runs, the served model, the registry's champion.

- `tracking_uri()`: ``$MLFLOW_TRACKING_URI``, else a SQLite database ``mlruns/mlflow.db`` (MLflow 3
  refuses the plain file store by default; its own default is SQLite), with experiment artifacts
  in ``mlruns/artifacts/``.
- `start_training_run`: one experiment per crop set; the run's params are the resolved training
  params (flattened; `training_params` keeps only the profile trained), its tags the provenance
  (git commit, crop set id, ``data.dvc`` hash, extractor ids), its dataset input the crop set
  (digest: its content id). Anything that looks like a credential is dropped before it is sent.
- `validation_metrics`: the report's verdicts, shift correlations and CNN accuracy as metrics
  (``val.*``), so runs can be sorted by how well they reproduce the biology.
- `MlflowCallback` (in `mlflow_callback`): the training loop's `Callback` for MLflow, buffered in
  the run folder so a tracking server that is down never stops training.
- `PhenexplainModel`, `log_and_register` (in `mlflow_registry`): a pyfunc model that renders
  traversals, registered as ``phenexplain-<crop set>``, alias ``champion`` on the lowest FID
  among the versions whose validation verdicts pass the champion rule (``registry.champion``).

Those names are importable from this module too (loaded on first use), so callers need one import.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests
import yaml
from mlflow import MlflowClient
from mlflow.entities import Param
from mlflow.exceptions import MlflowException
from pydantic import BaseModel

from phenexplain.config import TrainParams
from phenexplain.errors import PhenexplainError
from phenexplain.fsutil import git_commit

if TYPE_CHECKING:
    from phenexplain.report.build import ReportSummary

log = logging.getLogger(__name__)

DB_NAME = "mlflow.db"
TAG = "phenexplain."  # prefix of our run and model-version tags
_SECRET_NAME = re.compile(
    r"secret|password|passwd|token|credential|access_key|api_key|private_key|auth", re.I
)
_URL_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")
_MAX_PARAMS, _MAX_PARAM_LEN = 100, 6000
_BAD_KEY_CHARS = re.compile(r"[^\w\-. :/]")
VALIDATION = "val."  # prefix of the validation metrics
VERDICT_TAG = TAG + "verdict."  # prefix of the model-version tags holding the verdict counts


# ---------------------------------------------------------------- tracking URI and client
def tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<cwd>/mlruns/mlflow.db``."""
    env = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if env:
        return env
    return "sqlite:///" + (Path.cwd() / "mlruns" / DB_NAME).as_posix()


def _sqlite_folder(uri: str) -> Path | None:
    """The folder of a local SQLite tracking database (created if missing), else None."""
    if not uri.startswith("sqlite:///") or uri.endswith(":memory:"):
        return None
    folder = Path(uri[len("sqlite:///") :]).parent
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def client(uri: str | None = None) -> MlflowClient:
    """An MlflowClient for tracking and registry at `uri` (default `tracking_uri()`)."""
    uri = uri or tracking_uri()
    _sqlite_folder(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def shown(uri: str) -> str:
    """`uri` without any user:password part, for messages and logs."""
    return _URL_USERINFO.sub("***@", uri)


def reachable(uri: str, timeout: float = 2.0) -> bool:
    """Whether an HTTP tracking server answers ``/health`` (local stores are always reachable)."""
    if not uri.startswith(("http://", "https://")):
        return True
    try:
        return requests.get(uri.rstrip("/") + "/health", timeout=timeout).ok
    except requests.RequestException:
        return False


@contextlib.contextmanager
def _tracking_errors(uri: str, action: str) -> Iterator[None]:
    try:
        yield
    except (MlflowException, requests.RequestException) as exc:
        raise PhenexplainError(
            f"cannot {action} on the MLflow tracking server {shown(uri)}: {exc}; check that it "
            "is running, or unset MLFLOW_TRACKING_URI to use the local mlruns/ store"
        ) from None


@contextlib.contextmanager
def _http_limits(max_retries: int, timeout: int) -> Iterator[None]:
    """MLflow's HTTP retry/timeout settings for a block, unless the user has set them.

    MLflow reads ``MLFLOW_HTTP_REQUEST_*`` from the environment at each request and offers no
    other knob, so they are set for the block and removed after; its defaults (7 retries with
    exponential backoff) would stall a training step for minutes when the server dies."""
    wanted = {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": max_retries,
        "MLFLOW_HTTP_REQUEST_TIMEOUT": timeout,
    }
    added = [name for name in wanted if name not in os.environ]
    for name in added:
        os.environ[name] = str(wanted[name])
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def metric_key(name: str) -> str:
    """`name` with the characters MLflow refuses in metric and tag names replaced by '_', cut to
    the 250 characters it accepts."""
    return _BAD_KEY_CHARS.sub("_", name)[:250]


# ---------------------------------------------------------------- params, tags, provenance
def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings -> one level with dotted keys; lists and tuples become JSON strings."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name + "."))
        elif isinstance(value, list | tuple | Mapping):
            out[name] = json.dumps(value, sort_keys=True, default=str)
        else:
            out[name] = value
    return out


def redact(values: Mapping[str, Any]) -> dict[str, str]:
    """`values` as strings, without entries that look like credentials: a key naming a secret,
    or a value holding the value of a secret environment variable. URL passwords are masked."""
    secrets = [v for k, v in os.environ.items() if _SECRET_NAME.search(k) and len(v) >= 4]
    out: dict[str, str] = {}
    for key, value in values.items():
        text = _URL_USERINFO.sub("***@", str(value))
        if _SECRET_NAME.search(str(key)) or any(secret in text for secret in secrets):
            log.warning("not sending %r to MLflow: it looks like a credential", key)
            continue
        out[str(key)] = text
    return out


def dvc_data_md5(dvc_file: str | Path) -> str | None:
    """The md5 recorded in a ``.dvc`` file's first output (read as YAML; DVC is not imported)."""
    path = Path(dvc_file)
    if not path.is_file():
        return None
    try:
        outs = (yaml.safe_load(path.read_text()) or {}).get("outs") or []
    except yaml.YAMLError:
        log.warning("%s is not valid YAML; no data hash recorded", path)
        return None
    return next((str(o["md5"]) for o in outs if isinstance(o, dict) and o.get("md5")), None)


def provenance_tags(
    crop_set: str | Path | None = None,
    extractor_ids: Mapping[str, str] | None = None,
    repo: str | Path | None = None,
) -> dict[str, str]:
    """Run tags: git commit, DVC data hash (``data.dvc`` in `repo`), crop set name and content
    id, feature extractor ids. `repo` defaults to the current folder."""
    repo = Path(repo) if repo is not None else Path.cwd()
    tags: dict[str, str] = {}
    if commit := git_commit(repo):
        tags["mlflow.source.git.commit"] = commit
    if md5 := dvc_data_md5(repo / "data.dvc"):
        tags[TAG + "data_md5"] = md5
    if crop_set is not None:
        from phenexplain.data.cropset import CropSet

        crops = CropSet(crop_set)
        tags[TAG + "crop_set"] = crops.root.name
        tags[TAG + "crop_set_id"] = crops.content_id
    for name, ident in (extractor_ids or {}).items():
        tags[f"{TAG}extractor.{name}"] = str(ident)
    return tags


def training_params(train: TrainParams, crop_size: int, gpus: int = 1) -> dict[str, Any]:
    """`train` as a run records it: its settings, with ``profiles`` holding only the profile it
    trains (``auto`` resolved for `crop_size` and `gpus`), not every profile of params.yaml."""
    from phenexplain.training.run import resolve_profile

    values = train.model_dump(exclude={"profiles"})
    values["profiles"] = {train.profile: resolve_profile(train, crop_size, gpus).model_dump()}
    return values


def cropset_dataset(crop_set: str | Path):
    """The crop set as an MLflow dataset (metadata only: the crops stay where they are): its
    folder name, its location, its content id as the digest, and a profile of its size."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    from phenexplain.data.cropset import CropSet

    crops = CropSet(crop_set)

    counts = crops.manifest["condition"].value_counts().sort_index()
    profile = {"crops": len(crops), "crop_size": crops.resolution, "channels": crops.channels,
               "crops_per_condition": {str(k): int(v) for k, v in counts.items()}}  # fmt: skip

    class CropSetDataset(MetaDataset):
        @property
        def profile(self) -> dict[str, Any]:
            return profile

        def to_dict(self) -> dict[str, str]:  # MetaDataset's leaves the profile out
            return {**super().to_dict(), "profile": json.dumps(profile)}

    source = resolve_dataset_source(crops.root.resolve().as_uri())
    return CropSetDataset(source, name=crops.root.name, digest=crops.content_id)


def log_cropset_input(mlf: MlflowClient, run_id: str, crop_set: str | Path) -> None:
    """Record the crop set as the run's training dataset input (the UI's Dataset column)."""
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    entity = cropset_dataset(crop_set)._to_mlflow_entity()
    mlf.log_inputs(
        run_id, datasets=[DatasetInput(entity, tags=[InputTag(MLFLOW_DATASET_CONTEXT, "training")])]
    )


def experiment_id(mlf: MlflowClient, name: str) -> str:
    """The id of experiment `name`, created if missing (local stores keep artifacts in
    ``mlruns/artifacts/``); safe when two processes create it at once."""
    found = mlf.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage != "active":
            raise PhenexplainError(
                f"MLflow experiment {name!r} is deleted; restore it (mlflow experiments restore) "
                "or use another crop set name"
            )
        return found.experiment_id
    folder = _sqlite_folder(mlf.tracking_uri)
    location = (folder / "artifacts" / re.sub(r"[^\w.-]", "_", name)).as_uri() if folder else None
    try:
        return mlf.create_experiment(name, artifact_location=location)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        existing = mlf.get_experiment_by_name(name)
        if existing is None:  # deleted between the two calls
            raise
        return existing.experiment_id


def start_training_run(
    experiment: str,
    params: Mapping[str, Any] | BaseModel,
    tags: Mapping[str, Any] | None = None,
    *,
    crop_set: str | Path | None = None,
    extractor_ids: Mapping[str, str] | None = None,
    repo: str | Path | None = None,
    run_name: str | None = None,
    uri: str | None = None,
) -> str:
    """Create a run in experiment `experiment` (the crop set name) with `params` flattened, the
    provenance tags plus `tags` and `crop_set` as its dataset input; returns its run id.
    `params` may be a pydantic model (pass a `TrainParams` through `training_params`, so only
    the profile trained is recorded). Credentials are never sent (see `redact`)."""
    if isinstance(params, BaseModel):
        params = params.model_dump()
    uri = uri or tracking_uri()
    if not reachable(uri):
        raise PhenexplainError(
            f"the MLflow tracking server {shown(uri)} does not answer; start it or unset "
            "MLFLOW_TRACKING_URI to use the local mlruns/ store"
        )
    mlf = client(uri)
    all_tags = redact({**provenance_tags(crop_set, extractor_ids, repo), **(tags or {})})
    flat = redact(flatten(params))
    long = [k for k, v in flat.items() if len(v) > _MAX_PARAM_LEN]
    if long:
        log.warning("params %s are longer than MLflow allows; truncated", long)
    items = [Param(k, v[:_MAX_PARAM_LEN]) for k, v in sorted(flat.items())]
    with _tracking_errors(uri, "start a run"):
        run = mlf.create_run(experiment_id(mlf, experiment), run_name=run_name, tags=all_tags)
        for start in range(0, len(items), _MAX_PARAMS):
            mlf.log_batch(run.info.run_id, params=items[start : start + _MAX_PARAMS])
        if crop_set is not None:
            log_cropset_input(mlf, run.info.run_id, crop_set)
    log.info("MLflow run %s in experiment %r at %s", run.info.run_id, experiment, shown(uri))
    return run.info.run_id


def log_results(
    run_id: str,
    *,
    metrics: Mapping[str, Any] | None = None,
    artifacts: Mapping[str, str | Path] | None = None,
    uri: str | None = None,
) -> None:
    """Log final numbers (finite numbers only) and files or folders (artifact path -> local path)
    to a run, finished or not: evaluation metrics, the report, traversal videos, Data Docs."""
    uri = uri or tracking_uri()
    mlf = client(uri)
    with _tracking_errors(uri, "log results"):
        for key, value in (metrics or {}).items():
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if number and math.isfinite(value):
                mlf.log_metric(run_id, key, float(value))
        for artifact_path, local in (artifacts or {}).items():
            local = Path(local)
            if local.is_dir():
                mlf.log_artifacts(run_id, str(local), artifact_path)
            elif local.is_file():
                mlf.log_artifact(run_id, str(local), artifact_path)
            else:
                log.warning("not logged: %s does not exist", local)


# ---------------------------------------------------------------- validation
@dataclass(frozen=True)
class VerdictCounts:
    """How many (feature, condition) rows of the report's verdict table got each verdict
    (`measure.effects.Verdict`; "not measurable at R px" counts as not measurable)."""

    rows: int = 0
    agree: int = 0
    inflated: int = 0
    deflated: int = 0
    wrong_sign: int = 0
    not_measurable: int = 0

    @property
    def disagree(self) -> int:
        """Verdicts whose synthetic effect is not the real one: inflated, deflated, wrong sign."""
        return self.inflated + self.deflated + self.wrong_sign

    @classmethod
    def from_table(cls, table: Sequence[Mapping[str, Any]]) -> VerdictCounts:
        """The counts of a verdict table (`ReportSummary.verdict.table`)."""
        from phenexplain.measure.effects import Verdict

        names = {Verdict.AGREES: "agree", Verdict.INFLATED: "inflated",
                 Verdict.DEFLATED: "deflated", Verdict.WRONG_SIGN: "wrong_sign"}  # fmt: skip
        counts = dict.fromkeys(("agree", "inflated", "deflated", "wrong_sign", "not_measurable"), 0)
        for row in table:
            verdict = str(row["verdict"])
            known = next((name for v, name in names.items() if verdict == str(v)), None)
            counts[known or "not_measurable"] += 1
        return cls(rows=len(table), **counts)

    def as_dict(self) -> dict[str, int]:
        return {**asdict(self), "disagree": self.disagree}

    def tags(self) -> dict[str, str]:
        """Model-version tags (``phenexplain.verdict.<name>``) that `from_tags` reads back."""
        return {VERDICT_TAG + k: str(v) for k, v in self.as_dict().items()}

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> VerdictCounts | None:
        """The counts recorded in model-version `tags`; None when none are."""
        fields = ("rows", "agree", "inflated", "deflated", "wrong_sign", "not_measurable")
        if not all(VERDICT_TAG + name in tags for name in fields):
            return None
        return cls(**{name: int(tags[VERDICT_TAG + name]) for name in fields})


def validation_metrics(summary: ReportSummary) -> dict[str, float]:
    """The report's validation numbers as metrics, to sort runs by how well they reproduce the
    biology: ``val.verdict.<verdict>`` counts; per (feature, condition) ``val.d_real``,
    ``val.d_synthetic`` and ``val.ratio`` (``.<feature>.<condition>``); the real vs synthetic
    shift correlation over the assays (``val.assay_shift.*``) and the feature panel
    (``val.feature_shift.*``); the CNN's cross-validated accuracy on real crops
    (``val.cnn.*``). NaN (not measured) is left out."""
    out: dict[str, float] = {}
    for name, count in VerdictCounts.from_table(summary.verdict.table).as_dict().items():
        out[f"{VALIDATION}verdict.{name}"] = count
    for row in summary.verdict.table:
        for column in ("d_real", "d_synthetic", "ratio"):
            out[f"{VALIDATION}{column}.{row['feature']}.{row['condition']}"] = row[column]
    overall = summary.assays.shift_correlation[0] if summary.assays.shift_correlation else {}
    for prefix, values in (("assay_shift", overall), ("feature_shift", summary.feature_shifts)):
        for name in ("pearson_r", "spearman_r", "pairs"):
            if name in values:
                out[f"{VALIDATION}{prefix}.{name}"] = values[name]
    for name in ("accuracy_mean", "accuracy_std", "group_accuracy_mean", "group_accuracy_std"):
        if name in summary.cnn:
            out[f"{VALIDATION}cnn.{name}"] = summary.cnn[name]
    return {
        metric_key(k): float(v)
        for k, v in out.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }


_LAZY = {
    "MlflowCallback": "mlflow_callback",
    "Outbox": "mlflow_callback",
    "flush_outbox": "mlflow_callback",
    "PhenexplainModel": "mlflow_registry",
    "champion_refusal": "mlflow_registry",
    "Registration": "mlflow_registry",
    "log_and_register": "mlflow_registry",
    "log_encoder_run": "mlflow_registry",
    "promote_if_better": "mlflow_registry",
    "registered_model_name": "mlflow_registry",
}


def __getattr__(name: str) -> Any:
    """The callback and registry halves, importable from here (PEP 562, no import cycle)."""
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f"phenexplain.integrations.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
