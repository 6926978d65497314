"""The MLflow training callback: every report goes through an outbox in the run folder.

A tracking server that is down, restarting or slow never stops or crashes training: records wait
in ``RUN/mlflow-outbox`` and are sent, in order and exactly once, when the server answers again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import requests
from mlflow.entities import Metric, RunTag
from mlflow.exceptions import MlflowException
from PIL import Image, ImageDraw, ImageFont

from phenexplain.errors import PhenexplainError
from phenexplain.fsutil import mark_output
from phenexplain.integrations.mlflow_tracking import (
    TAG,
    _http_limits,
    client,
    metric_key,
    reachable,
    redact,
    shown,
    tracking_uri,
)
from phenexplain.training.callbacks import RUN_KIND, Callback

log = logging.getLogger(__name__)

OUTBOX = "mlflow-outbox"
GRID_KEY = "samples"  # the image key of the labelled sample grids (a step slider in the UI)
_MAX_METRICS = 1000  # MLflow's limit per log_batch


class Outbox:
    """Records waiting for the tracking server, kept in a folder of the run.

    ``queue.jsonl`` holds one record per line, numbered (``seq``); ``sent.jsonl`` the numbers the
    server has acknowledged; ``files/`` the artifacts not yet uploaded; ``run.json`` the MLflow
    run the records belong to. Appends only, so a crash loses at most a half-written last line.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        (self.folder / "files").mkdir(parents=True, exist_ok=True)
        self.records = self._read("queue.jsonl")
        self.sent = {int(seq) for seq in self._read("sent.jsonl")}
        self.next_seq = max((r["seq"] for r in self.records), default=-1) + 1

    def _read(self, name: str) -> list:
        path, out = self.folder / name, []
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                with contextlib.suppress(json.JSONDecodeError):  # a line cut by a crash
                    out.append(json.loads(line))
        return out

    def _append(self, name: str, items: list) -> None:
        with (self.folder / name).open("a", encoding="utf-8") as fh:
            fh.write("".join(json.dumps(item, sort_keys=True) + "\n" for item in items))
            fh.flush()

    def bind(self, run_id: str | None) -> str:
        """Check or record the run this outbox belongs to; returns its id."""
        path = self.folder / "run.json"
        known = json.loads(path.read_text())["run_id"] if path.is_file() else None
        if run_id is None and known is None:
            raise PhenexplainError(
                f"no MLflow run recorded in {self.folder}; pass the run id from start_training_run"
            )
        if run_id is not None and known not in (None, run_id) and self.pending():
            raise PhenexplainError(
                f"{self.folder} holds unsent records of MLflow run {known}, not {run_id}; "
                "flush them (flush_outbox) or use a new run folder"
            )
        if run_id is not None and run_id != known:
            path.write_text(json.dumps({"run_id": run_id}) + "\n")
        return run_id if run_id is not None else str(known)

    def put(self, kind: str, **payload: Any) -> None:
        record = {"seq": self.next_seq, "kind": kind, **payload}
        self.next_seq += 1
        self._append("queue.jsonl", [record])
        self.records.append(record)

    def pending(self) -> list[dict]:
        return [r for r in self.records if r["seq"] not in self.sent]

    def done(self, records: list[dict]) -> None:
        self._append("sent.jsonl", [r["seq"] for r in records])
        self.sent.update(r["seq"] for r in records)


