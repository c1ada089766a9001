"""The event stream: `GET /api/v1/events`, server-sent events from the observer's hub.

Design status changes, task enqueued/started and each task's outcome
(published, failed, retrying, discarded, skipped, sent, succeeded), worker state
changes, problems as they appear and clear, and once a second (while anyone
listens) the queue stats: counts, timings, threads and problems in words. A client reconnecting with
`Last-Event-ID` gets what it missed from the hub's recent buffer; when that is
no longer possible the first `hello` event says `"missed": true` and the
client reloads its view over the REST endpoints. On Postgres the design, task
and webhook events of the deployment's other processes come too
(customify.relay), under this process's ids: Last-Event-ID resumes only on the
process that gave it. When the relay may have lost some of them (its listener
reconnected, or another process could not send for a while) the stream says so
with another `hello` with `"missed": true`.
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

from customify import records, status
from customify.api.auth import Viewer
from customify.events import GAP, Event
from customify.runtime import Runtime
from customify.status import ProblemWatch

log = logging.getLogger("customify.api")

TICK = 1.0  # seconds between queue stats while someone listens
HEARTBEAT = 15.0  # seconds of silence before a comment line keeps proxies from closing the stream
KEEPALIVE = 2.0  # a customer's stream skips most events: a comment at least this often says it is alive
RETRY_MS = 2000  # the reconnect delay the stream suggests to browsers


async def _tick(rt: Runtime) -> None:
    """While anyone listens: the queue stats each TICK, worker state changes, and problems as they
    appear (`problem`) and clear (`problem.cleared`), all from one customify.status snapshot."""
    last_states: dict[str, str] = {}
    last_problems: list[dict[str, Any]] = []
    watch = ProblemWatch()
    while True:
        await asyncio.sleep(TICK)
        if not rt.hub.subscriber_count() or rt.hub.closing:
            continue
        try:
            snap = await status.snapshot(rt)
            stats = status.queue_stats(rt, snap)
            states: dict[str, str] = {t.name: t.state for t in stats.threads}
            for name, state in states.items():
                if last_states.get(name) not in (None, state):
                    rt.hub.publish("worker.state", worker=name, state=state)
            for name in last_states.keys() - states.keys():
                rt.hub.publish("worker.state", worker=name, state="gone", reason="removed from the consumer")
            last_states = states
            appeared, cleared = watch.update(snap.problems)
            for problem in appeared:
                rt.hub.publish("problem", **msgspec.to_builtins(problem))
            for problem in cleared:
                rt.hub.publish("problem.cleared", **msgspec.to_builtins(problem))
            problems = msgspec.to_builtins(snap.problems)
            if problems != last_problems:
                rt.hub.publish("system.problems", problems=problems, healthy=stats.healthy, status=stats.status)
                last_problems = problems
            rt.hub.publish("queue", **msgspec.to_builtins(stats))
        except RuntimeError as exc:
            if "shutdown" in str(exc):  # the server is stopping: its thread pool is gone
                return
            log.exception("queue stats failed")
        except Exception:  # pragma: no cover - keep ticking
            log.exception("queue stats failed")


@asynccontextmanager
async def event_ticker(app: Litestar) -> AsyncIterator[None]:
    """Lifespan: the one task that publishes the queue stats for all subscribers."""
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
    operator's carries everything: queue stats, workers, control actions, every design)."""

    def __init__(self, rt: Runtime, viewer: Viewer) -> None:
        self.rt, self.user_id = rt, viewer.user_id
        self.mine: dict[str, bool] = {}  # design id -> owned; an owner never changes

    async def shows(self, event: Event) -> bool:
        if event.kind == "server.closing":
            return True
        if event.kind.startswith("webhook."):  # deliveries to the customer's own endpoints
            return bool(event.data.get("owner_id") == self.user_id)
        design_id = event.data.get("design_id")
        if not isinstance(design_id, str) or not event.kind.startswith(("design.", "task.")):
            return False
        if "owner_id" in event.data:
            return bool(event.data["owner_id"] == self.user_id)
        if design_id not in self.mine:
            if len(self.mine) > 50_000:
                self.mine.clear()
            owner = await self.rt.reader(records.design_owner, design_id)
            self.mine[design_id] = owner == self.user_id
        return self.mine[design_id]


class EventController(Controller):
    path = "/api/v1/events"
    tags = ["events"]

    @get(
        "/",
        summary="Server-sent events: designs, tasks, workers, queue stats (Last-Event-ID replays)",
        description=(
            "A `text/event-stream`. Each event has an `id`, an `event` name and JSON `data` with `kind` and "
            "`at` (server time, Unix seconds). Names: `design.status`, `design.deleted`, `task.enqueued`, "
            "`task.started`, the task's outcome (`task.published`, `task.failed` with its reason, "
            "`task.retrying`, `task.discarded` (an older version fenced out), `task.skipped` (nothing to "
            "claim), `task.sent`, `task.succeeded` for other tasks), `task.revoked`, "
            "`worker.state`, `problem` and `problem.cleared` (one problem each: check, severity, detail, "
            "fix, thread, design, helper pid, seconds), `system.problems` (the whole list), "
            "`control` (an action taken), `queue` (once a second: "
            "counts, wait/run percentiles, threads, problems), `server.closing`. The first event, `hello` "
            "(no id), gives the newest id and `missed: true` when a `Last-Event-ID` (header or "
            "`last_event_id` query) is older than the server's buffer. Comment lines are heartbeats. An operator "
            "gets every event; a customer's key gets the `design.*` and `task.*` events of their own designs."
        ),
    )
    async def stream(
        self,
        state: State,
        viewer: NamedDependency[Viewer],
        last_event_id: Annotated[str | None, HeaderParameter(name="Last-Event-ID", max_length=40)] = None,
        last_event_query: Annotated[str | None, QueryParameter(name="last_event_id", max_length=40)] = None,
    ) -> ServerSentEvent:
        rt: Runtime = state.rt
        raw = last_event_id or last_event_query
        after = int(raw) if raw and raw.strip().isdigit() else None
        return ServerSentEvent(self._events(rt, after, None if viewer.operator else CustomerFilter(rt, viewer)))

    @staticmethod
    async def _events(
        rt: Runtime, after: int | None, only: CustomerFilter | None
    ) -> AsyncIterator[ServerSentEventMessage]:
        with rt.hub.subscribe(after) as queue:
            hello = {
                "kind": "hello",
                "at": round(time.time(), 3),
                "last_event_id": rt.hub.last_id(),
                "replay_from": after,
                "missed": after is not None and rt.hub.missed(after),
            }
            yield ServerSentEventMessage(data=msgspec.json.encode(hello).decode(), event="hello", retry=RETRY_MS)
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
                if event.kind == GAP or getattr(queue, "overflowed", False):
                    # This client fell 10,000 events behind, or the relay lost other processes' events:
                    # say so and let it reload its view.
                    queue.overflowed = False  # type: ignore[attr-defined]
                    gap = {
                        "kind": "hello",
                        "at": round(time.time(), 3),
                        "last_event_id": event.id,
                        "replay_from": None,
                        "missed": True,
                    }
                    yield ServerSentEventMessage(data=msgspec.json.encode(gap).decode(), event="hello")
                    if event.kind == GAP:
                        continue
                if only is not None and not await only.shows(event):
                    if time.monotonic() - last_out >= KEEPALIVE:
                        last_out = time.monotonic()
                        yield ServerSentEventMessage(comment="heartbeat", data=None)
                    continue
                last_out = time.monotonic()
                yield _message(event)
                if event.kind == "server.closing":
                    return
