"""The feed: loads the first `DashboardState` over REST, then follows /api/v1/events, reconnecting by itself.

It talks to the app only through messages (tui/messages.py): `StateChanged` after a load,
`EventReceived` for each server-sent event, `ConnectionChanged` when the stream opens or drops.
When the API is unreachable it retries with a doubling wait (up to MAX_BACKOFF) and resumes the
stream from the last event id.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from textual.message import Message

from tui.client import ApiClient, ApiError
from tui.messages import ConnectionChanged, EventReceived, StateChanged
from tui.state import DashboardState

MAX_BACKOFF = 5.0


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, ApiError):
        return exc.detail if exc.status < 500 else f"HTTP {exc.status}: {exc.detail}"
    if isinstance(exc, httpx.ConnectError):
        return "connection refused"
    if isinstance(exc, httpx.ReadTimeout):
        return "no data for 6 s"
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, httpx.HTTPError):
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return f"{type(exc).__name__}: {exc}"


class EventFeed:
    """Fills `state` from `client` and posts what happened with `post` (the app's `post_message`).

    `first_page` reads the designs the table shows (the main screen knows its filter: `MainScreen.first_page`);
    `loaded` is set once the first page is in."""

    def __init__(
        self,
        client: ApiClient,
        state: DashboardState,
        post: Callable[[Message], object],
        *,
        first_page: Callable[[], Awaitable[dict[str, Any]]],
        clock: Callable[[], float] = time.time,
        backoff_base: float = 0.25,
    ) -> None:
        self.client = client
        self.state = state
        self.post = post
        self.first_page = first_page
        self.clock = clock
        self.backoff_base = backoff_base  # seconds; reconnect waits double up to MAX_BACKOFF
        self.loaded = asyncio.Event()

    async def load(self, designs: bool = True) -> None:
        """Read worker status, health and (with `designs`) the first page of designs into the state."""
        state = self.state
        try:
            status = await self.client.worker_status()
            state.customer = False
        except ApiError as exc:
            if exc.status != 403:
                raise
            status, state.customer = {}, True  # a customer's key: their designs, no queue
        health = await self.client.health()
        page = await self.first_page() if designs else None
        state.status, state.health = status, health
        parts = {"all"}
        if page is not None:
            state.set_designs(page.get("items") or [], page.get("next_cursor"))
            parts.add("designs")
        state.received_at = self.clock()
        self.post(StateChanged(frozenset(parts)))

    async def run(self) -> None:
        """Load, follow the stream, and on any failure say why and try again; until cancelled."""
        attempt = 0
        while True:
            connected = False
            try:
                await self.load(designs=self.state.last_event_id is None or not self.loaded.is_set())
                self.loaded.set()
                async for event in self.client.events(self.state.last_event_id):
                    if not connected:
                        connected, attempt = True, 0
                        self.post(ConnectionChanged(True))
                    if event.id is not None:
                        self.state.last_event_id = event.id
                    self.post(EventReceived(event.kind, event.data, event.id))
                reason = "the server closed the event stream"
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                reason = describe_error(exc)
                refused = isinstance(exc, ApiError) and exc.status == 401
            else:
                refused = False
            attempt += 1
            self.post(ConnectionChanged(False, reason, attempt, refused))
            await asyncio.sleep(min(MAX_BACKOFF, self.backoff_base * 2**attempt))
