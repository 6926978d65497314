"""Small boto3 helpers for S3 (or any S3-compatible store: MinIO, moto): list, download, upload.

Credentials come only from the environment or the AWS config files, through boto3's usual chain;
they are never passed in, logged or written anywhere. The endpoint comes from
``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL`` or ``MLFLOW_S3_ENDPOINT_URL`` (first set wins), so
the same variables that point MLflow at MinIO point these helpers there too. Every client has
connect/read timeouts and botocore's "standard" retry mode; a failure that outlasts the retries
becomes one `PhenexplainError` naming the bucket, the key and what to check.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import boto3
from boto3.exceptions import Boto3Error
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from phenexplain.errors import PhenexplainError
from phenexplain.fsutil import file_sha256

log = logging.getLogger(__name__)

ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL")
SHA256_METADATA = "sha256"  # user metadata key written by `upload_folder`
_CHUNK = 1 << 20


@dataclass(frozen=True)
class S3Object:
    """One listed object: its full key, size in bytes and ETag (quotes removed)."""

    key: str
    size: int
    etag: str


def endpoint_url() -> str | None:
    """The S3 endpoint from the environment, or None for AWS's own endpoints."""
    for name in ENDPOINT_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def client(
    *,
    max_attempts: int = 5,
    connect_timeout: float = 5.0,
    read_timeout: float = 60.0,
    endpoint: str | None = None,
):
    """A boto3 S3 client: credentials from the environment/AWS config only, `endpoint` (default
    `endpoint_url()`), timeouts in seconds and up to `max_attempts` tries per call (standard
    retry mode: exponential backoff with jitter)."""
    if max_attempts < 1:
        raise PhenexplainError(f"max_attempts must be at least 1, not {max_attempts}")
    config = Config(
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"mode": "standard", "total_max_attempts": max_attempts},
    )
    endpoint = endpoint or endpoint_url()
    s3 = boto3.session.Session().client("s3", endpoint_url=endpoint, config=config)
    log.debug("S3 client for endpoint %s", endpoint or "AWS default")
    return s3


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """'s3://bucket/some/prefix' -> ('bucket', 'some/prefix'); the key part may be empty."""
    scheme, sep, rest = str(uri).partition("://")
    if scheme.lower() != "s3" or not sep:
        raise PhenexplainError(f"{uri!r} is not an S3 URI; write it as s3://bucket/prefix")
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise PhenexplainError(f"{uri!r} names no bucket; write it as s3://bucket/prefix")
    return bucket, key


def _folder_prefix(key: str) -> str:
    """A key prefix that only matches inside the 'folder' (so 'p1' does not match 'p10/...')."""
    return key if not key or key.endswith("/") else key + "/"


@contextlib.contextmanager
def _explained(s3, action: str, bucket: str, key: str = "") -> Iterator[None]:
    """Turn botocore failures (after its retries) into a PhenexplainError saying what to check."""
    where = f"s3://{bucket}/{key}"
    try:
        yield
    except NoCredentialsError:
        raise PhenexplainError(
            f"cannot {action} {where}: no AWS credentials found; set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
        ) from None
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "unknown"))
        hints = {
            "NoSuchBucket": f"bucket {bucket!r} does not exist; create it or fix the URI",
            "NoSuchKey": "no object has that key; check the URI",
            "404": "no object has that key; check the URI",
            "AccessDenied": "access denied; check the credentials' permissions on this bucket",
            "403": "access denied; check the credentials' permissions on this bucket",
            "InvalidAccessKeyId": "the access key is not known to this endpoint; check "
            "AWS_ACCESS_KEY_ID and the endpoint",
            "SignatureDoesNotMatch": "the secret key does not match; check AWS_SECRET_ACCESS_KEY",
        }
        hint = hints.get(code, f"the store answered {code}: {error.get('Message', '')}".strip())
        raise PhenexplainError(f"cannot {action} {where}: {hint}") from None
    except Boto3Error as exc:  # s3transfer's wrapper (upload_file) around the errors above
        raise PhenexplainError(f"cannot {action} {where}: {exc}") from None
    except BotoCoreError as exc:
        endpoint = s3.meta.endpoint_url
        raise PhenexplainError(
            f"cannot {action} {where}: {type(exc).__name__} talking to {endpoint} after retries; "
            "check that the endpoint is up and reachable (AWS_ENDPOINT_URL / "
            "MLFLOW_S3_ENDPOINT_URL) and the network"
        ) from None


