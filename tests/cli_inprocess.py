"""Run the console script in this process: exit status and what it printed on stderr.

`phenexplain.cli.main` is called as the console script calls it, so a `PhenexplainError` becomes
its one-line message and status 1, and any other exception propagates into the test (where a
user would have seen a traceback)."""

from __future__ import annotations

import contextlib
import io
import sys

from phenexplain import cli


def run_cli(*args: str) -> tuple[int, str]:
    """(exit status, stderr) of `phenexplain ARGS...`."""
    stderr = io.StringIO()
    argv = sys.argv
    sys.argv = ["phenexplain", *map(str, args)]
    try:
        with contextlib.redirect_stderr(stderr):
            cli.main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = argv
    return code, stderr.getvalue()


def one_line_error(code: int, stderr: str) -> str:
    """The message of a one-line error; fails the test on anything else."""
    lines = stderr.strip().splitlines()
    assert code == 1 and len(lines) == 1, f"exit {code}, stderr:\n{stderr}"
    assert lines[0].startswith("error: ") and "Traceback" not in stderr, stderr
    return lines[0]
