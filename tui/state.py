"""`DashboardState`: what the dashboard knows about one instance, how a stream event changes it,
and the rules that turn it into words.

Plain data, no Textual: the feed (tui/feed.py) fills it from the API, the app applies events
to it (`DashboardState.apply`), widgets read it. Every read goes through small helpers
(`text`, `num`, `dict_of`, `list_of`) so a field that is missing or of the wrong type shows as
"?" instead of crashing the screen.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Any

STATUSES = ("draft", "rendering", "published", "failed")
STATUS_COLORS = {"draft": "yellow", "rendering": "cyan", "published": "green", "failed": "red"}
HEARTBEAT_FRESH = 5.0  # seconds; the server's own rule (worker threads loop at least once a second)
MAX_ROWS = 500  # designs kept on screen: a window of the newest, never the whole table


def problem_words(problem: Any) -> str:
    """A server problem (a customify.status Problem as JSON; a string from an older server) in words."""
    if isinstance(problem, dict):
        return text(problem.get("detail"), "?")
    return text(problem, "?")


def num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def text(value: Any, default: str = "?") -> str:
    return value if isinstance(value, str) and value else default


def dict_of(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def list_of(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def fmt_age(seconds: Any) -> str:
    s = num(seconds)
    if s is None:
        return "–"
    if s < 10:
        return f"{s:.1f}s"
    if s < 120:
        return f"{s:.0f}s"
    if s < 7200:
        return f"{s / 60:.0f}m"
    if s < 172800:
        return f"{s / 3600:.0f}h"
    return f"{s / 86400:.0f}d"


def fmt_ms(value: Any) -> str:
    ms = num(value)
    if ms is None:
        return "–"
    if ms < 10:
        return f"{ms:.1f}"
    if ms < 10_000:
        return f"{ms:.0f}"
    return f"{ms / 1000:.0f}s"


def fmt_uptime(seconds: Any) -> str:
    s = num(seconds)
    if s is None:
        return "?"
    s = int(s)
    days, rest = divmod(s, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s"


def short_id(value: Any) -> str:
    return text(value, "–")[:8]


@dataclass(frozen=True)
class EventEffect:
    """What one stream event asks of the screen, after `DashboardState.apply` changed the state."""

    redraw: frozenset[str] = frozenset()  # parts to redraw (see `Dashboard.redraw`)
    shown: dict[str, Any] | None = None  # a design whose row changed in place
    deleted: str | None = None  # a design that is gone
    fetch: str | None = None  # a design to re-read over HTTP (render time, preview, error, or not loaded yet)
    reload: bool = False  # events were missed while away: load everything again
    refresh_health: bool = False  # the server's problems changed: read /system/health again
    log: bool = True  # the event gets a task log line


@dataclass
class DashboardState:
    base_url: str
    queue: dict[str, Any] = field(default_factory=dict)  # the last `queue` event
    status: dict[str, Any] = field(default_factory=dict)  # GET /system/worker-status
    health: dict[str, Any] = field(default_factory=dict)  # GET /system/health
    designs: OrderedDict[str, dict[str, Any]] = field(default_factory=OrderedDict)  # newest first
    next_cursor: str | None = None
    received_at: float | None = None  # local clock when the server last said anything
    skew_s: float | None = None  # this terminal's clock minus the server's
    connected: bool = False
    error: str = ""
    attempt: int = 0
    last_event_id: int | None = None
    refused: bool = False  # the API refused the key (401)
    customer: bool = False  # the key is a customer's: their designs only, no queue (403 on worker status)
    every_owner: bool = False  # an operator's table shows every user's designs (`a`; ?owner=all)

    # Designs ------------------------------------------------------------------

    def set_designs(self, items: list[Any], next_cursor: Any) -> None:
        self.designs = OrderedDict((d["id"], d) for d in items if isinstance(d, dict) and isinstance(d.get("id"), str))
        self.next_cursor = next_cursor if isinstance(next_cursor, str) else None

    def add_designs(self, items: list[Any], next_cursor: Any) -> None:
        for d in items:
            if isinstance(d, dict) and isinstance(d.get("id"), str):
                self.designs.setdefault(d["id"], d)
        self.next_cursor = next_cursor if isinstance(next_cursor, str) else None

    def put_design(self, design: dict[str, Any]) -> bool:
        """Insert or replace; True when it is new (goes on top)."""
        design_id = design.get("id")
        if not isinstance(design_id, str):
            return False
        new = design_id not in self.designs
        self.designs[design_id] = design
        if new:
            self.designs.move_to_end(design_id, last=False)
            while len(self.designs) > MAX_ROWS:
                self.designs.popitem(last=True)
        return new

    def apply(self, kind: str, data: dict[str, Any], now: float, loaded: bool) -> EventEffect:
        """Apply one stream event (`loaded`: the first page is on screen); say what the screen must do."""
        self.received_at = now
        at = data.get("at")
        if isinstance(at, int | float):
            self.skew_s = round(now - at, 3)
        if kind == "hello":
            return EventEffect(reload=bool(data.get("missed")) and loaded, log=False)
        if kind == "queue":
            self.queue = data
            return EventEffect(redraw=frozenset({"queue", "workers", "header", "problems"}), log=False)
        effect = EventEffect()
        design_id = data.get("design_id")
        if isinstance(design_id, str):
            effect = self.apply_design_event(kind, design_id, data)
        if kind == "server.closing":
            self.error = "the server is stopping"
        if kind == "system.problems":
            effect = replace(effect, refresh_health=True)
        return effect

    def apply_design_event(self, kind: str, design_id: str, data: dict[str, Any]) -> EventEffect:
        design = self.designs.get(design_id)
        if kind == "design.deleted":
            return EventEffect(deleted=design_id if self.designs.pop(design_id, None) is not None else None)
        if kind == "design.status" and design is not None:
            for name in ("status", "version", "error"):
                if name in data:
                    design[name] = data[name]
            done = design.get("status") in ("published", "failed")
            return EventEffect(shown=design, fetch=design_id if done else None)  # fill in render time, preview, error
        if design is None and kind in ("design.status", "task.enqueued"):
            return EventEffect(fetch=design_id)  # a design not on screen yet: read it once
        if design is not None and kind in ("task.failed", "task.retrying", "task.discarded"):
            return EventEffect(fetch=design_id)  # its error
        return EventEffect()

    # Liveness -----------------------------------------------------------------

    def threads(self) -> list[dict[str, Any]]:
        threads = list_of(self.queue.get("threads"))
        if not threads:
            for worker in dict_of(self.status.get("workers")).values():
                threads.extend(list_of(dict_of(worker).get("threads")))
        return [t for t in threads if isinstance(t, dict)]

    def problem_list(self) -> list[dict[str, Any]]:
        """The server's problems as it sent them (check, severity, detail, thread, pid...)."""
        raw = list_of(self.queue.get("problems") if self.queue else self.status.get("problems"))
        return [
            p if isinstance(p, dict) else {"detail": text(p), "severity": "failing"}
            for p in raw
            if isinstance(p, dict | str)
        ]

    def status_word(self) -> str | None:
        """ok, degraded (something is wrong, work continues) or failing, by the server's severities."""
        healthy = self.healthy()
        if healthy is None:
            return None
        return "failing" if not healthy else ("degraded" if self.problems() else "ok")

    def problems(self) -> list[str]:
        """The server's problems in words (pushed each second), plus failing health checks."""
        problems = [problem_words(p) for p in self.problem_list()]
        for name, check in dict_of(self.health.get("checks")).items():
            check = dict_of(check)
            if check.get("ok") is False and name != "consumer":
                problems.append(f"{name}: {text(check.get('detail'), 'failing')}")
        return problems

    def healthy(self) -> bool | None:
        """False when a problem is failing (a degraded one keeps the system working)."""
        if not self.queue and not self.health:
            return None
        if any(p.get("severity") != "degraded" for p in self.problem_list()):
            return False
        return not any(
            dict_of(c).get("ok") is False and name != "consumer"
            for name, c in dict_of(self.health.get("checks")).items()
        )

    def thread_reason(self, thread: dict[str, Any]) -> tuple[str, str]:
        """(level, words) for one worker thread: level is ok, warn or bad."""
        name = text(thread.get("name"))
        state = thread.get("state")
        beat = num(thread.get("heartbeat_age_s"))
        progress = num(thread.get("progress_age_s"))
        pending = num(self.queue.get("pending")) or 0
        problems = self.problems()
        if state == "dead":
            return "bad", "thread died"
        mine = [
            p
            for p in self.problem_list()
            if p.get("thread") == name or text(p.get("detail"), "").startswith(f"{name} ")
        ]
        for problem in mine:
            if "render timeout" in text(problem.get("detail"), ""):
                return "bad", f"stuck {fmt_age(thread.get('busy_for_s'))} in one task, past the timeout"
        for problem in mine:
            pid = problem.get("pid")
            return "bad", f"no progress {fmt_age(problem.get('seconds'))}" + (f", helper {pid} frozen" if pid else "")
        if state == "busy":  # a thread inside a task does not loop, so it does not beat: its age is the signal
            return "ok", "working"
        if beat is None or beat > HEARTBEAT_FRESH:
            return "bad", f"no heartbeat for {fmt_age(beat)}" if beat is not None else "never beat"
        if pending and any("not consuming" in p for p in problems):
            return "bad", (
                f"beats, no progress {fmt_age(progress)}, {int(pending)} wait"
                if progress is not None
                else f"beats, never finished, {int(pending)} wait"
            )
        if self.queue.get("paused"):
            return "warn", "paused"
        return "ok", "idle"
