"""The core end-to-end checks on Postgres + PostgresHuey and Postgres + Redis, against the real
servers of this machine; queue priorities on all three backends; unreachable servers at start-up
and while running; the shared worker registry and the scheduler lease.

Each test gets its own Postgres database (`customify_test_<hex>`, dropped after) and its own
Huey queue name on Redis (its keys deleted after), so tests never see each other's data, even
when two test runs share the servers.
"""

from __future__ import annotations

import asyncio
import os
import select
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis

from customify import db, heartbeats
from customify.config import Config
from customify.runtime import Runtime
from tests.conftest import LiveApp, open_image

PG_ADMIN = os.environ.get("CUSTOMIFY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("CUSTOMIFY_TEST_REDIS", "redis://127.0.0.1:6379/0")
ROOT = Path(__file__).resolve().parent.parent


def _reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


# .ci/run starts both servers; a missing one is a failure there, never a silent pass.
pytestmark = pytest.mark.skipif(not (_reachable(5432) and _reachable(6379)) and not os.environ.get("CI"),
                                reason="PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379 are needed")


# Isolation ------------------------------------------------------------------------------


@contextmanager
def pg_database(migrate: bool = True) -> Iterator[str]:
    """A fresh database on the test server, migrated to head; dropped afterwards."""
    name = f"customify_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    url = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    try:
        if migrate:
            engine = db.make_sync_engine(url)
            db.upgrade(engine)
            engine.dispose()
        yield url
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'drop database if exists "{name}" with (force)')


@contextmanager
def redis_queue_name() -> Iterator[str]:
    """A Huey queue name of its own on the shared Redis; its keys are deleted afterwards."""
    name = f"customify_test_{uuid.uuid4().hex[:12]}"
    try:
        yield name
    finally:
        with redis.Redis.from_url(REDIS_URL) as client:
            keys = list(client.scan_iter(match=f"huey.*{name}*", count=1000))
            if keys:
                client.delete(*keys)


BACKENDS = {
    "postgres+postgres": "postgres",
    "postgres+redis": "redis",
}


