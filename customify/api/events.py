"""The event stream: `GET /api/v1/events`, server-sent events from the observer's hub.

Design status changes, task enqueued/started/succeeded/failed/retried, worker
state changes, and once a second (while anyone listens) the queue picture:
counts, timings, threads and problems in words. A client reconnecting with
`Last-Event-ID` gets what it missed from the hub's recent buffer; when that is
no longer possible the first `hello` event says `"missed": true` and the
client reloads its picture over the REST endpoints.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import msgspec
from litestar import Controller, Litestar, get
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import HeaderParameter, QueryParameter
from litestar.response import ServerSentEvent, ServerSentEventMessage

from customify import heartbeats, store
from customify.api.auth import Viewer
from customify.api.system import consumer_picture
from customify.events import Event
from customify.observer import merge_windows
from customify.runtime import Runtime

log = logging.getLogger("customify.api")

TICK = 1.0  # seconds between queue pictures while someone listens
HEARTBEAT = 15.0  # seconds of silence before a comment line keeps proxies from closing the stream
KEEPALIVE = 2.0  # a customer's stream skips most events: a comment at least this often says it is alive
RETRY_MS = 2000  # the reconnect delay the stream suggests to browsers


def queue_picture(rt: Runtime, pending: int | None, scheduled: int | None, error: str | None,
                  workers: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The payload of a `queue` event (also served by GET /api/v1/control/stats): memory only, no database.

    An API-only process has no consumer of its own: given the deployment's worker registry
    (`workers`, read by the caller), its threads and timings are those of the live worker processes,
    their histograms merged."""
    threads = rt.observer.threads_snapshot()
    _, problems = consumer_picture(rt, pending)
    if error:
        problems = [f"queue unreachable: {error}", *problems]
    stats = rt.observer.stats()
    c = rt.consumer
    consumer, concurrency, paused = c is not None, c.workers if c is not None else 0, bool(getattr(c, "paused", False))
    if c is None and workers is not None:
        live = [w for w in workers if not w.get("stale")]
        threads = [dict(t, name=f"{w.get('pid')}/{t.get('name')}") for w in live for t in w.get("threads", [])]
        stats["windows"] = merge_windows([w.get("histograms") or {} for w in live])
        done, failed = ([sum(v) for v in zip(*[(w.get("throughput") or {}).get(kind) or [0] * 60 for w in live],
                                             strict=False)] or [0] * 60 for kind in ("done", "failed"))
        # This process sees enqueues but not their completions: its oldest-pending age would only grow.
        stats.update(throughput=done, done_per_min=sum(done), failed_per_min=sum(failed), oldest_pending_age_s=None)
        consumer = bool(live)
        concurrency = sum(int(w.get("concurrency") or 0) for w in live)
        paused = bool(live) and all(w.get("paused") for w in live)
        check = heartbeats.assess(workers, pending)
        if not check["ok"]:
            problems = [*problems, check["detail"]]
    if not pending:
        stats["oldest_pending_age_s"] = None
    return {
        "pending": pending, "scheduled": scheduled,
        "in_flight": sum(1 for t in threads if t.get("state") == "busy"),
        **stats,
        "threads": threads,
        "consumer": consumer,
        "concurrency": concurrency,
        "paused": paused,
        "stopped": bool(c is not None and c.stop_flag.is_set()),
        "problems": problems,
        "healthy": not problems,
        "uptime_s": round(time.time() - rt.observer.started_at, 1),
        "subscribers": rt.hub.subscriber_count(),
    }


async def deployment_workers(rt: Runtime) -> list[dict[str, Any]] | None:
    """The worker registry, for a process that runs no consumer (None when it runs one)."""
    if rt.consumer is not None:
        return None
    try:
        return await asyncio.wait_for(asyncio.to_thread(rt.read, heartbeats.deployment), 3.0)
    except Exception:
        return []


async def queue_counts(rt: Runtime) -> tuple[int | None, int | None, str | None]:
    try:
        pending = await asyncio.wait_for(asyncio.to_thread(rt.huey.pending_count), 3.0)
        scheduled = await asyncio.wait_for(asyncio.to_thread(rt.huey.scheduled_count), 3.0)
        return int(pending), int(scheduled), None
    except Exception as exc:
        text = str(exc).strip()
        return None, None, text.splitlines()[0] if text else type(exc).__name__


async def _tick(rt: Runtime) -> None:
    """While anyone listens: publish the queue picture each TICK, and worker/problem changes as events."""
    last_states: dict[str, str] = {}
    last_problems: list[str] = []
    while True:
        await asyncio.sleep(TICK)
        if not rt.hub.subscriber_count() or rt.hub.closing:
            continue
        try:
            pending, scheduled, error = await queue_counts(rt)
            picture = queue_picture(rt, pending, scheduled, error, await deployment_workers(rt))
            states = {t["name"]: t["state"] for t in picture["threads"]}
            for name, state in states.items():
                if last_states.get(name) not in (None, state):
                    rt.hub.publish("worker.state", worker=name, state=state)
            for name in last_states.keys() - states.keys():
                rt.hub.publish("worker.state", worker=name, state="gone", reason="removed from the consumer")
            last_states = states
            if picture["problems"] != last_problems:
                rt.hub.publish("system.problems", problems=picture["problems"], healthy=picture["healthy"])
                last_problems = picture["problems"]
            rt.hub.publish("queue", **picture)
        except Exception:  # pragma: no cover - keep ticking
            log.exception("queue picture failed")


