"""boto3 helpers against a real S3-compatible server (moto, loopback)."""

from __future__ import annotations

import hashlib
import time

import boto3
import pytest

from phenexplain.errors import PhenexplainError
from phenexplain.integrations import s3
from tests.integrations.conftest import SECRET, free_port


@pytest.fixture
def bucket(moto_endpoint, request):
    name = "plates-" + request.node.name.replace("_", "-")[:40].lower()
    boto3.client("s3", endpoint_url=moto_endpoint).create_bucket(Bucket=name)
    return name


def test_upload_list_download_round_trip(bucket, tmp_path):
    src = tmp_path / "src"
    (src / "plate1" / "A01").mkdir(parents=True)
    (src / "plate1" / "A01" / "f1.tif").write_bytes(b"\x00\x01" * 500)
    (src / "plate1" / "meta.csv").write_text("well,condition\nA01,DMSO\n")
    (src / "top.txt").write_text("top")
    keys = s3.upload_folder(src, f"s3://{bucket}/inbox/run1")
    assert keys == [
        "inbox/run1/plate1/A01/f1.tif",
        "inbox/run1/plate1/meta.csv",
        "inbox/run1/top.txt",
    ]
    listed = s3.list_prefix(f"s3://{bucket}/inbox/run1")
    assert [o.key for o in listed] == keys
    assert [o.size for o in listed] == [
        (src / k.removeprefix("inbox/run1/")).stat().st_size for k in keys
    ]

    got = s3.download_prefix(f"s3://{bucket}/inbox/run1/", tmp_path / "dest", verify=True)
    assert sorted(p.relative_to(tmp_path / "dest").as_posix() for p in got) == [
        "plate1/A01/f1.tif", "plate1/meta.csv", "top.txt",
    ]  # fmt: skip
    for path in got:
        original = src / path.relative_to(tmp_path / "dest")
        assert path.read_bytes() == original.read_bytes()
    digest = hashlib.sha256((src / "plate1" / "A01" / "f1.tif").read_bytes()).hexdigest()
    assert s3.sha256(f"s3://{bucket}/inbox/run1/plate1/A01/f1.tif") == digest


def test_a_prefix_is_a_folder_not_a_string_prefix(bucket):
    client = boto3.client("s3")
    for key in ("p1/a.txt", "p10/b.txt"):
        client.put_object(Bucket=bucket, Key=key, Body=b"x")
    assert [o.key for o in s3.list_prefix(f"s3://{bucket}/p1")] == ["p1/a.txt"]


def test_verify_catches_a_changed_object(bucket, tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.bin").write_bytes(b"original")
    s3.upload_folder(tmp_path / "src", f"s3://{bucket}/v")
    boto3.client("s3").copy_object(  # same metadata (old sha256), other bytes
        Bucket=bucket, Key="v/a.bin", CopySource={"Bucket": bucket, "Key": "v/a.bin"},
        MetadataDirective="REPLACE", Metadata={"sha256": hashlib.sha256(b"other").hexdigest()},
    )  # fmt: skip
    with pytest.raises(PhenexplainError, match="does not match its recorded sha256"):
        s3.download_prefix(f"s3://{bucket}/v", tmp_path / "dest", verify=True)


@pytest.mark.parametrize(
    "bad_key", ["in/../../escape.txt", "in//etc/escape.txt", "in/a/../../../x"]
)
def test_keys_that_would_escape_the_destination_are_refused(bucket, tmp_path, bad_key):
    client = boto3.client("s3")
    client.put_object(Bucket=bucket, Key="in/fine.txt", Body=b"ok")
    client.put_object(Bucket=bucket, Key=bad_key, Body=b"evil")
    assert bad_key in [o.key for o in s3.list_prefix(f"s3://{bucket}/in")]  # stored as written
    dest = tmp_path / "deep" / "dest"
    with pytest.raises(PhenexplainError, match="refusing to download"):
        s3.download_prefix(f"s3://{bucket}/in", dest)
    assert not any(tmp_path.rglob("*.txt")), "nothing may be written when a key is refused"


def test_missing_bucket_is_a_clear_error(moto_endpoint, tmp_path):
    with pytest.raises(PhenexplainError, match="bucket 'no-such-bucket' does not exist"):
        s3.list_prefix("s3://no-such-bucket/x")
    (tmp_path / "a.txt").write_text("a")
    with pytest.raises(PhenexplainError, match=r"cannot upload to s3://no-such-bucket/x/a\.txt"):
        s3.upload_folder(tmp_path, "s3://no-such-bucket/x")


def test_unreachable_endpoint_fails_after_retries_with_a_clear_message():
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    client = s3.client(endpoint=dead, max_attempts=2, connect_timeout=0.5, read_timeout=1)
    start = time.monotonic()
    with pytest.raises(PhenexplainError) as info:
        s3.list_prefix("s3://some-bucket/plates", s3=client)
    assert time.monotonic() - start < 15
    message = str(info.value)
    assert "s3://some-bucket/plates/" in message and "reachable" in message
    assert SECRET not in message


def test_uri_and_argument_errors(tmp_path):
    assert s3.parse_s3_uri("s3://b/a/b/c") == ("b", "a/b/c")
    assert s3.parse_s3_uri("s3://b") == ("b", "")
    for bad in ("http://b/x", "s3:///x", "b/x"):
        with pytest.raises(PhenexplainError, match=r"S3 URI|no bucket"):
            s3.parse_s3_uri(bad)
    with pytest.raises(PhenexplainError, match="not a folder"):
        s3.upload_folder(tmp_path / "missing", "s3://b/x")
    with pytest.raises(PhenexplainError, match="at least 1"):
        s3.client(max_attempts=0)


def test_endpoint_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", "http://127.0.0.1:9")
    assert s3.endpoint_url() == "http://127.0.0.1:9"
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:8")
    assert s3.client().meta.endpoint_url == "http://127.0.0.1:8"
