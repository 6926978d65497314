"""The standard FID feature extractor: Inception-v3 as in TF's inception-2015-12-05 graph.

Only local files whose SHA-256 is pinned in `KNOWN_FILES` are loaded; nothing is downloaded.
Two formats are accepted:

* a state dict (pytorch-fid's or torch-fidelity's ``...-6726825d.pth``, the same bytes), read with
  ``torch.load(..., weights_only=True)`` into `FIDInceptionV3`, our own implementation of the
  network: TF's variant of Inception-v3 (batch norm eps 0.001, a 1008-class fc, average pools
  that exclude padding, a max pool in the last block's pool branch);
* stylegan2-ada-pytorch's TorchScript ``inception-2015-12-05.pt``, run as that reference runs it.

The file is looked for in: the explicit path, ``$PHENEXPLAIN_INCEPTION``, torch hub's
``checkpoints`` folder, ``$PHENEXPLAIN_CACHE``, ``~/.cache/phenexplain`` and dnnlib's download
cache (stylegan2-ada-pytorch stores ``<md5 of the URL>_<name>`` there). A path may be a folder.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from phenexplain.errors import PhenexplainError

log = logging.getLogger(__name__)

ENV_VAR = "PHENEXPLAIN_INCEPTION"
FEATURES = 2048
SIZE = 299
_MAX_BYTES = 512 * 2**20  # the known files are about 95 MB


class InceptionWeightsError(PhenexplainError):
    """An Inception weights file is unknown (hash not pinned), corrupt, or does not load."""


class InceptionWeightsNotFoundError(InceptionWeightsError, FileNotFoundError):
    """No Inception weights file was found where phenexplain looks."""


@dataclass(frozen=True)
class KnownFile:
    """A pinned weights file: `sha256` is the full hex digest, or a prefix of 8+ hex digits."""

    name: str
    sha256: str
    kind: Literal["state_dict", "torchscript"]
    url: str = ""

    def matches(self, digest: str) -> bool:
        return len(self.sha256) >= 8 and digest.lower().startswith(self.sha256.lower())


_FID_PTH_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
KNOWN_FILES: tuple[KnownFile, ...] = (
    KnownFile(
        "pt_inception-2015-12-05-6726825d.pth",
        _FID_PTH_SHA256,
        "state_dict",
        "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
        "pt_inception-2015-12-05-6726825d.pth",
    ),
    KnownFile(
        "weights-inception-2015-12-05-6726825d.pth",
        _FID_PTH_SHA256,
        "state_dict",
        "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
        "weights-inception-2015-12-05-6726825d.pth",
    ),
    KnownFile(
        "inception-2015-12-05.pt",
        "f58cb9b6ec323ed63459aa4fb441fe750cfe39fafad6da5cb504a16f19e958f4",
        "torchscript",
        "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/"
        "inception-2015-12-05.pt",
    ),
)


# ---------------------------------------------------------------------------------------------
# The network. Key names and shapes follow the pytorch-fid state dict ("Mixed_6b.branch7x7_2.
# conv.weight", ...), so that file loads with strict=True.

_Conv = tuple[str, int, int | tuple[int, int], int, int | tuple[int, int]]  # name, out, k, s, pad


class _ConvBN(nn.Module):
    """Bias-free convolution, batch norm with TF's eps 0.001, ReLU: keys ``conv.*``, ``bn.*``."""

    def __init__(self, cin: int, cout: int, kernel, stride: int = 1, padding=0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class _Mixed(nn.Module):
    """One Inception block: parallel chains of convolutions and a pool branch, concatenated.

    A chain is applied in order; its optional `fork` (two convolutions on the chain's output) is
    concatenated. `pool`: "avg" (3x3, stride 1, padding excluded from the mean, then a 1x1 conv
    to `pool_out`), "max" (3x3, stride 1, then the 1x1 conv) or "max_s2" (3x3, stride 2, no conv).
    """

    def __init__(
        self,
        cin: int,
        chains: Sequence[tuple[Sequence[_Conv], Sequence[_Conv]]],
        pool: Literal["avg", "max", "max_s2"],
        pool_out: int = 0,
    ) -> None:
        super().__init__()
        self.plan: list[tuple[list[str], list[str]]] = []
        for chain, fork in chains:
            c = cin
            for name, cout, k, s, p in chain:
                self.add_module(name, _ConvBN(c, cout, k, s, p))
                c = cout
            for name, cout, k, s, p in fork:
                self.add_module(name, _ConvBN(c, cout, k, s, p))
            self.plan.append(([conv[0] for conv in chain], [conv[0] for conv in fork]))
        self.pool = pool
        if pool != "max_s2":
            self.branch_pool = _ConvBN(cin, pool_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for chain, fork in self.plan:
            y = x
            for name in chain:
                y = self.get_submodule(name)(y)
            if fork:
                y = torch.cat([self.get_submodule(name)(y) for name in fork], 1)
            outs.append(y)
        if self.pool == "max_s2":
            outs.append(F.max_pool2d(x, 3, stride=2))
        elif self.pool == "max":
            outs.append(self.branch_pool(F.max_pool2d(x, 3, stride=1, padding=1)))
        else:
            pooled = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
            outs.append(self.branch_pool(pooled))
        return torch.cat(outs, 1)


def _seq(prefix: str, *specs: tuple) -> list[_Conv]:
    """Convolutions `prefix`_1, _2, ... from (out, kernel=1, stride=1, padding=0) tuples."""
    return [
        (f"{prefix}_{i}", *(tuple(spec) + (1, 1, 0)[len(spec) - 1 :]))
        for i, spec in enumerate(specs, start=1)
    ]


def _one(name: str, out: int) -> list[_Conv]:
    return [(name, out, 1, 1, 0)]


_ROW, _COL = ((1, 7), 1, (0, 3)), ((7, 1), 1, (3, 0))  # factorised 7x7: kernel, stride, pad


def _block_a(cin: int, pool_out: int) -> _Mixed:  # 35x35: 64 + 64 + 96 + pool_out channels
    dbl = _seq("branch3x3dbl", (64,), (96, 3, 1, 1), (96, 3, 1, 1))
    chains = [_one("branch1x1", 64), _seq("branch5x5", (48,), (64, 5, 1, 2)), dbl]
    return _Mixed(cin, [(c, []) for c in chains], "avg", pool_out)


def _block_b() -> _Mixed:  # 35x35 -> 17x17: 384 + 96 + 288 channels
    dbl = _seq("branch3x3dbl", (64,), (96, 3, 1, 1), (96, 3, 2))
    return _Mixed(288, [([("branch3x3", 384, 3, 2, 0)], []), (dbl, [])], "max_s2")


def _block_c(c7: int) -> _Mixed:  # 17x17, 768 -> 4 x 192 channels
    seven = _seq("branch7x7", (c7,), (c7, *_ROW), (192, *_COL))
    dbl = _seq("branch7x7dbl", (c7,), (c7, *_COL), (c7, *_ROW), (c7, *_COL), (192, *_ROW))
    chains = [_one("branch1x1", 192), seven, dbl]
    return _Mixed(768, [(c, []) for c in chains], "avg", 192)


def _block_d() -> _Mixed:  # 17x17 -> 8x8: 320 + 192 + 768 channels
    three = _seq("branch3x3", (192,), (320, 3, 2))
    seven = _seq("branch7x7x3", (192,), (192, *_ROW), (192, *_COL), (192, 3, 2))
    return _Mixed(768, [(three, []), (seven, [])], "max_s2")


def _block_e(cin: int, pool: Literal["avg", "max"]) -> _Mixed:  # 8x8: 320 + 768 + 768 + 192
    def split(prefix: str) -> list[_Conv]:  # 1x3 and 3x1 on the same input, concatenated
        return [(f"{prefix}a", 384, (1, 3), 1, (0, 1)), (f"{prefix}b", 384, (3, 1), 1, (1, 0))]

    dbl = _seq("branch3x3dbl", (448,), (384, 3, 1, 1))
    chains = [(_one("branch1x1", 320), []), (_seq("branch3x3", (384,)), split("branch3x3_2"))]
    return _Mixed(cin, [*chains, (dbl, split("branch3x3dbl_3"))], pool, 192)


class FIDInceptionV3(nn.Module):
    """Inception-v3 of TF's inception-2015-12-05 graph, up to the 2048-d pool3 features.

    `fc` (2048 -> 1008 classes) is kept so the state dict matches the published file; it is not
    used for features.
    """

    BLOCKS: tuple[str, ...] = ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b")
    BLOCKS += ("Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c")

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = _ConvBN(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = _ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = _ConvBN(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = _ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = _ConvBN(80, 192, 3)
        self.Mixed_5b = _block_a(192, 32)
        self.Mixed_5c = _block_a(256, 64)
        self.Mixed_5d = _block_a(288, 64)
        self.Mixed_6a = _block_b()
        self.Mixed_6b = _block_c(128)
        self.Mixed_6c = _block_c(160)
        self.Mixed_6d = _block_c(160)
        self.Mixed_6e = _block_c(192)
        self.Mixed_7a = _block_d()
        self.Mixed_7b = _block_e(1280, "avg")
        self.Mixed_7c = _block_e(2048, "max")
        self.fc = nn.Linear(FEATURES, 1008)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 3, 299, 299] in [-1, 1] -> pool3 features [N, 2048] (8x8 maps averaged)."""
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, 3, stride=2)
        for name in self.BLOCKS:
            x = self.get_submodule(name)(x)
        return x.mean(dim=(2, 3))


# ---------------------------------------------------------------------------------------------
# Finding and loading the file.


def search_folders() -> list[Path]:
    """Folders searched, in order, when neither a path nor ``$PHENEXPLAIN_INCEPTION`` is given."""
    folders = [Path(torch.hub.get_dir()) / "checkpoints"]  # $TORCH_HOME/hub/checkpoints
    if os.environ.get("PHENEXPLAIN_CACHE"):
        folders.append(Path(os.environ["PHENEXPLAIN_CACHE"]))
    folders.append(Path.home() / ".cache" / "phenexplain")
    dnnlib = os.environ.get("DNNLIB_CACHE_DIR") or Path.home() / ".cache" / "dnnlib"
    folders.append(Path(dnnlib) / "downloads")
    return list(dict.fromkeys(f.expanduser() for f in folders))


def _candidates(folder: Path, table: Sequence[KnownFile]) -> Iterator[Path]:
    for entry in table:
        yield folder / entry.name
    for entry in table:  # dnnlib's cache names a download "<md5 of its URL>_<name or URL>"
        if entry.url and folder.is_dir():
            yield from sorted(folder.glob(hashlib.md5(entry.url.encode()).hexdigest() + "_*"))


def _accepted(table: Sequence[KnownFile]) -> str:
    return "; ".join(
        f"{e.name} (sha256 {e.sha256}{', from ' + e.url if e.url else ''})" for e in table
    )


def find_inception_file(
    path: str | os.PathLike | None = None, *, known_files: Sequence[KnownFile] | None = None
) -> Path:
    """The weights file: `path`, else ``$PHENEXPLAIN_INCEPTION``, else the first accepted name
    in `search_folders()`. A given folder is searched for the accepted names. Never downloads."""
    table = KNOWN_FILES if known_files is None else tuple(known_files)
    given, source = (path, "the given path") if path else (os.environ.get(ENV_VAR), ENV_VAR)
    folders = search_folders()
    if given:
        p = Path(given).expanduser()
        if p.is_file():
            return p
        if not p.is_dir():
            raise InceptionWeightsNotFoundError(
                f"Inception weights {p} (from {source}) does not exist; fix the path, or put one "
                f"of these files there: {_accepted(table)}"
            )
        folders = [p]
    for folder in folders:
        for candidate in _candidates(folder, table):
            if candidate.is_file():
                return candidate
    where = Path(torch.hub.get_dir()) / "checkpoints"
    raise InceptionWeightsNotFoundError(
        "no Inception weights file found (phenexplain never downloads); searched "
        f"{', '.join(str(f) for f in folders)}; accepted files, and only these hash-pinned "
        f"files are loaded: {_accepted(table)}; download one by hand into {where}, or anywhere "
        f"and set {ENV_VAR}=/path/to/file (or train.inception_weights in params.yaml)"
    )


def _brief(exc: Exception, limit: int = 300) -> str:
    """An exception's message on one line, at most `limit` characters."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class LoadedInception:
    """A verified, loaded network: `model` is `FIDInceptionV3` or the TorchScript module."""

    model: nn.Module
    path: Path
    sha256: str
    known: KnownFile


def _verify(path: Path, table: Sequence[KnownFile]) -> tuple[bytes, str, KnownFile]:
    """Read `path` once and match its SHA-256 against `table`; the bytes checked are the ones
    loaded, so the file cannot change between the check and the load."""
    size = path.stat().st_size
    if size > _MAX_BYTES:
        raise InceptionWeightsError(
            f"{path} is {size} bytes, too large for an Inception weights file; accepted files: "
            f"{_accepted(table)}"
        )
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    for entry in table:
        if entry.matches(digest):
            return data, digest, entry
    named = [e for e in table if e.name == path.name]
    why = (
        f"it is named like a known file but its sha256 is {digest}, not {named[0].sha256}: the "
        f"file is truncated, corrupt or a different file; delete it and fetch it again from "
        f"{named[0].url or 'its source'}"
        if named
        else f"its sha256 {digest} is not pinned; only hash-pinned files are loaded"
    )
    raise InceptionWeightsError(
        f"refusing Inception weights {path}: {why}; accepted files: {_accepted(table)}"
    )


def load_inception(
    path: str | os.PathLike | None = None, *, known_files: Sequence[KnownFile] | None = None
) -> LoadedInception:
    """Find (`find_inception_file`), hash-verify and load the network, in eval mode on the CPU.

    `known_files` replaces the table of pinned files (`KNOWN_FILES`), e.g. for tests.
    """
    table = KNOWN_FILES if known_files is None else tuple(known_files)
    file = find_inception_file(path, known_files=table)
    data, digest, entry = _verify(file, table)
    source = f"fetch {entry.name} again from {entry.url or 'its source'}"
    model: nn.Module
    if entry.kind == "torchscript":  # pinned by hash, so the file is the published one
        try:
            with warnings.catch_warnings():  # torch 2.13 deprecates TorchScript; it still loads
                warnings.simplefilter("ignore", DeprecationWarning)
                model = torch.jit.load(io.BytesIO(data), map_location="cpu")
        except Exception as exc:
            raise InceptionWeightsError(
                f"{file}: TorchScript load failed ({_brief(exc)})"
            ) from None
    else:
        try:  # tensors and plain containers only: no code from the file can run
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise InceptionWeightsError(
                f"refusing Inception weights {file}: weights-only loading rejected it, it is not "
                f"a plain tensor state dict ({_brief(exc)}); {source}"
            ) from None
        model = FIDInceptionV3()
        try:
            if not isinstance(state, Mapping):
                raise TypeError(f"it holds a {type(state).__name__}, not a state dict")
            model.load_state_dict(state, strict=True)
        except (RuntimeError, TypeError, AttributeError, ValueError) as exc:
            raise InceptionWeightsError(
                f"{file} does not fit the FID Inception network ({_brief(exc)}); {source}"
            ) from None
    log.info("Inception weights %s (sha256 %s, %s)", file, digest[:12], entry.kind)
    for p in model.parameters():
        p.requires_grad_(False)
    return LoadedInception(model.eval(), file, digest, entry)


# ---------------------------------------------------------------------------------------------
# The extractor.


class InceptionExtractor:
    """Pool3 features (2048-d) of the FID Inception network, as used by `fid_kid`.

    Input: float images [N, C, H, W] in [-1, 1], any size. The state-dict network gets them
    resized to 299x299 bilinearly with align_corners=False and no antialiasing, as pytorch-fid
    resizes (it resizes [0, 1] images and then maps to [-1, 1]; resizing is affine-equivariant,
    so resizing [-1, 1] directly is the same). The TorchScript network gets uint8-range values
    (x * 127.5 + 128, clamped, as stylegan2-ada-pytorch quantises) and resizes by itself.

    Channels: 3 are read as RGB. Any other count (1, 2, 4, 5, ...): each channel is a grey image,
    repeated to 3 channels (as the references treat 1-channel images), and its features are
    averaged over the channels, so every channel counts and the output stays [N, 2048]. The
    average cannot tell which channel carried what. Cost grows with the channel count; on a CPU,
    expect a few images per second per channel.
    """

    name = "inception"

    def __init__(
        self,
        weights: str | os.PathLike | None = None,
        *,
        known_files: Sequence[KnownFile] | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        loaded = load_inception(weights, known_files=known_files)
        self.device = torch.device(device)
        self.kind = loaded.known.kind
        self.model = loaded.model.to(self.device)
        if self.kind == "state_dict":  # about twice as fast on a CPU
            self.model = self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # stubs lack it
        self.path, self.sha256 = loaded.path, loaded.sha256
        self.id = f"inception-{loaded.sha256[:12]}"

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        """[M, 3, H, W] in [-1, 1] -> [M, 2048] float32."""
        if self.kind == "torchscript":
            x = (x * 127.5 + 128).clamp(0, 255).to(torch.uint8)
            return self.model(x.to(self.device), return_features=True).float()
        x = F.interpolate(
            x.to(self.device), size=(SIZE, SIZE), mode="bilinear", align_corners=False
        )
        return self.model(x.contiguous(memory_format=torch.channels_last))

    def __call__(self, images: torch.Tensor, batch: int = 64) -> np.ndarray:
        """Images float [N, C, H, W] in [-1, 1] -> float64 features [N, 2048]."""
        n, c, h, w = images.shape
        groups = 1 if c == 3 else c
        step = max(1, batch // groups)
        out = [np.zeros((0, FEATURES))]
        with torch.no_grad():
            for start in range(0, n, step):
                x = images[start : start + step].to(torch.float32)
                if c != 3:  # each channel as a grey image
                    x = x.reshape(-1, 1, h, w).expand(-1, 3, -1, -1)
                f = self._features(x).reshape(-1, groups, FEATURES).mean(dim=1)
                out.append(f.double().cpu().numpy())
        return np.concatenate(out)