@asynccontextmanager
async def event_ticker(app: Litestar) -> AsyncIterator[None]:
    """Lifespan: the one task that publishes queue pictures for all subscribers."""
    task = asyncio.create_task(_tick(app.state.rt), name="customify-event-ticker")
    try:
        yield
    finally:
        task.cancel()
        app.state.rt.hub.close()


def _message(event: Event) -> ServerSentEventMessage:
    body = {"kind": event.kind, "at": round(event.at, 3), **event.data}
    return ServerSentEventMessage(data=msgspec.json.encode(body).decode(), event=event.kind, id=event.id)


class CustomerFilter:
    """What a customer's stream carries: the status and task events of their own designs (an
    operator's carries everything: queue pictures, workers, control actions, every design)."""

    def __init__(self, rt: Runtime, viewer: Viewer) -> None:
        self.rt, self.user_id = rt, viewer.user_id
        self.mine: dict[str, bool] = {}  # design id -> owned; an owner never changes

    async def shows(self, event: Event) -> bool:
        if event.kind == "server.closing":
            return True
        design_id = event.data.get("design_id")
        if not isinstance(design_id, str) or not event.kind.startswith(("design.", "task.")):
            return False
        if "owner_id" in event.data:
            return bool(event.data["owner_id"] == self.user_id)
        if design_id not in self.mine:
            if len(self.mine) > 50_000:
                self.mine.clear()
            owner = await asyncio.to_thread(self.rt.read, store.design_owner, design_id)
            self.mine[design_id] = owner == self.user_id
        return self.mine[design_id]


class EventController(Controller):
    path = "/api/v1/events"
    tags = ["events"]

    @get("/", summary="Server-sent events: designs, tasks, workers, queue pictures (Last-Event-ID replays)",
         description=(
             "A `text/event-stream`. Each event has an `id`, an `event` name and JSON `data` with `kind` and "
             "`at` (server time, Unix seconds). Names: `design.status`, `design.deleted`, `task.enqueued`, "
             "`task.started`, `task.succeeded`, `task.failed`, `task.retried`, `task.revoked`, "
             "`worker.state`, `system.problems`, `control` (an action taken), `queue` (once a second: "
             "counts, wait/run percentiles, threads, problems), `server.closing`. The first event, `hello` "
             "(no id), gives the newest id and `missed: true` when a `Last-Event-ID` (header or "
             "`last_event_id` query) is older than the server's buffer. Comment lines are heartbeats. An operator "
             "gets every event; a customer's key gets the `design.*` and `task.*` events of their own designs."))
    async def stream(
        self, state: State, viewer: NamedDependency[Viewer],
        last_event_id: Annotated[str | None, HeaderParameter(name="Last-Event-ID", max_length=40)] = None,
        last_event_query: Annotated[str | None, QueryParameter(name="last_event_id", max_length=40)] = None,
    ) -> ServerSentEvent:
        rt: Runtime = state.rt
        raw = last_event_id or last_event_query
        after = int(raw) if raw and raw.strip().isdigit() else None
        return ServerSentEvent(self._events(rt, after, None if viewer.operator else CustomerFilter(rt, viewer)))

    @staticmethod
    async def _events(rt: Runtime, after: int | None,
                      only: CustomerFilter | None) -> AsyncIterator[ServerSentEventMessage]:
        with rt.hub.subscribe(after) as queue:
            hello = {"kind": "hello", "at": round(time.time(), 3), "last_event_id": rt.hub.last_id(),
                     "replay_from": after, "missed": after is not None and rt.hub.missed(after)}
            yield ServerSentEventMessage(data=msgspec.json.encode(hello).decode(), event="hello",
                                         retry=RETRY_MS)
            if rt.hub.closing:  # the server is stopping: do not hold its shutdown
                yield ServerSentEventMessage(data='{"kind": "server.closing"}', event="server.closing")
                return
            last_out = time.monotonic()
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), HEARTBEAT)
                except TimeoutError:
                    yield ServerSentEventMessage(comment="heartbeat", data=None)
                    continue
                if getattr(queue, "overflowed", False):
                    # This client fell 10,000 events behind: say so and let it reload its picture.
                    queue.overflowed = False  # type: ignore[attr-defined]
                    gap = {"kind": "hello", "at": round(time.time(), 3), "last_event_id": event.id,
                           "replay_from": None, "missed": True}
                    yield ServerSentEventMessage(data=msgspec.json.encode(gap).decode(), event="hello")
                if only is not None and not await only.shows(event):
                    if time.monotonic() - last_out >= KEEPALIVE:
                        last_out = time.monotonic()
                        yield ServerSentEventMessage(comment="heartbeat", data=None)
                    continue
                last_out = time.monotonic()
                yield _message(event)
                if event.kind == "server.closing":
                    return
