"""What every command family shares: the params.yaml rule, messages, progress bars, argument types.

One precedence rule for every command: the command's section of params.yaml (``--params``, else
./params.yaml, else the defaults in `phenexplain.config`), then the flags given. So every option
that has a params.yaml key defaults to None, and `resolve` fills it in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum, StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from phenexplain.config import Params, Section

err = Console(stderr=True, soft_wrap=True)  # messages stay one line each, for logs and tests


class State:
    params_path = Path("params.yaml")  # the implicit default may be absent: defaults then


def say(message: str) -> None:
    """A line on stderr, printed as is: paths and condition names are never Rich markup."""
    err.print(message, markup=False)


def params() -> Params:
    """params.yaml as `--params` names it (validated; defaults where it is absent)."""
    from phenexplain.config import load_params

    return load_params(State.params_path)


def resolve(section: str, **flags: Any) -> Any:
    """params.yaml's `section`, then the flags that were given (None: not given), validated."""
    from phenexplain.config import with_overrides

    base: Section = getattr(params(), section)
    return with_overrides(base, **{k: value(v) for k, v in flags.items()})


def value(option: Any) -> Any:
    """An Enum choice's value; anything else as it is."""
    return option.value if isinstance(option, Enum) else option


def names(text: str | None) -> list[str] | None:
    """'A, B,C' -> ['A', 'B', 'C']; None stays None (not given)."""
    if text is None:
        return None
    return [name.strip() for name in text.split(",") if name.strip()]


def seeds(text: str) -> list[int]:
    from phenexplain.generate import parse_seeds

    return parse_seeds(text)


@contextmanager
def progress(description: str) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar on stderr, fed by `(done, total)` callbacks."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


class Device(StrEnum):
    cpu = "cpu"
    cuda = "cuda"


DeviceOption = Annotated[Device, typer.Option(help="Where the networks run.")]


def _checkpoint(path: Path) -> Path:
    from phenexplain.training.checkpoint import resolve_checkpoint

    return resolve_checkpoint(path)


Checkpoint = Annotated[
    Path,
    typer.Argument(
        help="Checkpoint folder (train or convert-nvlabs), or a run folder (its latest).",
        callback=_checkpoint,
    ),
]


def from_params(key: str, what: str) -> str:
    """An option's help: what it is, and the params.yaml key it overrides."""
    return f"{what} (default: params.yaml {key})"


def given(**flags: Any) -> dict[str, Any]:
    """The flags that were given (not None): for commands whose defaults live in the library
    function they call (the benchmarks' configurations)."""
    return {k: value(v) for k, v in flags.items() if v is not None}


def integers(text: str | None) -> list[int] | None:
    """'1,2' -> [1, 2]; None stays None."""
    return None if text is None else [int(part) for part in names(text) or []]


def installed(package: str) -> bool:
    """Whether `package` can be imported (the service extra's packages are optional)."""
    import importlib.util

    try:
        return importlib.util.find_spec(package) is not None
    except ImportError:
        return False
