"""The log file: the operator's record, written by every process (`run`, `api`, `worker`).

One line per event: start and stop, task failures, retries and timeouts, render
helpers killed and replaced, stalls detected and cleared, sweeper re-drives
(counted), configuration warnings. `log_format = "json"` writes one JSON object
per line for log shippers. The file rotates at `MAX_BYTES` (`BACKUPS` old files
kept), so a long-running dev instance does not fill its disk. HTTP client lines
(the dashboard's own requests) are not operator events and stay out.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from customify.config import Config, create_private_file

MAX_BYTES = 10 * 1024 * 1024
BACKUPS = 3
TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
QUIET = {
    "huey": logging.WARNING,
    "alembic": logging.WARNING,
    "httpx": logging.WARNING,
    "httpcore": logging.WARNING,
    "asyncio": logging.WARNING,
}


class JsonLines(logging.Formatter):
    """One JSON object per record: at, level, logger, pid, message, design_id when known."""

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, object] = {
            "at": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        design_id = getattr(record, "design_id", None)
        if design_id:
            body["design_id"] = design_id
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        return json.dumps(body, ensure_ascii=False)


def log_path(config: Config) -> Path:
    """`log_file`, relative to the data dir unless absolute."""
    path = Path(config.log_file).expanduser()
    return path if path.is_absolute() else config.data_path / path


def setup(config: Config, stderr: bool = True, verbose: bool = False) -> Path | None:
    """Send this process's log to the log file (and to stderr unless a dashboard owns the terminal).
    Returns the file, or None when it cannot be opened (then said once on stderr)."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for name, level in QUIET.items():
        logging.getLogger(name).setLevel(level)
    if stderr:
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(logging.Formatter(TEXT_FORMAT))
        # Records meant for the file only (the start-up error the command already printed in one line).
        console.addFilter(lambda record: getattr(record, "console", True))
        root.addHandler(console)
    path = log_path(config)
    try:
        create_private_file(path)  # 0600 in a 0700 dir: the log names designs and users' errors
        handler = logging.handlers.RotatingFileHandler(path, maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding="utf-8")
    except OSError as exc:
        if os.access(config.data_path, os.W_OK):  # else the data dir check says so, in its one line
            print(
                f"customify: cannot write the log file {path} ({exc.strerror}); logging to stderr only", file=sys.stderr
            )
        return None
    handler.setFormatter(JsonLines() if config.log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root.addHandler(handler)
    return path
