"""Phenexplain checkpoints: a folder with ``weights.safetensors`` and ``checkpoint.json``.

``weights.safetensors`` holds every network's state dict under its name
(``G_ema.mapping.fc0.weight``, ``D.b4.out.bias``, ...). ``checkpoint.json`` holds the format
version, each network's constructor kwargs, the condition names in class-index order, the channel
names, the training state that is not a tensor (kimg, augmentation probability, ...) and the
provenance. Nothing is pickled, so loading a checkpoint never runs code from it. The folder is
written under a temporary name and renamed into place, so a crash never leaves a half-written
"latest"; the training loop writes only checkpoints whose tensors are all finite.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Literal, overload

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from phenexplain.config import format_errors
from phenexplain.errors import PhenexplainError
from phenexplain.fsutil import check_output, staged_output, write_json
from phenexplain.nets import Discriminator, Generator
from phenexplain.nets.kwargs import check_kwargs, plan_network

FORMAT_VERSION = 1
WEIGHTS = "weights.safetensors"
CONFIG = "checkpoint.json"
NETWORKS: dict[str, type[Generator] | type[Discriminator]] = {
    "G": Generator,
    "G_ema": Generator,
    "D": Discriminator,
}
KIND = "checkpoint"  # the kind in the folder's output marker (see fsutil)
LATEST = "latest"  # in a run folder's checkpoints/: the name of the newest complete checkpoint
MAX_CONFIG_BYTES = 16 << 20  # checkpoint.json holds kwargs, names and a little state: kilobytes
_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
           torch.float64: "F64", torch.int64: "I64", torch.int32: "I32", torch.uint8: "U8",
           torch.bool: "BOOL"}  # fmt: skip  # torch dtype -> safetensors' name of it
CHILD_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,254}")  # one plain folder name, no ..


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run folder, or None before the first one.

    The pointer must name a folder directly inside ``checkpoints/`` (as training writes it);
    anything else (``../other``, an absolute path) is refused rather than followed."""
    pointer = Path(run_dir) / "checkpoints" / LATEST
    if not pointer.is_file():
        return None
    try:
        name = pointer.read_bytes()[:256].decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        name = None
    if name is None or not CHILD_NAME.fullmatch(name):
        raise PhenexplainError(
            f"{pointer} does not name a checkpoint folder inside {pointer.parent}; it must hold "
            "one plain folder name such as kimg00010.000 (it is never followed elsewhere)"
        )
    return pointer.parent / name


