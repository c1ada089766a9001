"""Scale-out without a shared disk: 2 `customify api` + 2 `customify worker` processes, each with its OWN
data dir, on Postgres + Redis + SeaweedFS (storage_url).

- every design is published, every preview served by both APIs, mails carry thumbnails read from the
  store, deletes remove the objects;
- a worker killed with SIGKILL in the middle of its upload leaves no referenced partial object, and its
  orphan is gone after the sweeper's grace period;
- the store unreachable for 10 s: renders retry, health says so, nothing is lost.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, select

from customify import db
from customify.models import Design
from tests.conftest import eventually, open_image
from tests.seaweedfs import SECRET, SeaweedFS
from tests.test_postgres import REDIS_URL, pg_database, pytestmark, redis_queue_name  # noqa: F401
from tests.test_scaleout import Deployment, _counts, _post, _wait_all_published

DESIGNS = 200


class SeparateDisks(Deployment):
    """Every process gets a data dir of its own: nothing on disk is shared."""

    env: dict[str, str]  # extra environment per process name, set by the test

    def _spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CUSTOMIFY_") and k != "DATABASE_URL"}
        env.update(self.env.pop(name, {}))
        log = (self.root / f"{name}.log").open("wb")
        self.logs.append(log)
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "customify",
                *args,
                "--config",
                str(self.config),
                "--data-dir",
                str(self.root / f"data-{name}"),
            ],
            cwd=self.root,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.procs[name] = proc
        return proc


@pytest.fixture
def on_s3(tmp_path: Path, seaweedfs: SeaweedFS) -> Iterator[tuple[SeparateDisks, SeaweedFS, str]]:
    bucket = seaweedfs.new_bucket()
    with pg_database() as url, redis_queue_name() as name:
        config = tmp_path / "customify.toml"
        config.write_text(
            f'database_url = "{url}"\n'
            f'queue_url = "{REDIS_URL}"\n'
            f'queue_name = "{name}"\n'
            f'storage_url = "{seaweedfs.url(bucket, "prod")}"\n'
            "[render]\n"
            "lease_seconds = 4.0\n"  # a killed worker's renders come back within seconds
            "sweep_interval = 1.0\n"
            "worker_nice = 0\n"
            "[storage]\n"
            f'endpoint_url = "{seaweedfs.endpoint}"\n'
            'region = "us-east-1"\n'
            "timeout_seconds = 1.0\n"
            "orphan_grace_seconds = 3.0\n"
        )
        dep = SeparateDisks(config, tmp_path, url)
        dep.env = {}
        try:
            yield dep, seaweedfs, bucket
        finally:
            dep.stop()
            for proc_name in dep.procs:
                assert SECRET not in dep.log(proc_name), f"{proc_name} printed the store's secret"


def _referenced(database_url: str) -> dict[str, tuple[str, str]]:
    engine = create_engine(db.driver_url(database_url))
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(Design.id, Design.preview_key, Design.thumbnail_key)).all()
    finally:
        engine.dispose()
    return {r[0]: (r[1], r[2]) for r in rows}


def _start(dep: SeparateDisks) -> None:
    dep.start_worker("worker-1")
    dep.start_worker("worker-2")
    dep.start_api("api-1")
    dep.start_api("api-2")
    dep.wait_healthy(workers=2, timeout=60)


@pytest.mark.slow
def test_two_apis_two_workers_separate_disks_on_s3(on_s3: tuple[SeparateDisks, SeaweedFS, str]) -> None:
    dep, weed, bucket = on_s3
    _start(dep)
    ids = asyncio.run(_post(dep.apis, DESIGNS))
    counts = _wait_all_published(dep, ids, timeout=240)
    assert counts == {"published": DESIGNS}, counts

    # Every preview from both APIs, though each was drawn on another process's disk (or none of theirs).
    referenced = _referenced(dep.database_url)
    for api in dep.apis:
        with httpx.Client(base_url=api, timeout=30) as client:
            for design_id in ids:
                response = client.get(f"/api/v1/designs/{design_id}/preview.png")
                assert response.status_code == 200, (api, design_id, response.text)
                assert response.content[:8] == b"\x89PNG\r\n\x1a\n"
            sample = open_image(client.get(f"/api/v1/designs/{ids[0]}/preview.png").content).convert("RGB")
            assert sample.getpixel((5, 5)) != (0, 0, 0)  # drawn, not a blank object
    keys = set(weed.keys(bucket, "prod/renders/"))
    assert keys == {f"prod/{k}" for pair in referenced.values() for k in pair}  # exactly one pair each
    for name in dep.procs:  # no render stays on any machine's disk
        assert not [p for p in (dep.root / f"data-{name}").rglob("*.png")], name

    # One mail per design, each with the thumbnail read from the store (outbox: the sending worker's disk).
    mails = eventually(
        lambda: (
            found
            if len(
                found := [
                    p for name in ("worker-1", "worker-2") for p in (dep.root / f"data-{name}" / "outbox").glob("*.eml")
                ]
            )
            == DESIGNS
            else None
        ),
        seconds=60,
        interval=0.5,
    )
    for path in mails[:20]:
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        (attachment,) = list(message.iter_attachments())
        assert open_image(attachment.get_content()).size[0] == 300

    # Deletes through either API remove the objects.
    for i, design_id in enumerate(ids[:10]):
        assert httpx.delete(f"{dep.apis[i % 2]}/api/v1/designs/{design_id}", timeout=10).status_code == 204
    for design_id in ids[:10]:
        assert weed.keys(bucket, f"prod/renders/{design_id}/") == []
    for api in dep.apis:
        health = httpx.get(f"{api}/api/v1/system/health", timeout=10).json()
        assert health["checks"]["storage"]["ok"] is True, health


@pytest.mark.slow
def test_sigkill_mid_upload_leaves_no_partial_object_and_no_orphan(on_s3: tuple[SeparateDisks, SeaweedFS, str]) -> None:
    dep, weed, bucket = on_s3
    # worker-1 dies (os._exit, as SIGKILL: no clean-up) once its first preview is stored, its thumbnail's
    # upload still under way beside it (or just done).
    dep.env["worker-1"] = {"CUSTOMIFY_CRASH_AT": "mid-upload"}
    dep.start_worker("worker-1")
    dep.start_api("api-1")
    dep.wait_healthy(workers=1, timeout=60)
    ids = asyncio.run(_post(dep.apis, 6))
    eventually(lambda: dep.procs["worker-1"].poll() is not None, seconds=60, interval=0.2)
    assert dep.procs["worker-1"].returncode == 137
    left = weed.keys(bucket, "prod/renders/")
    # The dead renders' objects (its two threads may both have been uploading), unreferenced below.
    assert any(k.endswith(".png") for k in left) and len(left) <= 4
    assert {k.split("/")[2] for k in left} <= set(ids)
    for key in left:  # whole or absent, never partial: an S3 PUT is atomic
        assert open_image(weed.client().get_object(Bucket=bucket, Key=key)["Body"].read()).size[0] > 0
    assert all(pair == (None, None) for pair in _referenced(dep.database_url).values())

    dep.start_worker("worker-2")
    counts = _wait_all_published(dep, ids, timeout=120)
    assert counts == {"published": 6}, counts
    referenced = _referenced(dep.database_url)
    for preview, thumbnail in referenced.values():  # every referenced object is whole
        assert weed.client().head_object(Bucket=bucket, Key=f"prod/{thumbnail}")["ContentLength"] > 0
        body = weed.client().get_object(Bucket=bucket, Key=f"prod/{preview}")["Body"].read()
        assert open_image(body).size[0] > 0
    wanted = {f"prod/{k}" for pair in referenced.values() for k in pair}
    # The orphan goes once older than storage.orphan_grace_seconds (3 s here), at a sweep.
    eventually(lambda: set(weed.keys(bucket, "prod/renders/")) == wanted, seconds=30, interval=0.5)


@pytest.mark.slow
def test_store_unreachable_for_10_seconds_nothing_lost(on_s3: tuple[SeparateDisks, SeaweedFS, str]) -> None:
    dep, weed, _ = on_s3
    _start(dep)
    first = asyncio.run(_post(dep.apis, 5))
    assert _wait_all_published(dep, first, timeout=60) == {"published": 5}
    weed.pause()
    try:
        during = asyncio.run(_post(dep.apis, 20))  # creates need the database and queue only
        health: dict[str, Any] = eventually(
            lambda: (
                h if (h := httpx.get(f"{dep.apis[0]}/api/v1/system/health", timeout=20)).status_code == 503 else None
            ),
            seconds=20,
            interval=0.5,
        ).json()
        assert health["checks"]["storage"]["ok"] is False and "unreachable" in health["checks"]["storage"]["detail"]
        away = httpx.get(f"{dep.apis[0]}/api/v1/designs/{first[0]}/preview.png", timeout=30)  # never read yet
        assert away.status_code == 503 and away.headers["content-type"].startswith("application/problem+json")
        assert weed.endpoint not in away.text  # the store's address is not the client's business
        time.sleep(max(0.0, 10 - 2))
        assert _counts(dep.database_url).get("failed", 0) == 0
    finally:
        weed.resume()
    counts = _wait_all_published(dep, first + during, timeout=180)
    assert counts == {"published": 25}, counts
    eventually(
        lambda: httpx.get(f"{dep.apis[1]}/api/v1/system/health", timeout=10).status_code == 200,
        seconds=30,
        interval=0.5,
    )
    for design_id in during:
        assert httpx.get(f"{dep.apis[1]}/api/v1/designs/{design_id}/preview.png", timeout=10).status_code == 200
    for name in ("worker-1", "worker-2"):
        assert "Traceback" not in dep.log(name), dep.log(name)[-3000:]
