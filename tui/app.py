"""The dashboard app: `Dashboard(client)`, shared by `customify tui`, `customify run` and the tests.

Data arrives pushed by /api/v1/events (the queue each second, every design and
task change as it happens); REST is used to load the first state, to fill in a
design that changed, and for actions. The app composes the rooms and routes
between them: tui/feed.py follows the stream and reconnects, tui/state.py is the
`DashboardState` and how an event changes it, tui/main_screen.py and
tui/screens.py own the screens and their keys, tui/widgets.py draws the state
(the task log formats its own lines). When the API is unreachable the last state
stays on screen, greyed, with its age.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar

from rich.text import Text
from textual.app import App, ScreenStackError, SystemCommand
from textual.binding import Binding, BindingType
from textual.css.query import NoMatches
from textual.screen import Screen

from tui.client import ApiClient
from tui.feed import EventFeed
from tui.main_screen import ACTIONS, KEY_NAMES, MainScreen
from tui.messages import ConnectionChanged, DesignGone, EventReceived, StateChanged
from tui.screens import DesignScreen, HelpScreen
from tui.state import DashboardState, EventEffect, dict_of

FLUSH_EVERY = 0.05  # seconds: table changes and log lines are painted in batches (at most 20 frames a second)


class Dashboard(App[None]):
    """The Customify dashboard; `client` is how it reaches the API (tests hand in their own)."""

    CSS_PATH = Path(__file__).with_name("dashboard.tcss")
    TITLE = "Customify"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        # `customify run` is a server: Ctrl-C stops it, as everywhere else (Textual's default only hints).
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True),
        Binding("question_mark", "help", "Help", key_display="?"),
    ]

    def __init__(self, client: ApiClient, *, clock: Callable[[], float] = time.time, live_clock: bool = True) -> None:
        super().__init__()
        self.client = client
        self.clock = clock
        self.live_clock = live_clock  # off in snapshot tests: no timer redraws
        self.state = DashboardState(client.base_url)
        self._main = MainScreen(client, self.state, clock)
        self.backoff_base = 0.25  # seconds; the feed's reconnect waits double up to feed.MAX_BACKOFF
        self.feed = EventFeed(client, self.state, self.post_message, first_page=self._main.first_page, clock=clock)

    @property
    def loaded(self) -> asyncio.Event:
        """Set once the first page of designs is in."""
        return self.feed.loaded

    @property
    def status_filter(self) -> str | None:
        """The main screen's status filter (f cycles it)."""
        return self._main.status_filter

    async def on_unmount(self) -> None:
        await self.client.aclose()

    # Start-up and the stream --------------------------------------------------

    def on_mount(self) -> None:
        self.push_screen(self._main)
        self.redraw(frozenset({"all"}))
        self.feed.backoff_base = self.backoff_base
        self.run_worker(self.feed.run(), group="stream", exclusive=True)
        self.set_interval(FLUSH_EVERY, self._main.flush)
        if self.live_clock:
            self.set_interval(1.0, lambda: self.redraw(frozenset({"header"})))

    def on_connection_changed(self, message: ConnectionChanged) -> None:
        state = self.state
        state.connected, state.error, state.attempt = message.connected, message.reason, message.attempt
        state.refused = message.refused
        self._main.set_class(not message.connected, "-stale")
        if not message.connected and message.refused and message.attempt == 1:
            self._main.log_line(None, Text(f"the API refused the key: {message.reason}", style="bold red"))
        elif not message.connected and message.attempt == 1:
            self._main.log_line(None, Text(f"API unreachable: {message.reason}; reconnecting", style="bold red"))
        elif message.connected:
            self._main.log_line(None, Text("connected", style="green"))
        self.redraw(frozenset({"all"}))

    def on_event_received(self, message: EventReceived) -> None:
        with contextlib.suppress(NoMatches, ScreenStackError):  # events still arriving at shutdown
            self.apply_event(message)

    def apply_event(self, message: EventReceived) -> None:
        """The state applies the event (`DashboardState.apply`); the screens follow what it says."""
        kind, data = message.kind, message.data
        effect = self.state.apply(kind, data, self.clock(), self.loaded.is_set())
        if effect.reload:
            at = data.get("at")
            self._main.log_line(
                at if isinstance(at, int | float) else None, Text("missed events while away: reloading", style="yellow")
            )
            self.run_worker(self.feed.load(), group="reload", exclusive=True)
        if effect.redraw:
            self.redraw(effect.redraw)
        self.follow_design(kind, data.get("design_id"), effect)
        if effect.refresh_health:
            self.run_worker(self.refresh_health(), group="health", exclusive=True)
        if effect.log:
            self._main.task_log.add_event(kind, data, self.clock())

    def follow_design(self, kind: str, design_id: Any, effect: EventEffect) -> None:
        """Show a design event: its row in the main screen, and the detail screen when it is open on it."""
        if not isinstance(design_id, str):
            return
        if effect.deleted is not None:
            self._main.remove_design(effect.deleted)
        if effect.shown is not None:
            self._main.show_design(effect.shown)
        if effect.fetch is not None:
            self._main.fetch_design(effect.fetch)
        screen = self.screen
        if isinstance(screen, DesignScreen) and screen.design_id == design_id and kind != "task.enqueued":
            screen.run_worker(screen.reload(), exclusive=True, group="detail", exit_on_error=False)

    def on_design_gone(self, message: DesignGone) -> None:
        effect = self.state.apply_design_event("design.deleted", message.design_id, {})
        self.follow_design("design.deleted", message.design_id, effect)

    async def refresh_health(self) -> None:
        try:
            self.state.health = await self.client.health()
        except Exception:
            return
        self.redraw(frozenset({"header", "problems"}))

    def on_state_changed(self, message: StateChanged) -> None:
        if "designs" in message.parts:
            self._main.designs_loaded()
        self.redraw(message.parts)

    def redraw(self, parts: frozenset[str]) -> None:
        """Redraw these parts of the main screen: header, problems, queue, workers, or all."""
        self._main.redraw(parts)

    # Keys that are the app's: help, quit, the command palette ------------------

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            return
        self.push_screen(
            HelpScreen(
                [(KEY_NAMES.get(k, k), what) for k, _, _, what in ACTIONS]
                + [
                    ("j / k, ↓ / ↑", "Move in the table (g / G: top / bottom)"),
                    ("escape", "Back, or clear the search"),
                    ("ctrl+p", "Command palette: every action by name"),
                ]
            )
        )

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        """Every action by name; a design action acts on the screen it is called from (the detail screen's
        design), the others on the main screen."""
        yield from super().get_system_commands(screen)
        for key, action, _, what in ACTIONS:
            if action in ("quit", "help"):
                continue
            owner = screen if hasattr(screen, f"action_{action}") else self._main
            yield SystemCommand(
                what.split(" (")[0], f"key {KEY_NAMES.get(key, key)}", getattr(owner, f"action_{action}")
            )

    async def action_quit(self) -> None:
        self.exit()

    def debug_state(self) -> dict[str, Any]:
        """For tests: what is on screen, as data."""
        return {
            "connected": self.state.connected,
            "problems": self.state.problems(),
            "threads": [dict_of(t) for t in self.state.threads()],
        }
