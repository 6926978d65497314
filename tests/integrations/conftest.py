"""Real services on loopback for the integration tests: moto's S3 server and an MLflow server
(SQLite backend, artifacts proxied to a bucket on the moto server)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

SECRET = "phenexplain-test-secret-4b1d9e"  # fake credentials: moto accepts any
ACCESS_KEY = "phenexplain-test-key-id"
ARTIFACT_BUCKET = "phenexplain-mlflow"
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, timeout: float, proc: subprocess.Popen, log: Path) -> None:
    """Poll `url` until it answers 200; fail with the server's log if it dies or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(url, timeout=1).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    pytest.fail(f"{url} did not answer within {timeout} s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    """Kill the process group this fixture started (the server and its workers)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


@pytest.fixture(scope="session")
def aws_env():
    """Fake credentials and test-friendly MLflow HTTP settings, for the whole session."""
    with pytest.MonkeyPatch.context() as mp:
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
            mp.delenv(name, raising=False)
        mp.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        mp.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        mp.setenv("AWS_CONFIG_FILE", os.devnull)
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
        mp.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        mp.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        mp.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
        yield mp


class MotoServer:
    """`moto_server` on a loopback port; can be killed and started again on the same port. Its
    store is in memory: a restarted server is empty."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.port = folder, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30) -> None:
        log = self.folder / "moto.log"
        with log.open("a") as out:
            self.proc = subprocess.Popen(
                [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for(self.url + "/moto-api/", timeout, self.proc, log)

    def kill(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None


@pytest.fixture(scope="session")
def moto_endpoint(aws_env, tmp_path_factory):
    """A moto S3 server on a free loopback port; its URL is the session's S3 endpoint."""
    server = MotoServer(tmp_path_factory.mktemp("moto"))
    try:
        server.start()
        aws_env.setenv("AWS_ENDPOINT_URL", server.url)
        aws_env.setenv("MLFLOW_S3_ENDPOINT_URL", server.url)
        yield server.url
    finally:
        server.kill()


@pytest.fixture
def own_moto(aws_env, tmp_path, monkeypatch):
    """A moto S3 server for one test, which may stop and restart it (outages); S3 clients made
    during the test talk to it (AWS_ENDPOINT_URL), the session's server is left alone."""
    folder = tmp_path / "own-moto"
    folder.mkdir()
    server = MotoServer(folder)
    try:
        server.start()
        monkeypatch.setenv("AWS_ENDPOINT_URL", server.url)
        yield server
    finally:
        server.kill()


class MlflowServer:
    """`mlflow server` on loopback: SQLite in `folder`, artifacts on the moto bucket; can be
    killed and started again on the same port and database."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.port = folder, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120) -> None:
        log = self.folder / "server.log"
        cmd = [
            str(BIN / "mlflow"), "server",
            "--backend-store-uri", f"sqlite:///{self.folder / 'mlflow.db'}",
            "--artifacts-destination", f"s3://{ARTIFACT_BUCKET}/artifacts",
            "--serve-artifacts", "--host", "127.0.0.1", "--port", str(self.port),
            "--workers", "1",
        ]  # fmt: skip
        with log.open("a") as out:
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                cwd=self.folder, env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
            )  # fmt: skip
        wait_for(self.url + "/health", timeout, self.proc, log)

    def kill(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None


@pytest.fixture(scope="session")
def mlflow_server(moto_endpoint, aws_env, tmp_path_factory):
    """A running MLflow server; MLFLOW_TRACKING_URI points at it for the session."""
    import boto3

    boto3.client("s3", endpoint_url=moto_endpoint).create_bucket(Bucket=ARTIFACT_BUCKET)
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    server.start()
    aws_env.setenv("MLFLOW_TRACKING_URI", server.url)
    try:
        yield server
    finally:
        server.kill()
        import mlflow

        mlflow.set_tracking_uri(None)  # log_and_register set the global URI; leave none behind
