"""The one way into the dashboard from outside `tui`: `customify run` (on a terminal) and `customify tui`
both call `launch`. `customify` imports nothing else of `tui`, and only from cli.py
(tests/test_boundaries.py checks it), so the core never loads Textual.
"""

from __future__ import annotations

import signal

from tui.app import Dashboard
from tui.client import ApiClient


def launch(url: str, key: str | None = None) -> None:
    """Run the dashboard against the API at `url` in this terminal until it quits (q, Ctrl-C, SIGTERM or
    SIGHUP)."""
    app = Dashboard(ApiClient(url, key=key))
    signal.signal(signal.SIGTERM, lambda *_: app.exit())  # a server's stop signal restores the terminal too
    signal.signal(signal.SIGHUP, lambda *_: app.exit())  # the terminal closed: a clean stop
    app.run()
