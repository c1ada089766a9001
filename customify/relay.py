"""Hub events across the processes of one deployment, over Postgres LISTEN/NOTIFY.

In a split deployment (`customify api` and `customify worker` on one Postgres) the
process that renders a design is not the one whose clients wait for it. Each
process sends the events that describe work (`design.*`, `task.*`, `webhook.*`,
and `control` revoke and purge, which act on the shared queue) with `pg_notify`;
each process that serves HTTP listens and republishes them into its own hub, so
`?wait=`, the event stream, the web pages and the dashboard see them. Events a
process computes for itself (`queue`, `worker.state`, `problem`, `problem.cleared`,
`system.problems`, `server.closing`, `hello`, pausing or resizing its own threads)
are not sent. Worker-only processes send but do not listen: nothing in them reads
the hub, and every listener costs the database a connection and a delivery per event.

- Sending adds nothing to the publishing thread (a worker's) but a deque append and,
  when the sender sleeps, its wake-up (`EventHub.tap`): the sender thread sends
  whatever has gathered in one statement (one transaction: delivered in order,
  together). While the database is away the outbox keeps the newest `OUTBOX`
  events; a batch that fails is dropped.
- A payload must stay under Postgres's 8000 bytes: text values longer than
  `TEXT_LIMIT` (an error) are cut, with "…"; an event still too big is not sent,
  and a `?wait=` sees its design by the re-read (customify/api/designs.py).
- Each payload carries the origin id of its Runtime; a listener drops its own.
- Event ids stay per process: a relayed event takes the next id of the hub that
  republishes it (and keeps the origin's `at`), so Last-Event-ID resumes only on
  the process that gave it, as before.
- NOTIFY keeps nothing for a listener that is not connected: what is sent while it
  reconnects is lost to it (a `?wait=` re-reads meanwhile). Once it listens again it
  publishes a gap (`events.GAP`) here: event streams tell their clients they missed
  events (a `hello` with `"missed": true`) and every `?wait=` re-reads its design. A
  sender that dropped events while the database was away sends a gap to every
  listener once it sends again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
import time
import uuid
from collections import deque
from typing import Any

import msgspec
import psycopg
from sqlalchemy import Engine

from customify import db
from customify.errors import first_line
from customify.events import GAP, Event, EventHub

log = logging.getLogger("customify.relay")

CHANNEL = "customify_events"
PAYLOAD_LIMIT = 7999  # bytes: Postgres refuses a NOTIFY payload of 8000 or more
TEXT_LIMIT = 1000  # characters a text value keeps when the whole would not fit
BATCH = 200  # notifies per statement
OUTBOX = 10_000  # events kept while the database is away (the oldest go first)
RETRY_FIRST, RETRY_MAX = 0.5, 5.0  # seconds before reconnecting, doubling each failure
SHARED_CONTROL = frozenset({"revoke", "purge"})  # control actions on the queue every process shares
SEND = "select pg_notify(%s, payload) from unnest(%s::text[]) as payload"


class Wire(msgspec.Struct, array_like=True):
    """One event as sent: `[origin, kind, at, data]`."""

    origin: str
    kind: str
    at: float
    data: dict[str, Any]


def relayed(kind: str, data: dict[str, Any]) -> bool:
    """Whether an event describes work that other processes cannot know of by themselves."""
    if kind.startswith(("design.", "task.", "webhook.")) or kind == GAP:
        return True
    return kind == "control" and data.get("action") in SHARED_CONTROL


def encode(origin: str, event: Event) -> str | None:
    """The payload of one event: long text values cut to fit; None when it still does not."""
    payload = msgspec.json.encode(Wire(origin, event.kind, event.at, event.data))
    if len(payload) > PAYLOAD_LIMIT:
        data = {
            k: v[:TEXT_LIMIT] + "…" if isinstance(v, str) and len(v) > TEXT_LIMIT else v for k, v in event.data.items()
        }
        payload = msgspec.json.encode(Wire(origin, event.kind, event.at, data))
        if len(payload) > PAYLOAD_LIMIT:
            return None
    return payload.decode()


def decode(payload: str) -> Wire | None:
    """One received payload; None when it is not one of ours."""
    try:
        return msgspec.json.decode(payload, type=Wire)
    except msgspec.DecodeError:
        return None


class Relay:
    """One Runtime's end of the relay: a sender thread, and a listener thread when it serves HTTP."""

    def __init__(self, hub: EventHub, engine: Engine) -> None:
        self.hub = hub
        self.origin = uuid.uuid4().hex  # per Runtime: tests run several in one process
        _, params = engine.dialect.create_connect_args(engine.url)  # the pool's own URL → libpq translation
        params.pop("context", None)  # SQLAlchemy's adapters: plain strings are all we exchange
        self._connect_args: dict[str, Any] = {**params, **db.PG_CONNECT_ARGS}
        self._outbox: deque[Event] = deque(maxlen=OUTBOX)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._sender: threading.Thread | None = None
        self._listener: threading.Thread | None = None
        self._wakeup: tuple[int, int] | None = None  # a pipe: stop() ends the listener's poll at once
        self.listening = False  # a LISTEN connection is up: other processes' events arrive
        self.listener_pid: int | None = None  # its server process (pg_stat_activity.pid)
        self.sender_pid: int | None = None  # the sender's, once it has sent
        self.sent = self.skipped = self.send_failures = 0
        self.received = self.listen_failures = 0

    def start(self, listen: bool) -> None:
        """Send this process's events from now on; with `listen`, receive the others' too. Idempotent."""
        if self._stop.is_set():
            return
        if self._sender is None:
            self._sender = threading.Thread(target=self._send_loop, name="relay-sender", daemon=True)
            self._sender.start()
            self.hub.tap = self.offer
        if listen and self._listener is None:
            self._wakeup = os.pipe()
            self._listener = threading.Thread(target=self._listen_loop, name="relay-listener", daemon=True)
            self._listener.start()

    def stop(self, timeout: float = 3.0) -> None:
        """Send what is queued (for up to `timeout` s), stop listening, end both threads."""
        if self.hub.tap == self.offer:
            self.hub.tap = None
        self._stop.set()
        self._wake.set()
        if self._wakeup is not None:
            os.write(self._wakeup[1], b"x")
        for thread in (self._sender, self._listener):
            if thread is not None:
                thread.join(timeout)
        if self._wakeup is not None and not (self._listener and self._listener.is_alive()):
            for fd in self._wakeup:
                os.close(fd)
            self._wakeup = None

    def offer(self, event: Event) -> None:
        """The hub's tap, on the publishing thread (a worker's): only a deque append."""
        if relayed(event.kind, event.data):
            self._outbox.append(event)
            if not self._wake.is_set():
                self._wake.set()

    def _connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(autocommit=True, **self._connect_args)

    # Sending --------------------------------------------------------------------

    def _take(self) -> list[str]:
        """Up to BATCH payloads from the outbox."""
        batch: list[str] = []
        while self._outbox and len(batch) < BATCH:
            event = self._outbox.popleft()
            try:
                payload = encode(self.origin, event)
            except (msgspec.EncodeError, TypeError):  # pragma: no cover - hub data is JSON by contract
                payload = None
            if payload is None:
                self.skipped += 1
                log.debug("relay: %s not sent (over %s bytes); ?wait= re-reads the row", event.kind, PAYLOAD_LIMIT)
                continue
            batch.append(payload)
        return batch

    def _send_loop(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        delay, down = RETRY_FIRST, False
        while True:
            self._wake.clear()  # before looking: an event offered from now on sets it again
            if not self._outbox:
                if self._stop.is_set():
                    break
                self._wake.wait()
                continue
            batch = self._take()
            if not batch:
                continue
            try:
                if conn is None:
                    conn = self._connect()
                    self.sender_pid = conn.info.backend_pid
                conn.execute(SEND, (CHANNEL, batch))
            except (psycopg.Error, OSError) as exc:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
                conn = None
                self.send_failures += 1
                if not down:
                    log.warning(
                        "relay: cannot send events to other processes (%s); retrying, "
                        "their ?wait= sees designs by re-reading meanwhile",
                        first_line(exc),
                    )
                    down = True
                if self._stop.wait(delay):
                    break  # stopping with the database away: what is left is not sent
                delay = min(delay * 2, RETRY_MAX)
                continue
            self.sent += len(batch)
            if down:
                log.info("relay: sending events to other processes again")
                delay, down = RETRY_FIRST, False
                # What failed to go was dropped: the listeners' clients learn they missed something.
                self._outbox.appendleft(Event(0, GAP, {"reason": "a process could not send its events"}, time.time()))
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    # Receiving ------------------------------------------------------------------

    def _listen_loop(self) -> None:
        delay, warned, first = RETRY_FIRST, False, True
        while not self._stop.is_set():
            conn: psycopg.Connection[Any] | None = None
            try:
                conn = self._connect()
                conn.execute(f"listen {CHANNEL}")
                self.listener_pid = conn.info.backend_pid
                self.listening = True
                if not first:  # what the others sent meanwhile is lost to this process
                    self.hub.publish_relayed(GAP, {"reason": "this process's listener reconnected"}, time.time())
                first = False
                if warned:
                    log.info("relay: listening to other processes' events again")
                    warned = False
                delay = RETRY_FIRST
                self._receive(conn)
            except (psycopg.Error, OSError) as exc:
                self.listen_failures += 1
                if not warned:
                    log.warning(
                        "relay: cannot listen to other processes' events (%s); retrying, ?wait= re-reads meanwhile",
                        first_line(exc),
                    )
                    warned = True
            finally:
                self.listening = False
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
            if self._stop.wait(delay):
                return
            delay = min(delay * 2, RETRY_MAX)

    def _receive(self, conn: psycopg.Connection[Any]) -> None:
        """Republish notifications until stopped; raises when the connection is lost."""
        assert self._wakeup is not None
        stop_fd = self._wakeup[0]
        poller = select.poll()  # not select(): an API serving many clients has descriptors above 1024
        poller.register(conn.fileno(), select.POLLIN)
        poller.register(stop_fd, select.POLLIN)
        while True:
            # Also notices a server that went away: the socket turns readable and reading it raises.
            # A peer that vanished without a word is noticed by the connection's TCP keepalives.
            ready = poller.poll()
            if any(fd == stop_fd for fd, _ in ready):
                return
            for note in conn.notifies(timeout=0):
                wire = decode(note.payload)
                if wire is None or wire.origin == self.origin or not relayed(wire.kind, wire.data):
                    continue
                self.received += 1
                self.hub.publish_relayed(wire.kind, wire.data, wire.at)
