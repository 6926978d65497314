"""DVC's S3 remote against a real S3 server (moto on loopback): `dvc push`, lose the data and the
cache, `dvc pull`, same bytes. Credentials stay in the environment, never in the repository.

Two documented ways to point the remote at a non-AWS endpoint are checked:

- one command, the endpoint from the environment (``AWS_ENDPOINT_URL``, or the S3-only
  ``AWS_ENDPOINT_URL_S3``, which botocore reads): ``dvc remote add -d storage s3://bucket/prefix``;
- the endpoint written in ``.dvc/config``: the same command, then
  ``dvc remote modify storage endpointurl http://host:port``.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from pathlib import Path

import boto3
import pytest

from tests.integrations.conftest import ACCESS_KEY, BIN, SECRET


def _dvc(repo: Path, env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [str(BIN / "dvc"), *args], cwd=repo, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"dvc {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("endpoint_from", ["environment", "config"])
def test_push_then_pull_into_an_empty_checkout_gives_the_same_bytes(
    moto_endpoint, tmp_path, endpoint_from
):
    bucket = f"phenexplain-dvc-{endpoint_from}"
    boto3.client("s3").create_bucket(Bucket=bucket)  # DVC does not create it
    aws_files = tmp_path / "aws-config"  # empty: DVC's S3 remote rejects os.devnull here
    aws_files.write_text("")
    env = {
        **os.environ,
        "DVC_NO_ANALYTICS": "1",
        "DVC_GLOBAL_CONFIG_DIR": str(tmp_path / "dvc-global"),
        "DVC_SYSTEM_CONFIG_DIR": str(tmp_path / "dvc-system"),
        "DVC_SITE_CACHE_DIR": str(tmp_path / "dvc-site"),
        "AWS_CONFIG_FILE": str(aws_files),
        "AWS_SHARED_CREDENTIALS_FILE": str(aws_files),
    }
    if endpoint_from == "config":  # prove DVC uses the configured endpoint, not the environment
        for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "MLFLOW_S3_ENDPOINT_URL"):
            env.pop(name, None)
    else:
        assert env["AWS_ENDPOINT_URL"] == moto_endpoint

    repo = tmp_path / "repo"
    data = repo / "data"
    (data / "plate1").mkdir(parents=True)
    rng = random.Random(0)
    (data / "plate1" / "A01_s1.tif").write_bytes(rng.randbytes(40_000))
    (data / "plate1" / "A01_s2.tif").write_bytes(rng.randbytes(25_000))
    (data / "manifest.csv").write_text("plate,well,site\nplate1,A01,1\nplate1,A01,2\n")
    original = _tree(data)
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True, capture_output=True)
    _dvc(repo, env, "init", "-q")
    _dvc(repo, env, "add", "-q", "data")
    _dvc(repo, env, "remote", "add", "-d", "storage", f"s3://{bucket}/dvcstore")
    if endpoint_from == "config":
        _dvc(repo, env, "remote", "modify", "storage", "endpointurl", moto_endpoint)

    objects = len(original) + 1  # the files and the folder's .dir listing
    assert f"{objects} files pushed" in _dvc(repo, env, "push")
    stored = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix="dvcstore/")
    assert len(stored.get("Contents", [])) == objects

    shutil.rmtree(data)
    shutil.rmtree(repo / ".dvc" / "cache")
    _dvc(repo, env, "pull")
    assert _tree(data) == original

    config = (repo / ".dvc" / "config").read_text()
    assert f"s3://{bucket}/dvcstore" in config
    assert (moto_endpoint in config) == (endpoint_from == "config")
    assert not (repo / ".dvc" / "config.local").exists()
    for path in repo.rglob("*"):  # .dvc/config, .dvc/tmp, data.dvc, .git: no credential anywhere
        if path.is_file():
            content = path.read_bytes()
            assert ACCESS_KEY.encode() not in content and SECRET.encode() not in content, path