def first_nonfinite(named: Iterable[tuple[str, torch.Tensor]]) -> str | None:
    """The name of the first floating-point tensor holding a NaN or inf, or None if all are finite.

    NaN propagates through min and max, and an inf is an extreme, so a tensor is finite exactly
    when its min and max are: one reduction pass per tensor without a temporary (10x faster than
    ``isfinite(t).all()`` on a CPU) and a single host synchronisation."""
    named = [(name, t) for name, t in named if t.is_floating_point() and t.numel() > 0]
    if not named:
        return None
    extremes = torch.stack([m.float() for _, t in named for m in torch.aminmax(t.detach())])
    finite = torch.isfinite(extremes.view(-1, 2)).all(dim=1)  # [len(named)]: (min, max) rows
    if bool(finite.all()):
        return None
    return named[int((~finite).nonzero()[0, 0])][0]


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder as given, or the latest checkpoint of a run folder."""
    path = Path(path)
    if (path / CONFIG).is_file():
        return path
    latest = latest_checkpoint(path)
    if latest is not None and (latest / CONFIG).is_file():
        return latest
    raise PhenexplainError(
        f"{path} is neither a checkpoint (no {CONFIG}) nor a run folder with a checkpoint "
        "(no checkpoints/latest); give a folder written by `phenexplain train` or `convert-nvlabs`"
    )


def save_checkpoint(
    out: str | Path,
    modules: dict[str, torch.nn.Module],
    meta: CheckpointMeta,
    *,
    extra: dict[str, torch.Tensor] | None = None,
    overwrite: bool = False,
    require_finite: bool = False,
    inputs: Iterable[str | Path] = (),
) -> Path:
    """Write `modules` (name -> network), `meta` (its ``kwargs`` hold every network's
    constructor arguments; ``networks`` is set from `modules`) and `extra` tensors (optimizer
    moments, RNG state, ...) stored under ``extra.<name>``; with `require_finite`, refuse (writing
    nothing) when any of these tensors holds a NaN or inf. `inputs` are the files the checkpoint
    was made from, which `out` may not be or hold."""
    out = Path(out)
    missing = [name for name in modules if name not in meta.kwargs]
    if missing:
        raise ValueError(f"meta.kwargs lacks the constructor arguments of {missing}")
    meta = meta.model_copy(update={"format_version": FORMAT_VERSION, "networks": sorted(modules)})
    config = meta.to_json()
    check_config(config, out / CONFIG)  # as a reader will see it
    check_output(out, overwrite, kind=KIND, inputs=inputs)
    tensors = {
        f"{name}.{key}": value.detach().to("cpu").contiguous()
        for name, module in modules.items()
        for key, value in module.state_dict().items()
    }
    tensors.update(
        {f"extra.{k}": v.detach().to("cpu").contiguous() for k, v in (extra or {}).items()}
    )
    bad = first_nonfinite(tensors.items()) if require_finite else None
    if bad is not None:
        raise PhenexplainError(
            f"refusing to write {out}: tensor {bad} holds NaN or inf (the training diverged)"
        )
    with staged_output(out, KIND) as staging:
        save_file(tensors, str(staging / WEIGHTS))
        write_json(staging / CONFIG, config)
    return out


class TrainingState(BaseModel):
    """The training state of a checkpoint that is not a tensor. A trained checkpoint has all of
    it (`Trainer.state`); a converted snapshot only the augmentation probability."""

    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)

    progress: dict[str, int | float] | None = None  # `loop.Progress` as a dict
    kimg: float | None = None
    profile: dict | None = None  # the `TrainProfile` it was trained with, dumped
    seed: int | None = None
    crop_set_id: str | None = None
    optimizer_param_groups: dict[str, list[dict]] | None = None  # see `optimizer_state`
    augment_p: float | None = None


class CheckpointMeta(BaseModel):  # type: ignore[no-redef]  # the pydantic plugin's __init__(**kwargs) clashes with the field `kwargs`
    """``checkpoint.json``: what every reader of a checkpoint relies on, written by the trainer
    (`Trainer.state`) and the converter (`nets.convert.convert_snapshot`) and checked by
    `read_config`. Keys it does not name pass through."""

    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)

    format_version: int = FORMAT_VERSION
    networks: list[Literal["G", "G_ema", "D"]] = Field(default_factory=list, max_length=3)
    kwargs: dict[str, dict]  # constructor arguments per network name
    conditions: list[str] = Field(max_length=4096)  # in class-index order
    channels: list[str] = Field(min_length=1, max_length=5)
    resolution: int | None = None
    # µm per pixel of the images G draws (the crop set's, at `resolution`); None: not known
    pixel_size_um: float | None = Field(None, gt=0)
    training: TrainingState = Field(default_factory=TrainingState)
    source: dict | None = None  # where a converted snapshot came from

    def to_json(self) -> dict:
        """The JSON object written as ``checkpoint.json`` (unset fields left out)."""
        return self.model_dump(mode="json", exclude_none=True)

    def slim(self, networks: list[str]) -> CheckpointMeta:
        """The metadata of a copy holding only `networks`, without optimizer state."""
        training = self.training.model_copy(update={"optimizer_param_groups": None})
        chosen = {name: self.kwargs[name] for name in networks}
        return self.model_copy(update={"kwargs": chosen, "networks": [], "training": training})

    @model_validator(mode="after")
    def _consistent(self) -> CheckpointMeta:
        for label, names in (("networks", self.networks), ("conditions", self.conditions),
                             ("channels", self.channels)):  # fmt: skip
            if len(set(names)) != len(names):
                raise ValueError(f"'{label}' names repeat: {sorted(names)}")
        missing = [name for name in self.networks if name not in self.kwargs]
        if missing:
            raise ValueError(f"'kwargs' lacks the constructor arguments of {missing}")
        return self


def _read_json(config_path: Path) -> object:
    try:
        with config_path.open("rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise PhenexplainError(f"cannot read {config_path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise PhenexplainError(f"{config_path} is over {MAX_CONFIG_BYTES >> 20} MB; not a {CONFIG}")
    try:
        return json.loads(raw.decode("utf-8"))
    except RecursionError:
        raise PhenexplainError(f"{config_path}: JSON nested too deeply; not a {CONFIG}") from None
    except ValueError as exc:  # bad UTF-8, bad JSON, a number too long to convert
        raise PhenexplainError(f"{config_path}: not valid JSON ({exc})") from None


def _check_networks(config: CheckpointMeta, where: Path) -> None:
    for name in config.networks:
        kw = check_kwargs(NETWORKS[name], config.kwargs[name], f"{where}: {name}")
        if kw.c_dim != len(config.conditions):
            raise PhenexplainError(
                f"{where}: {name} has {kw.c_dim} condition inputs (c_dim) but "
                f"{len(config.conditions)} condition names are listed"
            )
        if kw.img_channels != len(config.channels):
            raise PhenexplainError(
                f"{where}: {name} has {kw.img_channels} image channels but "
                f"{len(config.channels)} channel names are listed"
            )
        if config.resolution is not None and kw.img_resolution != config.resolution:
            raise PhenexplainError(
                f"{where}: {name} is {kw.img_resolution} px but 'resolution' is {config.resolution}"
            )


def read_config(path: str | Path) -> CheckpointMeta:
    """The metadata of a checkpoint, checked for format, version, types and consistency
    (networks with bounded constructor arguments, one unique name per condition and channel)."""
    config_path = Path(path) / CONFIG
    if not config_path.is_file():
        raise PhenexplainError(f"{path} is not a phenexplain checkpoint ({CONFIG} missing)")
    return check_config(_read_json(config_path), config_path)


def check_config(config: object, where: Path) -> CheckpointMeta:
    """`config` (JSON, `where` names its file) as metadata; refuses what a reader cannot use."""
    if not isinstance(config, dict):
        raise PhenexplainError(f"{where} holds a JSON {type(config).__name__}, not an object")
    if config.get("format_version") != FORMAT_VERSION:
        raise PhenexplainError(
            f"{where}: format version {config.get('format_version')!r} is not {FORMAT_VERSION}"
        )
    try:
        checked = CheckpointMeta.model_validate(config)
    except ValidationError as exc:
        raise PhenexplainError(format_errors(exc, str(where), sep="; ")) from None
    if not checked.networks:
        raise PhenexplainError(f"{where}: 'networks' lists no network")
    _check_networks(checked, where)
    return checked


def _weights(path: str | Path):
    weights = Path(path) / WEIGHTS
    try:
        return safe_open(str(weights), "pt", device="cpu")
    except (OSError, SafetensorError) as exc:
        raise PhenexplainError(
            f"cannot read {weights}: {exc}; the checkpoint is incomplete or damaged"
        ) from None


def load_tensors(path: str | Path, prefix: str) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors whose names start with `prefix` + ".", without the prefix."""
    start = f"{prefix}."
    with _weights(path) as weights:
        try:
            names = [k for k in weights.keys() if k.startswith(start)]  # noqa: SIM118 (not a dict)
            return {k[len(start) :]: weights.get_tensor(k) for k in names}
        except SafetensorError as exc:
            raise PhenexplainError(f"cannot read {Path(path) / WEIGHTS}: {exc}") from None


