"""The fault matrix of issue 11, against the real app on a loopback port.

For each fault: health answers as stated and names the cause in words, worker-status lists
it under problems, the event stream carries a `problem` event and doctor names it with its
fix; once the fault is gone health is 200 again, every design ends published, one mail per
published version, and no duplicate task is pending. `render.stall_seconds` is set low.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from aiosmtpd.controller import Controller

from customify import doctor as doctor_module
from customify.queue import READ_TIMEOUT
from customify.runtime import Runtime
from tests.conftest import LiveApp, eventually, free_port, hold_renders
from tests.test_postgres import PG_ADMIN, REDIS_URL, Proxy, pg_database, redis_queue_name
from tests.test_reliability import Inbox

STALL = 3.0  # render.stall_seconds in these tests: reported at 3 s, the helper killed 3 s later


class EventLog:
    """The app's event stream, read in a thread: every event, in order."""

    def __init__(self, app: LiveApp) -> None:
        self.events: list[dict[str, Any]] = []
        self._url = f"{app.base_url}/api/v1/events"
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        eventually(lambda: any(e["event"] == "hello" for e in self.events))

    def _run(self) -> None:
        with (
            contextlib.suppress(httpx.HTTPError),
            httpx.stream("GET", self._url, timeout=httpx.Timeout(60, read=60)) as response,
        ):
            event: dict[str, Any] = {}
            for line in response.iter_lines():
                if line.startswith("event:"):
                    event["event"] = line[6:].strip()
                elif line.startswith("data:"):
                    event["data"] = json.loads(line[5:])
                elif not line and event:
                    self.events.append(event)
                    event = {}

    def problems(self, words: str) -> list[dict[str, Any]]:
        return [e["data"] for e in list(self.events) if e.get("event") == "problem" and words in e["data"]["detail"]]


def health(app: LiveApp) -> tuple[int, dict[str, Any]]:
    response = app.client.get("/api/v1/system/health")
    return response.status_code, response.json()


def health_when(app: LiveApp, code: int, words: str, seconds: float = STALL + 10) -> dict[str, Any]:
    """The health body once it answers `code` with a problem containing `words`."""

    def check() -> dict[str, Any] | None:
        got, body = health(app)
        found = [p for p in body.get("problems", []) if words in p["detail"]]
        return body if got == code and found else None

    return eventually(check, seconds=seconds, interval=0.1)  # type: ignore[no-any-return]


def problem(body: dict[str, Any], words: str) -> dict[str, Any]:
    return next(p for p in body["problems"] if words in p["detail"])


def worker_status_problem(app: LiveApp, words: str) -> dict[str, Any]:
    status = app.client.get("/api/v1/system/worker-status")
    assert status.status_code == 200, status.text
    return problem(status.json(), words)


def settle(app: LiveApp, ids: list[str], mails: int) -> None:
    """After the fault: healthy again, every design published, one mail each, nothing pending twice."""
    eventually(lambda: health(app)[0] == 200, seconds=10)
    for design_id in ids:
        assert app.wait(design_id, 30)["status"] == "published"
    outbox = app.rt.files.root / "outbox"
    eventually(lambda: len(list(outbox.glob("*.eml"))) >= mails, seconds=20)
    assert len(list(outbox.glob("*.eml"))) == mails
    pending = [t for t in app.client.get("/api/v1/control/pending").json() if t["task"] == "render_design_preview"]
    assert len({t["design_id"] for t in pending}) == len(pending), pending


def warm(app: LiveApp) -> int:
    """One render, so the helpers (one per worker thread, render.start_helpers) exist; returns the first one's pid."""
    first = app.design(name="warm-up")
    assert app.wait(first["id"], 20)["status"] == "published"
    workers = app.rt.consumer.workers if app.rt.consumer is not None else 1
    return int(eventually(lambda: len(pids := app.rt.renderers.pids()) == workers and pids[0]))


# Progress -------------------------------------------------------------------------------