def _rank() -> int:
    """This process's rank under torch.distributed (or torchrun's RANK), else 0."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK") or 0)


def _numbers(stats: Mapping[str, Any], keep=lambda key: True) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in stats.items()
        if keep(k) and isinstance(v, int | float | np.number) and not isinstance(v, bool)
    }


def labelled_grid(
    grid: np.ndarray, conditions: list[str], title: str, min_cell: int = 96
) -> Image.Image:
    """A sample grid (uint8 [K * R, n * R, 3], a row per condition, `Trainer.sample_grid`)
    enlarged (nearest) to cells of at least `min_cell` px, each row's condition name on its
    left and `title` above. Rows are left unnamed when `conditions` do not match them."""
    cell = grid.shape[0] // max(len(conditions), 1)
    if cell * len(conditions) != grid.shape[0]:
        conditions, cell = [], grid.shape[0]
    scale = max(1, -(-min_cell // max(cell, 1)))
    big = Image.fromarray(np.ascontiguousarray(grid).repeat(scale, 0).repeat(scale, 1))
    try:
        font: ImageFont.ImageFont | ImageFont.FreeTypeFont = ImageFont.load_default(size=14)
    except (OSError, TypeError):  # Pillow without FreeType: the fixed bitmap font
        font = ImageFont.load_default()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    margin, header = 8, 24
    left = int(max((measure.textlength(c, font=font) for c in conditions), default=0)) + 2 * margin
    canvas = Image.new("RGB", (left + big.width, header + big.height), "white")
    canvas.paste(big, (left, header))
    draw = ImageDraw.Draw(canvas)
    draw.text((left, header // 2), title, fill="black", font=font, anchor="lm")
    for row, name in enumerate(conditions):
        middle = header + row * cell * scale + cell * scale // 2
        draw.text((margin, middle), name, fill="black", font=font, anchor="lm")
    return canvas


class MlflowCallback(Callback):
    """The training `Callback` that reports to an MLflow run, surviving tracking-server outages.

    Each tick's numbers (losses, img/s, augment_p, kimg, tick), each snapshot's FID/KID and its
    sample grid (artifact ``samples/fakes_kimgNNNN.NNN.png``, as the run folder has it, and
    the same grid enlarged with the condition names as the image ``samples`` at the snapshot's
    step, which the UI shows with a step slider) are first written to the outbox
    (``RUN/mlflow-outbox``), then sent. The step is the number of images shown
    (``int(kimg * 1000)``); the timestamp is fixed when the record is written. When the server
    does not answer ``/health``, sending waits `retry_interval` seconds (checked at the next call);
    `flush()` sends everything at once. A record is marked sent only after the server
    acknowledged it, so nothing is lost; a record whose acknowledgement was lost is sent again
    with the same key, step, timestamp and value, which the SQL store keeps once (its primary
    key), artifacts overwrite themselves, and an image whose key, step and timestamp the run
    already holds is not sent again: nothing is duplicated. `train` calls
    `finish()` when training ends (it ends the MLflow run); records still unsent stay in the
    outbox for `flush_outbox`.
    """

    def __init__(
        self,
        run_dir: str | Path,
        run_id: str | None = None,
        *,
        uri: str | None = None,
        retry_interval: float = 30.0,
        probe_timeout: float = 2.0,
        max_retries: int = 1,
        request_timeout: int = 10,
    ) -> None:
        self.uri = uri or tracking_uri()
        self.enabled = _rank() == 0  # the loop reports from rank 0 only; be safe all the same
        if not self.enabled:
            log.debug("MlflowCallback on rank %d: reporting nothing", _rank())
            return
        self.outbox = Outbox(Path(run_dir) / OUTBOX)
        mark_output(Path(run_dir), RUN_KIND, [OUTBOX])  # part of the run folder, as train sees it
        self.run_id = self.outbox.bind(run_id)
        self.client = client(self.uri)
        self.retry_interval, self.probe_timeout = retry_interval, probe_timeout
        self.max_retries, self.request_timeout = max_retries, request_timeout
        self._retry_at = 0.0
        self._down = False

    @staticmethod
    def _step(stats: Mapping[str, Any]) -> int:
        return round(stats["kimg"] * 1000) if "kimg" in stats else int(stats.get("tick", 0))

    def _put_metrics(self, values: Mapping[str, float], step: int) -> None:
        if values:
            now = int(time.time() * 1000)
            rows = [[metric_key(k), v, now, step] for k, v in sorted(values.items())]
            self.outbox.put("metrics", metrics=rows)

    def on_tick(self, stats: dict) -> None:
        """Queue the tick's numbers; send what is waiting if the server is (probably) up."""
        if not self.enabled:
            return
        self._put_metrics(_numbers(stats), self._step(stats))
        self.flush(force=False)

    def on_snapshot(self, stats: dict, grid: np.ndarray, checkpoint: Path) -> None:
        """Queue FID/KID (metrics), extractor ids (tags) and the sample grid (artifact)."""
        if not self.enabled:
            return
        step = self._step(stats)
        self._put_metrics(_numbers(stats, lambda k: k.startswith(("fid_", "kid_"))), step)
        extractors = {
            metric_key(f"{TAG}extractor.{k.removeprefix('extractor_')}"): str(v)
            for k, v in stats.items()
            if k.startswith("extractor_")
        }
        if extractors:
            self.outbox.put("tags", tags=redact(extractors))
        name = f"fakes_kimg{stats.get('kimg', step / 1000):08.3f}.png"
        path = self.outbox.folder / "files" / f"{self.outbox.next_seq:06d}" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(grid).save(path)
        rel = path.relative_to(self.outbox.folder).as_posix()
        self.outbox.put("artifact", path=rel, artifact_path="samples")
        kimg = stats.get("kimg", step / 1000)
        labelled = path.with_name(f"labelled_{name}")
        labelled_grid(grid, self._conditions(checkpoint), f"kimg {kimg:.3f}").save(labelled)
        rel = labelled.relative_to(self.outbox.folder).as_posix()
        now = int(time.time() * 1000)
        self.outbox.put("image", path=rel, key=GRID_KEY, step=step, timestamp=now)
        self.flush(force=False)

    def _conditions(self, checkpoint: Path) -> list[str]:
        """The condition names of the grid's rows, read once from the checkpoint (none when it
        cannot be read)."""
        if not hasattr(self, "_names"):
            from phenexplain.training.checkpoint import read_config

            try:
                self._names = read_config(checkpoint).conditions
            except (PhenexplainError, OSError) as exc:  # never stop training for a label
                log.warning("sample grids logged without condition names: %s", exc)
                self._names = []
        return self._names

    def flush(self, force: bool = True) -> bool:
        """Send every waiting record in order; True when nothing is left. Never raises for an
        unreachable server: without `force`, waits `retry_interval` after a failure."""
        pending = self.outbox.pending() if self.enabled else []
        if not pending:
            return True
        if not force and time.monotonic() < self._retry_at:
            return False
        if not reachable(self.uri, self.probe_timeout):
            return self._failed(len(pending), "no answer to /health")
        try:
            with _http_limits(self.max_retries, self.request_timeout):
                for group in _groups(pending):
                    self._send_or_drop(group)
                    self.outbox.done(group)
        except (MlflowException, requests.RequestException, OSError) as exc:
            return self._failed(len(self.outbox.pending()), f"{type(exc).__name__}: {exc}")
        if self._down:
            log.info("MLflow %s answers again; the outbox is sent", shown(self.uri))
        self._down = False
        return True

    def _failed(self, waiting: int, why: str) -> bool:
        self._retry_at = time.monotonic() + self.retry_interval
        level = logging.DEBUG if self._down else logging.WARNING
        log.log(level, "MLflow %s unavailable (%s); %d records wait in %s",
                shown(self.uri), why, waiting, self.outbox.folder)  # fmt: skip
        self._down = True
        return False

    def _send_or_drop(self, group: list[dict]) -> None:
        """Send `group`; a record the server refuses as invalid (4xx other than 429) is logged
        and dropped, so it cannot block the others (a refused merged batch is retried one
        record at a time). Other failures propagate."""
        try:
            self._send(group)
        except MlflowException as exc:
            status = exc.get_http_status_code()
            if not 400 <= status < 500 or status == 429:
                raise
            if len(group) > 1:
                for record in group:
                    self._send_or_drop([record])
                return
            log.error("MLflow refused %s record %d (dropped): %s",
                      group[0]["kind"], group[0]["seq"], exc)  # fmt: skip

    def _send(self, group: list[dict]) -> None:
        kind = group[0]["kind"]
        if kind == "metrics":
            rows = [m for record in group for m in record["metrics"]]
            self.client.log_batch(
                self.run_id, metrics=[Metric(k, v, ts, s) for k, v, ts, s in rows]
            )
        elif kind == "tags":
            self.client.log_batch(
                self.run_id, tags=[RunTag(k, v) for k, v in group[0]["tags"].items()]
            )
        elif kind == "image":
            record = group[0]
            path = self.outbox.folder / record["path"]
            if path.is_file() and not self._image_logged(record):
                with Image.open(path) as image:
                    self.client.log_image(self.run_id, image.convert("RGB"), key=record["key"],
                                          step=record["step"], timestamp=record["timestamp"],
                                          synchronous=True)  # fmt: skip
            path.unlink(missing_ok=True)
        else:
            path = self.outbox.folder / group[0]["path"]
            if path.is_file():  # gone: sent before a crash hid the acknowledgement
                self.client.log_artifact(self.run_id, str(path), group[0]["artifact_path"])
                path.unlink()

    def _image_logged(self, record: dict) -> bool:
        """Whether the run holds the image of `record` already (sent before its acknowledgement
        was lost): MLflow names an image's files by key, step and timestamp, then a random id,
        and uploads the compressed copy last."""
        stem = f"images/{record['key']}+step+{record['step']}+timestamp+{record['timestamp']}+"
        return any(
            f.path.startswith(stem) and f.path.endswith("+compressed.webp")
            for f in self.client.list_artifacts(self.run_id, "images")
        )

    def finish(self, status: str = "FINISHED") -> bool:
        """Flush, then end the run with `status` if everything was sent; True if so."""
        if not self.flush():
            return False
        if not self.enabled:
            return True
        try:
            with _http_limits(self.max_retries, self.request_timeout):
                self.client.set_terminated(self.run_id, status)
        except (MlflowException, requests.RequestException) as exc:
            log.warning("MLflow run %s not ended: %s", self.run_id, exc)
            return False
        return True


def _groups(records: list[dict]) -> Iterator[list[dict]]:
    """Consecutive metric records merged into batches of at most 1000 metrics; others alone."""
    batch: list[dict] = []
    size = 0
    for record in records:
        n = len(record["metrics"]) if record["kind"] == "metrics" else 0
        if batch and (record["kind"] != "metrics" or size + n > _MAX_METRICS):
            yield batch
            batch, size = [], 0
        if record["kind"] != "metrics":
            yield [record]
            continue
        batch.append(record)
        size += n
    if batch:
        yield batch


def flush_outbox(run_dir: str | Path, uri: str | None = None) -> bool:
    """Send what a run folder's outbox still holds (e.g. after training ended during an outage)."""
    return MlflowCallback(run_dir, uri=uri).flush()
