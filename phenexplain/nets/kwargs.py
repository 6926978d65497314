"""Typed, bounded constructor arguments of `Generator` and `Discriminator`, checked before a
network is built from a file (a checkpoint's ``checkpoint.json`` or a snapshot's pickle).

A network is allocated from its kwargs, so a tampered file could ask for any amount of memory
(``z_dim = 10**9`` asks for 128 GB). `plan_network` therefore validates every kwarg against the
models below (known keys only, strict types, sane bounds), then builds the network on the meta
device, which allocates nothing, to count its parameters against `MAX_PARAMETERS` (and to give
readers the shapes to compare with a file); `build_network` builds it for real only after that.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal, TypeVar

import torch
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from phenexplain.config import format_errors
from phenexplain.errors import PhenexplainError
from phenexplain.nets.discriminator import Discriminator
from phenexplain.nets.generator import Generator

M = TypeVar("M", bound=torch.nn.Module)

MAX_PARAMETERS = 200_000_000  # 800 MB of float32; the 1024 px reference networks have ~31 M
MAX_DIM = 4096  # z, w, condition embedding and feature widths
MAX_CONDITIONS = 4096


def _power_of_two(value: int) -> int:
    if value & (value - 1):
        raise ValueError("must be a power of two")
    return value


Resolution = Annotated[int, Field(ge=4, le=2048), AfterValidator(_power_of_two)]
Width = Annotated[int, Field(ge=1, le=MAX_DIM)]
Activation = Literal["linear", "lrelu"]
Filter = Annotated[tuple[Annotated[int, Field(ge=1, le=64)], ...],
                   Field(min_length=1, max_length=8, strict=False)]  # fmt: skip
Clamp = Annotated[float, Field(gt=0, le=1e6)] | None


def _check_widths(net: SynthesisKwargs | DiscriminatorKwargs, resolution: int) -> None:
    """Every block needs at least one feature map: channel_base / resolution >= 1."""
    if net.channel_base < resolution:
        raise ValueError(
            f"channel_base {net.channel_base} < img_resolution {resolution} leaves a block "
            "without feature maps"
        )


class _Kwargs(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class DiscriminatorMappingKwargs(_Kwargs):
    """`MappingNetwork` options the discriminator's condition mapping takes (no z, no w_avg)."""

    num_layers: int = Field(8, ge=1, le=32)
    embed_features: Width | None = None
    layer_features: Width | None = None
    activation: Activation = "lrelu"
    lr_multiplier: float = Field(0.01, gt=0, le=100)


class MappingKwargs(DiscriminatorMappingKwargs):
    """The generator's `MappingNetwork` options (z, c -> w), with the tracked mean of w."""

    w_avg_beta: float | None = Field(0.995, ge=0, le=1)


class SynthesisKwargs(_Kwargs):
    """`SynthesisNetwork` and per-block options of the generator."""

    channel_base: int = Field(32768, ge=1, le=2**20)
    channel_max: int = Field(512, ge=1, le=2048)
    num_fp16_res: int = Field(0, ge=0, le=32)
    conv_clamp: Clamp = None
    resample_filter: Filter = (1, 3, 3, 1)
    kernel_size: int = Field(3, ge=1, le=7)
    use_noise: bool = True
    activation: Activation = "lrelu"


class GeneratorKwargs(_Kwargs):
    """`Generator(**kwargs)`: z [N, z_dim], c [N, c_dim] -> images [N, img_channels, R, R]."""

    z_dim: Width
    c_dim: int = Field(ge=0, le=MAX_CONDITIONS)
    w_dim: Width
    img_resolution: Resolution
    img_channels: int = Field(ge=1, le=5)
    mapping_kwargs: MappingKwargs | None = None
    synthesis_kwargs: SynthesisKwargs | None = None

    @model_validator(mode="after")
    def _widths(self) -> GeneratorKwargs:
        _check_widths(self.synthesis_kwargs or SynthesisKwargs(), self.img_resolution)
        return self


class DiscriminatorBlockKwargs(_Kwargs):
    activation: Activation = "lrelu"
    resample_filter: Filter = (1, 3, 3, 1)
    freeze_layers: int = Field(0, ge=0, le=64)


class EpilogueKwargs(_Kwargs):
    mbstd_group_size: int | None = Field(4, ge=1, le=256)
    mbstd_num_channels: int = Field(1, ge=0, le=64)
    activation: Activation = "lrelu"


class DiscriminatorKwargs(_Kwargs):
    """`Discriminator(**kwargs)`: images [N, img_channels, R, R], c [N, c_dim] -> scores [N, 1]."""

    c_dim: int = Field(ge=0, le=MAX_CONDITIONS)
    img_resolution: Resolution
    img_channels: int = Field(ge=1, le=5)
    channel_base: int = Field(32768, ge=1, le=2**20)
    channel_max: int = Field(512, ge=1, le=2048)
    num_fp16_res: int = Field(0, ge=0, le=32)
    conv_clamp: Clamp = None
    cmap_dim: Width | None = None
    block_kwargs: DiscriminatorBlockKwargs | None = None
    mapping_kwargs: DiscriminatorMappingKwargs | None = None
    epilogue_kwargs: EpilogueKwargs | None = None

    @model_validator(mode="after")
    def _widths(self) -> DiscriminatorKwargs:
        _check_widths(self, self.img_resolution)
        return self


KWARGS_MODELS: dict[type[torch.nn.Module], type[GeneratorKwargs | DiscriminatorKwargs]] = {
    Generator: GeneratorKwargs,
    Discriminator: DiscriminatorKwargs,
}


def check_kwargs(
    cls: type[torch.nn.Module], kwargs: object, where: str
) -> GeneratorKwargs | DiscriminatorKwargs:
    """`kwargs` validated against `cls`'s model; `where` ("file: network") names them in errors."""
    try:
        return KWARGS_MODELS[cls].model_validate(kwargs)
    except ValidationError as exc:
        raise PhenexplainError(format_errors(exc, f"{where} kwargs", sep="; ")) from None


def plan_network(cls: type[M], kwargs: Mapping[str, Any], where: str) -> M:
    """`cls(**kwargs)` on the meta device (shapes and dtypes, no memory), once the kwargs are
    checked and the parameter count is under `MAX_PARAMETERS`."""
    check_kwargs(cls, kwargs, where)
    try:
        with torch.device("meta"):
            planned = cls(**kwargs)
    except ValueError as exc:  # a combination the constructors refuse
        raise PhenexplainError(f"{where}: {exc}") from None
    count = sum(p.numel() for p in planned.parameters())
    if count > MAX_PARAMETERS:
        raise PhenexplainError(
            f"{where}: the network would have {count:,} parameters (limit {MAX_PARAMETERS:,}); "
            "its constructor arguments are not those of a network phenexplain can load"
        )
    return planned


def build_network(cls: type[M], kwargs: Mapping[str, Any], where: str) -> M:
    """`cls(**kwargs)`, allocated only once `plan_network` accepts the kwargs."""
    plan_network(cls, kwargs, where)
    return cls(**kwargs)
