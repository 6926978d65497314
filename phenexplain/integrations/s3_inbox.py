"""A plate inbox on S3: each "folder" under the inbox prefix is one delivery (see
`phenexplain.data.inbox`); its checksum is computed from the listed keys, sizes and ETags, so no
object is downloaded until the delivery is known to be new."""

from __future__ import annotations

import hashlib
from pathlib import Path

from phenexplain.data.inbox import Delivery
from phenexplain.integrations import s3 as s3lib


def s3_deliveries(uri: str) -> list[Delivery]:
    """The deliveries under s3://bucket/prefix/, sorted by name."""
    bucket, prefix = s3lib.parse_s3_uri(uri)
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    groups: dict[str, list[s3lib.S3Object]] = {}
    for obj in s3lib.list_prefix(uri):
        rest = obj.key[len(prefix) :]
        name, sep, _ = rest.partition("/")
        if sep and name and not name.startswith("."):
            groups.setdefault(name, []).append(obj)
    deliveries = []
    for name, objects in sorted(groups.items()):
        digest = hashlib.sha256()
        for obj in sorted(objects, key=lambda o: o.key):
            digest.update(f"{obj.key[len(prefix) :]}\0{obj.size}\0{obj.etag}\n".encode())
        source = f"s3://{bucket}/{prefix}{name}/"

        def fetch(staging: Path, source: str = source, name: str = name) -> Path:
            s3lib.download_prefix(source, staging / name)
            return staging / name

        deliveries.append(Delivery(name, digest.hexdigest(), fetch))
    return deliveries
