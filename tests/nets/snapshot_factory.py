"""Build pickles shaped like stylegan2-ada-pytorch snapshots, from our own networks.

The real format: a dict {G, D, G_ema, augment_pipe, training_set_kwargs} where every network is
pickled as ``torch_utils.persistence._reconstruct_persistent_obj(meta)`` with ``meta`` holding the
module source code, the class name and the module's ``__dict__`` (parameters, buffers, children,
``_init_kwargs`` as a ``dnnlib.util.EasyDict``). The globals are emitted from stand-in modules
registered only while pickling; no reference code is involved.
"""

from __future__ import annotations

import collections
import contextlib
import pickle
import sys
import types

import torch


def _reconstruct_persistent_obj(meta):  # pragma: no cover - only its name is pickled
    raise AssertionError("never called: the converter reads snapshots with its own unpickler")


class EasyDict(dict):
    pass


class _Persistent:
    def __init__(self, meta: dict) -> None:
        self.meta = meta

    def __reduce__(self):
        return (_reconstruct_persistent_obj, (self.meta,))


@contextlib.contextmanager
def _stand_in_modules():
    persistence = types.ModuleType("torch_utils.persistence")
    util = types.ModuleType("dnnlib.util")
    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    EasyDict.__module__ = "dnnlib.util"
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    util.EasyDict = EasyDict
    saved = {
        k: sys.modules.get(k)
        for k in ("torch_utils", "torch_utils.persistence", "dnnlib", "dnnlib.util")
    }
    sys.modules.update(
        {"torch_utils": types.ModuleType("torch_utils"), "torch_utils.persistence": persistence,
         "dnnlib": types.ModuleType("dnnlib"), "dnnlib.util": util}
    )  # fmt: skip
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def persistent(module: torch.nn.Module, init_kwargs: dict | None, module_src: str) -> _Persistent:
    """A module as a snapshot stores it: class name, source code and __dict__ with children."""
    state = {
        "training": module.training,
        "_parameters": collections.OrderedDict(module._parameters),
        "_buffers": collections.OrderedDict(module._buffers),
        "_non_persistent_buffers_set": set(module._non_persistent_buffers_set),
        "_modules": collections.OrderedDict(
            (name, persistent(child, None, module_src)) for name, child in module._modules.items()
        ),
        "_init_args": (),
        "_init_kwargs": EasyDict(init_kwargs or {}),
        "some_gain": 0.5,
    }
    meta = {
        "type": "class",
        "version": 4,
        "module_src": module_src,
        "class_name": type(module).__name__,
    }
    return _Persistent({**meta, "state": state})


def snapshot_bytes(
    networks: dict[str, tuple[torch.nn.Module, dict]], module_src: str, extra: dict | None = None
) -> bytes:
    """Pickle {name: (module, init kwargs)} plus `extra` entries the way a snapshot is laid out."""
    with _stand_in_modules():
        data = {name: persistent(m, kw, module_src) for name, (m, kw) in networks.items()}
        data["training_set_kwargs"] = EasyDict(
            path="/data/cells.zip", use_labels=True, resolution=16
        )
        data.update(extra or {})
        return pickle.dumps(data, protocol=4)
