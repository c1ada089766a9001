"""The main screen: header, problems, queue and workers panels, the designs table and the task log,
and the keys that act on them (queue keys, filter, search, more, and the design keys of
`DesignActionsScreen` for the selected row). The app hands it the state and the stream's changes."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any, ClassVar

import msgspec
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.events import Key
from textual.reactive import var
from textual.widgets import DataTable, Footer, Input, Label

from customify import schemas
from tui.client import ApiClient
from tui.messages import DesignGone
from tui.screens import DesignActionsScreen, DesignScreen, PromptScreen
from tui.state import STATUSES, DashboardState, short_id, text
from tui.widgets import DesignsTable, HeaderBar, ProblemBanner, QueuePanel, TaskLog, WorkersPanel

PAGE = 100  # designs loaded at a time ("m" loads the next page)
FETCH_BATCH = 20  # designs re-read at once after their events

ACTIONS: list[tuple[str, str, str, str]] = [
    # (key, action, footer label, what) — drives the bindings, the help screen and the command palette
    ("enter", "open_detail", "Open", "Open the selected design: layers, preview, task timeline"),
    ("r", "retry", "Retry", "Retry the selected design (when it failed)"),
    ("R", "rerender", "Re-render", "Re-render the selected design"),
    ("d", "delete", "Delete", "Delete the selected design (asks first)"),
    ("x", "revoke", "Revoke", "Revoke the pending task(s) of the selected design"),
    ("p", "toggle_pause", "Pause", "Pause / resume consuming"),
    ("w", "workers", "Threads", "Set the number of worker threads"),
    ("P", "purge", "Purge", "Purge the pending queue (shows the count, asks you to type 'purge')"),
    ("n", "sample", "Sample", "Create a sample design (a smoke test in one key)"),
    ("o", "open_preview", "Browser", "Open the selected design's preview in the browser"),
    ("c", "copy_id", "Copy id", "Copy the selected design's id"),
    ("s", "stack", "Stack", "Live Python stack of the worker running the selected design (or any busy one)"),
    ("f", "cycle_filter", "Filter", "Filter designs by status (all → draft → rendering → published → failed)"),
    ("slash", "search", "Search", "Search the loaded designs by name or id"),
    ("m", "more", "More", "Load the next page of designs"),
    ("a", "every_owner", "All users", "Designs: yours / every user's (operators)"),
    ("question_mark", "help", "Help", "This help"),
    ("q", "quit", "Quit", "Quit"),
]
SHOWN = {
    "retry",
    "rerender",
    "delete",
    "revoke",
    "toggle_pause",
    "workers",
    "purge",
    "sample",
    "stack",
    "cycle_filter",
    "search",
    "help",
    "quit",
}
KEY_NAMES = {"slash": "/", "question_mark": "?"}


def sample_design(now: float) -> dict[str, Any]:
    spec = schemas.DesignIn(
        name=time.strftime("Sample %H:%M:%S", time.gmtime(now)),
        product="tshirt",
        color="#1e3a8a",
        layers=[
            schemas.TextLayer(text="HELLO", weight="bold", size=0.12, color="#ffffff", x=0.5, y=0.2),
            schemas.ShapeLayer(
                shape="ellipse",
                x=0.5,
                y=0.6,
                width=0.4,
                height=0.2,
                fill="#f59e0b",
                stroke="#000000",
                stroke_width=0.005,
            ),
        ],
    )
    return msgspec.to_builtins(spec)  # type: ignore[no-any-return]


class MainScreen(DesignActionsScreen):
    """The designs table shows `state.designs` through the status filter and the search; changes are
    batched and painted by `flush` (the app calls it at most twenty times a second)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(key, action, label, show=action in SHOWN, key_display=KEY_NAMES.get(key))
        for key, action, label, _ in ACTIONS
        if action not in ("help", "quit", "open_detail")
    ]

    status_filter: var[str | None] = var(None, init=False)
    search_text: var[str] = var("", init=False)

    def __init__(self, client: ApiClient, state: DashboardState, clock: Callable[[], float] = time.time) -> None:
        super().__init__(client, state)
        self.clock = clock
        self.task_log = TaskLog(id="log", max_lines=500, wrap=False)  # exists before mount: lines queue up
        self._dirty: set[str] = set()  # designs to re-read over HTTP
        self._fetching = False
        self._rebuild = False  # rows came or went: rebuild the table at the next flush
        self._select_next: str | None = None  # a design this dashboard just created
        self._changed: dict[str, dict[str, Any]] = {}  # rows to update in place at the next flush

    def compose(self) -> ComposeResult:
        yield HeaderBar(id="header")
        yield ProblemBanner(id="problems")
        with Vertical(id="body"):
            with Horizontal(id="panels"):
                yield QueuePanel(id="queue")
                yield WorkersPanel(id="workers")
            with Horizontal(id="filter-bar"):
                yield Label("", id="filter-label")
                yield Input(placeholder="search name or id (enter: done, escape: clear)", id="search")
            yield DesignsTable(id="designs")
            yield self.task_log
        yield Footer()

    def on_mount(self) -> None:
        search = self.query_one("#search", Input)
        search.cursor_blink = False
        search.display = False
        self.query_one(DesignsTable).focus()

    # Drawing ------------------------------------------------------------------

    def redraw(self, parts: frozenset[str]) -> None:
        """Redraw these parts: header, problems, queue, workers, or all."""
        with contextlib.suppress(NoMatches):  # the app is shutting down
            self._redraw(parts)

    def _redraw(self, parts: frozenset[str]) -> None:
        if not self.is_mounted:
            return
        everything = "all" in parts
        if everything or "header" in parts:
            self.query_one(HeaderBar).show(self.state, self.clock())
        if everything or "problems" in parts:
            self.query_one(ProblemBanner).show(self.state)
        if everything or "queue" in parts:
            self.query_one(QueuePanel).show(self.state)
        if everything or "workers" in parts:
            self.query_one(WorkersPanel).show(self.state)
        if everything:
            self.update_filter_label()

    def log_line(self, at: float | None, line: Text) -> None:
        """Queued in the task log, written by `flush`: at 50 events/s one write per flush, not one per event."""
        self.task_log.add_line(at if at is not None else self.clock(), line)

    # Designs ------------------------------------------------------------------

    def matches(self, design: dict[str, Any]) -> bool:
        if self.status_filter and design.get("status") != self.status_filter:
            return False
        if self.search_text:
            needle = self.search_text.lower()
            return needle in text(design.get("name"), "").lower() or needle in text(design.get("id"), "")
        return True

    async def first_page(self) -> dict[str, Any]:
        """The first page of the designs this screen shows (the feed loads it, and so does a new filter)."""
        return await self.client.designs(self.status_filter, PAGE, every_owner=self.state.every_owner)

    def designs_loaded(self) -> None:
        """A new page of designs is in the state: the table shows it at the next flush."""
        self._rebuild = True

    def show_design(self, design: dict[str, Any]) -> None:
        """Queued for the next flush: a table cell update repaints every visible row, so batch them."""
        if isinstance(design.get("id"), str):
            self._changed[design["id"]] = design

    def fetch_design(self, design_id: str) -> None:
        """Re-read this design at the next flush (render time, preview, error; or not on screen yet)."""
        self._dirty.add(design_id)

    def remove_design(self, design_id: str) -> None:
        table = self.query_one(DesignsTable)
        if design_id in table.rows:
            table.remove_row(design_id)
        self.update_filter_label()

    def apply_changes(self) -> None:
        changed, self._changed = self._changed, {}
        for design in changed.values():
            self._show_design(design)

    def _show_design(self, design: dict[str, Any]) -> None:
        tables = self.query(DesignsTable)
        if not tables:
            return
        table = tables.first()
        if not self.matches(design):
            if design.get("id") in table.rows:
                self._rebuild = True
        elif not table.update_design(design):
            self._rebuild = True

    def flush(self) -> None:
        """Ten times a second at most: write the log, re-read designs named by events, and rebuild the table
        if rows came or went."""
        if not self.is_attached:
            return
        if self.task_log.queued:
            self.task_log.flush()
        if self._changed:
            self.apply_changes()
        if self._dirty and not self._fetching:
            batch = [self._dirty.pop() for _ in range(min(FETCH_BATCH, len(self._dirty)))]
            self._fetching = True
            self.app.run_worker(self.fetch_designs(batch), group="fetch")
        self.rebuild_if_needed()

    def rebuild_if_needed(self) -> None:
        if self._rebuild:
            self._rebuild = False
            for table in self.query(DesignsTable):
                table.rebuild([d for d in self.state.designs.values() if self.matches(d)])
                if self._select_next is not None and self._select_next in table.rows:
                    table.move_cursor(row=table.get_row_index(self._select_next), animate=False)
                    self._select_next = None
                self.update_filter_label()

    async def fetch_designs(self, ids: list[str]) -> None:
        try:
            results = await asyncio.gather(
                *(self.client.design(i, self.state.every_owner) for i in ids), return_exceptions=True
            )
        finally:
            self._fetching = False
        for design_id, design in zip(ids, results, strict=True):
            if isinstance(design, BaseException):
                self._dirty.add(design_id)  # try again at the next flush
            elif design is None:
                self.post_message(DesignGone(design_id))
            elif design_id in self.state.designs or self.matches(design):
                if self.state.put_design(design):
                    self._rebuild = True
                else:
                    self.show_design(design)
        self.apply_changes()
        self.rebuild_if_needed()

    def update_filter_label(self) -> None:
        shown = self.query_one(DesignsTable).row_count
        what = (self.status_filter or "all") + (" · every user's" if self.state.every_owner else "")
        more = " · m: more" if self.state.next_cursor else ""
        search = f" · search “{self.search_text}”" if self.search_text else ""
        self.query_one("#filter-label", Label).update(
            f"designs: [b]{what}[/b] ({shown} shown of {len(self.state.designs)} loaded){search}{more}", layout=False
        )

    # Keys ---------------------------------------------------------------------

    def selected_design_id(self) -> str | None:
        return self.query_one(DesignsTable).selected_id()

    def action_toggle_pause(self) -> None:
        paused = not self.state.queue.get("paused")

        async def work() -> str:
            await self.client.pause(paused)
            self.state.queue["paused"] = paused
            self.redraw(frozenset({"header", "workers"}))
            return "consuming paused: running tasks finish, nothing new starts" if paused else "consuming resumed"

        self.act(work)

    def action_workers(self) -> None:
        now = int(self.state.queue.get("concurrency") or 0)

        def check(value: str) -> str | None:
            return None if value.strip().isdigit() and 1 <= int(value) <= 64 else "a whole number from 1 to 64"

        def answered(value: str | None) -> None:
            if value is None:
                return

            async def work() -> str:
                result = await self.client.set_workers(int(value))
                return f"worker threads: {result.get('previous', '?')} → {result.get('threads', value)}"

            self.act(work)

        self.app.push_screen(
            PromptScreen(f"Worker threads (now {now or '?'}):", "1–64", check, str(now or "")), answered
        )

    def action_purge(self) -> None:
        async def count_then_ask() -> str | None:
            stats = await self.client.stats()
            pending = stats.get("pending")
            if not pending:
                return "nothing pending to purge"

            def answered(value: str | None) -> None:
                if value is None:
                    return

                async def work() -> str:
                    return (
                        f"purged {await self.client.purge()} pending task(s); their designs stay drafts until "
                        "the sweeper re-drives them"
                    )

                self.act(work)

            self.app.push_screen(
                PromptScreen(
                    f"Purge [b]{pending}[/b] pending task(s)? Their designs stay drafts until the sweeper re-drives "
                    "them (delete a design to drop it for good). Type [b]purge[/b] to confirm:",
                    "purge",
                    lambda v: None if v.strip() == "purge" else "type purge (or escape to cancel)",
                ),
                answered,
            )
            return None

        self.act(count_then_ask)

    def action_sample(self) -> None:
        async def work() -> str:
            design = await self.client.create_design(sample_design(self.clock()))
            if isinstance(design.get("id"), str):
                self._select_next = design["id"]  # the cursor goes to it once its row is shown
            return f"sample design {short_id(design.get('id'))} created"

        self.act(work)

    def action_cycle_filter(self) -> None:
        order: list[str | None] = [None, *STATUSES]
        self.status_filter = order[(order.index(self.status_filter) + 1) % len(order)]

    def watch_status_filter(self) -> None:
        self.reload_designs()

    def action_every_owner(self) -> None:
        if self.state.customer:
            self.app.notify("every user's designs are for operators", severity="warning")
            return
        self.state.every_owner = not self.state.every_owner
        self.reload_designs()

    def reload_designs(self) -> None:
        async def work() -> None:
            page = await self.first_page()
            self.state.set_designs(page.get("items") or [], page.get("next_cursor"))
            self._rebuild = True
            self.rebuild_if_needed()

        self._rebuild = True  # show the filter at once on what is loaded; the page follows
        self.act(work)

    def watch_search_text(self) -> None:
        self._rebuild = True

    def action_more(self) -> None:
        cursor = self.state.next_cursor
        if not cursor:
            self.app.notify("no more designs", severity="information")
            return

        async def work() -> str:
            page = await self.client.designs(self.status_filter, PAGE, cursor, every_owner=self.state.every_owner)
            self.state.add_designs(page.get("items") or [], page.get("next_cursor"))
            self._rebuild = True
            return f"{len(self.state.designs)} designs loaded"

        self.act(work)

    def action_search(self) -> None:
        if not self.is_current:
            return
        field = self.query_one("#search", Input)
        field.display = True
        field.focus()

    @on(Input.Changed, "#search")
    def search_changed(self, event: Input.Changed) -> None:
        self.search_text = event.value.strip()

    @on(Input.Submitted, "#search")
    def search_done(self, event: Input.Submitted) -> None:
        self.query_one(DesignsTable).focus()

    def on_key(self, event: Key) -> None:
        if event.key == "escape" and self.is_current:
            field = self.query_one("#search", Input)
            if field.display:
                field.value = ""
                field.display = False
                self.search_text = ""
                self._rebuild = True
                self.query_one(DesignsTable).focus()
                event.stop()

    @on(DataTable.RowSelected, "#designs")
    def row_selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value is not None:
            self.app.push_screen(DesignScreen(str(event.row_key.value), self.client, self.state))

    def action_open_detail(self) -> None:
        design_id = self.selected_design_id()
        if design_id and self.is_current:
            self.app.push_screen(DesignScreen(design_id, self.client, self.state))
