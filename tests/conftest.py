"""Fixtures: the real app served on a free loopback port, real SQLite files in tmp_path."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import io
import os
import shutil
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import uvicorn
from PIL import Image

from customify.api import create_app
from customify.config import Config, load_config
from customify.runtime import Runtime

pytest_plugins = ["tests.seaweedfs"]  # the `seaweedfs` fixture: a real S3 server


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto` (pytest's addopts): two test processes per CPU, as most tests wait on a server, a socket
    or a subprocess rather than compute; PYTEST_XDIST_AUTO_NUM_WORKERS still decides when set."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return int(os.environ["PYTEST_XDIST_AUTO_NUM_WORKERS"])
    return 2 * len(os.sched_getaffinity(0))


# Files whose tests take longest (schemathesis, hypothesis, several processes, subprocesses of the CLI,
# a browser, mypy), by measurement, longest first: run first, so that under xdist (which hands out tests
# one at a time, pyproject's addopts) no worker starts one of them last while the others sit idle.
LONG_POLES = (
    "test_conformance.py",
    "test_spec_property.py",
    "test_scaleout_storage.py",
    "test_scaleout.py",
    "test_reliability.py",
    "test_web_browser.py",
    "test_style.py",
    "test_cli.py",
    "test_keys.py",
    "test_storage.py",
    "test_tui.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Slow tests first, then the long-pole files, then the rest, each in file order (a stable sort:
    every xdist worker computes the same order)."""

    def rank(item: pytest.Item) -> tuple[int, int]:
        name = item.path.name
        return (0 if item.get_closest_marker("slow") else 1, LONG_POLES.index(name) if name in LONG_POLES else 99)

    items.sort(key=rank)
    # xdist gives each worker its first two tests at once: the three conformance runs (minutes each, the
    # customer's the longest) go one to a worker, each followed by a test of another file, never two in a row.
    runs = sorted((i for i in items if i.path.name == LONG_POLES[0]), key=lambda i: "customer" not in i.name)
    rest = [i for i in items if i.path.name != LONG_POLES[0]]
    paired = [x for pair in zip(runs, rest, strict=False) for x in pair]
    items[:] = paired + runs[len(rest) :] + rest[len(runs) :]  # none dropped when one side is short


def pytest_unconfigure(config: pytest.Config) -> None:
    """At its end pytest collects garbage five times over (to report exceptions raised in finalizers),
    each a full walk of a test process's heap: 0.1-0.4 s, ~2 s in all, while the run waits for its last
    worker to exit. One collection here, then the heap is frozen (gc.freeze): pytest's five then walk
    only what is made after it, and what this collection finalizes is still reported by the first."""
    gc.collect()
    gc.freeze()


def pytest_sessionfinish(session: pytest.Session) -> None:
    if "dir" in _template:
        shutil.rmtree(_template.pop("dir").parent, ignore_errors=True)
    postgres = sys.modules.get("tests.test_postgres")
    if postgres is not None:
        postgres.drop_template()  # the migrated template database, if this process made one


class PromptServer(uvicorn.Server):
    """uvicorn's server, stopped without its two fixed waits: its main loop looks at `should_exit` every
    0.1 s and its shutdown sleeps 0.1 s for open connections to finish. A test app's stop took ~0.2 s of
    idle wall time, and the fast loop starts and stops ~170 apps; here `stop()` wakes the loop, and the
    shutdown waits only as long as a connection or a request task is still there."""

    _loop: asyncio.AbstractEventLoop | None = None
    _wake: asyncio.Event

    def stop(self) -> None:
        self.should_exit = True
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the server has already stopped (its loop is closed)
                self._loop.call_soon_threadsafe(self._wake.set)

    async def main_loop(self) -> None:
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 1) % 864000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 0.1)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # uvicorn's steps (Server.shutdown), its `sleep(0.1)` replaced by a short poll.
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()
        deadline = (
            time.monotonic() + self.config.timeout_graceful_shutdown if self.config.timeout_graceful_shutdown else None
        )
        while self.server_state.connections or self.server_state.tasks:
            if deadline is not None and time.monotonic() >= deadline:
                for task in self.server_state.tasks:
                    task.cancel()
                break
            await asyncio.sleep(0.005)
        for server in self.servers:
            await server.wait_closed()
        await self.lifespan.shutdown()


@dataclass
class LiveApp:
    base_url: str
    rt: Runtime
    client: httpx.Client
    server: PromptServer
    thread: threading.Thread
    sock: socket.socket

    def design(self, **overrides: Any) -> dict[str, Any]:
        body = {
            "name": "Team shirt",
            "product": "tshirt",
            "color": "#1e3a8a",
            "layers": [
                {
                    "type": "text",
                    "text": "HELLO",
                    "weight": "bold",
                    "size": 0.12,
                    "color": "#ffffff",
                    "x": 0.5,
                    "y": 0.2,
                }
            ],
        }
        body.update(overrides)
        response = self.client.post("/api/v1/designs", json=body)
        assert response.status_code == 201, response.text
        return response.json()  # type: ignore[no-any-return]

    def wait(self, design_id: str, seconds: float = 10) -> dict[str, Any]:
        response = self.client.get(f"/api/v1/designs/{design_id}", params={"wait": seconds})
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    def stop(self) -> None:
        if self.thread.is_alive():
            # As `customify run` does on a signal: end the event streams first. The server waits for
            # open connections before its lifespan ends them, so a test that left a stream open waited
            # out the join below (15 s) and left the server thread behind.
            self.rt.hub.close()
        self.client.close()  # its keep-alive connection would hold the server's shutdown
        self.server.stop()
        self.thread.join(15)
        self.sock.close()
        self.rt.close()


