"""Jinja filters of the pages: ages, durations, times, in the words the TUI uses."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import urlencode


def age(seconds: float | None) -> str:
    """12 s, 3 min, 2 h; an en dash when unknown."""
    if seconds is None:
        return "–"
    if seconds < 60:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def ms(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.0f} ms" if value >= 10 else f"{value:.1f} ms"


def when(value: datetime | str | None) -> str:
    """A UTC timestamp as the pages show it (the browser adds a local time where it can)."""
    if value is None:
        return "–"
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value.strftime("%Y-%m-%d %H:%M:%S UTC")


def iso(value: datetime | None) -> str:
    return value.isoformat().replace("+00:00", "Z") if value is not None else ""


def sparkline(values: list[int] | None, width: int = 240, height: int = 40) -> str:
    """The points of an SVG polyline for a per-second series (the same drawing as customify.js)."""
    values = values or [0]
    top = max(max(values), 1)
    step = width / max(len(values) - 1, 1)
    return " ".join(f"{i * step:.1f},{height - 2 - (v / top) * (height - 4):.1f}" for i, v in enumerate(values))


def query(params: dict[str, Any]) -> str:
    """A query string of the non-empty values."""
    return urlencode({k: v for k, v in params.items() if v})


FILTERS: dict[str, Callable[..., Any]] = {
    "age": age,
    "ms": ms,
    "when": when,
    "iso": iso,
    "sparkline": sparkline,
    "query": query,
}