@pytest.mark.slow
def test_every_render_helper_frozen(make_live: Callable[..., LiveApp]) -> None:
    app = make_live(workers=1, render={"start_helpers": True, "stall_seconds": STALL, "timeout_seconds": 120.0})
    events = EventLog(app)
    pid = warm(app)
    os.kill(pid, signal.SIGSTOP)
    try:
        ids = [app.design(name=f"frozen {i}")["id"] for i in range(3)]
        body = health_when(app, 503, "no progress")
        assert body["status"] == "failing"
        found = problem(body, "no progress")
        assert (found["thread"], found["design_id"], found["pid"]) == ("Worker-1", ids[0], pid), found
        assert f"helper pid {pid}" in found["detail"] and "Worker-1" in found["detail"] and ids[0] in found["detail"]
        assert "no progress" in body["checks"]["consumer"]["detail"]
        assert worker_status_problem(app, "no progress")["pid"] == pid
        check = doctor_module._problems(app.rt, 5)
        assert not check.ok and "no progress" in check.detail and "killed and replaced" in check.fix
        eventually(lambda: events.problems("no progress"))
        eventually(lambda: pid not in app.rt.renderers.pids(), seconds=STALL + 10)  # killed and replaced
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    settle(app, ids, mails=4)
    assert eventually(
        lambda: (
            events.problems("no progress") and [e for e in list(events.events) if e.get("event") == "problem.cleared"]
        )
    )
    runs = app.client.get("/api/v1/system/tasks", params={"design_id": ids[0]}).json()
    retried = [r for r in runs if r["state"] == "retrying"]
    assert retried and "the render process stopped responding" in retried[0]["error"], runs
    assert "simplify" not in retried[0]["error"]
    assert [r["state"] for r in runs if r["state"] != "retrying"] == ["published"]


@pytest.mark.slow
def test_a_render_whose_every_helper_freezes_fails_saying_so(
    make_live: Callable[..., LiveApp], monkeypatch: pytest.MonkeyPatch
) -> None:
    from customify.render import pool

    real_run = pool._Helper.run

    def frozen_run(self: Any, *args: Any, **kwargs: Any) -> Any:
        os.kill(self.pid, signal.SIGSTOP)  # every helper, every attempt: the machine, not the design
        return real_run(self, *args, **kwargs)

    monkeypatch.setattr(pool._Helper, "run", frozen_run)
    app = make_live(workers=1, render={"stall_seconds": 1.0, "timeout_seconds": 120.0})
    design = app.design(name="unlucky")
    done = eventually(lambda: (d := app.wait(design["id"], 20))["status"] == "failed" and d, seconds=90)
    assert done["error"].startswith("gave up after 3 attempts"), done
    assert "the render process stopped responding" in done["error"] and "simplify" not in done["error"]
    assert app.rt.renderers.pids() == []


@pytest.mark.slow
def test_one_helper_frozen_others_work_degraded(make_live: Callable[..., LiveApp]) -> None:
    app = make_live(workers=2, render={"start_helpers": True, "stall_seconds": STALL, "timeout_seconds": 120.0})
    pid = warm(app)
    os.kill(pid, signal.SIGSTOP)
    try:
        ids = [app.design(name=f"mixed {i}")["id"] for i in range(4)]
        body = health_when(app, 200, "no progress")
        assert body["status"] == "degraded"
        found = problem(body, "no progress")
        assert found["pid"] == pid and found["severity"] == "degraded"
        # Work continues on the other thread while one is stuck.
        others = [i for i in ids if i != found["design_id"]]
        assert all(app.wait(i, 30)["status"] == "published" for i in others)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    settle(app, ids, mails=5)