def _check_shapes(path: str | Path, name: str, module: torch.nn.Module) -> None:
    """Names, shapes and dtypes in the weights file match `module` (a meta-device plan)."""
    ours = {f"{name}.{k}": v for k, v in module.state_dict().items()}
    where = Path(path) / WEIGHTS
    with _weights(path) as weights:
        theirs = {k for k in weights.keys() if k.startswith(f"{name}.")}  # noqa: SIM118
        missing, extra = sorted(set(ours) - theirs), sorted(theirs - set(ours))
        if missing or extra:
            raise PhenexplainError(
                f"{where}: the tensors of {name} do not match its constructor arguments "
                f"(missing {missing[:3]}, unexpected {extra[:3]})"
            )
        for key, tensor in ours.items():
            info = weights.get_slice(key)
            shape, dtype = list(info.get_shape()), info.get_dtype()
            wanted = _DTYPES.get(tensor.dtype, str(tensor.dtype))
            if shape != list(tensor.shape) or dtype != wanted:
                raise PhenexplainError(
                    f"{where}: {key} is {dtype} {shape}; {name}'s constructor arguments need "
                    f"{wanted} {list(tensor.shape)}"
                )


@overload
def load_network(
    path: str | Path, name: Literal["G", "G_ema"] = ..., device: str | torch.device = ...
) -> Generator: ...
@overload
def load_network(
    path: str | Path, name: Literal["D"], device: str | torch.device = ...
) -> Discriminator: ...
@overload
def load_network(
    path: str | Path, name: str, device: str | torch.device = ...
) -> Generator | Discriminator: ...
def load_network(
    path: str | Path, name: str = "G_ema", device: str | torch.device = "cpu"
) -> Generator | Discriminator:
    """Rebuild network `name` from a checkpoint folder, in eval mode, on `device`: the kwargs,
    the parameter count (`nets.kwargs.plan_network`) and the tensor names, shapes and dtypes in
    the file are all checked before the network is allocated."""
    meta = read_config(path)
    if name not in meta.networks:
        raise PhenexplainError(f"{path} holds {meta.networks}, not {name!r}")
    cls, kwargs = NETWORKS[name], meta.kwargs[name]
    _check_shapes(path, name, plan_network(cls, kwargs, f"{Path(path) / CONFIG}: {name}"))
    module = cls(**kwargs)
    module.load_state_dict(load_tensors(path, name), strict=True)
    module = module.eval().requires_grad_(False).to(device)
    if torch.device(device).type == "cpu":  # oneDNN's channels-last kernels: ~1.3x on a CPU
        module = module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # stubs lack it
    return module