@pytest.fixture(params=list(BACKENDS))
def backend(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """Config overrides for one scaled-out configuration, isolated from every other test."""
    with pg_database() as url, redis_queue_name() as name:
        queue = url if BACKENDS[request.param] == "postgres" else REDIS_URL
        yield {"database_url": url, "queue_url": queue, "queue_name": name}


@pytest.fixture
def pg_live(backend: dict[str, str], make_live: Callable[..., LiveApp]) -> LiveApp:
    return make_live(**backend)


# The core end-to-end checks, on both scaled-out configurations ---------------------------


def test_debug_task_round_trips(pg_live: LiveApp) -> None:
    response = pg_live.client.post("/api/v1/system/debug-task")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["result"]["pong"] is True and body["result"]["worker"].startswith("Worker-")


def test_design_published_with_valid_preview(pg_live: LiveApp) -> None:
    created = pg_live.design()
    assert created["status"] == "draft"
    done = pg_live.wait(created["id"], 5)
    assert done["status"] == "published", done
    preview = pg_live.client.get(done["preview_url"])
    assert preview.status_code == 200 and preview.headers["content-type"] == "image/png"
    image = open_image(preview.content).convert("RGB")
    assert image.size == (1200, 1200)
    r, g, b = image.getpixel((600, 750))  # type: ignore[misc]
    assert abs(r - 0x1E) < 45 and abs(g - 0x3A) < 45 and abs(b - 0x8A) < 45  # the garment's colour
    thumb = pg_live.client.get(done["thumbnail_url"])
    assert thumb.status_code == 200 and open_image(thumb.content).format == "WEBP"


def test_health_200_then_503_when_consumer_stops(pg_live: LiveApp) -> None:
    ok = pg_live.client.get("/api/v1/system/health")
    assert ok.status_code == 200, ok.text
    checks = ok.json()["checks"]
    assert checks["database"]["ok"] and checks["queue"]["ok"] and checks["consumer"]["ok"]
    assert checks["queue"]["detail"].startswith(pg_live.rt.queue_kind)
    pg_live.rt.stop_consumer()
    bad = pg_live.client.get("/api/v1/system/health")
    assert bad.status_code == 503
    assert "no live worker" in bad.json()["checks"]["consumer"]["detail"]


def test_worker_status_fields(pg_live: LiveApp, monkeypatch: pytest.MonkeyPatch) -> None:
    from customify import tasks as tasks_module

    release, entered = threading.Event(), threading.Event()
    real = tasks_module.render_design

    def held(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        release.wait(10)
        return real(*args, **kwargs)

    monkeypatch.setattr(tasks_module, "render_design", held)
    design = pg_live.design()
    assert entered.wait(5)
    status = pg_live.client.get("/api/v1/system/worker-status").json()
    release.set()
    assert status["workers_available"] is True
    assert {"debug_task", "render_design_preview", "send_email"} <= set(status["registered_tasks"])
    (worker,) = status["workers"].values()
    assert worker["pid"] == os.getpid() and worker["concurrency"] == 2 and len(worker["threads"]) == 2
    assert worker["stale"] is False and worker["scheduler"] is True
    assert [a["design_id"] for a in status["active_tasks"]] == [design["id"]]
    assert status["broker"].startswith(("postgresql://", "redis://"))
    assert status["queue"]["in_flight"] == 1
    assert abs(status["clock_drift_s"]["database"]) < 5
    assert pg_live.wait(design["id"])["status"] == "published"


def test_bounded_load_all_published(pg_live: LiveApp) -> None:
    count = 120

    async def post_all() -> list[str]:
        async with httpx.AsyncClient(base_url=pg_live.base_url, timeout=60,
                                     limits=httpx.Limits(max_connections=20)) as client:
            async def one(i: int) -> str:
                response = await client.post("/api/v1/designs", json={
                    "name": f"load {i}", "product": "mug", "color": "#ffffff",
                    "layers": [{"type": "text", "text": f"#{i}", "size": 0.2, "color": "#b91c1c"}]})
                assert response.status_code == 201, response.text
                return str(response.json()["id"])
            return await asyncio.gather(*(one(i) for i in range(count)))

    ids = asyncio.run(post_all())
    deadline = time.monotonic() + 90
    statuses = [pg_live.wait(i, max(1, min(30, int(deadline - time.monotonic()))))["status"] for i in ids]
    assert statuses == ["published"] * count
    with pg_live.rt.sessions() as session:
        from sqlalchemy import func, select

        from customify.models import Design
        attempts = session.scalar(select(func.max(Design.attempts)))
    assert attempts == 1  # each design rendered exactly once


# Priorities, on all three backends ------------------------------------------------------


@pytest.mark.parametrize("kind", ["sqlite", "postgres", "redis"])
def test_renders_before_emails(kind: str, make_config: Callable[..., Config]) -> None:
    with pg_database(migrate=False) as url, redis_queue_name() as name:
        queue = {"sqlite": "", "postgres": url, "redis": REDIS_URL}[kind]
        rt = Runtime(make_config(queue_url=queue, queue_name=name))
        try:
            for i in range(3):
                rt.tasks.send_email(f"mail-{i}")
            rt.tasks.render("design-1", 1)
            rt.tasks.send_email("mail-3")
            rt.tasks.render("design-2", 1)
            order = []
            for _ in range(6):
                task = rt.huey.dequeue()
                assert task is not None
                order.append((type(task).__name__, task.args[0]))
        finally:
            rt.close()
    assert order == [("render_design_preview", "design-1"), ("render_design_preview", "design-2"),
                     ("send_email", "mail-0"), ("send_email", "mail-1"), ("send_email", "mail-2"),
                     ("send_email", "mail-3")]


# Unreachable at start-up: one line, non-zero, within 5 s ---------------------------------


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A TCP port that accepts connections and never answers: a hung server, the worst case."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            if select.select([server], [], [], 0.1)[0]:
                held.append(server.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(2)
    for conn in held:
        conn.close()
    server.close()


@pytest.mark.parametrize(("command", "key", "scheme", "names"), [
    ("worker", "CUSTOMIFY_DATABASE_URL", "postgresql://postgres@127.0.0.1:{port}/x", "database"),
    ("api", "CUSTOMIFY_DATABASE_URL", "postgresql://postgres@127.0.0.1:{port}/x", "database"),
    ("worker", "CUSTOMIFY_QUEUE_URL", "postgresql://postgres@127.0.0.1:{port}/x", "queue"),
    ("worker", "CUSTOMIFY_QUEUE_URL", "redis://127.0.0.1:{port}/0", "queue"),
    ("api", "CUSTOMIFY_QUEUE_URL", "redis://127.0.0.1:{port}/0", "queue"),
])
def test_unreachable_at_startup_is_one_line_within_5s(
        command: str, key: str, scheme: str, names: str, silent_port: int, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CUSTOMIFY_") and k != "DATABASE_URL"}
    env.update({key: scheme.format(port=silent_port), "CUSTOMIFY_DATA_DIR": str(tmp_path / "data")})
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "customify", command, "--port", "0"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=30)
    elapsed = time.monotonic() - started
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"customify: {names} ") and "unreachable" in lines[0], lines[0]
    assert ("CUSTOMIFY_DATABASE_URL" if names == "database" else "CUSTOMIFY_QUEUE_URL") in lines[0]
    assert elapsed < 5, f"took {elapsed:.1f} s"
