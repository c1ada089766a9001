"""An in-process event hub: any thread publishes, asyncio subscribers receive.

It feeds `?wait=` long-polls and the server-sent event stream. Recent events
are kept in a bounded buffer so a subscriber reconnecting with Last-Event-ID
misses nothing still in it. Event ids are this process's own: on Postgres
`customify.relay` republishes other processes' events here under new local ids
(`publish_relayed`), so a Last-Event-ID resumes on the process that gave it.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

# Events of other processes may have been lost (customify.relay: this process's listener was reconnecting,
# or another process could not send for a while). Not shown as such: an event stream turns it into a
# `hello` with `"missed": true` (its client reloads) and every `?wait=` re-reads its design.
GAP = "relay.gap"


@dataclass(frozen=True)
class Event:
    id: int
    kind: str
    data: dict[str, Any]
    at: float = field(default_factory=time.time)


class EventHub:
    def __init__(self, buffer_size: int = 2000) -> None:
        self.closing = False
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._buffer: deque[Event] = deque(maxlen=buffer_size)
        self._subscribers: set[_Subscriber] = set()
        # Sees every event this process publishes (not those relayed from others): customify.relay's
        # outbox. Called on the publishing thread, so it must only hand the event over.
        self.tap: Callable[[Event], None] | None = None

    def publish(self, kind: str, **data: Any) -> Event:
        event = self._add(kind, data, time.time())
        tap = self.tap
        if tap is not None:
            tap(event)
        return event

    def publish_relayed(self, kind: str, data: dict[str, Any], at: float) -> Event:
        """An event another process published at `at` (customify.relay): a local id, never tapped."""
        return self._add(kind, data, at)

    def _add(self, kind: str, data: dict[str, Any], at: float) -> Event:
        with self._lock:
            event = Event(next(self._ids), kind, data, at)
            self._buffer.append(event)
            wake = [sub for sub in self._subscribers if sub.add(event)]
        for sub in wake:
            try:
                sub.loop.call_soon_threadsafe(sub.deliver)
            except RuntimeError:  # the subscriber's loop has closed
                with self._lock:
                    self._subscribers.discard(sub)
        return event

    @contextmanager
    def subscribe(
        self, after: int | None = None, wants: Callable[[Event], bool] | None = None
    ) -> Iterator[asyncio.Queue[Event]]:
        """A queue of events from now on (and from the buffer after id `after`, when given).

        `wants`: only the events it accepts are queued; it runs on the publishing thread, under the
        hub's lock, so it must be quick. A `?wait=` on one design is woken once, not by every event."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=10_000)
        with self._lock:
            if after is not None:
                for event in self._buffer:
                    if event.id > after and (wants is None or wants(event)):
                        queue.put_nowait(event)
            entry = _Subscriber(loop, queue, self._lock, wants)
            self._subscribers.add(entry)
        try:
            yield queue
        finally:
            with self._lock:
                self._subscribers.discard(entry)

    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def last_id(self) -> int:
        with self._lock:
            return self._buffer[-1].id if self._buffer else 0

    def missed(self, after: int) -> bool:
        """True when events after id `after` have already left the buffer (a replay would have a gap)."""
        with self._lock:
            if not self._buffer:
                return False
            return after + 1 < self._buffer[0].id or after > self._buffer[-1].id

    def close(self) -> None:
        """The server is stopping: tell every stream to end (clients reconnect with Last-Event-ID)."""
        self.closing = True
        self.publish("server.closing")


class _Subscriber:
    """Events waiting for one subscriber's loop. One wake-up (a syscall) carries every event
    published until the loop runs it, so a burst costs the publisher little."""

    __slots__ = ("lock", "loop", "pending", "queue", "scheduled", "wants")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        queue: asyncio.Queue[Event],
        lock: threading.Lock,
        wants: Callable[[Event], bool] | None = None,
    ) -> None:
        self.loop = loop
        self.queue = queue
        self.lock = lock  # the hub's
        self.wants = wants
        self.pending: list[Event] = []
        self.scheduled = False

    def add(self, event: Event) -> bool:
        """Under the hub's lock; True when the loop must be woken."""
        if self.wants is not None and not self.wants(event):
            return False
        self.pending.append(event)
        if self.scheduled:
            return False
        self.scheduled = True
        return True

    def deliver(self) -> None:
        """On the subscriber's loop: a subscriber too far behind loses events and is told so."""
        with self.lock:
            events, self.pending, self.scheduled = self.pending, [], False
        for event in events:
            try:
                self.queue.put_nowait(event)
            except asyncio.QueueFull:
                self.queue.overflowed = True  # type: ignore[attr-defined]
