"""The S3 store goes down while an inbox delivery is being downloaded: botocore retries with
backoff, the ingest then fails with a message saying what to check, and nothing is recorded as
done. Once the store is back, the same delivery is ingested, and recorded, exactly once.

The outage is real: the test's own moto server process is killed, nothing is mocked."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import boto3
import pytest

from phenexplain.config import load_params
from phenexplain.data import cropset as cs
from phenexplain.data.inbox import Ledger, ingest_new
from phenexplain.data.synthetic import generate_plates
from phenexplain.errors import PhenexplainError
from phenexplain.integrations import s3
from phenexplain.integrations.s3_inbox import s3_deliveries
from tests.conftest import REPO, small_spec

BUCKET = "plates-inbox-faults"
INBOX = f"s3://{BUCKET}/inbox"
RETRY_LOGGER = "botocore.retries.standard"  # logs each retry with its delay, at DEBUG


@pytest.fixture(scope="module")
def plate(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fault-plate") / "plate"
    spec = small_spec(
        "nfkb", seed=5, wells_per_condition=2, sites_per_well=2, height=256, width=320
    )
    generate_plates(spec, out)
    return out


def _publish(plate: Path) -> list[str]:
    """The bucket and one delivery, P01 (again after a restart: moto keeps its store in memory);
    returns the keys written."""
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    return s3.upload_folder(plate, f"{INBOX}/P01")


def _plates_in(cropset: Path) -> set[str]:
    """The plates a crop set holds; none when it was never written."""
    if not (cropset / cs.INFO).is_file():
        return set()
    return set(cs.CropSet(cropset).info["plates"])


class _StopServerOnDownload(logging.Handler):
    """Kills the server when the S3 helpers announce the download, i.e. after the delivery's
    objects were listed and before the first one is fetched."""

    def __init__(self, server) -> None:
        super().__init__()
        self.server, self.fired = server, False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.fired and record.getMessage().startswith("downloading"):
            self.fired = True
            self.server.kill()


def test_outage_during_download_fails_clearly_and_records_nothing(
    own_moto, plate, tmp_path, caplog
):
    params = load_params(REPO / "params.yaml").ingest.model_copy(
        update={"crop_size": 32, "min_images_per_condition": 2}
    )
    cropset, ledger = tmp_path / "cropset", Ledger(tmp_path / "state")
    keys = _publish(plate)
    deliveries = s3_deliveries(INBOX)
    assert [d.plate_id for d in deliveries] == ["P01"]

    caplog.set_level(logging.INFO, logger=s3.__name__)  # for the trigger below
    caplog.set_level(logging.DEBUG, logger=RETRY_LOGGER)  # last: it also sets caplog's handler
    trigger = _StopServerOnDownload(own_moto)
    logging.getLogger(s3.__name__).addHandler(trigger)
    start = time.monotonic()
    try:
        with pytest.raises(PhenexplainError) as failure:
            ingest_new(deliveries, cropset, params, ledger)
    finally:
        logging.getLogger(s3.__name__).removeHandler(trigger)
    elapsed = time.monotonic() - start

    assert trigger.fired, "the server was never stopped: the download was not announced"
    message = str(failure.value)
    assert any(f"s3://{BUCKET}/{key}:" in message for key in keys), message  # bucket and key
    assert own_moto.url in message and "check that the endpoint is up" in message
    delays = [
        float(r.args[0])
        for r in caplog.records
        if r.name == RETRY_LOGGER and r.getMessage().startswith("Retry needed, retrying")
    ]
    assert 2 <= len(delays) <= 5, f"expected a few retries before giving up, saw {delays}"
    assert elapsed >= sum(delays)  # each retry waited its backoff before trying again
    assert elapsed < 60
    assert ledger.entries() == []
    assert _plates_in(cropset) == set()

    own_moto.start()  # same port, empty store: deliver again
    _publish(plate)
    again = s3_deliveries(INBOX)
    assert [d.checksum for d in again] == [d.checksum for d in deliveries]  # same content
    assert ingest_new(again, cropset, params, ledger) == ["P01"]
    assert ingest_new(s3_deliveries(INBOX), cropset, params, ledger) == []
    entries = ledger.entries()
    assert [(e["plate_id"], e["checksum"]) for e in entries] == [("P01", deliveries[0].checksum)]
    assert entries[0]["plates_added"] and _plates_in(cropset) == set(entries[0]["plates_added"])
