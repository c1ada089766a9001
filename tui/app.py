"""The dashboard app: `Dashboard(client)`, shared by `customify tui`, `customify run` and the tests.

Data arrives pushed by /api/v1/events (a queue picture each second, every
design and task change as it happens); REST is used to load the first picture,
to fill in a design that changed, and for actions. When the API is
unreachable the last picture stays on screen, greyed, with its age, and the
app reconnects by itself, resuming the stream from the last event id.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar

import httpx
import msgspec
from rich.text import Text
from textual import on
from textual.app import App, ComposeResult, ScreenStackError, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, Label

from customify import schemas
from tui.client import ApiClient, ApiError
from tui.messages import ConnectionChanged, PictureChanged, StreamEvent
from tui.picture import STATUSES, Picture, dict_of, fmt_ms, short_id, text
from tui.screens import ConfirmScreen, DesignScreen, HelpScreen, PromptScreen, StackScreen
from tui.widgets import (
    TASK_LABELS,
    DesignsTable,
    HeaderBar,
    ProblemBanner,
    QueuePanel,
    TaskLog,
    WorkersPanel,
)

PAGE = 100  # designs loaded at a time ("m" loads the next page)
FETCH_BATCH = 20  # designs re-read at once after their events
LOG_BURST = 50  # task log lines written per flush at most (the rest of a burst is skipped)
FLUSH_EVERY = 0.05  # seconds: table changes and log lines are painted in batches (at most 20 frames a second)
MAX_BACKOFF = 5.0

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
    ("question_mark", "help", "Help", "This help"),
    ("q", "quit", "Quit", "Quit"),
]
SHOWN = {"retry", "rerender", "delete", "revoke", "toggle_pause", "workers", "purge", "sample", "stack",
         "cycle_filter", "search", "help", "quit"}
KEY_NAMES = {"slash": "/", "question_mark": "?"}


def sample_design(now: float) -> dict[str, Any]:
    spec = schemas.DesignIn(
        name=time.strftime("Sample %H:%M:%S", time.gmtime(now)), product="tshirt", color="#1e3a8a",
        layers=[schemas.TextLayer(text="HELLO", weight="bold", size=0.12, color="#ffffff", x=0.5, y=0.2),
                schemas.ShapeLayer(shape="ellipse", x=0.5, y=0.6, width=0.4, height=0.2, fill="#f59e0b",
                                   stroke="#000000", stroke_width=0.005)])
    return msgspec.to_builtins(spec)  # type: ignore[no-any-return]


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


class MainScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(key, f"app.{action}", label, show=action in SHOWN, key_display=KEY_NAMES.get(key))
        for key, action, label, _ in ACTIONS if action not in ("help", "quit", "open_detail")
    ]

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
            yield TaskLog(id="log", max_lines=500, wrap=False)
        yield Footer()

    def on_mount(self) -> None:
        search = self.query_one("#search", Input)
        search.cursor_blink = False
        search.display = False
        self.query_one(DesignsTable).focus()


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

    def __init__(self, client: ApiClient, *, clock: Callable[[], float] = time.time,
                 live_clock: bool = True) -> None:
        super().__init__()
        self.client = client
        self.clock = clock
        self.live_clock = live_clock  # off in snapshot tests: no timer redraws
        self.picture = Picture(client.base_url)
        self.status_filter: str | None = None
        self.search_text = ""
        self.loaded = asyncio.Event()
        self._dirty: set[str] = set()
        self._fetching = False
        self._rebuild = False
        self._log_lines: list[tuple[float, Text]] = []
        self._select_next: str | None = None  # a design this dashboard just created
        self._changed: dict[str, dict[str, Any]] = {}
        self._main = MainScreen()
        self.backoff_base = 0.25  # seconds; reconnect waits double up to MAX_BACKOFF

    async def on_unmount(self) -> None:
        await self.client.aclose()

    # Start-up and the stream --------------------------------------------------

    def on_mount(self) -> None:
        self.push_screen(self._main)
        self.redraw(frozenset({"all"}))
        self.run_worker(self.stream_loop(), group="stream", exclusive=True)
        self.set_interval(FLUSH_EVERY, self.flush)
        if self.live_clock:
            self.set_interval(1.0, lambda: self.redraw(frozenset({"header"})))

    async def load_picture(self, designs: bool = True) -> None:
        try:
            status = await self.client.worker_status()
            self.picture.customer = False
        except ApiError as exc:
            if exc.status != 403:
                raise
            status, self.picture.customer = {}, True  # a customer's key: their designs, no queue
        health = await self.client.health()
        page = await self.client.designs(self.status_filter, PAGE) if designs else None
        self.picture.status, self.picture.health = status, health
        if page is not None:
            self.picture.set_designs(page.get("items") or [], page.get("next_cursor"))
            self._rebuild = True
        self.picture.received_at = self.clock()
        self.post_message(PictureChanged(frozenset({"all"})))

    async def stream_loop(self) -> None:
        attempt = 0
        while True:
            connected = False
            try:
                await self.load_picture(designs=self.picture.last_event_id is None or not self.loaded.is_set())
                self.loaded.set()
                async for event in self.client.events(self.picture.last_event_id):
                    if not connected:
                        connected, attempt = True, 0
                        self.post_message(ConnectionChanged(True))
                    if event.id is not None:
                        self.picture.last_event_id = event.id
                    self.post_message(StreamEvent(event.kind, event.data, event.id))
                reason = "the server closed the event stream"
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                reason = describe_error(exc)
                refused = isinstance(exc, ApiError) and exc.status == 401
            else:
                refused = False
            attempt += 1
            self.post_message(ConnectionChanged(False, reason, attempt, refused))
            await asyncio.sleep(min(MAX_BACKOFF, self.backoff_base * 2 ** attempt))

    def on_connection_changed(self, message: ConnectionChanged) -> None:
        p = self.picture
        p.connected, p.error, p.attempt = message.connected, message.reason, message.attempt
        p.refused = message.refused
        self._main.set_class(not message.connected, "-stale")
        if not message.connected and message.refused and message.attempt == 1:
            self.log_line(None, Text(f"the API refused the key: {message.reason}", style="bold red"))
        elif not message.connected and message.attempt == 1:
            self.log_line(None, Text(f"API unreachable: {message.reason}; reconnecting", style="bold red"))
        elif message.connected:
            self.log_line(None, Text("connected", style="green"))
        self.redraw(frozenset({"all"}))

    def on_stream_event(self, message: StreamEvent) -> None:
        with contextlib.suppress(NoMatches, ScreenStackError):  # events still arriving at shutdown
            self.apply_event(message)

    def apply_event(self, message: StreamEvent) -> None:
        p, data, kind = self.picture, message.data, message.kind
        now = self.clock()
        p.received_at = now
        at = data.get("at")
        if isinstance(at, int | float):
            p.skew_s = round(now - at, 3)
        if kind == "hello":
            if data.get("missed") and self.loaded.is_set():
                self.log_line(at, Text("missed events while away: reloading", style="yellow"))
                self.run_worker(self.load_picture(), group="reload", exclusive=True)
            return
        if kind == "queue":
            p.queue = data
            self.redraw(frozenset({"queue", "workers", "header", "problems"}))
            return
        design_id = data.get("design_id")
        if isinstance(design_id, str):
            self.design_event(kind, design_id, data)
        if kind == "system.problems":
            self.run_worker(self.refresh_health(), group="health", exclusive=True)
        if kind == "server.closing":
            p.error = "the server is stopping"
        self.log_event(kind, data)

    def design_event(self, kind: str, design_id: str, data: dict[str, Any]) -> None:
        design = self.picture.designs.get(design_id)
        if kind == "design.deleted":
            if self.picture.designs.pop(design_id, None) is not None:
                table = self._main.query_one(DesignsTable)
                if design_id in table.rows:
                    table.remove_row(design_id)
                self.update_filter_label()
        elif kind == "design.status" and design is not None:
            for name in ("status", "version", "error"):
                if name in data:
                    design[name] = data[name]
            self.show_design(design)
            if design.get("status") in ("published", "failed"):
                self._dirty.add(design_id)  # fill in render time, preview, error
        elif design is None and kind in ("design.status", "task.enqueued"):
            self._dirty.add(design_id)  # a design not on screen yet: read it once
        elif design is not None and kind == "task.failed":
            self._dirty.add(design_id)  # its error
        screen = self.screen
        if isinstance(screen, DesignScreen) and screen.design_id == design_id and kind != "task.enqueued":
            screen.run_worker(screen.reload(), exclusive=True, group="detail", exit_on_error=False)

    async def refresh_health(self) -> None:
        try:
            self.picture.health = await self.client.health()
        except Exception:
            return
        self.redraw(frozenset({"header", "problems"}))

    # Designs ------------------------------------------------------------------

    def matches(self, design: dict[str, Any]) -> bool:
        if self.status_filter and design.get("status") != self.status_filter:
            return False
        if self.search_text:
            needle = self.search_text.lower()
            return needle in text(design.get("name"), "").lower() or needle in text(design.get("id"), "")
        return True

    def show_design(self, design: dict[str, Any]) -> None:
        """Queued for the next flush: a table cell update repaints every visible row, so batch them."""
        if isinstance(design.get("id"), str):
            self._changed[design["id"]] = design

    def apply_changes(self) -> None:
        changed, self._changed = self._changed, {}
        for design in changed.values():
            self._show_design(design)

    def _show_design(self, design: dict[str, Any]) -> None:
        tables = self._main.query(DesignsTable)
        if not tables:
            return
        table = tables.first()
        if not self.matches(design):
            if design.get("id") in table.rows:
                self._rebuild = True
        elif not table.update_design(design):
            self._rebuild = True

    def flush(self) -> None:
        """Ten times a second at most: re-read designs named by events, and rebuild the table if rows came or went."""
        if not self._main.is_attached:
            return
        if self._log_lines:
            self.write_log()
        if self._changed:
            self.apply_changes()
        if self._dirty and not self._fetching:
            batch = [self._dirty.pop() for _ in range(min(FETCH_BATCH, len(self._dirty)))]
            self._fetching = True
            self.run_worker(self.fetch_designs(batch), group="fetch")
        self.rebuild_if_needed()

    def rebuild_if_needed(self) -> None:
        if self._rebuild:
            self._rebuild = False
            for table in self._main.query(DesignsTable):
                table.rebuild([d for d in self.picture.designs.values() if self.matches(d)])
                if self._select_next is not None and self._select_next in table.rows:
                    table.move_cursor(row=table.get_row_index(self._select_next), animate=False)
                    self._select_next = None
                self.update_filter_label()

    async def fetch_designs(self, ids: list[str]) -> None:
        try:
            results = await asyncio.gather(*(self.client.design(i) for i in ids), return_exceptions=True)
        finally:
            self._fetching = False
        for design_id, design in zip(ids, results, strict=True):
            if isinstance(design, BaseException):
                self._dirty.add(design_id)  # try again at the next flush
            elif design is None:
                self.design_event("design.deleted", design_id, {})
            elif design_id in self.picture.designs or self.matches(design):
                if self.picture.put_design(design):
                    self._rebuild = True
                else:
                    self.show_design(design)
        self.apply_changes()
        self.rebuild_if_needed()

    def update_filter_label(self) -> None:
        shown = self._main.query_one(DesignsTable).row_count
        what = self.status_filter or "all"
        more = " · m: more" if self.picture.next_cursor else ""
        search = f" · search “{self.search_text}”" if self.search_text else ""
        self._main.query_one("#filter-label", Label).update(
            f"designs: [b]{what}[/b] ({shown} shown of {len(self.picture.designs)} loaded){search}{more}",
            layout=False)

    # Drawing ------------------------------------------------------------------

    def on_picture_changed(self, message: PictureChanged) -> None:
        self.redraw(message.parts)

    def redraw(self, parts: frozenset[str]) -> None:
        with contextlib.suppress(NoMatches):  # the app is shutting down
            self._redraw(parts)

    def _redraw(self, parts: frozenset[str]) -> None:
        if not self._main.is_mounted:
            return
        everything = "all" in parts
        p = self.picture
        if everything or "header" in parts:
            self._main.query_one(HeaderBar).show(p, self.clock())
        if everything or "problems" in parts:
            self._main.query_one(ProblemBanner).show(p)
        if everything or "queue" in parts:
            self._main.query_one(QueuePanel).show(p)
        if everything or "workers" in parts:
            self._main.query_one(WorkersPanel).show(p)
        if everything:
            self.update_filter_label()

    def log_line(self, at: float | None, line: Text) -> None:
        """Queued, written by `flush`: at 50 events/s one write per tenth of a second, not one per event."""
        self._log_lines.append((at if at is not None else self.clock(), line))

    def write_log(self) -> None:
        lines, self._log_lines = self._log_lines[-LOG_BURST:], []
        for log in self._main.query(TaskLog):
            for at, line in lines:
                log.add(at, line)

    def log_event(self, kind: str, data: dict[str, Any]) -> None:
        at = data.get("at") if isinstance(data.get("at"), int | float) else None
        task = TASK_LABELS.get(text(data.get("task"), ""), text(data.get("task"), ""))
        design = short_id(data.get("design_id")) if data.get("design_id") else ""
        style = {"task.failed": "bold red", "task.retried": "yellow", "task.succeeded": "green",
                 "task.started": "cyan", "task.revoked": "yellow", "system.problems": "bold red",
                 "control": "magenta", "worker.state": "blue"}.get(kind, "")
        if kind.startswith("task."):
            detail = [f"{task:<7}", design]
            if kind == "task.started":
                detail.append(f"on {text(data.get('worker'), '?')} after {fmt_ms(data.get('wait_ms'))} ms")
            if kind in ("task.succeeded", "task.failed"):
                detail.append(f"{fmt_ms(data.get('run_ms'))} ms")
            if data.get("error"):
                detail.append(text(data.get("error"), ""))
            line = Text.assemble((f"{kind[5:]:<10}", style), " ".join(d for d in detail if d))
        elif kind == "design.status":
            line = Text.assemble((f"{text(data.get('status')):<10}", "bold"),
                                 f"design {design} v{data.get('version', '?')}")
        elif kind == "worker.state":
            line = Text.assemble(("worker    ", style), f"{text(data.get('worker'))} {text(data.get('state'))} "
                                 f"{text(data.get('reason'), '')}")
        elif kind == "system.problems":
            problems = data.get("problems") or []
            line = (Text("problems: " + "; ".join(str(p) for p in problems), style=style) if problems
                    else Text("problems cleared", style="green"))
        elif kind == "control":
            extras = ", ".join(f"{k}={v}" for k, v in data.items() if k not in ("kind", "at", "action"))
            line = Text.assemble(("control   ", style), f"{text(data.get('action'))} {extras}")
        else:
            line = Text(f"{kind} {design}".strip(), style="dim")
        self.log_line(at, line)

    # Actions ------------------------------------------------------------------

    def selected_design_id(self) -> str | None:
        screen = self.screen
        if isinstance(screen, DesignScreen):
            return screen.design_id
        return self._main.query_one(DesignsTable).selected_id()

    def selected_design(self) -> dict[str, Any] | None:
        design_id = self.selected_design_id()
        if design_id is None:
            return None
        screen = self.screen
        if isinstance(screen, DesignScreen) and screen.design:
            return screen.design
        return self.picture.designs.get(design_id, {"id": design_id})

    def act(self, work: Callable[[], Awaitable[str | None]]) -> None:
        """Run an API action off the key handler; its outcome (or error) becomes a notification."""
        async def run() -> None:
            try:
                done = await work()
            except Exception as exc:
                self.notify(describe_error(exc), title="failed", severity="error")
                return
            if done:
                self.notify(done)
        self.run_worker(run(), group="action")

    def need_design(self) -> dict[str, Any] | None:
        design = self.selected_design()
        if design is None:
            self.notify("no design selected", severity="warning")
        return design

    def action_retry(self) -> None:
        design = self.need_design()
        if design is None:
            return
        if design.get("status") != "failed":
            self.notify(f"{short_id(design['id'])} is {text(design.get('status'))}, not failed; "
                        "R re-renders any design", severity="warning")
            return
        self.action_rerender()

    def action_rerender(self) -> None:
        design = self.need_design()
        if design is None:
            return

        async def work() -> str:
            result = await self.client.rerender(design["id"])
            return f"render queued for {short_id(design['id'])} (version {result.get('version', '?')})"
        self.act(work)

    def action_delete(self) -> None:
        design = self.need_design()
        if design is None:
            return

        def answered(yes: bool | None) -> None:
            if not yes:
                return

            async def work() -> str:
                await self.client.delete(design["id"])
                if isinstance(self.screen, DesignScreen):
                    self.pop_screen()
                return f"deleted {short_id(design['id'])}"
            self.act(work)
        self.push_screen(ConfirmScreen(f"Delete design {short_id(design['id'])} "
                                       f"“{text(design.get('name'), '')}” and its files?"), answered)

    def action_revoke(self) -> None:
        design = self.need_design()
        if design is None:
            return

        async def work() -> str:
            mine = [t for t in await self.client.pending()
                    if t.get("design_id") == design["id"] and not t.get("revoked")]
            for t in mine:
                await self.client.revoke(text(t.get("task_id")))
            if not mine:
                return f"no pending task for {short_id(design['id'])} (running tasks cannot be revoked)"
            return f"revoked {len(mine)} pending task(s) of {short_id(design['id'])}; the design stays a draft"
        self.act(work)

    def action_toggle_pause(self) -> None:
        paused = not self.picture.queue.get("paused")

        async def work() -> str:
            await self.client.pause(paused)
            self.picture.queue["paused"] = paused
            self.redraw(frozenset({"header", "workers"}))
            return "consuming paused: running tasks finish, nothing new starts" if paused else "consuming resumed"
        self.act(work)

    def action_workers(self) -> None:
        now = int(self.picture.queue.get("concurrency") or 0)

        def check(value: str) -> str | None:
            return None if value.strip().isdigit() and 1 <= int(value) <= 64 else "a whole number from 1 to 64"

        def answered(value: str | None) -> None:
            if value is None:
                return

            async def work() -> str:
                result = await self.client.set_workers(int(value))
                return f"worker threads: {result.get('previous', '?')} → {result.get('threads', value)}"
            self.act(work)
        self.push_screen(PromptScreen(f"Worker threads (now {now or '?'}):", "1–64", check, str(now or "")),
                         answered)

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
                    return (f"purged {await self.client.purge()} pending task(s); their designs stay drafts until "
                            "the sweeper re-drives them")
                self.act(work)
            self.push_screen(PromptScreen(
                f"Purge [b]{pending}[/b] pending task(s)? Their designs stay drafts until the sweeper re-drives "
                "them (delete a design to drop it for good). Type [b]purge[/b] to confirm:",
                "purge", lambda v: None if v.strip() == "purge" else "type purge (or escape to cancel)"), answered)
            return None
        self.act(count_then_ask)

    def action_sample(self) -> None:
        async def work() -> str:
            design = await self.client.create_design(sample_design(self.clock()))
            if isinstance(design.get("id"), str):
                self._select_next = design["id"]  # the cursor goes to it once its row is shown
            return f"sample design {short_id(design.get('id'))} created"
        self.act(work)

    def action_open_preview(self) -> None:
        design = self.need_design()
        if design is None:
            return
        url = design.get("preview_url") or self.client.preview_url(design["id"])
        self.open_url(url)
        self.notify(f"opening {url}")

    def action_copy_id(self) -> None:
        design_id = self.selected_design_id()
        if design_id is None:
            self.notify("no design selected", severity="warning")
            return
        self.copy_to_clipboard(design_id)
        self.notify(f"copied {design_id}")

    def action_stack(self) -> None:
        design_id = self.selected_design_id()
        threads = self.picture.threads()
        mine = [t for t in threads if design_id and t.get("design_id") == design_id]
        busy = mine or [t for t in threads if t.get("state") == "busy"]
        if not busy:
            self.notify("no worker thread is running a task", severity="warning")
            return
        worker = text(busy[0].get("name"))

        async def work() -> None:
            self.push_screen(StackScreen(await self.client.stack(worker)))
        self.act(work)

    def action_cycle_filter(self) -> None:
        order: list[str | None] = [None, *STATUSES]
        self.status_filter = order[(order.index(self.status_filter) + 1) % len(order)]
        self.reload_designs()

    def reload_designs(self) -> None:
        async def work() -> None:
            page = await self.client.designs(self.status_filter, PAGE)
            self.picture.set_designs(page.get("items") or [], page.get("next_cursor"))
            self._rebuild = True
            self.rebuild_if_needed()
        self._rebuild = True  # show the filter at once on what is loaded; the page follows
        self.act(work)

    def action_more(self) -> None:
        cursor = self.picture.next_cursor
        if not cursor:
            self.notify("no more designs", severity="information")
            return

        async def work() -> str:
            page = await self.client.designs(self.status_filter, PAGE, cursor)
            self.picture.add_designs(page.get("items") or [], page.get("next_cursor"))
            self._rebuild = True
            return f"{len(self.picture.designs)} designs loaded"
        self.act(work)

    def action_search(self) -> None:
        if not isinstance(self.screen, MainScreen):
            return
        field = self._main.query_one("#search", Input)
        field.display = True
        field.focus()

    @on(Input.Changed, "#search")
    def search_changed(self, event: Input.Changed) -> None:
        self.search_text = event.value.strip()
        self._rebuild = True

    @on(Input.Submitted, "#search")
    def search_done(self, event: Input.Submitted) -> None:
        self._main.query_one(DesignsTable).focus()

    def on_key(self, event: Any) -> None:
        if event.key == "escape" and isinstance(self.screen, MainScreen):
            field = self._main.query_one("#search", Input)
            if field.display:
                field.value = ""
                field.display = False
                self.search_text = ""
                self._rebuild = True
                self._main.query_one(DesignsTable).focus()
                event.stop()

    @on(DataTable.RowSelected, "#designs")
    def row_selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value is not None:
            self.push_screen(DesignScreen(str(event.row_key.value)))

    def action_open_detail(self) -> None:
        design_id = self.selected_design_id()
        if design_id and isinstance(self.screen, MainScreen):
            self.push_screen(DesignScreen(design_id))

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            return
        self.push_screen(HelpScreen([(KEY_NAMES.get(k, k), what) for k, _, _, what in ACTIONS]
                                    + [("j / k, ↓ / ↑", "Move in the table (g / G: top / bottom)"),
                                       ("escape", "Back, or clear the search"),
                                       ("ctrl+p", "Command palette: every action by name")]))

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for key, action, _, what in ACTIONS:
            if action in ("quit", "help"):
                continue
            yield SystemCommand(what.split(" (")[0], f"key {KEY_NAMES.get(key, key)}",
                                getattr(self, f"action_{action}"))

    async def action_quit(self) -> None:
        self.exit()

    def status_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATUSES, 0)
        for design in self.picture.designs.values():
            status = design.get("status")
            if status in counts:
                counts[status] += 1
        return counts

    def debug_state(self) -> dict[str, Any]:
        """For tests: what is on screen, as data."""
        return {"connected": self.picture.connected, "problems": self.picture.problems(),
                "threads": [dict_of(t) for t in self.picture.threads()]}
