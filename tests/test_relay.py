"""The relay of hub events between processes over Postgres LISTEN/NOTIFY (customify/relay.py).

- Between two Runtimes on one Postgres (each its own origin, as two processes): the events that
  describe work cross, in order, with the origin's time and the receiver's own ids; those each
  process computes for itself do not; nobody receives its own; a long payload is cut to fit and
  one that cannot be is not sent; a listener whose connection is killed, or whose database goes
  away for a while, reconnects with one warning line, and later events arrive.
- Split deployments (`customify worker` in a subprocess, an API-only app in this one): a `?wait=`
  is woken by the worker's event through the relay (timed re-reads are switched off, so a second
  read of the row means an event woke it), also after the listener's connection was killed; and
  the API's event stream carries the worker's design and task events.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import msgspec
import psycopg
import pytest

from customify import records, relay
from customify.api import designs
from customify.config import Config
from customify.events import GAP, Event, EventHub
from customify.runtime import Runtime
from tests.conftest import LiveApp, eventually, start_app
from tests.test_postgres import REDIS_URL, Proxy, pg_database, redis_queue_name
from tests.test_postgres import pytestmark as needs_servers
from tests.test_scaleout import Deployment, deployment_config

pytestmark = [needs_servers]


def collect(hub: EventHub, last: Callable[[Event], bool], seconds: float = 15) -> list[Event]:
    """Every event in `hub` (its buffer, then as they come) up to the first for which `last` is true."""

    async def run() -> list[Event]:
        out: list[Event] = []
        with hub.subscribe(after=0) as queue:
            async with asyncio.timeout(seconds):
                while not out or not last(out[-1]):
                    out.append(await queue.get())
        return out

    return asyncio.run(run())


def sentinel(design_id: str) -> Callable[[Event], bool]:
    return lambda e: e.kind == "design.deleted" and e.data.get("design_id") == design_id


def relay_of(rt: Runtime) -> relay.Relay:
    assert rt.relay is not None
    return rt.relay


class Runtimes:
    """Runtimes on one fresh Postgres database, each with its own relay listening (as separate processes)."""

    def __init__(self, url: str, queue_name: str, make_config: Callable[..., Config], root: Path) -> None:
        self.url, self.queue_name, self.make_config, self.root = url, queue_name, make_config, root
        self.made: list[Runtime] = []

    def __call__(self, database_url: str | None = None) -> Runtime:
        config = self.make_config(
            data_dir=str(self.root / f"data{len(self.made)}"),
            database_url=database_url or self.url,
            queue_url=REDIS_URL,
            queue_name=self.queue_name,
        )
        rt = Runtime(config)
        self.made.append(rt)
        rt.start_relay(listen=True)
        eventually(lambda: relay_of(rt).listening, describe=lambda: "the relay never listened")
        return rt


@pytest.fixture
def runtimes(tmp_path: Path, make_config: Callable[..., Config]) -> Iterator[Runtimes]:
    with pg_database(migrate=False) as url, redis_queue_name() as name:
        made = Runtimes(url, name, make_config, tmp_path)
        try:
            yield made
        finally:
            for rt in made.made:
                rt.close()
    assert not [t.name for t in threading.enumerate() if t.name.startswith("relay-")]  # stopped with the Runtime


def test_work_events_cross_in_order_with_local_ids_and_nobody_gets_its_own(
    runtimes: Runtimes,
) -> None:
    a, b = runtimes(), runtimes()
    sent = [
        a.hub.publish("design.status", design_id="d1", status="rendering", version=1),
        a.hub.publish("queue", pending=3),  # computed by each process itself: never sent
        a.hub.publish("worker.state", worker="worker-1", state="idle"),
        a.hub.publish("problem", check="queue", severity="warning"),
        a.hub.publish("system.problems", problems=[], healthy=True, status="ok"),
        a.hub.publish("control", action="pause", paused=True),  # this process's threads
        a.hub.publish("control", action="purge", purged=2),  # the shared queue
        a.hub.publish("task.failed", task_id="t1", task="render", design_id="d1", error="boom", run_ms=1.5),
        a.hub.publish("webhook.delivered", delivery_id=7, owner_id="u1", status_code=200, next_attempt_s=None),
        a.hub.publish("design.deleted", design_id="end-a", owner_id="u1"),
    ]
    got = collect(b.hub, sentinel("end-a"))
    crossed = [
        e for e in sent if e.kind.startswith(("design.", "task.", "webhook.")) or e.data.get("action") == "purge"
    ]
    assert [(e.kind, e.data, e.at) for e in got] == [(e.kind, e.data, e.at) for e in crossed]
    assert [e.id for e in got] == [1, 2, 3, 4, 5]  # B's own ids: Last-Event-ID stays per process

    b.hub.publish("design.deleted", design_id="end-b", owner_id="u1")
    seen_by_a = collect(a.hub, sentinel("end-b"))
    assert seen_by_a[:-1] == sent  # A's own events came back to it through Postgres and were dropped
    assert seen_by_a[-1].id == len(sent) + 1
    assert relay_of(a).received == 1 and relay_of(b).received == len(crossed)


def test_a_long_payload_is_cut_to_fit_and_one_that_cannot_be_is_not_sent(runtimes: Runtimes) -> None:
    a, b = runtimes(), runtimes()
    a.hub.publish("task.failed", task_id="t1", design_id="d1", error="é" * 9000)  # 18 kB of UTF-8
    a.hub.publish("task.failed", task_id="t2", design_id="d2", codes=list(range(3000)))  # nothing to cut
    a.hub.publish("design.deleted", design_id="end", owner_id="u1")
    got = collect(b.hub, sentinel("end"))
    assert [e.data["task_id"] for e in got[:-1]] == ["t1"]
    assert got[0].data["error"] == "é" * relay.TEXT_LIMIT + "…"
    assert relay_of(a).skipped == 1


@pytest.mark.slow  # two outages of the listener's connection, each waited out
def test_a_listener_cut_off_reconnects_with_one_warning_and_later_events_arrive(
    runtimes: Runtimes, caplog: pytest.LogCaptureFixture
) -> None:
    url = runtimes.url
    proxy = Proxy(5432)
    try:
        a, b = runtimes(), runtimes(url.replace(":5432/", f":{proxy.port}/"))
        caplog.set_level(logging.INFO, "customify.relay")

        # Its connection killed on the server: back within a retry.
        killed = relay_of(b).listener_pid
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("select pg_terminate_backend(%s)", (killed,))
        eventually(lambda: relay_of(b).listening and relay_of(b).listener_pid != killed, seconds=15)
        a.hub.publish("design.deleted", design_id="after-kill", owner_id="u1")
        collect(b.hub, sentinel("after-kill"))

        # The database away for several attempts: one warning line, no traceback, then back.
        proxy.cut()
        eventually(lambda: relay_of(b).listen_failures >= 4, seconds=20)
        proxy.restore()
        eventually(lambda: relay_of(b).listening, seconds=15)
        a.hub.publish("design.deleted", design_id="after-outage", owner_id="u1")
        got = collect(b.hub, sentinel("after-outage"))
        # Each time it listens again it says that it may have missed events (a gap), before the next ones.
        assert [e.data.get("design_id", e.kind) for e in got] == [GAP, "after-kill", GAP, "after-outage"]

        warnings = [r for r in caplog.records if r.name == "customify.relay" and r.levelno >= logging.WARNING]
        assert len(warnings) == 2, [r.getMessage() for r in warnings]  # one per outage, not one per attempt
        assert all("cannot listen to other processes' events" in r.getMessage() for r in warnings)
        assert not any(r.exc_info for r in caplog.records)
        assert caplog.text.count("listening to other processes' events again") == 2
    finally:
        proxy.close()


def test_sqlite_has_no_relay(live: LiveApp) -> None:
    assert live.rt.relay is None and live.rt.hub.tap is None


# Split deployments: `customify worker` in a subprocess, an API-only app in this process --------


@pytest.fixture
def split(tmp_path: Path, make_config: Callable[..., Config]) -> Iterator[tuple[LiveApp, Deployment]]:
    """An API-only app here and a deployment to start `customify worker`s in (one database, one queue)."""
    with pg_database() as url, redis_queue_name() as name:
        dep = Deployment(deployment_config(tmp_path, url, name), tmp_path, url)
        api = start_app(make_config(database_url=url, queue_url=REDIS_URL, queue_name=name), consumer=False)
        dep.apis.append(api.base_url)
        try:
            yield api, dep
        finally:
            dep.stop()
            api.stop()


def start_worker(api: LiveApp, dep: Deployment) -> None:
    dep.start_worker("worker", threads=1)
    dep.wait_healthy(workers=1)
    eventually(lambda: relay_of(api.rt).listening)


@pytest.mark.slow
def test_wait_in_an_api_only_process_is_woken_by_the_relay(
    split: tuple[LiveApp, Deployment], monkeypatch: pytest.MonkeyPatch
) -> None:
    api, dep = split
    # No timed re-read within the wait: a second read of the row means an event woke it, and in
    # this process (no workers) only the relay publishes design events.
    monkeypatch.setattr(designs, "RECHECK_SECONDS", 1000.0)
    monkeypatch.setattr(designs, "RECHECK_RELAYED_SECONDS", 1000.0)
    held: list[tuple[str, int]] = []

    def hold(rt: Runtime, design_id: str, version: int) -> None:
        held.append((design_id, version))  # enqueued by the test once the wait has read the row

    monkeypatch.setattr(designs, "enqueue_now", hold)  # the create's enqueue, after its commit
    seen: list[str] = []  # what the waiting GET did, in order
    first_read = threading.Event()
    design_view, settles = records.design_view, designs.settles

    def counted(conn: Any, user_id: str | None, design_id: str) -> records.DesignView | None:
        found = design_view(conn, user_id, design_id)
        if found is not None:
            seen.append(f"read {found.status}")
            first_read.set()
        return found

    def woken(event: Event, design_id: str) -> bool:
        if settles(event, design_id):
            seen.append(f"woken by {event.kind} {event.data.get('status')}")
            return True
        return False

    monkeypatch.setattr(records, "design_view", counted)
    monkeypatch.setattr(designs, "settles", woken)
    start_worker(api, dep)

    def wait_for_one() -> None:
        design_id = api.design()["id"]
        seen.clear()
        first_read.clear()
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(httpx.get, f"{api.base_url}/api/v1/designs/{design_id}?wait=30", timeout=40)
            assert first_read.wait(15)
            api.rt.tasks.render(*held.pop())  # the worker in the other process renders it now
            response = waiting.result()
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "published"
        # Read once, woken by the worker's event, read again (not the last read at the wait's end); the
        # task's outcome event that follows is also one the wait accepts, whether or not it still waits.
        assert seen[:2] == ["read draft", "woken by design.status published"], seen
        assert [step for step in seen if step.startswith("read")] == ["read draft", "read published"], seen

    wait_for_one()
    received = relay_of(api.rt).received
    assert received > 0

    # The listener's connection killed on the server: it reconnects, and the next wait is woken too.
    killed = relay_of(api.rt).listener_pid
    with psycopg.connect(dep.database_url, autocommit=True) as conn:
        conn.execute("select pg_terminate_backend(%s)", (killed,))
    eventually(lambda: relay_of(api.rt).listening and relay_of(api.rt).listener_pid != killed, seconds=15)
    wait_for_one()
    assert relay_of(api.rt).received > received


@pytest.mark.slow
def test_event_stream_of_an_api_only_process_carries_the_workers_events(split: tuple[LiveApp, Deployment]) -> None:
    api, dep = split
    start_worker(api, dep)
    events: list[tuple[int | None, str, dict[str, Any]]] = []
    deadline = time.monotonic() + 60  # queue stats come each second: the loop looks at least that often
    with httpx.stream("GET", f"{api.base_url}/api/v1/events", timeout=30) as stream:
        frame: dict[str, str] = {}
        design_id: str | None = None
        for line in stream.iter_lines():
            if line.startswith(("id:", "event:", "data:")):
                key, _, value = line.partition(":")
                frame[key] = value.strip()
                continue
            if line or "data" not in frame:
                continue
            data = msgspec.json.decode(frame["data"])
            events.append((int(frame["id"]) if "id" in frame else None, frame["event"], data))
            frame = {}
            if data["kind"] == "hello":
                design_id = api.design()["id"]  # the stream is open: its events must come through it
            elif data["kind"] == "design.status" and data["design_id"] == design_id and data["status"] == "published":
                break
            assert time.monotonic() < deadline, f"no design.status published in 60 s: {[e[1] for e in events]}"
    mine = [(kind, data) for _, kind, data in events if data.get("design_id") == design_id]
    kinds = [kind for kind, _ in mine]
    # Published by the worker process (the API process has none): the relay brought them.
    assert "task.started" in kinds and kinds.index("task.started") < kinds.index("design.status")
    assert [d["status"] for k, d in mine if k == "design.status"] == ["rendering", "published"]
    published = mine[-1][1]
    assert set(published) == {"kind", "at", "design_id", "status", "version", "render_ms"}  # the documented shape
    ids = [i for i, kind, _ in events if kind != "hello"]
    assert all(isinstance(i, int) for i in ids) and ids == sorted(ids)  # this process's ids


def test_a_listener_back_after_a_cut_makes_streams_say_they_missed_events(
    tmp_path: Path, make_config: Callable[..., Config]
) -> None:
    with pg_database() as url, redis_queue_name() as name:
        api = start_app(make_config(database_url=url, queue_url=REDIS_URL, queue_name=name), consumer=False)
        try:
            eventually(lambda: relay_of(api.rt).listening)
            hellos: list[dict[str, Any]] = []
            deadline = time.monotonic() + 30
            with httpx.stream("GET", f"{api.base_url}/api/v1/events", timeout=30) as stream:
                for line in stream.iter_lines():
                    assert time.monotonic() < deadline, f"no second hello in 30 s: {hellos}"
                    if not line.startswith("data:"):
                        continue
                    data = msgspec.json.decode(line.partition(":")[2])
                    if data["kind"] != "hello":
                        continue
                    hellos.append(data)
                    if len(hellos) == 2:
                        break
                    killed = relay_of(api.rt).listener_pid  # the stream is open: cut its listener off
                    with psycopg.connect(url, autocommit=True) as conn:
                        conn.execute("select pg_terminate_backend(%s)", (killed,))
            assert hellos[0]["missed"] is False
            assert hellos[1]["missed"] is True  # the client reloads: events sent meanwhile are lost to it
            assert relay_of(api.rt).listening and relay_of(api.rt).listener_pid != killed
        finally:
            api.stop()


def test_a_sender_that_dropped_events_tells_the_listeners_when_it_sends_again(runtimes: Runtimes) -> None:
    a, b = runtimes(), runtimes()
    a.hub.publish("design.deleted", design_id="first", owner_id="u1")
    collect(b.hub, sentinel("first"))
    with psycopg.connect(runtimes.url, autocommit=True) as conn:  # the sender's connection cut off
        conn.execute("select pg_terminate_backend(%s)", (relay_of(a).sender_pid,))
    a.hub.publish("design.deleted", design_id="lost", owner_id="u1")  # its send fails: dropped
    eventually(lambda: relay_of(a).send_failures == 1)
    a.hub.publish("design.deleted", design_id="after", owner_id="u1")
    got = collect(b.hub, lambda event: event.kind == GAP)
    assert [(e.kind, e.data.get("design_id")) for e in got] == [
        ("design.deleted", "first"),
        ("design.deleted", "after"),  # "lost" never came; the gap says so
        (GAP, None),
    ]
