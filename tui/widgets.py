"""The dashboard's widgets: header, problems banner, queue and workers panels, designs table,
task log and a half-block image. Each draws from the `DashboardState`; none talks to the API."""

from __future__ import annotations

import time
from typing import Any, ClassVar

from PIL import Image
from rich.console import Group, RenderableType
from rich.segment import Segment
from rich.style import Style
from rich.table import Table
from rich.text import Text
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets import DataTable, RichLog, Sparkline, Static
from textual.widgets.data_table import ColumnKey, RowKey

from tui.state import (
    STATUS_COLORS,
    DashboardState,
    dict_of,
    fmt_age,
    fmt_ms,
    fmt_uptime,
    list_of,
    num,
    problem_words,
    short_id,
    text,
)

NOT_SHOWN = "not shown to a customer's key: an operator's key (users create --operator) shows the queue"
LOG_BURST = 50  # task log lines written per flush at most (the rest of a burst is skipped)
TASK_ORDER = ("render_design_preview", "send_email", "debug_task", "prune_history")
TASK_LABELS = {
    "render_design_preview": "render",
    "send_email": "email",
    "debug_task": "debug",
    "prune_history": "prune",
}


def clock_text(at: float | None) -> str:
    return time.strftime("%H:%M:%SZ", time.gmtime(at)) if at is not None else "never"


def signed(seconds: float | None) -> str:
    return "?" if seconds is None else f"{seconds:+.3f}s"


class HeaderBar(Static):
    """Instance, backends (redacted by the server), uptime, drift, data age and the health badge."""

    shown: RenderableType = ""

    def show(self, state: DashboardState, now: float) -> None:
        status, queue = state.status, state.queue
        grid = Table.grid(expand=True)
        grid.add_column(ratio=1)
        grid.add_column(justify="right")
        top = Text.assemble(
            ("Customify ", "bold"),
            (state.base_url, "bold underline"),
            "  database ",
            (text(status.get("database")), "dim"),
            "  queue ",
            (text(status.get("broker")), "dim"),
        )
        healthy = state.healthy()
        if not state.connected and state.refused:
            badge = Text(" KEY REFUSED ", style="bold white on red")
        elif not state.connected and not state.attempt:
            # Nothing has failed yet: the first page may be on screen before the event stream opens.
            badge = Text(" CONNECTING ", style="bold black on yellow")
        elif not state.connected:
            badge = Text(" UNREACHABLE ", style="bold white on red")
        elif healthy is None:
            badge = Text(" … ", style="bold")
        elif healthy and state.status_word() == "degraded":
            badge = Text(" ● DEGRADED ", style="bold black on yellow")
        elif healthy:
            badge = Text(" ● HEALTHY ", style="bold black on green")
        else:
            badge = Text(" ● FAILING ", style="bold white on red")
        grid.add_row(top, badge)
        age = None if state.received_at is None else max(0.0, now - state.received_at)
        if state.connected:
            # The workers' drift, measured on every heartbeat (pushed each second), else the API's at connect.
            drift_db = num(queue.get("clock_drift_s"))
            drift_age = num(queue.get("clock_drift_age_s"))
            if drift_db is None:
                drift_db = num(dict_of(status.get("clock_drift_s")).get("database"))
            second = Text.assemble(
                "up ",
                (fmt_uptime(queue.get("uptime_s")), "bold"),
                "  drift db ",
                signed(drift_db),
                (f" ({fmt_age(drift_age)} ago)" if drift_age is not None else ""),
                ", terminal ",
                signed(state.skew_s),
                "  data as of ",
                (clock_text(state.received_at), "bold"),
                f" ({fmt_age(age)} ago)",
                "  threads ",
                str(int(num(queue.get("concurrency")) or 0)),
                ("  PAUSED" if queue.get("paused") else "", "bold yellow"),
                (
                    "  customer key: your designs only (an operator key shows the queue)" if state.customer else "",
                    "yellow",
                ),
            )
        elif state.refused:
            second = Text.assemble(
                (f"the API refused the key: {state.error}", "bold red"),
                " — check --key (customify users create EMAIL prints one)",
                f" — retrying, try {state.attempt}" if state.attempt else "",
            )
        elif not state.attempt:
            second = Text.assemble(
                ("connecting to the event stream", "bold yellow"),
                f" — data from {clock_text(state.received_at)}" if state.received_at is not None else "",
            )
        else:
            reason = state.error or "connecting"
            second = Text.assemble(
                (f"API unreachable: {reason}", "bold red"),
                f" — data from {clock_text(state.received_at)}",
                (f", {fmt_age(age)} old" if age is not None else ""),
                f" — reconnecting, try {state.attempt}" if state.attempt else " — connecting",
            )
        grid.add_row(second, "")
        self.shown = grid
        self.update(grid, layout=False)


