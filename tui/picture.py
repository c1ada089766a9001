"""What the dashboard knows about one instance, and the rules that turn it into words.

Plain data, no Textual: the app fills it from the API, widgets read it. Every
read goes through `get_*` helpers so a field that is missing or of the wrong
type shows as "?" instead of crashing the screen.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

STATUSES = ("draft", "rendering", "published", "failed")
STATUS_COLORS = {"draft": "yellow", "rendering": "cyan", "published": "green", "failed": "red"}
HEARTBEAT_FRESH = 5.0  # seconds; the server's own rule (worker threads loop at least once a second)
MAX_ROWS = 500  # designs kept on screen: a window of the newest, never the whole table


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


@dataclass
class Picture:
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

    # Liveness -----------------------------------------------------------------

    def threads(self) -> list[dict[str, Any]]:
        threads = list_of(self.queue.get("threads"))
        if not threads:
            for worker in dict_of(self.status.get("workers")).values():
                threads.extend(list_of(dict_of(worker).get("threads")))
        return [t for t in threads if isinstance(t, dict)]

    def problems(self) -> list[str]:
        """The server's problems in words (pushed each second), plus failing health checks."""
        problems = [p for p in list_of(self.queue.get("problems") if self.queue else self.status.get("problems"))
                    if isinstance(p, str)]
        for name, check in dict_of(self.health.get("checks")).items():
            check = dict_of(check)
            if check.get("ok") is False and name != "consumer":
                problems.append(f"{name}: {text(check.get('detail'), 'failing')}")
        return problems

    def healthy(self) -> bool | None:
        if not self.queue and not self.health:
            return None
        return not self.problems()

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
        for problem in problems:
            if problem.startswith(f"{name} "):  # the server's timeout rule names the thread
                return "bad", f"stuck {fmt_age(thread.get('busy_for_s'))} in one task, past the timeout"
        if state == "busy":  # a thread inside a task does not loop, so it does not beat: its age is the signal
            return "ok", "working"
        if beat is None or beat > HEARTBEAT_FRESH:
            return "bad", f"no heartbeat for {fmt_age(beat)}" if beat is not None else "never beat"
        if pending and any("not consuming" in p for p in problems):
            return "bad", (f"beats, no progress {fmt_age(progress)}, {int(pending)} wait" if progress is not None
                           else f"beats, never finished, {int(pending)} wait")
        if self.queue.get("paused"):
            return "warn", "paused"
        return "ok", "idle"