def eventually(
    check: Callable[[], Any],
    seconds: float = 10.0,
    interval: float = 0.05,
    describe: Callable[[], object] | None = None,
) -> Any:
    """Poll `check` until it returns something truthy (and return that), failing after `seconds`.

    The one way tests wait for something to happen (not a fixed sleep): an exception in `check`
    fails at once; `describe()` says what was seen instead when the time is up."""
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"not reached in {seconds:g} s" + (f": {describe()}" if describe else ""))
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# One TLS context for every test client: httpx builds (and loads the CA bundle into) a new one per
# Client otherwise, ~25 ms of CPU each, and the tests only speak plain HTTP to loopback.
TLS = ssl.create_default_context()

_template: dict[str, Path] = {}


def migrated_template() -> Path:
    """A data dir whose SQLite databases (app and queue) are migrated to head, made once per test process.

    A new app on an empty data dir starts from a copy (start_app), instead of running Alembic and Huey's
    schema again each time: the same migrations, once. Starting on a really empty data dir (the
    migration at start-up) is what the CLI tests and tests/test_db.py check."""
    if "dir" not in _template:
        import tempfile

        root = Path(tempfile.mkdtemp(prefix="customify-template-")) / "data"
        rt = Runtime(load_config(None, {}, {"data_dir": str(root)}))
        try:
            rt.prepare_database()
        finally:
            rt.close()
        assert not list(root.glob("*.db-wal")), "the template's write-ahead logs were not checkpointed"
        _template["dir"] = root
    return _template["dir"]


def seed_databases(config: Config) -> None:
    """Copy the migrated template databases into a new data dir that uses the default SQLite files."""
    if config.database_url or config.queue_url:
        return  # a URL of the test's own (Postgres, Redis, a SQLite file elsewhere)
    root = config.data_path
    if root.exists():
        return  # a restart, or a test that prepared this data dir itself
    root.mkdir(mode=0o700, parents=True)
    template = migrated_template()
    for name in ("customify.db", "queue.db"):
        # The mode the app gives its databases (0600), whatever the template file's.
        with (
            (template / name).open("rb") as src,
            os.fdopen(os.open(root / name, os.O_CREAT | os.O_WRONLY, 0o600), "wb") as dst,
        ):
            shutil.copyfileobj(src, dst)


def start_app(config: Config, consumer: bool = True) -> LiveApp:
    seed_databases(config)
    sock = socket.socket()
    sock.bind((config.host, config.port))
    sock.listen(512)
    config = msgspec.structs.replace(config, port=sock.getsockname()[1])
    rt = Runtime(config)
    app = create_app(config, consumer=consumer, runtime=rt)
    server = PromptServer(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()

    def started() -> bool:
        if not thread.is_alive():
            raise RuntimeError("the app did not start")
        return bool(server.started)

    eventually(started, seconds=15, interval=0.01)
    client = httpx.Client(base_url=config.base_url, timeout=40, verify=TLS)
    return LiveApp(config.base_url, rt, client, server, thread, sock)


def config_in(root: Path, **overrides: Any) -> Config:
    """The tests' config: data in `root`/data, a free loopback port; `overrides` as command-line flags.

    Render helpers start on their threads' first render (`render.start_helpers = false`): most test apps
    render little or nothing, and warming two helpers per app cost the suite about half again its CPU.
    The tests of the warm start (test_render_pool) and every `customify` process a test starts use the
    shipped default; a `render=` override keeps this unless it names `start_helpers`."""
    flags: dict[str, Any] = {"data_dir": str(root / "data"), "port": 0, "host": "127.0.0.1"}
    render = {"start_helpers": False, **overrides.pop("render", {})}
    flags.update(overrides, render=render)
    return load_config(None, {}, flags)


@contextmanager
def serve(root: Path, consumer: bool = True, **overrides: Any) -> Iterator[LiveApp]:
    """An app for the tests of one module that only send what the app refuses or only read (a
    module-scoped fixture): each would otherwise start and stop an app of its own for one request."""
    app = start_app(config_in(root, **overrides), consumer=consumer)
    try:
        yield app
    finally:
        app.stop()


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., Config]:
    def make(**overrides: Any) -> Config:
        return config_in(tmp_path, **overrides)

    return make


@pytest.fixture
def make_live(make_config: Callable[..., Config]) -> Iterator[Callable[..., LiveApp]]:
    apps: list[LiveApp] = []

    def make(consumer: bool = True, **overrides: Any) -> LiveApp:
        app = start_app(make_config(**overrides), consumer=consumer)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.stop()


@pytest.fixture
def live(make_live: Callable[..., LiveApp]) -> LiveApp:
    return make_live()


def png_bytes(
    size: tuple[int, int] = (64, 64), color: tuple[int, ...] = (0, 200, 0, 255), mode: str = "RGBA", fmt: str = "PNG"
) -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, color).save(out, fmt)
    return out.getvalue()


def open_image(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def assert_color_near(actual: tuple[int, ...], expected: tuple[int, ...], tolerance: int = 40) -> None:
    diff = max(abs(a - e) for a, e in zip(actual[:3], expected[:3], strict=True))
    assert diff <= tolerance, f"pixel {actual[:3]} is not near {expected[:3]} (max channel diff {diff})"


def hold_renders(monkeypatch: pytest.MonkeyPatch, timeout: float = 30) -> tuple[threading.Event, threading.Event]:
    """Make every render wait (up to `timeout`) until released: (release, entered)."""
    from customify import tasks as tasks_module

    release, entered = threading.Event(), threading.Event()
    real = tasks_module.render_job

    def held(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        release.wait(timeout)
        return real(*args, **kwargs)

    monkeypatch.setattr(tasks_module, "render_job", held)
    return release, entered