@pytest.mark.slow
def test_split_deployment_the_api_names_a_frozen_helper_of_a_worker_process(make_live: Callable[..., LiveApp]) -> None:
    api = make_live(consumer=False, render={"start_helpers": True, "stall_seconds": STALL, "timeout_seconds": 120.0})
    worker = Runtime(api.rt.config)  # a `customify worker` on the same data dir, seen through the registry
    worker.observer.identity = "worker-box:4242"
    worker.prepare_database()
    worker.start_consumer(workers=1)
    try:
        first = api.design()
        assert api.wait(first["id"], 20)["status"] == "published"
        [pid] = worker.renderers.pids()
        os.kill(pid, signal.SIGSTOP)
        try:
            second = api.design(name="frozen elsewhere")
            body = health_when(api, 503, "no progress", seconds=STALL + 12)
            found = problem(body, "no progress")
            assert (found["process"], found["pid"], found["design_id"]) == ("worker-box:4242", pid, second["id"])
            assert "worker worker-box:4242/Worker-1" in found["detail"]
            eventually(lambda: pid not in worker.renderers.pids(), seconds=STALL + 10)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        assert api.wait(second["id"], 30)["status"] == "published"
        eventually(lambda: health(api)[0] == 200, seconds=10)
    finally:
        worker.close()


@pytest.mark.slow
def test_worker_thread_wedged_in_python_thread_pool(
    make_live: Callable[..., LiveApp], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_live(workers=1, render={"pool": "thread", "stall_seconds": 1.0, "timeout_seconds": 120.0})
    release, entered = hold_renders(monkeypatch, 60)
    try:
        design = app.design(name="wedged")
        assert entered.wait(10)
        body = health_when(app, 503, "no progress", seconds=12)
        found = problem(body, "no progress")
        assert found["thread"] == "Worker-1" and found["design_id"] == design["id"] and "pid" not in found
        assert worker_status_problem(app, "no progress")["design_id"] == design["id"]
    finally:
        release.set()
    settle(app, [design["id"]], mails=1)


# Writes ---------------------------------------------------------------------------------


def _pg_read_only(url: str, on: bool) -> None:
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'alter database "{name}" set default_transaction_read_only = {"on" if on else "off"}')
        # The setting applies to new sessions: end the app's, its pool reconnects.
        conn.execute(
            "select pg_terminate_backend(pid) from pg_stat_activity where datname = %s and pid <> pg_backend_pid()",
            (name,),
        )


