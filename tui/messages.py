"""Every custom Textual message of the dashboard, in one place."""

from __future__ import annotations

from typing import Any

from textual.message import Message


class EventReceived(Message):
    """One server-sent event from /api/v1/events (posted by the feed, tui/feed.py)."""

    def __init__(self, kind: str, data: dict[str, Any], event_id: int | None) -> None:
        super().__init__()
        self.kind = kind
        self.data = data
        self.event_id = event_id


class ConnectionChanged(Message):
    """The event stream connected, or dropped (with the reason in words); posted by the feed."""

    def __init__(self, connected: bool, reason: str = "", attempt: int = 0, refused: bool = False) -> None:
        super().__init__()
        self.connected = connected
        self.reason = reason
        self.attempt = attempt
        self.refused = refused  # the API answered 401: a key problem, not a network one


class StateChanged(Message):
    """The `DashboardState` changed (the feed loaded it); the app redraws these parts of it."""

    def __init__(self, parts: frozenset[str]) -> None:
        super().__init__()
        self.parts = parts


class DesignGone(Message):
    """Re-reading a design found it deleted (posted by the main screen)."""

    def __init__(self, design_id: str) -> None:
        super().__init__()
        self.design_id = design_id
