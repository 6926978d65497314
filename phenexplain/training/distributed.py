"""torchrun's environment: the process group a distributed run trains in.

`run_training` enters `process_group` itself, so a script (or the CLI, or a flow task) launched by
``torchrun --nproc-per-node N`` trains one run split across N processes rather than N copies.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist


def launched_by_torchrun() -> bool:
    """True in a process that torchrun (or another launcher setting WORLD_SIZE > 1) started."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@contextmanager
def process_group(device: str) -> Iterator[bool]:
    """Under torchrun, initialise the process group (NCCL on cuda, gloo on cpu) and select this
    rank's GPU; destroy the group on exit. Yields whether the run is distributed. A group that the
    caller initialised already is used as it is and left alone."""
    if not launched_by_torchrun() or (dist.is_available() and dist.is_initialized()):
        yield launched_by_torchrun()
        return
    dist.init_process_group("nccl" if device == "cuda" else "gloo")
    try:
        if device == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        yield True
    finally:
        dist.destroy_process_group()
