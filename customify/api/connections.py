"""Slow and idle connections are closed, and their number capped (slowloris).

uvicorn closes a keep-alive connection idle past `timeout_keep_alive`, but a
connection that never completes its request head, or stops sending in the middle
of a body, is held forever: 500 of them held for 30 s in the review. This is
uvicorn's own httptools protocol (a hard dependency) with three timers and a cap:

- the request head must be complete `limits.request_head_seconds` after the
  connection opens, or after the first byte of the next request on a kept-alive
  connection (a client trickling a byte at a time does not reset it);
- a body must keep arriving: `limits.body_stall_seconds` without a byte closes it
  (unless the server itself paused reading, because the app has not read yet);
- idle keep-alive: uvicorn's timer, set to `limits.keep_alive_seconds`;
- past `limits.max_connections` open connections a new one is closed at once.
"""

from __future__ import annotations

import asyncio
import resource
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from customify.config import Limits

_TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"


class GuardedProtocol(HttpToolsProtocol):
    """HttpToolsProtocol with a request-head deadline, a body stall timer and a connection cap."""

    limits = Limits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._reading_body = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            transport.abort()  # the cap: closed before a byte is read
            return
        self._arm(self.limits.request_head_seconds)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._reading_body:
            self._arm(self.limits.body_stall_seconds)  # bytes arrive: not stalled
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:  # the next request on a kept-alive connection
            self._arm(self.limits.request_head_seconds)

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()
        self._reading_body = True
        self._arm(self.limits.body_stall_seconds)

    def on_message_complete(self) -> None:
        self._reading_body = False
        self._disarm()
        super().on_message_complete()

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self._reading_body and self.flow.read_paused:  # we stopped reading, not the client
            self._arm(self.limits.body_stall_seconds)
            return
        if self.cycle is None or self._reading_body:
            # No response has started: say why, then close (a slow client gets no more of our time).
            if self.cycle is not None:
                self.cycle.disconnected = True
                self.cycle.message_event.set()
            self.transport.write(_TIMEOUT)
        self.transport.close()


def protocol_for(limits: Limits) -> type[GuardedProtocol]:
    """The protocol class with this configuration's limits (uvicorn instantiates it per connection)."""
    return type("GuardedProtocol", (GuardedProtocol,), {"limits": limits})


def raise_file_limit(wanted: int) -> int:
    """Let the process hold `wanted` descriptors if the hard limit allows (a soft limit of 1024 is
    common); returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return int(soft)


def server_config(app: Any, limits: Limits, **options: Any) -> uvicorn.Config:
    """uvicorn's Config for Customify's server: the guarded protocol and the keep-alive timeout."""
    raise_file_limit(limits.max_connections + 256)  # helpers' pipes, databases, the queue, logs
    return uvicorn.Config(app, http=protocol_for(limits), timeout_keep_alive=limits.keep_alive_seconds, **options)
