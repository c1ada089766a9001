"""The core end-to-end checks on Postgres + PostgresHuey and Postgres + Redis, against the real
servers of this machine; queue priorities on all three backends; unreachable servers at start-up
and while running; the shared worker registry and the scheduler lease.

Each test gets its own Postgres database (`customify_test_<hex>`, dropped after) and its own
Huey queue name on Redis (its keys deleted after), so tests never see each other's data, even
when two test runs share the servers.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import select
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path

import httpx
import psycopg
import pytest
import redis

from customify import db, heartbeats
from customify.config import Config
from customify.runtime import Runtime
from tests.conftest import LiveApp, eventually, hold_renders, open_image

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
pytestmark = pytest.mark.skipif(
    not (_reachable(5432) and _reachable(6379)) and not os.environ.get("CI"),
    reason="PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379 are needed",
)


# Isolation ------------------------------------------------------------------------------


_template: list[str] = []


def migrated_template() -> str:
    """A database migrated to head, made once per test process (dropped at its exit): a migrated database
    for a test is a copy of it (`create database … template`, a file copy on the server) instead of
    Alembic's run again each time. Migrating an empty database is what migrate=False tests start from."""
    if not _template:
        name = f"customify_template_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'create database "{name}"')
        engine = db.make_sync_engine(PG_ADMIN.rsplit("/", 1)[0] + f"/{name}")
        try:
            db.upgrade(engine)
        except BaseException:
            engine.dispose()
            _template.append(name)
            drop_template()
            raise
        engine.dispose()  # a template must have no connections while it is copied
        _template.append(name)
        atexit.register(drop_template)  # tests/conftest.py drops it at the session's end; this if that did not run
    return _template[0]


def drop_template() -> None:
    while _template:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'drop database if exists "{_template.pop()}" with (force)')


@contextmanager
def pg_database(migrate: bool = True) -> Iterator[str]:
    """A fresh database on the test server, migrated to head (a copy of the migrated template); dropped afterwards."""
    name = f"customify_test_{uuid.uuid4().hex[:12]}"
    template = f' template "{migrated_template()}"' if migrate else ""
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'create database "{name}"{template}')
    url = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    try:
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


# The fast loop runs each test on Postgres + Redis; the all-Postgres variant is slow (README, Development).
@pytest.fixture(
    params=[
        pytest.param(name, marks=pytest.mark.slow) if queue == "postgres" else name for name, queue in BACKENDS.items()
    ]
)
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
    assert response.status_code == 200, response.text
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
    release, entered = hold_renders(monkeypatch, 10)
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


@pytest.mark.slow
def test_bounded_load_all_published(pg_live: LiveApp) -> None:
    count = 80

    async def post_all() -> list[str]:
        async with httpx.AsyncClient(
            base_url=pg_live.base_url, timeout=60, limits=httpx.Limits(max_connections=20)
        ) as client:

            async def one(i: int) -> str:
                response = await client.post(
                    "/api/v1/designs",
                    json={
                        "name": f"load {i}",
                        "product": "mug",
                        "color": "#ffffff",
                        "layers": [{"type": "text", "text": f"#{i}", "size": 0.2, "color": "#b91c1c"}],
                    },
                )
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
    assert order == [
        ("render_design_preview", "design-1"),
        ("render_design_preview", "design-2"),
        ("send_email", "mail-0"),
        ("send_email", "mail-1"),
        ("send_email", "mail-2"),
        ("send_email", "mail-3"),
    ]


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


@pytest.mark.slow
@pytest.mark.parametrize(
    ("command", "key", "scheme", "names"),
    [
        ("worker", "CUSTOMIFY_DATABASE_URL", "postgresql://postgres@127.0.0.1:{port}/x", "database"),
        ("api", "CUSTOMIFY_DATABASE_URL", "postgresql://postgres@127.0.0.1:{port}/x", "database"),
        ("worker", "CUSTOMIFY_QUEUE_URL", "postgresql://postgres@127.0.0.1:{port}/x", "queue"),
        ("worker", "CUSTOMIFY_QUEUE_URL", "redis://127.0.0.1:{port}/0", "queue"),
        ("api", "CUSTOMIFY_QUEUE_URL", "redis://127.0.0.1:{port}/0", "queue"),
    ],
)
def test_unreachable_at_startup_is_one_line_within_5s(
    command: str, key: str, scheme: str, names: str, silent_port: int, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CUSTOMIFY_") and k != "DATABASE_URL"}
    env.update({key: scheme.format(port=silent_port), "CUSTOMIFY_DATA_DIR": str(tmp_path / "data")})
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "customify", command, "--port", "0"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    elapsed = time.monotonic() - started
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"customify: {names} ") and "unreachable" in lines[0], lines[0]
    assert ("CUSTOMIFY_DATABASE_URL" if names == "database" else "CUSTOMIFY_QUEUE_URL") in lines[0]
    # The 5 s goal is measured in bench/scaleout_bench.py (3.4-3.8 s there, 2 s of it the
    # driver's connect timeout); here only "it does not hang", with room for a loaded machine.
    assert elapsed < 15, f"took {elapsed:.1f} s"


# The scheduler lease: exactly one process enqueues periodic tasks ---------------------------


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_lease_has_one_holder_and_expires(kind: str, tmp_path: Path) -> None:
    with pg_database() as url:
        engine = db.make_sync_engine(url if kind == "postgres" else f"sqlite:///{tmp_path}/l.db")
        if kind == "sqlite":
            db.upgrade(engine)
        sessions = db.session_factory(engine)

        def acquire(holder: str, seconds: float = 0.5) -> bool:
            with sessions() as session, session.begin():
                return heartbeats.acquire_lease(session, "test", holder, seconds)

        assert acquire("a") and acquire("a")  # taken, renewed
        assert not acquire("b")
        eventually(lambda: acquire("b"), seconds=5)  # once the 0.5 s have passed
        assert not acquire("a")  # expired: taken over
        engine.dispose()


