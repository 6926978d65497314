"""Read NVlabs stylegan2-ada-pytorch snapshots (``network-snapshot-*.pkl``) without running them.

Those pickles embed the source code of the networks and rebuild them by executing it. Here a
restricted unpickler resolves only the handful of globals that carry data -- tensors and their
storages (decoded by ``torch.load(weights_only=True)``), ordered dicts, numpy scalars, the EasyDict
of constructor kwargs -- and turns every persistent network into a `PersistentObject` record of its
class name and state. Any other global is refused, so nothing in the file is executed; the
embedded source code is ignored.
"""

from __future__ import annotations

import collections
import io
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from phenexplain.errors import PhenexplainError


class UnsafeSnapshotError(PhenexplainError):
    """The pickle asks for something other than tensors, dicts and numbers."""


@dataclass
class PersistentObject:
    """A network as the snapshot describes it: class name and ``__dict__`` (never executed)."""

    class_name: str
    state: dict

    def init_kwargs(self) -> dict:
        args = self.state.get("_init_args") or ()
        if args:
            raise PhenexplainError(
                f"{self.class_name} was built with positional arguments; cannot convert"
            )
        kwargs = self.state.get("_init_kwargs") or {}
        if not isinstance(kwargs, dict):
            raise PhenexplainError(f"{self.class_name}: constructor arguments are not a mapping")
        try:
            return _plain(kwargs)
        except RecursionError:
            raise PhenexplainError(
                f"{self.class_name}: constructor arguments nested too deeply"
            ) from None

    def state_dict(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """Parameters and persistent buffers of this module and its children, dotted names."""
        out: dict[str, torch.Tensor] = {}
        skip = set(self.state.get("_non_persistent_buffers_set") or ())
        for key, value in (self.state.get("_parameters") or {}).items():
            if value is not None:
                out[prefix + key] = value.detach()
        for key, value in (self.state.get("_buffers") or {}).items():
            if value is not None and key not in skip:
                out[prefix + key] = value
        for key, child in (self.state.get("_modules") or {}).items():
            if isinstance(child, PersistentObject):
                out.update(child.state_dict(f"{prefix}{key}."))
        return out


class _EasyDict(dict):
    """Stand-in for dnnlib's EasyDict (a dict with attribute access): data only."""


def _persistent(meta: dict) -> PersistentObject:
    if not isinstance(meta, dict) or meta.get("type") != "class" or "class_name" not in meta:
        raise UnsafeSnapshotError("malformed persistent object in snapshot")
    return PersistentObject(class_name=str(meta["class_name"]), state=dict(meta.get("state") or {}))


def _storage_from_bytes(data: bytes):
    return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")


def _numpy_scalar(dtype, data=None):
    if not isinstance(dtype, np.dtype) or dtype.kind not in "biufc":
        raise UnsafeSnapshotError(f"refusing a numpy scalar of type {dtype!r}")
    return np.frombuffer(data, dtype=dtype, count=1)[0] if data is not None else dtype.type(0)


ALLOWED = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _persistent,
    ("dnnlib.util", "EasyDict"): _EasyDict,
    ("dnnlib", "EasyDict"): _EasyDict,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        try:
            return ALLOWED[(module, name)]
        except KeyError:
            raise UnsafeSnapshotError(
                f"refusing to load {module}.{name} from the snapshot: only tensors, dicts and "
                "numbers are read (nothing in the file is executed)"
            ) from None

    def persistent_load(self, pid):
        raise UnsafeSnapshotError(f"unexpected persistent id {pid!r} in snapshot")


def _plain(value):
    """EasyDicts and OrderedDicts as plain dicts, numpy scalars as Python numbers, recursively."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_snapshot(path: str | Path) -> dict:
    """The snapshot's top-level dict, networks as `PersistentObject` records."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            data = _RestrictedUnpickler(fh).load()
    except UnsafeSnapshotError:
        raise
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        RuntimeError,
    ) as exc:
        raise PhenexplainError(f"{path}: not a readable stylegan2-ada snapshot ({exc})") from None
    if not isinstance(data, dict) or not any(
        isinstance(v, PersistentObject) for v in data.values()
    ):
        raise PhenexplainError(f"{path}: no networks found; expected keys G, D, G_ema")
    return data