@pytest.mark.slow
def test_database_read_only_postgres(make_live: Callable[..., LiveApp]) -> None:
    with pg_database() as url:
        app = make_live(database_url=url)
        events = EventLog(app)
        first = app.design()
        assert app.wait(first["id"])["status"] == "published"
        _pg_read_only(url, True)
        try:
            body = health_when(app, 503, "the database is read-only", seconds=20)
            assert body["checks"]["database"]["ok"] is False
            assert "read-only" in body["checks"]["database"]["detail"]
            assert worker_status_problem(app, "read-only")["check"] == "database"
            check = doctor_module._problems(app.rt, 5)
            assert not check.ok and "the database is read-only" in check.detail and "writable" in check.fix
            eventually(lambda: events.problems("the database is read-only"), seconds=10)
        finally:
            _pg_read_only(url, False)
        eventually(lambda: health(app)[0] == 200, seconds=15)
        after = app.design(name="after read-only")
        settle(app, [first["id"], after["id"]], mails=2)
        app.stop()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 24 MB tmpfs as the data dir (root only)."""
    mount = tmp_path / "small"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.slow
def test_data_dir_full(small_disk: Path, make_live: Callable[..., LiveApp]) -> None:
    app = make_live(data_dir=str(small_disk / "data"))
    events = EventLog(app)
    first = app.design()
    assert app.wait(first["id"])["status"] == "published"
    filler = small_disk / "filler"
    with open(filler, "wb") as handle, contextlib.suppress(OSError):
        while True:
            handle.write(b"\0" * (1 << 20))
            handle.flush()
    try:
        body = health_when(app, 503, "the data dir is full", seconds=10)
        detail = body["checks"]["disk"]["detail"]
        assert detail.startswith("the data dir is full: ") and "bytes free" in detail
        assert worker_status_problem(app, "the data dir is full")["check"] == "disk"
        check = doctor_module._problems(app.rt, 5)
        assert not check.ok and "the data dir is full" in check.detail and "free disk space" in check.fix
        eventually(lambda: events.problems("the data dir is full"), seconds=10)
    finally:
        filler.unlink()
    eventually(lambda: health(app)[0] == 200, seconds=10)
    after = app.design(name="after the disk was freed")
    settle(app, [first["id"], after["id"]], mails=2)
    app.stop()


# Mail, queue, pause, versions, clocks ------------------------------------------------------


@pytest.mark.slow
def test_smtp_down_is_degraded_with_the_count_of_unsent_mails(make_live: Callable[..., LiveApp]) -> None:
    port = free_port()
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    app = make_live(smtp_url=f"smtp://127.0.0.1:{port}")
    first = app.design()
    assert app.wait(first["id"])["status"] == "published"
    eventually(lambda: inbox.design_ids().get(first["id"]), seconds=10)
    controller.stop()
    second = app.design(name="while mail is down")
    assert app.wait(second["id"])["status"] == "published"  # publishing does not wait for mail
    body = health_when(app, 200, "mail(s) not sent yet", seconds=15)
    assert body["status"] == "degraded" and problem(body, "not sent")["check"] == "mail"
    assert problem(body, "not sent")["detail"].startswith("1 mail(s) not sent yet")
    smtp = doctor_module._smtp(f"smtp://127.0.0.1:{port}", 2)
    assert not smtp.ok and "does not answer" in smtp.detail and "smtp_url" in smtp.fix
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        assert doctor_module._smtp(f"smtp://127.0.0.1:{port}", 2).ok
        eventually(lambda: inbox.design_ids().get(second["id"]), seconds=60, interval=0.2)
        eventually(lambda: health(app)[1]["status"] == "ok", seconds=10)
        assert {d: len(m) for d, m in inbox.design_ids().items()} == {first["id"]: 1, second["id"]: 1}
    finally:
        controller.stop()


@pytest.mark.slow
def test_queue_unreachable_redis(make_live: Callable[..., LiveApp]) -> None:
    with redis_queue_name() as name:
        proxy = Proxy(6379)
        try:
            app = make_live(queue_url=f"redis://127.0.0.1:{proxy.port}/0", queue_name=name)
            first = app.design()
            assert app.wait(first["id"])["status"] == "published"
            # Its mail first: a send task popped as the connection is cut is lost (at most once) and
            # only the sweeper's mail re-drive (a minute later) would send it.
            eventually(lambda: list((app.rt.files.root / "outbox").glob("*.eml")), seconds=10)
            proxy.cut()
            body = health_when(app, 503, "queue unreachable", seconds=15)
            assert body["checks"]["queue"]["ok"] is False
            proxy.restore()
            eventually(lambda: health(app)[0] == 200, seconds=10)
            after = app.design(name="after the queue came back")
            settle(app, [first["id"], after["id"]], mails=2)
            app.stop()
        finally:
            proxy.close()


def test_paused_is_200_and_says_paused(live: LiveApp) -> None:
    assert live.client.post("/api/v1/control/pause").status_code == 200
    code, body = health(live)
    assert code == 200 and body["status"] == "ok" and "paused" in body["checks"]["consumer"]["detail"]
    assert live.client.post("/api/v1/control/resume").status_code == 200


def test_a_worker_missing_a_task_name_is_named(live: LiveApp) -> None:
    older = Runtime(live.rt.config)
    older.huey._registry.unregister(older.tasks.send_email.task_class)
    older.observer.identity = "older-version:1"
    older.prepare_database()
    older.start_consumer(workers=1, periodic=False)
    assert older.consumer is not None
    older.consumer.pause(True)  # it only needs to be registered, not to take work
    try:
        body = health_when(live, 503, "cannot run send_email", seconds=10)
        found = problem(body, "cannot run send_email")
        assert found["process"] == "older-version:1" and found["check"] == "tasks"
        assert "same Customify version" in found["fix"]
    finally:
        older.close()
    eventually(lambda: health(live)[0] == 200, seconds=10)


def test_clock_skew_between_a_worker_and_the_database(live: LiveApp) -> None:
    live.rt.observer.clock = lambda: time.time() + 30  # this process runs 30 s ahead of the database
    try:
        body = eventually(
            lambda: any(p["check"] == "clock" for p in health(live)[1].get("problems", [])) and health(live)[1],
            seconds=10,
        )
        found = next(p for p in body["problems"] if p["check"] == "clock")
        assert "+30" in found["detail"] and "s ago" in found["detail"] and found["severity"] == "degraded"
    finally:
        live.rt.observer.clock = time.time
    eventually(lambda: not any(p["check"] == "clock" for p in health(live)[1].get("problems", [])), seconds=10)


# No duplicate work -------------------------------------------------------------------------


# Waits out several leases: on SQLite in the fast loop, on Postgres and Redis slow.
@pytest.mark.parametrize(
    "queue", ["sqlite", pytest.param("postgres", marks=pytest.mark.slow), pytest.param("redis", marks=pytest.mark.slow)]
)
def test_paused_backlog_older_than_the_lease_holds_exactly_one_task_per_design(
    queue: str, make_live: Callable[..., LiveApp]
) -> None:
    with contextlib.ExitStack() as stack:
        overrides: dict[str, Any] = {}
        if queue != "sqlite":
            url = stack.enter_context(pg_database())
            name = stack.enter_context(redis_queue_name())
            overrides = {
                "database_url": url,
                "queue_url": url if queue == "postgres" else REDIS_URL,
                "queue_name": name,
            }
        app = make_live(**overrides, render={"lease_seconds": 1.0, "sweep_interval": 0.25})
        assert app.client.post("/api/v1/control/pause").status_code == 200
        # A worker already inside a blocking dequeue (Postgres, Redis) waits out its read first.
        time.sleep(READ_TIMEOUT + 0.5)
        ids = [app.design(name=f"backlog {i}")["id"] for i in range(5)]
        time.sleep(3)  # several leases and sweeps go by while nothing is consumed
        pending = [t for t in app.client.get("/api/v1/control/pending").json() if t["task"] == "render_design_preview"]
        assert sorted(t["design_id"] for t in pending) == sorted(ids), pending
        assert app.client.get("/api/v1/system/health").json()["checks"]["queue"]["pending"] == 5
        assert app.client.post("/api/v1/control/resume").status_code == 200
        settle(app, ids, mails=5)
        app.stop()


# Who sees what ------------------------------------------------------------------------------


def test_off_loopback_anonymous_health_is_status_and_check_names_only(make_live: Callable[..., LiveApp]) -> None:
    from customify import records

    app = make_live(host="0.0.0.0")
    anonymous = app.client.get(app.base_url.replace("0.0.0.0", "127.0.0.1") + "/api/v1/system/health")
    assert anonymous.status_code == 200
    body = anonymous.json()
    assert set(body) == {"status", "checks"} and body["status"] == "ok"
    assert body["checks"] and all(check == {"ok": True} for check in body["checks"].values()), body
    with app.rt.transaction() as session:
        _, key = records.create_user(session, "ops@example.com", True)
    operator = app.client.get(
        app.base_url.replace("0.0.0.0", "127.0.0.1") + "/api/v1/system/health",
        headers={"Authorization": f"Bearer {key}"},
    ).json()
    assert operator["checks"]["database"]["detail"].startswith("sqlite") and operator["checks"]["consumer"]["detail"]


@pytest.mark.slow  # a start-up failure, as test_cli's on SQLite (which the fast loop runs)
def test_start_on_a_read_only_postgres_is_refused_in_one_line(tmp_path: Path) -> None:
    import sys

    with pg_database() as url:
        name = url.rsplit("/", 1)[1]
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'alter database "{name}" set default_transaction_read_only = on')
        result = subprocess.run(
            [sys.executable, "-m", "customify", "run", "--no-tui", "--port", "0", "--data-dir", str(tmp_path / "data")],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "CUSTOMIFY_DATABASE_URL": url},
        )
    assert result.returncode != 0
    lines = [x for x in result.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "the database is read-only" in lines[0], result.stderr
    assert "Traceback" not in result.stderr