class ProblemBanner(Static):
    """The server's problems in words, in red; hidden when there are none."""

    shown: RenderableType = ""
    last: list[str] | None = None

    def show(self, state: DashboardState) -> None:
        problems = state.problems() if state.connected else []
        if state.connected and state.queue.get("paused"):  # a decision, not a failure: said, in yellow
            waiting = int(num(state.queue.get("pending")) or 0)
            problems = [f"consuming is paused: {waiting} task(s) wait (p resumes)", *problems]
        if problems == self.last:
            return  # unchanged: no layout pass
        self.last = problems
        self.display = bool(problems)
        self.shown = Text("\n").join(
            Text(f"⏸ {p}", style="bold yellow") if p.startswith("consuming is paused") else Text(f"⚠ {p}", style="bold")
            for p in problems
        )
        self.update(self.shown)


class QueuePanel(Vertical):
    """Counts, throughput sparkline and wait/run percentiles over 1 min and 1 h."""

    def compose(self) -> Any:
        yield Static(id="queue-counts")
        yield Sparkline([0] * 60, id="throughput")
        yield Static(id="queue-timings")

    def show(self, state: DashboardState) -> None:
        queue = state.queue
        counts = Table.grid(padding=(0, 2))
        for _ in range(3):
            counts.add_column()
        pending = queue.get("pending")
        oldest = num(queue.get("oldest_pending_age_s"))
        counts.add_row(
            f"pending [b]{_int(pending)}[/b]",
            f"scheduled [b]{_int(queue.get('scheduled'))}[/b]",
            f"in flight [b]{_int(queue.get('in_flight'))}[/b]",
        )
        counts.add_row(
            f"done/min [b green]{_int(queue.get('done_per_min'))}[/]",
            f"failed/min [b {'red' if num(queue.get('failed_per_min')) else 'default'}]"
            f"{_int(queue.get('failed_per_min'))}[/]",
            f"oldest wait [b {'red' if (oldest or 0) > 30 else 'default'}]{fmt_age(oldest)}[/]",
        )
        self.query_one("#queue-counts", Static).update(counts, layout=False)
        series = [int(v) for v in list_of(queue.get("throughput")) if isinstance(v, int | float)] or [0] * 60
        self.query_one("#throughput", Sparkline).data = series
        timings = Table(box=None, padding=(0, 1), show_edge=False, header_style="bold dim")
        for name in ("task", "win", "n", "wait ms 50/95/99", "run ms 50/95/99"):
            timings.add_column(
                name,
                justify="left" if name in ("task", "win") else "right",
                no_wrap=True,
                min_width=5 if name == "n" else None,
            )
        windows = dict_of(queue.get("windows"))
        names = sorted(
            set(dict_of(windows.get("1m"))) | set(dict_of(windows.get("1h"))),
            key=lambda n: (TASK_ORDER.index(n) if n in TASK_ORDER else len(TASK_ORDER), n),
        )
        for name in names:
            # Four rows fit: each task's last minute (or hour, when idle for a minute), and the
            # render's hour too when it says something the minute does not (/control/stats has all).
            recent, hour = (dict_of(dict_of(windows.get(w)).get(name)) for w in ("1m", "1h"))
            rows = [("1m", recent)] if recent else [("1h", hour)] if hour else []
            if recent and hour and name == "render_design_preview" and hour != recent:
                rows.append(("1h", hour))
            for window, row in rows:
                n = int((num(row.get("done")) or 0) + (num(row.get("failed")) or 0))
                timings.add_row(
                    TASK_LABELS.get(name, name),
                    window,
                    str(n),
                    "/".join(fmt_ms(row.get(f"wait_p{p}_ms")) for p in (50, 95, 99)),
                    "/".join(fmt_ms(row.get(f"run_p{p}_ms")) for p in (50, 95, 99)),
                )
        shown: RenderableType = (
            timings
            if names
            else Text(NOT_SHOWN if state.customer else "no task finished in the last hour (this process)", style="dim")
        )
        self.query_one("#queue-timings", Static).update(shown, layout=False)


def _int(value: Any) -> str:
    n = num(value)
    return "?" if n is None else str(int(n))


