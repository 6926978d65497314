"""A plate inbox: deliveries (one folder per plate delivery) not yet ingested, and the ledger of
those that were.

A delivery is a sub-folder of the inbox (or an S3 prefix, see
`phenexplain.integrations.s3_inbox`) holding what `phenexplain ingest` reads (a manifest and its
images). It is identified by its name (the plate id) and a checksum of its content, so a plate that
is re-delivered with different files counts as new. The ledger (``ledger.jsonl`` in a state folder)
gets a line only after the delivery was ingested completely; a file lock makes two concurrent
runs take turns, so no delivery is ingested twice.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from phenexplain.config import IngestParams
from phenexplain.data.ingest import IngestSummary, ingest
from phenexplain.errors import PhenexplainError
from phenexplain.fsutil import file_lock

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Delivery:
    """One plate delivery: its id, a checksum of its content, and how to get it as a folder."""

    plate_id: str
    checksum: str
    fetch: Callable[[Path], Path]  # staging folder -> folder to ingest


def _as_it_is(folder: Path) -> Callable[[Path], Path]:
    """A `Delivery.fetch` for a folder that is already local: it is ingested where it lies."""
    return lambda staging: folder


def _tree_checksum(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode("utf-8", "surrogateescape"))
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def local_deliveries(inbox: str | Path) -> list[Delivery]:
    """Every non-hidden sub-folder of a local inbox, sorted by name."""
    inbox = Path(inbox)
    if not inbox.is_dir():
        raise PhenexplainError(f"inbox {inbox} is not a folder; create it or point to another")
    return [
        Delivery(p.name, _tree_checksum(p), _as_it_is(p))
        for p in sorted(inbox.iterdir())
        if p.is_dir() and not p.name.startswith(".")
    ]


class Ledger:
    """``ledger.jsonl`` in `state`: one JSON line per ingested (plate_id, checksum)."""

    def __init__(self, state: str | Path) -> None:
        self.state = Path(state)
        self.state.mkdir(parents=True, exist_ok=True)
        self.path = self.state / "ledger.jsonl"

    def lock(self) -> contextlib.AbstractContextManager[None]:
        """Exclusive across processes (fcntl lock on ``ledger.lock``); waits for the holder."""
        return file_lock(self.state / "ledger.lock")

    def entries(self) -> list[dict]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def done(self) -> set[tuple[str, str]]:
        return {(e["plate_id"], e["checksum"]) for e in self.entries()}

    def record(self, delivery: Delivery, summary: IngestSummary) -> None:
        """Append one line and flush it to disk (a crash never leaves a half line behind
        that parses: the line is written in one call and fsynced)."""
        line = json.dumps({
            "plate_id": delivery.plate_id, "checksum": delivery.checksum,
            "ingested_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "plates_added": summary.plates_added,
        })  # fmt: skip
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())


def ingest_new(
    deliveries: list[Delivery],
    cropset: str | Path,
    params: IngestParams,
    ledger: Ledger,
    ingest_fn: Callable[..., IngestSummary] = ingest,
) -> list[str]:
    """Ingest, under the ledger's lock, every delivery the ledger does not hold; returns their
    plate ids. A delivery that fails is not recorded (the error propagates; earlier ones stay).
    `ingest_fn` (source, out, params) -> summary: `ingest`, or one with expectations."""
    added = []
    with ledger.lock():
        done = ledger.done()
        for delivery in deliveries:
            if (delivery.plate_id, delivery.checksum) in done:
                continue
            with tempfile.TemporaryDirectory(prefix="phenexplain-inbox-") as staging:
                folder = delivery.fetch(Path(staging))
                summary = ingest_fn(folder, cropset, params)
            ledger.record(delivery, summary)
            log.info("ingested delivery %s into %s", delivery.plate_id, cropset)
            added.append(delivery.plate_id)
    return added
