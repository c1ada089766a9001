"""The one in-process picture of workers, tasks and timings.

It listens to Huey's signals (emitted in the enqueuing thread and in each
worker thread) and to worker heartbeats. Health, worker-status, the event
stream and the dashboard all read `snapshot()`, so they cannot disagree.
Bookkeeping is bounded in memory and costs no database query.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
import traceback
from collections import OrderedDict, deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from huey import signals as S

from customify.events import EventHub


@dataclass
class ThreadState:
    name: str
    task: str | None = None
    task_id: str | None = None
    design_id: str | None = None
    started: float | None = None
    last_beat: float | None = None
    last_progress: float | None = None
    ident: int | None = None


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Observer:
    def __init__(self, hub: EventHub, identity: str | None = None) -> None:
        self.hub = hub
        self.hostname = socket.gethostname()
        self.pid = os.getpid()
        self.identity = identity or f"{self.hostname}:{self.pid}"
        self.started_at = time.time()
        self._lock = threading.Lock()
        self.threads: dict[str, ThreadState] = {}
        self._enqueued: OrderedDict[str, float] = OrderedDict()
        # (finished wall time, task name, wait s, run s, ok)
        self.timings: deque[tuple[float, str, float | None, float, bool]] = deque(maxlen=20_000)
        self.consumer: Any = None  # the EmbeddedConsumer when this process runs one

    # Wiring -----------------------------------------------------------------

    def attach(self, huey: Any) -> None:
        huey.signal()(self._on_signal)

    def beat(self) -> None:
        """Called by each worker thread on every loop: proof of life, not of progress."""
        name = threading.current_thread().name
        now = time.time()
        with self._lock:
            state = self.threads.get(name)
            if state is None:
                state = self.threads[name] = ThreadState(name=name, ident=threading.get_ident())
            state.last_beat = now
            state.ident = threading.get_ident()

    @staticmethod
    def _design_of(task: Any) -> str | None:
        args = getattr(task, "args", None) or ()
        name = type(task).__name__
        return str(args[0]) if args and name == "render_design_preview" else None

    def _on_signal(self, signal: str, task: Any, *args: Any) -> None:
        now = time.time()
        name = type(task).__name__
        thread = threading.current_thread().name
        design_id = self._design_of(task)
        if signal == S.SIGNAL_ENQUEUED:
            with self._lock:
                self._enqueued[task.id] = now
                while len(self._enqueued) > 50_000:
                    self._enqueued.popitem(last=False)
            self.hub.publish("task.enqueued", task_id=task.id, task=name, design_id=design_id)
            return
        if signal == S.SIGNAL_EXECUTING:
            with self._lock:
                state = self.threads.setdefault(thread, ThreadState(name=thread))
                state.task, state.task_id, state.design_id, state.started = name, task.id, design_id, now
                state.ident = threading.get_ident()
                enqueued = self._enqueued.get(task.id)
            wait = now - enqueued if enqueued else None
            self.hub.publish("task.started", task_id=task.id, task=name, design_id=design_id, worker=thread,
                             wait_ms=None if wait is None else round(wait * 1000, 2))
            return
        if signal in (S.SIGNAL_COMPLETE, S.SIGNAL_ERROR, S.SIGNAL_RETRYING, S.SIGNAL_INTERRUPTED,
                      S.SIGNAL_CANCELED, S.SIGNAL_LOCKED, S.SIGNAL_TIMEOUT):
            if signal == S.SIGNAL_RETRYING:
                self.hub.publish("task.retried", task_id=task.id, task=name, design_id=design_id)
                return
            with self._lock:
                state = self.threads.get(thread)
                started = state.started if state and state.task_id == task.id else None
                if state is not None and state.task_id == task.id:
                    state.task = state.task_id = state.design_id = state.started = None
                    state.last_progress = now
                enqueued = self._enqueued.pop(task.id, None)
                run = now - started if started else 0.0
                wait = (started - enqueued) if (started and enqueued) else None
                ok = signal == S.SIGNAL_COMPLETE
                self.timings.append((now, name, wait, run, ok))
            error = repr(args[0]) if args else None
            self.hub.publish("task.succeeded" if ok else "task.failed", task_id=task.id, task=name,
                             design_id=design_id, worker=thread, run_ms=round(run * 1000, 2),
                             wait_ms=None if wait is None else round(wait * 1000, 2), error=error)

    # Reading ----------------------------------------------------------------

    def stack_of(self, thread_name: str) -> list[str] | None:
        """The live Python stack of a worker thread ("stuck in what?")."""
        with self._lock:
            state = self.threads.get(thread_name)
            ident = state.ident if state else None
        frame = sys._current_frames().get(ident) if ident else None
        return traceback.format_stack(frame) if frame is not None else None

    def task_stats(self, window: float = 60.0) -> dict[str, dict[str, Any]]:
        cutoff = time.time() - window
        with self._lock:
            rows = [t for t in self.timings if t[0] >= cutoff]
        stats: dict[str, dict[str, Any]] = {}
        for name in sorted({r[1] for r in rows}):
            mine = [r for r in rows if r[1] == name]
            waits = [r[2] for r in mine if r[2] is not None]
            runs = [r[3] for r in mine]
            stats[name] = {
                "done": sum(1 for r in mine if r[4]),
                "failed": sum(1 for r in mine if not r[4]),
                **{f"wait_p{q}_ms": _ms(_percentile(waits, q / 100)) for q in (50, 95, 99)},
                **{f"run_p{q}_ms": _ms(_percentile(runs, q / 100)) for q in (50, 95, 99)},
            }
        return stats

    def enqueued_at(self, task_id: str) -> datetime | None:
        with self._lock:
            at = self._enqueued.get(task_id)
        return datetime.fromtimestamp(at, UTC) if at else None

    def oldest_pending_age(self) -> float | None:
        with self._lock:
            if not self._enqueued:
                return None
            first = next(iter(self._enqueued.values()))
        return time.time() - first

    def threads_snapshot(self) -> list[dict[str, Any]]:
        now = time.time()
        alive = set(self.consumer.thread_names()) if self.consumer is not None else set()
        alive_threads = {t.name for t in threading.enumerate()}
        out = []
        with self._lock:
            states = [ThreadState(**vars(s)) for s in self.threads.values()]
        for s in sorted(states, key=lambda s: s.name):
            if alive and s.name not in alive:
                continue
            dead = s.name not in alive_threads
            out.append({
                "name": s.name,
                "state": "dead" if dead else ("busy" if s.task else "idle"),
                "task": s.task,
                "task_id": s.task_id,
                "design_id": s.design_id,
                "busy_for_s": round(now - s.started, 3) if s.started else None,
                "heartbeat_age_s": round(now - s.last_beat, 3) if s.last_beat else None,
                "progress_age_s": round(now - s.last_progress, 3) if s.last_progress else None,
            })
        return out


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)
