"""The served model and the registry: `PhenexplainModel` (pyfunc) and `log_and_register`.

The model is logged from code (MLflow's models-from-code: nothing is pickled) with a slim
checkpoint (G_ema and the cached W centroids) as its artifact, registered as
``phenexplain-<crop set>``; alias ``champion`` follows the lowest FID among comparable versions
whose validation verdicts pass the champion rule (params.yaml's ``registry.champion``): a model
whose generated effects contradict the real ones never becomes champion, whatever its FID.
An encoder of a checkpoint is tracked as its own run with the same model plus the encoder
(`log_encoder_run`, `log_translator`), which also translates real crops; it is not registered.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.pyfunc.model import PythonModel
from mlflow.types import ColSpec, Schema

from phenexplain.config import ChampionParams
from phenexplain.errors import PhenexplainError
from phenexplain.integrations.mlflow_tracking import (
    TAG,
    VerdictCounts,
    _tracking_errors,
    client,
    flatten,
    log_results,
    start_training_run,
    tracking_uri,
)

log = logging.getLogger(__name__)
_MAX_METRICS = 1000  # per log_batch call

MODEL_PREFIX = "phenexplain-"
CHAMPION = "champion"
REFUSED = TAG + "champion_refused"  # model-version tag: why the rule keeps it from the alias
# A SQLite-backed tracking server refusing a write that raced another one; the refused write left
# nothing behind, so it can be tried again: the database was locked, or two registrants setting
# an alias for the first time both inserted it (MLflow reads, then inserts).
SQLITE_CONFLICTS = (
    "database is locked",
    "UNIQUE constraint failed: registered_model_aliases",
)

SIGNATURE = ModelSignature(
    inputs=Schema(
        [
            ColSpec("long", "seed", required=False),
            ColSpec("string", "source"),
            ColSpec("string", "target"),
            ColSpec("long", "method", required=False),
            ColSpec("long", "steps", required=False),
            ColSpec("binary", "image", required=False),  # a translation request: .npy bytes
        ]
    )
)
_MODEL_CODE = '''"""MLflow models-from-code entry point of the phenexplain pyfunc model."""
from mlflow.models import set_model

from phenexplain.integrations.mlflow_registry import PhenexplainModel

set_model(PhenexplainModel())
'''


class PhenexplainModel(PythonModel):
    """Traversals of generated cells, and translations of real ones where the model carries an
    encoder (`log_translator`).

    Traversal rows: ``seed`` (int), ``source`` and ``target`` (condition names), ``method`` (1, 2
    or 3: the paper's eq. 3, 4-5, 6) and ``steps`` (frames - 1) -> ``images``, one uint8 array
    [steps + 1, C, H, W] per row (frame 0 is the source condition; z = RandomState(seed).randn,
    constant noise, no truncation).

    Translation rows (a request of its own): ``image``, the bytes of a ``.npy`` file of one
    uint8 crop [C, S, S] (S the model's resolution or a multiple, box-downsampled as training
    saw it; read without pickles), ``source`` (its condition) and ``target`` -> ``images``
    [2, C, R, R]: its reconstruction and its translation (method 2, constant noise).

    Served over REST, each array arrives as nested lists (and ``image`` is sent base64-encoded).
    """

    def load_context(self, context) -> None:
        from phenexplain.training.checkpoint import load_network, read_config

        self.checkpoint = Path(context.artifacts["checkpoint"])
        self.G = load_network(self.checkpoint, "G_ema")
        self.conditions = list(read_config(self.checkpoint).conditions)
        config = context.model_config or {}
        self.centroid_samples = int(config.get("centroid_samples", 100_000))
        self._centroids = None
        self.encoder = None
        if "encoder" in context.artifacts:
            from phenexplain.explain.encoder import load_encoder

            self.encoder, _ = load_encoder(context.artifacts["encoder"])  # checked when logged

    def _index(self, name: Any) -> int:
        if str(name) not in self.conditions:
            raise PhenexplainError(f"unknown condition {name!r}; the model has {self.conditions}")
        return self.conditions.index(str(name))

    def _centroid(self):
        from phenexplain.explain.traversal import cached_centroids

        if self._centroids is None:
            self._centroids = cached_centroids(self.checkpoint, self.G, self.centroid_samples)
        return self._centroids

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        """Frames of each requested traversal, or each crop's translation (see the class
        docstring)."""
        translate = "image" in model_input.columns
        frames = self._translate(model_input) if translate else self._traverse(model_input)
        out = model_input.reset_index(drop=True).copy()
        out["images"] = pd.Series(frames, dtype=object)
        return out

    def _traverse(self, model_input: pd.DataFrame) -> list[np.ndarray]:
        from phenexplain.explain.traversal import synthesize, traverse
        from phenexplain.nets.ops import to_uint8
        from phenexplain.nets.sampling import seed_latent

        missing = sorted({"seed", "method", "steps"} - set(model_input.columns))
        if missing:
            raise PhenexplainError(
                f"a traversal request needs the columns seed, source, target, method and steps; "
                f"{missing} missing (or send 'image' for a translation)"
            )
        frames = []
        for row in model_input.itertuples(index=False):
            method = int(row.method)
            w = traverse(
                self.G,
                seed_latent(int(row.seed), self.G.z_dim),
                self._index(row.source),
                self._index(row.target),
                method=method,
                steps=int(row.steps),
                centroid=self._centroid() if method == 2 else None,
            )  # [T, 1, w_dim]
            frames.append(to_uint8(synthesize(self.G, w))[:, 0].numpy())
        return frames

    def _translate(self, model_input: pd.DataFrame) -> list[np.ndarray]:
        from phenexplain.explain.translate import translate_batch
        from phenexplain.training.data import downsample

        if self.encoder is None:
            raise PhenexplainError(
                "this model has no encoder, so it cannot translate real crops; log one with "
                "`phenexplain encoder train ... --track` and load that run's model"
            )
        frames = []
        for i, row in enumerate(model_input.itertuples(index=False)):
            crop = _read_crop(row.image, i, self.G.img_channels, self.G.img_resolution)
            crop = downsample(crop[None], crop.shape[-1] // self.G.img_resolution)
            pair = translate_batch(
                self.G, self.encoder, crop, self._index(row.source), [self._index(row.target)]
            )  # [2, 1, C, R, R]
            frames.append(pair[:, 0])
        return frames


def _read_crop(data: Any, row: int, channels: int, resolution: int) -> np.ndarray:
    """One uint8 crop [C, S, S] from the bytes of a .npy file (no pickles), checked."""
    try:
        crop = np.load(io.BytesIO(bytes(data)), allow_pickle=False)
    except (ValueError, TypeError, OSError) as exc:
        raise PhenexplainError(
            f"row {row}: 'image' is not the bytes of a .npy file ({exc})"
        ) from None
    size = crop.shape[-1] if crop.ndim == 3 else 0
    if crop.dtype != np.uint8 or crop.shape != (channels, size, size) or size % resolution:
        raise PhenexplainError(
            f"row {row}: 'image' is {crop.dtype} {crop.shape}; send one uint8 crop "
            f"[{channels}, S, S] with S a multiple of the model's {resolution} px"
        )
    return crop


@dataclass(frozen=True)
class Registration:
    """The outcome of `log_and_register`: the new version, where the champion alias is, and
    why the champion rule refused the new version (None: it did not)."""

    name: str
    version: str
    model_uri: str
    champion: str | None
    refused: str | None = None

    @property
    def is_champion(self) -> bool:
        return self.champion == self.version


def registered_model_name(crop_set_name: str) -> str:
    return MODEL_PREFIX + crop_set_name


def _serving_checkpoint(checkpoint: Path, out: Path, centroid_samples: int) -> Path:
    """A copy of `checkpoint` with G_ema only (no D, no optimizer state) and cached centroids."""
    from phenexplain.explain.traversal import CENTROIDS, cached_centroids
    from phenexplain.fsutil import mark_output
    from phenexplain.training.checkpoint import KIND, load_network, read_config, save_checkpoint

    meta = read_config(checkpoint)
    G = load_network(checkpoint, "G_ema")
    save_checkpoint(out, {"G_ema": G}, meta.slim(["G_ema"]))
    cached_centroids(out, G, centroid_samples, store=out / CENTROIDS)  # shipped with the model
    mark_output(out, KIND, [CENTROIDS])
    return out


def _requirements() -> list[str]:
    import torch

    return [
        f"mlflow=={mlflow.__version__}",
        f"torch=={torch.__version__.split('+')[0]}",
        "safetensors",
        "numpy",
        "pandas",
    ]


def _log_model(
    run_id: str, checkpoint: Path, centroid_samples: int, uri: str, encoder: Path | None = None
):
    """Log the pyfunc model (models-from-code, nothing pickled) into run `run_id`; with the
    `encoder` folder of that checkpoint among its artifacts, it also translates real crops."""
    from phenexplain.training.checkpoint import read_config

    if mlflow.get_tracking_uri() != uri:
        mlflow.set_tracking_uri(uri)  # log_model is fluent-only: it uses the global URI
    active = mlflow.active_run()
    same = active is not None and active.info.run_id == run_id
    with tempfile.TemporaryDirectory() as tmp:
        slim = _serving_checkpoint(Path(checkpoint), Path(tmp) / "checkpoint", centroid_samples)
        code = Path(tmp) / "phenexplain_model.py"
        code.write_text(_MODEL_CODE)
        conditions = read_config(slim).conditions
        example = pd.DataFrame(
            {"seed": [0], "source": [conditions[0]], "target": [conditions[-1]], "method": [3],
             "steps": [1]}
        )  # fmt: skip
        with contextlib.nullcontext() if same else mlflow.start_run(run_id=run_id):
            return mlflow.pyfunc.log_model(
                name="model",
                python_model=str(code),
                artifacts={"checkpoint": str(slim)}
                | ({"encoder": str(encoder)} if encoder else {}),
                model_config={"centroid_samples": centroid_samples},
                signature=SIGNATURE,
                input_example=example,
                pip_requirements=_requirements(),
            )


def log_translator(
    run_id: str,
    checkpoint: str | Path,
    encoder: str | Path,
    *,
    centroid_samples: int = 100_000,
    uri: str | None = None,
):
    """Log, into run `run_id`, the pyfunc model of `checkpoint` with its `encoder` folder (refused
    when trained for other weights): traversal rows and translation rows (`PhenexplainModel`).
    Not registered: the registry's versions and champion are the training runs'. Returns the
    model info (its ``model_uri`` loads with ``mlflow.pyfunc.load_model``)."""
    from phenexplain.explain.encoder import load_encoder

    load_encoder(encoder, checkpoint)
    uri = uri or tracking_uri()
    with _tracking_errors(uri, "log the translator model"):
        return _log_model(run_id, Path(checkpoint), centroid_samples, uri, Path(encoder))


def _comparable(tags: Mapping[str, str]) -> tuple[str, str, str] | None:
    """What makes two FIDs comparable: metric name, extractor id, crop set id (None: unknown)."""
    key = tuple(tags.get(TAG + name) for name in ("fid_metric", "extractor_id", "crop_set_id"))
    return key if all(key) and tags.get(TAG + "fid") else None  # type: ignore[return-value]


def champion_refusal(tags: Mapping[str, str], rule: ChampionParams) -> str | None:
    """Why the version with model-version `tags` may not be champion under `rule`; None if it
    may. The verdict counts are the ``phenexplain.verdict.*`` tags (`VerdictCounts`)."""
    counts = VerdictCounts.from_tags(tags)
    if counts is None:
        if rule.require_validation:
            return ("registered without validation verdicts (registry.champion."
                    "require_validation); register it with the report's verdicts")  # fmt: skip
        return None
    limits = (
        ("wrong sign", counts.wrong_sign, rule.max_wrong_sign, "max_wrong_sign"),
        ("disagreeing", counts.disagree, rule.max_disagreeing, "max_disagreeing"),
    )
    for label, found, limit, key in limits:
        if limit is not None and found > limit:
            return (f"{found} of {counts.rows} verdicts {label}, more than "
                    f"registry.champion.{key} = {limit}")  # fmt: skip
    if counts.agree < rule.min_agreeing:
        return (f"{counts.agree} of {counts.rows} verdicts agree, fewer than "
                f"registry.champion.min_agreeing = {rule.min_agreeing}")  # fmt: skip
    return None


def _best_version(mlf: MlflowClient, name: str, key: tuple[str, str, str], rule: ChampionParams):
    """The comparable version with the lowest FID among those `rule` accepts (the earliest one
    on a tie); None when it accepts none."""
    escaped = name.replace("'", "\\'")
    versions = [
        v
        for v in mlf.search_model_versions(f"name='{escaped}'")
        if _comparable(v.tags) == key and champion_refusal(v.tags, rule) is None
    ]
    return min(versions, key=lambda v: (float(v.tags[TAG + "fid"]), int(v.version)), default=None)


def retry_locked(call: Callable[..., Any], *args, attempts: int = 8, **kwargs) -> Any:
    """`call(*args, **kwargs)`, tried again (0.1 s, 0.2 s, ... apart) while a SQLite-backed
    tracking server refuses it for racing another write (`SQLITE_CONFLICTS`): concurrent
    registrations on such a server are refused now and then, and the refused write left nothing
    behind."""
    for attempt in range(attempts):
        try:
            return call(*args, **kwargs)
        except MlflowException as exc:
            if not any(m in str(exc) for m in SQLITE_CONFLICTS) or attempt == attempts - 1:
                raise
            log.info("tracking server refused a racing write; retrying %s", call.__name__)
            time.sleep(0.1 * 2**attempt)
    raise AssertionError("unreachable")


def promote_if_better(
    mlf: MlflowClient,
    name: str,
    version: str,
    *,
    rule: ChampionParams | None = None,
    alias: str = CHAMPION,
    attempts: int = 10,
) -> str | None:
    """Point `alias` at the comparable version with the lowest FID among those the champion
    `rule` accepts (`champion_refusal`; default: params.yaml's defaults) if it beats the
    current holder; returns the version the alias ends on.

    A version is comparable when its FID was measured with the same metric, extractor and crop
    set (model-version tags). A holder that is not comparable is left alone; one the rule
    refuses gives way to the best accepted version, and stays where there is none. Racing
    registrations: after each move the alias is read again and checked against a fresh listing
    of the versions, until a read shows it on the best; whichever registration checks last
    has seen every version registered before, so the alias ends on the best of them.
    """
    rule = rule or ChampionParams()
    key = _comparable(mlf.get_model_version(name, version).tags)
    if key is None:
        raise PhenexplainError(f"{name} version {version} has no FID tags; cannot compare it")
    for _ in range(attempts):
        best = _best_version(mlf, name, key, rule)
        holder = mlf.get_registered_model(name).aliases.get(alias)
        if holder is not None:
            current = mlf.get_model_version(name, holder)
            if _comparable(current.tags) != key:
                log.warning(
                    "%s@%s is version %s, whose FID is not comparable (other metric, extractor "
                    "or crop set); not moving it",
                    name, alias, holder,
                )  # fmt: skip
                return str(holder)
            accepted = champion_refusal(current.tags, rule) is None
            if accepted and (best is None or fid_of(current) <= fid_of(best)):
                return str(holder)
        if best is None:
            log.warning("no version of %s passes the champion rule; %s stays on %s",
                        name, alias, holder)  # fmt: skip
            return None if holder is None else str(holder)
        retry_locked(mlf.set_registered_model_alias, name, alias, best.version)
        log.info("%s@%s -> version %s (FID %s)", name, alias, best.version, best.tags[TAG + "fid"])
    holder = mlf.get_registered_model(name).aliases.get(alias)
    return None if holder is None else str(holder)


def fid_of(version) -> float:
    """The FID a model version was registered with (its ``phenexplain.fid`` tag)."""
    return float(version.tags[TAG + "fid"])


def log_and_register(
    checkpoint: str | Path,
    run_id: str,
    crop_set_name: str,
    fid_metric_name: str,
    fid_value: float,
    extractor_id: str,
    *,
    crop_set_id: str | None = None,
    verdicts: VerdictCounts | None = None,
    rule: ChampionParams | None = None,
    centroid_samples: int = 100_000,
    uri: str | None = None,
) -> Registration:
    """Log `checkpoint` as a `PhenexplainModel` in run `run_id`, register it as
    ``phenexplain-<crop_set_name>`` with its FID and its validation `verdicts` (the report's
    verdict counts) as version tags, and move alias ``champion`` to it only if the champion
    `rule` accepts it and its FID beats the champion's (same metric, extractor and crop set).
    A version the rule refuses carries the reason in its tag ``phenexplain.champion_refused``.

    The model's artifacts hold G_ema and the W centroids (`centroid_samples` z per condition,
    seed 0). `crop_set_id` defaults to the one recorded in the checkpoint. Logging the model ends
    run `run_id` (status FINISHED) unless it is this thread's active run, and points MLflow's
    global tracking URI at `uri` (MLflow logs models through its fluent API only)."""
    from phenexplain.training.checkpoint import read_config

    uri = uri or tracking_uri()
    if crop_set_id is None:
        crop_set_id = read_config(checkpoint).training.crop_set_id
    if not crop_set_id:
        raise PhenexplainError(
            f"{checkpoint} records no crop set id; pass crop_set_id (CropSet(...).content_id)"
        )
    if not math.isfinite(float(fid_value)):
        raise PhenexplainError(
            f"{fid_metric_name} = {fid_value} is not a finite FID; not registering"
        )
    name = registered_model_name(crop_set_name)
    tags = {
        TAG + "fid_metric": fid_metric_name,
        TAG + "fid": repr(float(fid_value)),
        TAG + "extractor_id": extractor_id,
        TAG + "crop_set": crop_set_name,
        TAG + "crop_set_id": crop_set_id,
        **(verdicts.tags() if verdicts is not None else {}),
    }
    rule = rule or ChampionParams()
    if (refused := champion_refusal(tags, rule)) is not None:
        tags[REFUSED] = refused
        log.warning("%s: this version may not become champion: %s", name, refused)
    mlf = client(uri)
    with _tracking_errors(uri, "register the model"):
        info = _log_model(run_id, Path(checkpoint), centroid_samples, uri)
        try:
            retry_locked(mlf.create_registered_model, name, tags={TAG + "crop_set": crop_set_name})
        except MlflowException as exc:
            if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
                raise
        mv = retry_locked(
            mlf.create_model_version,
            name, info.model_uri, run_id=run_id, tags=tags, model_id=info.model_id,
        )  # fmt: skip
        champion = promote_if_better(mlf, name, mv.version, rule=rule)
    log.info("registered %s version %s (%s = %s)", name, mv.version, fid_metric_name, fid_value)
    version = str(mv.version)
    return Registration(name, version, f"models:/{name}/{version}", champion, tags.get(REFUSED))


def log_encoder_run(
    folder: str | Path,
    info: Any,
    losses: list[tuple[str, int, float]],
    *,
    model: bool = True,
    uri: str | None = None,
) -> str:
    """The encoder of `folder` (`explain.encoder.EncoderInfo` `info`) as its own MLflow run in
    the experiment ``encoders``: its params, the loss of every step (``loss_<stage>``, step =
    the step across both stages), the held-out scores as metrics, the folder as an artifact, the
    generator it belongs to as tags and (`model`) the pyfunc model of generator and encoder
    (``runs:/<run id>/model``: traversals and translations). Returns the run id."""
    tags = {"phenexplain.kind": "encoder",
            "phenexplain.generator": info.generator.get("checkpoint", ""),
            "phenexplain.generator_weights": info.generator.get("weights_sha256", "")}  # fmt: skip
    run_id = start_training_run("encoders", info.params, tags, run_name=Path(folder).parent.name,
                                uri=uri)  # fmt: skip
    uri = uri or tracking_uri()
    mlf = client(uri)
    with _tracking_errors(uri, "log the encoder's losses"):
        now = int(time.time() * 1000)
        items = [Metric(f"loss_{stage}", loss, now, i)
                 for i, (stage, _, loss) in enumerate(losses) if math.isfinite(loss)]  # fmt: skip
        for start in range(0, len(items), _MAX_METRICS):
            mlf.log_batch(run_id, metrics=items[start : start + _MAX_METRICS])
    scores = {k: v for k, v in flatten(info.scores).items() if isinstance(v, (int, float))}
    log_results(run_id, metrics=scores, artifacts={"encoder": folder}, uri=uri)
    if model:
        log_translator(run_id, info.generator["checkpoint"], folder,
                       centroid_samples=info.params["centroid_samples"], uri=uri)  # fmt: skip
    mlf.set_terminated(run_id)
    return run_id
