"""Convert a stylegan2-ada-pytorch snapshot into a Phenexplain checkpoint (`convert-nvlabs`)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import torch

from phenexplain.data.stylegan_zip import dataset_labels
from phenexplain.errors import PhenexplainError
from phenexplain.nets import Discriminator, Generator
from phenexplain.nets.kwargs import plan_network
from phenexplain.nets.snapshot import PersistentObject, read_snapshot

if TYPE_CHECKING:  # training imports nets: a run-time import here would be a cycle
    from phenexplain.training.checkpoint import CheckpointMeta

IGNORED = {"fp16_channels_last"}  # memory layout only; no effect on parameters or results


def _options(kw: dict, key: str, where: str) -> dict:
    """The nested kwargs `kw[key]` (absent or None: empty), without layout-only options."""
    value = kw.get(key) or {}
    if not isinstance(value, dict):
        raise PhenexplainError(f"{where}: {key} is a {type(value).__name__}, not a mapping")
    return {k: v for k, v in value.items() if k not in IGNORED}


def generator_kwargs(obj: PersistentObject, where: str = "G") -> dict:
    kw = obj.init_kwargs()
    synthesis = _options(kw, "synthesis_kwargs", where)
    if synthesis.pop("architecture", "skip") != "skip":
        raise PhenexplainError(
            f"{where}: only the 'skip' generator architecture (stylegan2-ada's default) is "
            "supported"
        )
    return {
        **kw,
        "mapping_kwargs": _options(kw, "mapping_kwargs", where),
        "synthesis_kwargs": synthesis,
    }


def discriminator_kwargs(obj: PersistentObject, where: str = "D") -> dict:
    kw = obj.init_kwargs()
    if kw.pop("architecture", "resnet") != "resnet":
        raise PhenexplainError(
            f"{where}: only the 'resnet' discriminator architecture (stylegan2-ada's default) "
            "is supported"
        )
    for key in ("block_kwargs", "mapping_kwargs", "epilogue_kwargs"):
        kw[key] = _options(kw, key, where)
    if kw["epilogue_kwargs"].pop("architecture", "resnet") != "resnet":
        raise PhenexplainError(f"{where}: only the 'resnet' discriminator epilogue is supported")
    return kw


def conditions_from_dataset_json(path: str | Path) -> list[str]:
    """Condition names in class-index order from a phenexplain-style ``dataset.json``.

    Its ``labels`` are ``[[file, class_index], ...]`` with files under ``<condition>/``, as the
    phenexplain tooling packs a folder-per-condition dataset; each index must map to one folder.
    """
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise PhenexplainError(f"cannot read {path}: {exc.strerror or exc}") from None
    names: dict[int, set[str]] = {}
    for file, index in dataset_labels(raw, str(path)):
        parts = PurePosixPath(file).parts
        if len(parts) < 2:
            raise PhenexplainError(
                f"{path}: {file!r} is not inside a condition folder; label files must be "
                "<condition>/<image>"
            )
        names.setdefault(index, set()).add(parts[-2])
    if sorted(names) != list(range(len(names))):
        raise PhenexplainError(f"{path}: class indices are not 0..{len(names) - 1}")
    ambiguous = {i: sorted(n) for i, n in names.items() if len(n) != 1}
    if ambiguous:
        raise PhenexplainError(f"{path}: class indices with several folders: {ambiguous}")
    return [next(iter(names[i])) for i in range(len(names))]


def _build(cls, kwargs: dict, obj: PersistentObject, where: str) -> torch.nn.Module:
    """`cls` from checked `kwargs` (see `nets.kwargs`), loaded with `obj`'s tensors once their
    names and shapes match the network's."""
    state = obj.state_dict()
    ours = plan_network(cls, kwargs, where).state_dict()
    missing, extra = sorted(set(ours) - set(state)), sorted(set(state) - set(ours))
    if missing or extra:
        raise PhenexplainError(
            f"{where}: parameters do not match (missing {missing[:5]}, unexpected {extra[:5]})"
        )
    for key, value in state.items():
        if not isinstance(value, torch.Tensor) or value.shape != ours[key].shape:
            shape = list(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise PhenexplainError(f"{where}.{key}: shape {shape} != {list(ours[key].shape)}")
    module = cls(**kwargs)
    module.load_state_dict({k: v.to(torch.float32) for k, v in state.items()}, strict=True)
    return module.eval()


def convert_snapshot(
    snapshot: str | Path,
    out: str | Path,
    *,
    conditions: list[str] | None = None,
    channels: list[str] | None = None,
    overwrite: bool = False,
    inputs: Iterable[str | Path] = (),
) -> CheckpointMeta:
    """Write `snapshot`'s G, D and G_ema as a checkpoint at `out`; returns its metadata. `out` may
    not be, hold or lie inside the snapshot or the other `inputs` (a class index, say)."""
    from phenexplain.fsutil import check_not_input
    from phenexplain.training.checkpoint import CheckpointMeta, TrainingState, save_checkpoint

    inputs = [snapshot, *inputs]
    check_not_input(Path(out), inputs)  # before reading: a refused output costs nothing
    data = read_snapshot(snapshot)
    builders: dict[str, tuple[type[torch.nn.Module], Callable[[PersistentObject, str], dict]]] = {
        "G": (Generator, generator_kwargs),
        "G_ema": (Generator, generator_kwargs),
        "D": (Discriminator, discriminator_kwargs),
    }
    modules, kwargs = {}, {}
    for name, (cls, get_kwargs) in builders.items():
        obj = data.get(name)
        if obj is None:
            continue
        if not isinstance(obj, PersistentObject):
            raise PhenexplainError(f"{snapshot}: {name} is not a network")
        where = f"{snapshot}: {name}"
        kwargs[name] = get_kwargs(obj, where)
        modules[name] = _build(cls, kwargs[name], obj, where)
    if "G_ema" not in modules:
        raise PhenexplainError(f"{snapshot} has no G_ema, the generator phenexplain uses")
    g = kwargs["G_ema"]
    conditions = conditions or [str(i) for i in range(g["c_dim"])]
    channels = channels or [f"ch{i}" for i in range(g["img_channels"])]
    if len(conditions) != g["c_dim"]:
        raise PhenexplainError(
            f"the snapshot has {g['c_dim']} conditions, {len(conditions)} names were given"
        )
    if len(channels) != g["img_channels"]:
        raise PhenexplainError(
            f"the snapshot has {g['img_channels']} channels, {len(channels)} names were given"
        )
    augment_p = None
    pipe = data.get("augment_pipe")
    if isinstance(pipe, PersistentObject) and "p" in (pipe.state.get("_buffers") or {}):
        augment_p = float(pipe.state["_buffers"]["p"])
    dataset = {
        k: v
        for k, v in (data.get("training_set_kwargs") or {}).items()
        if isinstance(v, str | int | float | bool)
    }
    meta = CheckpointMeta(
        kwargs=json.loads(json.dumps(kwargs)),
        conditions=list(conditions),
        channels=list(channels),
        resolution=g["img_resolution"],
        training=TrainingState(augment_p=augment_p),
        source={
            "kind": "stylegan2-ada-pytorch snapshot",
            "file": Path(snapshot).name,
            "training_set": dataset,
        },
    )
    save_checkpoint(out, modules, meta, overwrite=overwrite, inputs=inputs, require_finite=True)
    return meta
