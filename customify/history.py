"""Task history, written in batches off the worker threads.

Two write transactions per task (start, end) cost a render noticeable
SQLAlchemy work on the worker thread (how much: bench/RESULTS.md, "Figures quoted in the code").
Workers now append to a list; a background thread writes whatever has
gathered every `INTERVAL` seconds in one transaction. History is information,
not state: a crash loses at most the last interval of it, never a design.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from customify import records
from customify.errors import first_line

log = logging.getLogger("customify.history")

INTERVAL = 0.25


class HistoryWriter:
    def __init__(self, transaction: Callable[[], AbstractContextManager[Session]]) -> None:
        self.transaction = transaction  # a write transaction of the process (Runtime.transaction)
        self._lock = threading.Lock()
        self._starts: list[dict[str, Any]] = []
        self._ends: list[dict[str, Any]] = []
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def started(
        self,
        task_id: str,
        task_name: str,
        design_id: str | None,
        attempt: int,
        worker: str,
        enqueued_at: datetime | None,
        started_at: datetime,
    ) -> None:
        with self._lock:
            self._starts.append(
                {
                    "task_id": task_id,
                    "task_name": task_name,
                    "design_id": design_id,
                    "state": "started",
                    "attempt": attempt,
                    "worker": worker,
                    "enqueued_at": enqueued_at,
                    "started_at": started_at,
                }
            )

    def finished(self, task_id: str, attempt: int, state: str, error: str | None, finished_at: datetime) -> None:
        with self._lock:
            self._ends.append(
                {"task_id": task_id, "attempt": attempt, "state": state, "error": error, "finished_at": finished_at}
            )

    def flush(self) -> None:
        """Write what has gathered (also called before the history is read, so reads are current)."""
        with self._flush_lock:
            with self._lock:
                starts, ends = self._starts, self._ends
                self._starts, self._ends = [], []
            if not starts and not ends:
                return
            try:
                with self.transaction() as session:
                    records.record_task_runs(session, starts, ends)
            except Exception as exc:
                with self._lock:  # keep them for the next round (a locked or restarting database)
                    self._starts[:0], self._ends[:0] = starts, ends
                log.warning("task history not written yet (%s); retrying", first_line(exc))

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="history-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(INTERVAL):
            self.flush()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self.flush()