class WorkersPanel(Static):
    """Each worker thread: state, task, design, for how long, heartbeat and progress ages, and why it is red."""

    shown: RenderableType = ""

    def show(self, state: DashboardState) -> None:
        table = Table(box=None, padding=(0, 1), show_edge=False, header_style="bold dim", expand=True)
        for name in ("thread", "state", "design", "for", "beat", "last done", "why"):
            table.add_column(name, no_wrap=True, overflow="ellipsis", ratio=1 if name == "why" else None)
        threads = state.threads()
        for t in threads:
            level, why = state.thread_reason(t)
            style = {"bad": "bold red", "warn": "yellow"}.get(level, "")
            thread_state = text(t.get("state"))
            task = TASK_LABELS.get(text(t.get("task"), ""), text(t.get("task"), ""))
            table.add_row(
                text(t.get("name")),
                Text(f"{thread_state} {task}".strip(), style="cyan" if thread_state == "busy" else ""),
                short_id(t.get("design_id")),
                fmt_age(t.get("busy_for_s")),
                fmt_age(t.get("heartbeat_age_s")),
                fmt_age(t.get("progress_age_s")),
                Text(why, style=style or "dim"),
                style=style if level == "bad" else None,
            )
        body: RenderableType = table
        if not threads:
            consumer = state.queue.get("consumer")
            body = Text(
                NOT_SHOWN
                if state.customer
                else "this instance runs no consumer (customify api)"
                if consumer is False
                else "no worker thread has reported yet",
                style="dim",
            )
        self.shown = body
        self.update(Group(body), layout=False)


class DesignsTable(DataTable[Any]):
    """Designs, newest first, updated in place; vim keys on top of the arrows."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
        Binding("g", "scroll_top", "Top", show=False),
        Binding("G", "scroll_bottom", "Bottom", show=False),
    ]
    COLUMNS = (
        ("id", "id", 8),
        ("name", "name", 24),
        ("status", "status", 9),
        ("product", "product", 8),
        ("version", "v", 3),
        ("render", "render ms", 9),
        ("updated", "updated", 9),
    )

    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.zebra_stripes = True
        for key, label, width in self.COLUMNS:
            self.add_column(label, key=key, width=width)

    @staticmethod
    def cells(design: dict[str, Any]) -> list[Any]:
        status = text(design.get("status"))
        updated = text(design.get("updated_at"), "")
        return [
            short_id(design.get("id")),
            text(design.get("name"), "")[:40],
            Text(status, style=STATUS_COLORS.get(status, "")),
            text(design.get("product")),
            _int(design.get("version")),
            fmt_ms(design.get("render_ms")),
            updated[11:19] if len(updated) >= 19 else "–",
        ]

    def selected_id(self) -> str | None:
        if not self.row_count:
            return None
        try:
            key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        except Exception:
            return None
        return str(key.value) if key.value is not None else None

    def rebuild(self, designs: list[dict[str, Any]]) -> None:
        """Show these rows (already filtered), keeping the cursor on the same design."""
        keep = self.selected_id()
        self.clear()
        for design in designs:
            self.add_row(*self.cells(design), key=design["id"])
        if keep is not None and keep in self.rows:
            self.move_cursor(row=self.get_row_index(keep), animate=False, scroll=False)

    def update_design(self, design: dict[str, Any]) -> bool:
        """Update the row in place and repaint that row only; False when it is not shown.

        `DataTable.update_cell` invalidates the render caches of every row and repaints the
        whole table: at 50 events/s that was most of the dashboard's time. Here only the
        changed row's cache entries go, and only its line is refreshed."""
        design_id = design.get("id")
        if not isinstance(design_id, str) or design_id not in self.rows:
            return False
        row_key = RowKey(design_id)
        new = {ColumnKey(key): value for (key, _, _), value in zip(self.COLUMNS, self.cells(design), strict=True)}
        cells = self._data[row_key]
        if all(cells.get(key) == value for key, value in new.items()):
            return True  # nothing visible changed
        cells.update(new)
        try:
            self._forget_row(row_key)
        except (AttributeError, TypeError, KeyError):  # another Textual's internals: the slow, safe way
            self._clear_caches()
            self._update_count += 1
            self.refresh()
        return True

    def _forget_row(self, row_key: RowKey) -> None:
        """Drop one row's entries from DataTable's render caches and refresh its lines.
        (Cache keys: see `_get_row_renderables`, `_render_cell`, `_render_line_in_row`, `_render_line`.)"""
        index = self.get_row_index(row_key)
        self._row_renderable_cache.discard((self._update_count, index))
        caches: tuple[Any, ...] = (self._cell_render_cache, self._row_render_cache)
        for cache in caches:
            for key in [k for k in cache.keys() if k[0] == row_key]:  # noqa: SIM118 (an LRUCache)
                cache.discard(key)
        region = self._get_row_region(index)
        lines = range(region.y, region.bottom)
        for key in [k for k in self._line_cache.keys() if k[0] in lines]:  # noqa: SIM118
            self._line_cache.discard(key)
        self.refresh_row(index)


