"""A local S3 for tests: moto's ThreadedMotoServer on 127.0.0.1 with a free port and dummy credentials.

Use the fixtures in a test module (or list this module in ``pytest_plugins``)::

    from tests.s3_server import s3, s3_endpoint  # noqa: F401  (pytest fixtures)

    def test_x(s3):
        fs = s3.filesystem()
        fs.pipe(s3.uri("a/b.txt").removeprefix("s3://"), b"...")
        list_inputs(InputConfig(uri=s3.uri("a"), storage_options=s3.storage_options))

``s3_endpoint`` (session) starts one server and sets dummy ``AWS_*`` credentials in the environment for the
session (real credential files are hidden); ``s3`` (per test) creates a fresh bucket on it. The server runs in
a thread of the test process, so Ray workers on this machine can reach it too.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

DUMMY_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": "/nonexistent/froq-test-aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/froq-test-aws-credentials",
}


@dataclass(frozen=True)
class S3Location:
    """A bucket on the local S3 server and the s3fs options that reach it."""

    endpoint_url: str
    bucket: str
    storage_options: dict[str, Any] = field(default_factory=dict)

    def uri(self, *parts: str) -> str:
        """``s3://<bucket>/<parts joined by />``."""
        key = "/".join(p.strip("/") for p in parts if p.strip("/"))
        return f"s3://{self.bucket}/{key}" if key else f"s3://{self.bucket}"

    def filesystem(self):
        """The s3fs filesystem for :attr:`storage_options` (fsspec's cached instance: the one the code under
        test gets for the same options, so its client is built once per session)."""
        import fsspec

        return fsspec.filesystem("s3", **self.storage_options)


@contextmanager
def running_s3_server() -> Iterator[str]:
    """Start moto's S3 server on 127.0.0.1 (a free port chosen by the OS); yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def storage_options_for(endpoint_url: str) -> dict[str, Any]:
    """s3fs options for the local server (credentials included, so they work in any process)."""
    return {
        "endpoint_url": endpoint_url,
        "key": DUMMY_ENV["AWS_ACCESS_KEY_ID"],
        "secret": DUMMY_ENV["AWS_SECRET_ACCESS_KEY"],
    }


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """Endpoint URL of a session-wide local S3 server; dummy AWS credentials are set in the environment."""
    with pytest.MonkeyPatch.context() as mp:
        for name, value in DUMMY_ENV.items():
            mp.setenv(name, value)
        for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
            mp.delenv(name, raising=False)
        with running_s3_server() as endpoint:
            yield endpoint


@pytest.fixture
def s3(s3_endpoint: str) -> S3Location:
    """A fresh, empty bucket on the local S3 server."""
    location = S3Location(s3_endpoint, f"froq-test-{uuid.uuid4().hex[:12]}", storage_options_for(s3_endpoint))
    location.filesystem().mkdir(location.bucket)
    return location
