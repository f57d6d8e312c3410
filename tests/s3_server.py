"""A local S3 for tests: moto's server mode on a free loopback port, reached with s3fs.

Tests write and read eocube stores there through the same fsspec calls as on AWS, so
object-store behaviour (no folders, listings by prefix, ranged GETs, one request per
object) is exercised without a network. The session fixture :func:`s3` starts one
server for the whole run; each test makes the buckets it needs (:meth:`S3Server.bucket`)
so tests never see each other's objects. Credentials are dummies: moto accepts any.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

REGION = "eu-west-1"
"""A region other than us-east-1: for it S3 refuses an explicit location constraint,
which s3fs sends when it creates a bucket."""


@dataclass(frozen=True)
class S3Server:
    """A running moto S3 server.

    Attributes
    ----------
    endpoint : str
        ``http://127.0.0.1:<port>``.
    """

    endpoint: str

    @property
    def storage_options(self) -> dict[str, Any]:
        """fsspec options reaching this server (``storage_options=`` of eocube's calls)."""
        return {
            "endpoint_url": self.endpoint,
            "key": "eocube-test-key",
            "secret": "eocube-test-secret",
            "client_kwargs": {"region_name": REGION},
        }

    def filesystem(self) -> Any:
        """A fresh ``s3fs.S3FileSystem`` on this server (no cached listings)."""
        import s3fs

        return s3fs.S3FileSystem(skip_instance_cache=True, **self.storage_options)

    def bucket(self, prefix: str = "eocube", *, versioned: bool = False) -> str:
        """Create a new bucket and return its URL, ``s3://<prefix>-<random>``.

        Parameters
        ----------
        prefix : str
            The start of its name.
        versioned : bool
            Keep every version of each object (to tell whether an object was written
            again: a rewrite adds a version).
        """
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        fs = self.filesystem()
        fs.mkdir(name)
        if versioned:
            fs.call_s3(
                "put_bucket_versioning",
                Bucket=name,
                VersioningConfiguration={"Status": "Enabled"},
            )
        return f"s3://{name}"

    def versions(self, url: str) -> dict[str, int]:
        """Key -> number of stored versions, for every object under ``url``."""
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        counts: dict[str, int] = {}
        fs = self.filesystem()
        marker: dict[str, str] = {}
        while True:
            page = fs.call_s3("list_object_versions", Bucket=bucket, Prefix=prefix, **marker)
            for version in page.get("Versions", []):
                counts[version["Key"]] = counts.get(version["Key"], 0) + 1
            if not page.get("IsTruncated"):
                return counts
            marker = {
                "KeyMarker": page["NextKeyMarker"],
                "VersionIdMarker": page["NextVersionIdMarker"],
            }


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    """A moto S3 server on 127.0.0.1 for the whole session (started on first use)."""
    from moto.server import ThreadedMotoServer

    # one log line per request would end up in every test's captured output
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield S3Server(f"http://{host}:{port}")
    finally:
        server.stop()