def list_prefix(uri: str, *, s3=None) -> list[S3Object]:
    """Every object under the 'folder' `uri` (recursive), sorted by key."""
    bucket, key = parse_s3_uri(uri)
    prefix = _folder_prefix(key)
    s3 = s3 or client()
    log.info("listing bucket %s at %s", bucket, s3.meta.endpoint_url)
    found: list[S3Object] = []
    with _explained(s3, "list", bucket, prefix):
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            found.extend(
                S3Object(item["Key"], int(item["Size"]), str(item.get("ETag", "")).strip('"'))
                for item in page.get("Contents", [])
            )
    return sorted(found, key=lambda o: o.key)


def _safe_relative(key: str, prefix: str) -> PurePosixPath:
    """The part of `key` below `prefix`, refused when it could leave the destination folder."""
    rel = key[len(prefix) :]
    path = PurePosixPath(rel)
    if not rel or rel.startswith("/") or "\\" in rel or ".." in path.parts or path.is_absolute():
        raise PhenexplainError(
            f"refusing to download key {key!r}: it would be written outside the destination "
            "folder (absolute path or '..'); rename the object"
        )
    return path


def download_prefix(uri: str, dest: str | Path, *, s3=None, verify: bool = False) -> list[Path]:
    """Download every object under `uri` into `dest`, keeping the key layout below the prefix.

    All keys are checked before anything is written: a key that would escape `dest` (``..``,
    absolute paths) stops the download. With `verify`, objects carrying a ``sha256`` metadata
    entry (see `upload_folder`) are hashed after download and compared."""
    bucket, key = parse_s3_uri(uri)
    prefix = _folder_prefix(key)
    s3 = s3 or client()
    objects = [o for o in list_prefix(uri, s3=s3) if not o.key.endswith("/")]
    dest = Path(dest)
    root = dest.resolve()
    plan = []
    for obj in objects:
        target = dest / _safe_relative(obj.key, prefix)
        if not target.resolve().is_relative_to(root):
            raise PhenexplainError(f"refusing to download {obj.key!r}: it resolves outside {dest}")
        plan.append((obj.key, target))
    log.info("downloading %d objects from bucket %s to %s", len(plan), bucket, dest)
    for obj_key, target in plan:
        target.parent.mkdir(parents=True, exist_ok=True)
        with _explained(s3, "download", bucket, obj_key):
            s3.download_file(bucket, obj_key, str(target))
            if verify:
                _verify(s3, bucket, obj_key, target)
    return [target for _, target in plan]


def _verify(s3, bucket: str, key: str, path: Path) -> None:
    expected = s3.head_object(Bucket=bucket, Key=key).get("Metadata", {}).get(SHA256_METADATA)
    if expected and expected != file_sha256(path):
        path.unlink(missing_ok=True)
        raise PhenexplainError(
            f"s3://{bucket}/{key} does not match its recorded sha256; upload it again"
        )


def upload_folder(folder: str | Path, uri: str, *, s3=None) -> list[str]:
    """Upload every file under `folder` to the 'folder' `uri`; each object records its sha256 in
    its metadata. Returns the keys written, sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PhenexplainError(f"cannot upload {folder}: it is not a folder")
    bucket, key = parse_s3_uri(uri)
    prefix = _folder_prefix(key)
    s3 = s3 or client()
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    log.info("uploading %d files to bucket %s at %s", len(files), bucket, s3.meta.endpoint_url)
    keys = []
    for path in files:
        obj_key = prefix + path.relative_to(folder).as_posix()
        extra = {"Metadata": {SHA256_METADATA: file_sha256(path)}}
        with _explained(s3, "upload to", bucket, obj_key):
            s3.upload_file(str(path), bucket, obj_key, ExtraArgs=extra)
        keys.append(obj_key)
    return keys


def sha256(uri: str, *, s3=None) -> str:
    """The sha256 hex digest of the object at `uri`, streamed (nothing is written to disk)."""
    bucket, key = parse_s3_uri(uri)
    if not key or key.endswith("/"):
        raise PhenexplainError(f"{uri!r} names a prefix, not an object")
    s3 = s3 or client()
    digest = hashlib.sha256()
    with _explained(s3, "read", bucket, key):
        body = s3.get_object(Bucket=bucket, Key=key)["Body"]
        for block in iter(lambda: body.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()