def optimizer_state(
    optimizers: Mapping[str, torch.optim.Optimizer],
) -> tuple[dict[str, torch.Tensor], dict[str, list]]:
    """The optimisers' state as checkpoint tensors and JSON: per-parameter state as tensors named
    ``opt.<name>.<parameter index>.<key>`` (Adam's step, exp_avg, exp_avg_sq), and each
    optimiser's param_groups (learning rates, betas) as JSON-able lists."""
    tensors: dict[str, torch.Tensor] = {}
    groups: dict[str, list] = {}
    for name, opt in optimizers.items():
        sd = opt.state_dict()
        groups[name] = json.loads(json.dumps(sd["param_groups"]))  # tuples (betas) as lists
        for idx, state in sd["state"].items():
            for key, value in state.items():
                tensors[f"opt.{name}.{idx}.{key}"] = torch.as_tensor(value)
    return tensors, groups


def load_optimizer_state(
    optimizers: Mapping[str, torch.optim.Optimizer],
    tensors: dict[str, torch.Tensor],
    groups: dict[str, list],
) -> None:
    """Restore what `optimizer_state` saved (`tensors` may hold other names: they are skipped)."""
    for name, opt in optimizers.items():
        state: dict[int, dict] = {}
        for key, value in tensors.items():
            parts = key.split(".")
            if len(parts) == 4 and parts[0] == "opt" and parts[1] == name:
                state.setdefault(int(parts[2]), {})[parts[3]] = value
        opt.load_state_dict({"state": state, "param_groups": groups[name]})
