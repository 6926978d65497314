"""`phenexplain serve`: a report folder over HTTP, and nothing else.

Only regular files that lie inside the folder once every link is resolved are served; folders are
never listed, and no path component may start with a dot (no ``.env``, no ``..``, in any
spelling: the path is decoded before it is checked). ``/`` is the report page.
"""

from __future__ import annotations

import http.server
import os
import urllib.parse
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path

from phenexplain.errors import PhenexplainError

PAGES = ("report.html", "explorer.html")


class ReportHandler(http.server.SimpleHTTPRequestHandler):
    """GET/HEAD of the report's own files; 404 for everything else."""

    root: Path  # resolved report folder, set by `serve_report`

    def report_file(self, raw: str) -> Path | None:
        """The file that the request path `raw` names inside the folder, or None."""
        path = urllib.parse.unquote(urllib.parse.urlsplit(raw).path)
        parts = [p for p in path.split("/") if p]
        if not parts:
            parts = [next((p for p in PAGES if (self.root / p).is_file()), PAGES[0])]
        if any(p.startswith(".") or "\\" in p or "\0" in p for p in parts):
            return None
        target = Path(os.path.realpath(self.root.joinpath(*parts)))
        if not target.is_relative_to(self.root) or not target.is_file():
            return None
        if any(p.startswith(".") for p in target.relative_to(self.root).parts):
            return None  # a link inside the folder to one of its hidden files
        return target

    def send_head(self):
        target = self.report_file(self.path)
        try:
            fh = open(target, "rb") if target is not None else None  # noqa: SIM115 (returned)
        except OSError:
            fh = None
        if fh is None:
            self.send_error(HTTPStatus.NOT_FOUND, "File not found")
            return None
        size, mtime = os.fstat(fh.fileno()).st_size, os.fstat(fh.fileno()).st_mtime
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-type", self.guess_type(str(target)))
        self.send_header("Content-Length", str(size))
        self.send_header("Last-Modified", self.date_time_string(mtime))
        self.end_headers()
        return fh

    def list_directory(self, path):  # never reached through send_head; refused all the same
        self.send_error(HTTPStatus.NOT_FOUND, "File not found")
        return None


def serve_report(
    folder: Path, host: str, port: int, on_ready: Callable[[int], None] = lambda port: None
) -> None:
    """Serve `folder` at `host`:`port` until interrupted; `on_ready` gets the bound port."""
    if not any((folder / page).is_file() for page in PAGES):
        raise PhenexplainError(f"{folder} holds no report.html or explorer.html")
    if not 0 <= port <= 65535:
        raise PhenexplainError(f"--port {port} is not a TCP port; choose one from 0 to 65535")
    handler = type("Handler", (ReportHandler,), {"root": Path(os.path.realpath(folder))})
    try:
        server = http.server.ThreadingHTTPServer((host, port), handler)
    except (OSError, UnicodeError) as exc:  # busy port, an address not here, an unknown host
        reason = getattr(exc, "strerror", None) or exc
        raise PhenexplainError(
            f"cannot serve on {host}:{port}: {reason}; choose another --host or --port"
        ) from None
    with server:
        on_ready(server.server_address[1])
        server.serve_forever()