class TaskLog(RichLog):
    """The latest task and control events, one line each.

    Lines are queued (`add_line`, `add_event`) and written by `flush`, which the app calls at most
    twenty times a second: at 50 events/s one write per flush, not one per event."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queued: list[tuple[float, Text]] = []

    def add_line(self, at: float, line: Text) -> None:
        self.queued.append((at, line))

    def add_event(self, kind: str, data: dict[str, Any], now: float) -> None:
        """`now`: the time stamp when the event carries none."""
        at = data.get("at")
        self.add_line(at if isinstance(at, int | float) else now, event_line(kind, data))

    def flush(self) -> None:
        lines, self.queued = self.queued[-LOG_BURST:], []
        for at, line in lines:
            self.add(at, line)

    def add(self, at: float | None, line: Text) -> None:
        stamp = Text(time.strftime("%H:%M:%S ", time.gmtime(at)) if at is not None else "", style="dim")
        self.write(stamp + line)


def event_line(kind: str, data: dict[str, Any]) -> Text:
    """One stream event as a task log line (without its time stamp)."""
    task = TASK_LABELS.get(text(data.get("task"), ""), text(data.get("task"), ""))
    design = short_id(data.get("design_id")) if data.get("design_id") else ""
    style = {
        "task.failed": "bold red",
        "task.retrying": "yellow",
        "task.published": "green",
        "task.succeeded": "green",
        "task.sent": "green",
        "task.discarded": "yellow",
        "task.skipped": "dim",
        "task.started": "cyan",
        "task.revoked": "yellow",
        "system.problems": "bold red",
        "control": "magenta",
        "worker.state": "blue",
    }.get(kind, "")
    if kind.startswith("task."):
        detail = [f"{task:<7}", design]
        if kind == "task.started":
            detail.append(f"on {text(data.get('worker'), '?')} after {fmt_ms(data.get('wait_ms'))} ms")
        if data.get("run_ms") is not None and kind not in ("task.started", "task.enqueued"):
            detail.append(f"{fmt_ms(data.get('run_ms'))} ms")
        if data.get("error"):
            detail.append(text(data.get("error"), ""))
        return Text.assemble((f"{kind[5:]:<10}", style), " ".join(d for d in detail if d))
    if kind == "design.status":
        return Text.assemble(
            (f"{text(data.get('status')):<10}", "bold"), f"design {design} v{data.get('version', '?')}"
        )
    if kind == "worker.state":
        return Text.assemble(
            ("worker    ", style),
            f"{text(data.get('worker'))} {text(data.get('state'))} {text(data.get('reason'), '')}",
        )
    if kind == "system.problems":
        problems = data.get("problems") or []
        return (
            Text("problems: " + "; ".join(problem_words(p) for p in problems), style=style)
            if problems
            else Text("problems cleared", style="green")
        )
    if kind == "control":
        extras = ", ".join(f"{k}={v}" for k, v in data.items() if k not in ("kind", "at", "action"))
        return Text.assemble(("control   ", style), f"{text(data.get('action'))} {extras}")
    return Text(f"{kind} {design}".strip(), style="dim")


class HalfBlockImage(Widget):
    """An image drawn with '▀': each cell shows two pixels (foreground on top, background below)."""

    DEFAULT_CSS = "HalfBlockImage { width: 1fr; height: 1fr; }"

    def __init__(self, image: Image.Image | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.image = image
        self._cache: tuple[tuple[int, int], list[Strip]] | None = None

    def set_image(self, image: Image.Image | None) -> None:
        self.image = image
        self._cache = None
        self.refresh()

    def _strips(self, width: int, height: int) -> list[Strip]:
        if self._cache is not None and self._cache[0] == (width, height):
            return self._cache[1]
        strips: list[Strip] = []
        if self.image is not None and width > 0 and height > 0:
            image = self.image.convert("RGB")
            scale = min(width / image.width, (height * 2) / image.height)
            w, h = max(1, int(image.width * scale)), max(2, int(image.height * scale) // 2 * 2)
            small = image.resize((w, h), Image.Resampling.BOX)
            pixels = small.load()
            assert pixels is not None
            pad = (width - w) // 2
            for y in range(0, h, 2):
                segments = [Segment(" " * pad)] if pad else []
                for x in range(w):
                    top, bottom = pixels[x, y], pixels[x, y + 1] if y + 1 < h else pixels[x, y]
                    segments.append(Segment("▀", Style(color=_rgb(top), bgcolor=_rgb(bottom))))
                strips.append(Strip(segments, pad + w))
        self._cache = ((width, height), strips)
        return strips

    def render_line(self, y: int) -> Strip:
        strips = self._strips(self.size.width, self.size.height)
        return strips[y] if y < len(strips) else Strip.blank(self.size.width)


def _rgb(pixel: Any) -> str:
    r, g, b = pixel[:3] if isinstance(pixel, tuple) else (pixel, pixel, pixel)
    return f"#{r:02x}{g:02x}{b:02x}"
