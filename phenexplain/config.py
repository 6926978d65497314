"""Typed configuration loaded from `params.yaml`, one section per pipeline stage.

Every section is a pydantic model that forbids unknown keys and checks types strictly, so a typo
or a wrong type fails at load time with a message naming the file and the dotted key. CLI flags
override values through `with_overrides`, which validates the overrides the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from phenexplain.errors import ConfigError

DEFAULT_PARAMS = Path("params.yaml")


class Section(BaseModel):
    """Base of every section: strict types, no unknown keys, immutable."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class SynthParams(Section):
    """`phenexplain synth`: synthetic plates with planted phenotypes."""

    assay: Literal["nfkb", "golgi", "dose", "subtle"] = "nfkb"
    seed: int = Field(0, ge=0)
    plates: int = Field(1, gt=0)
    wells_per_condition: int = Field(4, gt=0)
    sites_per_well: int = Field(4, gt=0)
    height: int = Field(1024, ge=64, description="field height, px")
    width: int = Field(1280, ge=64, description="field width, px")
    cells_per_mpx: float = Field(50.0, gt=0, description="mean cells per million px (control)")
    workers: int = Field(2, gt=0, description="processes generating fields in parallel")


class SummarizeParams(Section):
    """`phenexplain summarize`: per-condition measurements of a plate folder."""

    max_fields_per_condition: int = Field(16, gt=0, description="fields measured per condition")


class Params(Section):
    """All sections of params.yaml."""

    synth: SynthParams = SynthParams()
    summarize: SummarizeParams = SummarizeParams()


def _format_errors(exc: ValidationError, source: str, prefix: tuple[str, ...] = ()) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in (*prefix, *err["loc"]))
        value = err.get("input")
        if err["type"] == "extra_forbidden":
            lines.append(f"{source}: unknown key '{key}'; remove it or fix its spelling")
        else:
            lines.append(f"{source}: '{key}': {err['msg']} (got {value!r})")
    return "\n".join(lines)


def load_params(path: str | Path = DEFAULT_PARAMS) -> Params:
    """Load and validate `path`; a missing file gives the defaults."""
    path = Path(path)
    if not path.exists():
        return Params()
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, str(path))) from None


def with_overrides(section: Section, source: str = "command line", **overrides: Any) -> Section:
    """A copy of `section` with the non-None `overrides` applied and validated."""
    given = {k: v for k, v in overrides.items() if v is not None}
    if not given:
        return section
    try:
        return type(section).model_validate({**section.model_dump(), **given})
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source)) from None
