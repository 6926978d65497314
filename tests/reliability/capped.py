"""Running code in a subprocess whose address space is capped (``RLIMIT_AS``)."""

from __future__ import annotations

import os

from tests.conftest import REPO


def preamble(limit: int) -> str:
    """Python source that caps the running process's address space at `limit` bytes."""
    return f"import resource; resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))\n"


def capped_env() -> dict[str, str]:
    """This checkout first on the path; one BLAS thread, so the cap is not spent on thread stacks."""
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
    }