def test_two_worker_processes_enqueue_periodic_tasks_once(
    backend: dict[str, str], make_config: Callable[..., Config]
) -> None:
    from customify.queue import EmbeddedConsumer

    runtimes = [Runtime(make_config(**backend)) for _ in range(2)]
    for i, rt in enumerate(runtimes):
        rt.observer.identity = f"test-host:{i}"  # two processes, as far as the registry can tell
    publishers = [heartbeats.HeartbeatPublisher(rt) for rt in runtimes]
    consumers = [
        EmbeddedConsumer(rt.huey, 1, on_beat=lambda: None, may_schedule=pub.holds_scheduler)
        for rt, pub in zip(runtimes, publishers, strict=True)
    ]  # never started: no thread takes work
    try:
        for pub in publishers:
            pub.beat()
        assert [pub.holds_scheduler() for pub in publishers] == [True, False]
        due = datetime(2026, 1, 1, 0, 5)  # prune_history runs at minute */5
        for consumer in consumers:
            assert consumer.scheduler_impl is not None
            consumer.scheduler_impl.enqueue_periodic_tasks(due)
        assert runtimes[0].huey.pending_count() == 1
        # The holder stops cleanly: the other one takes the lease on its next beat.
        publishers[0].stop()
        publishers[1].beat()
        assert publishers[1].holds_scheduler() and not publishers[0].holds_scheduler()
        with runtimes[1].sessions() as session:
            assert [w["id"] for w in heartbeats.deployment(session)] == ["test-host:1"]
    finally:
        for rt in runtimes:
            rt.close()


# Unreachable while running: 503 where needed, consumers retry and resume, nothing lost -------


class Proxy:
    """A TCP proxy to a real server that the test can cut (existing connections reset, new ones
    refused at once) and restore: a server outage without stopping the shared server."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(128)
        self.port = self.server.getsockname()[1]
        self.down = False
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            if not select.select([self.server], [], [], 0.1)[0]:
                continue
            client, _ = self.server.accept()
            if self.down:
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=2)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while True:
                ready = select.select([a, b], [], [], 0.5)[0]
                for src in ready:
                    data = src.recv(65536)
                    if not data:
                        return
                    (b if src is a else a).sendall(data)
        except (OSError, ValueError):
            return
        finally:
            for s in (a, b):
                with suppress(OSError):
                    s.close()

    def cut(self) -> None:
        self.down = True
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def restore(self) -> None:
        self.down = False

    def close(self) -> None:
        self.cut()
        self._stop.set()
        self._thread.join(2)
        self.server.close()


@pytest.fixture(params=["redis", "postgres"])
def outage(request: pytest.FixtureRequest) -> Iterator[tuple[str, str, Proxy, Proxy]]:
    """A database and queue name of their own, each reached through a proxy that can be cut
    (the queue on Redis, or on the same Postgres through a second proxy)."""
    with pg_database() as url, redis_queue_name() as name:
        pg, rd = Proxy(5432), Proxy(6379 if request.param == "redis" else 5432)
        try:
            yield url, name, pg, rd
        finally:
            pg.close()
            rd.close()


@pytest.mark.slow
def test_outages_while_running_answer_503_and_lose_nothing(
    outage: tuple[str, str, Proxy, Proxy], make_live: Callable[..., LiveApp], caplog: pytest.LogCaptureFixture
) -> None:
    url, name, pg, rd = outage  # the app stops before the proxies close (fixture order)
    app = make_live(
        database_url=url.replace(":5432/", f":{pg.port}/"),
        queue_url=(f"redis://127.0.0.1:{rd.port}/0" if rd.target == 6379 else url.replace(":5432/", f":{rd.port}/")),
        queue_name=name,
        render={"sweep_interval": 1.0, "lease_seconds": 5.0},
    )
    assert app.wait(app.design()["id"])["status"] == "published"

    # Queue down: designs are still accepted (the row is the truth), health names the queue.
    rd.cut()
    during = app.design()
    health = app.client.get("/api/v1/system/health")
    assert health.status_code == 503 and health.json()["checks"]["queue"]["ok"] is False
    status = app.client.get("/api/v1/system/worker-status")
    assert status.status_code == 503
    assert status.headers["content-type"].startswith("application/problem+json")
    eventually(lambda: "cannot read the queue" in caplog.text)  # the workers fail to read it and back off
    rd.restore()
    # Its task was never queued: the sweeper re-drives it once the queue is back.
    assert app.wait(during["id"], 25)["status"] == "published"

    # Postgres down: 503 problem+json, never a 500 or a hang.
    pg.cut()
    started = time.monotonic()
    for response in (
        app.client.get(f"/api/v1/designs/{during['id']}"),
        app.client.post("/api/v1/designs", json={"name": "x", "product": "mug", "color": "#ffffff", "layers": []}),
    ):
        assert response.status_code == 503, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
    health = app.client.get("/api/v1/system/health")
    assert health.status_code == 503 and health.json()["checks"]["database"]["ok"] is False
    assert time.monotonic() - started < 15
    eventually(lambda: "cannot publish this worker's heartbeat" in caplog.text)  # the workers see it too
    pg.restore()
    # Back: the pools reconnect, workers resume.
    eventually(
        lambda: app.client.get("/api/v1/system/health").status_code == 200,
        seconds=15,
        interval=0.5,
        describe=lambda: app.client.get("/api/v1/system/health").text,
    )
    after = app.design()
    assert app.wait(after["id"], 15)["status"] == "published"
