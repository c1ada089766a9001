"""The one in-process record of workers, tasks and timings.

It listens to Huey's signals (emitted in the enqueuing thread and in each
worker thread) and to worker heartbeats. Health, worker-status, the event
stream and the dashboard all read `snapshot()`, so they cannot disagree.
Bookkeeping is bounded in memory and costs no database query.
"""

from __future__ import annotations

import math
import os
import socket
import sys
import threading
import time
import traceback
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from huey import signals

from customify.errors import described
from customify.events import EventHub
from customify.queue import RENDER


@dataclass
class ThreadState:
    name: str
    task: str | None = None
    task_id: str | None = None
    design_id: str | None = None
    started: float | None = None
    last_beat: float | None = None
    last_progress: float | None = None  # when the thread last finished a task
    ident: int | None = None
    progress_at: float | None = None  # when its current task last made progress (started, a stage, helper CPU)
    stage: str | None = None
    helper_pid: int | None = None
    outcome: str | None = None  # what the current task did to its design (tasks.run_render says)
    reason: str | None = None


# Timings go into log-scale histograms: bucket i holds [BASE·RATIO^i, BASE·RATIO^(i+1)) seconds,
# so a percentile is read to within ±5% and memory does not grow with the task count.
_BASE = 1e-5
_RATIO = 1.1
_LOG_RATIO = math.log(_RATIO)
_BUCKETS = 320  # 10 µs … ~2·10^8 s


def _bucket(seconds: float) -> int:
    if seconds <= _BASE:
        return 0
    return min(_BUCKETS - 1, int(math.log(seconds / _BASE) / _LOG_RATIO))


def _bucket_value(index: int) -> float:
    """The geometric middle of a bucket, in seconds."""
    return float(_BASE * _RATIO ** (index + 0.5))


def _hist_percentile(hist: dict[int, int], q: float) -> float | None:
    total = sum(hist.values())
    if not total:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for index in sorted(hist):
        seen += hist[index]
        if seen >= rank:
            return _bucket_value(index)
    return None  # pragma: no cover


class _Slot:
    __slots__ = ("done", "epoch", "failed", "run", "wait")

    def __init__(self) -> None:
        self.epoch = -1
        self.done = 0
        self.failed = 0
        self.wait: dict[int, int] = {}
        self.run: dict[int, int] = {}


class _Ring:
    """`count` slots of `width` seconds each: a sliding window of fixed size."""

    def __init__(self, width: float, count: int) -> None:
        self.width = width
        self.count = count
        self.slots = [_Slot() for _ in range(count)]

    def add(self, now: float, wait: float | None, run: float, ok: bool) -> None:
        epoch = int(now // self.width)
        slot = self.slots[epoch % self.count]
        if slot.epoch != epoch:
            slot.epoch, slot.done, slot.failed = epoch, 0, 0
            slot.wait, slot.run = {}, {}
        if ok:
            slot.done += 1
        else:
            slot.failed += 1
        if wait is not None:
            i = _bucket(wait)
            slot.wait[i] = slot.wait.get(i, 0) + 1
        i = _bucket(run)
        slot.run[i] = slot.run.get(i, 0) + 1

    def live(self, now: float, window: float) -> list[_Slot]:
        newest = int(now // self.width)
        oldest = newest - max(1, math.ceil(window / self.width)) + 1
        return [s for s in self.slots if oldest <= s.epoch <= newest]


class _TaskTimings:
    def __init__(self) -> None:
        self.minute = _Ring(1.0, 60)  # 1 s slots: the last minute, and the throughput sparkline
        self.hour = _Ring(60.0, 60)  # 1 min slots: the last hour

    def add(self, now: float, wait: float | None, run: float, ok: bool) -> None:
        self.minute.add(now, wait, run, ok)
        self.hour.add(now, wait, run, ok)


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
        self._timings: dict[str, _TaskTimings] = {}
        self.clock = time.time  # tests and benchmarks may freeze it
        self.consumer: Any = None  # the EmbeddedConsumer when this process runs one

    # Wiring -----------------------------------------------------------------

    def attach(self, huey: Any) -> None:
        huey.signal()(self._on_signal)

    def progress(self, stage: str, helper_pid: int | None = None) -> None:
        """Called from a worker thread as its task advances (a render stage, its helper's CPU time)."""
        name = threading.current_thread().name
        now = self.clock()
        with self._lock:
            state = self.threads.get(name)
            if state is not None and state.task is not None:
                state.progress_at, state.stage, state.helper_pid = now, stage, helper_pid

    def set_outcome(self, outcome: str, reason: str | None = None) -> None:
        """What the current task of this worker thread did: published, failed, discarded, skipped."""
        with self._lock:
            state = self.threads.get(threading.current_thread().name)
            if state is not None:
                state.outcome, state.reason = outcome, reason

    def outcome_of(self, thread: str | None = None) -> tuple[str | None, str | None]:
        with self._lock:
            state = self.threads.get(thread or threading.current_thread().name)
            return (state.outcome, state.reason) if state is not None else (None, None)

    def current_task(self) -> tuple[str | None, float | None]:
        """(task id, when it started executing) of this worker thread's current task."""
        with self._lock:
            state = self.threads.get(threading.current_thread().name)
            return (state.task_id, state.started) if state is not None else (None, None)

    def enqueued_time(self, task_id: str) -> float | None:
        """When a task still pending or running was enqueued in this process (time.time()), if seen."""
        with self._lock:
            return self._enqueued.get(task_id)

    def beat(self) -> None:
        """Called by each worker thread on every loop: proof of life, not of progress."""
        name = threading.current_thread().name
        now = self.clock()
        with self._lock:
            state = self.threads.get(name)
            new = state is None
            if state is None:
                state = self.threads[name] = ThreadState(name=name, ident=threading.get_ident())
            state.last_beat = now
            state.ident = threading.get_ident()
        if new:
            self.hub.publish("worker.state", worker=name, state="idle", reason="worker thread started")

    @staticmethod
    def _design_of(task: Any) -> str | None:
        args = getattr(task, "args", None) or ()
        name = type(task).__name__
        return str(args[0]) if args and name == RENDER else None

    def _on_signal(self, signal: str, task: Any, *args: Any) -> None:
        now = self.clock()
        name = type(task).__name__
        thread = threading.current_thread().name
        design_id = self._design_of(task)
        if signal == signals.SIGNAL_ENQUEUED:
            with self._lock:
                self._enqueued[task.id] = now
                while len(self._enqueued) > 50_000:
                    self._enqueued.popitem(last=False)
            self.hub.publish("task.enqueued", task_id=task.id, task=name, design_id=design_id)
            return
        if signal == signals.SIGNAL_EXECUTING:
            with self._lock:
                state = self.threads.setdefault(thread, ThreadState(name=thread))
                state.task, state.task_id, state.design_id, state.started = name, task.id, design_id, now
                state.progress_at, state.stage, state.helper_pid = now, "started", None
                state.outcome = state.reason = None
                state.ident = threading.get_ident()
                enqueued = self._enqueued.get(task.id)
            wait = now - enqueued if enqueued else None
            self.hub.publish(
                "task.started",
                task_id=task.id,
                task=name,
                design_id=design_id,
                worker=thread,
                wait_ms=None if wait is None else round(wait * 1000, 2),
            )
            return
        if signal in (signals.SIGNAL_REVOKED, signals.SIGNAL_EXPIRED):
            with self._lock:
                self._enqueued.pop(task.id, None)
            self.hub.publish(
                "task.revoked" if signal == signals.SIGNAL_REVOKED else "task.expired",
                task_id=task.id,
                task=name,
                design_id=design_id,
            )
            return
        if signal == signals.SIGNAL_RETRYING:
            return  # the task.retrying event was published with its error
        if signal in (
            signals.SIGNAL_COMPLETE,
            signals.SIGNAL_ERROR,
            signals.SIGNAL_INTERRUPTED,
            signals.SIGNAL_CANCELED,
            signals.SIGNAL_LOCKED,
            signals.SIGNAL_TIMEOUT,
        ):
            with self._lock:
                current = self.threads.get(thread)
                mine = current is not None and current.task_id == task.id
                started = current.started if current is not None and mine else None
                outcome, reason = (current.outcome, current.reason) if current is not None and mine else (None, None)
                if current is not None and mine:
                    current.task = current.task_id = current.design_id = current.started = None
                    current.progress_at = current.stage = current.helper_pid = None
                    current.outcome = current.reason = None
                    current.last_progress = now
                enqueued = self._enqueued.pop(task.id, None)
                run = now - started if started else 0.0
                wait = (started - enqueued) if (started and enqueued) else None
                if signal == signals.SIGNAL_COMPLETE:
                    outcome = outcome or "succeeded"
                else:
                    outcome = "retrying" if getattr(task, "retries", 0) else "failed"
                    reason = (
                        described(args[0]) if args and isinstance(args[0], BaseException) else signal.replace("-", " ")
                    )
                ok = outcome not in ("failed", "retrying")
                timings = self._timings.get(name)
                if timings is None:
                    timings = self._timings[name] = _TaskTimings()
                timings.add(now, wait, run, ok)
            self.hub.publish(
                f"task.{outcome}",
                task_id=task.id,
                task=name,
                outcome=outcome,
                design_id=design_id,
                worker=thread,
                run_ms=round(run * 1000, 2),
                wait_ms=None if wait is None else round(wait * 1000, 2),
                error=reason,
            )

    # Reading ----------------------------------------------------------------

    def stack_of(self, thread_name: str) -> list[str] | None:
        """The live Python stack of a worker thread ("stuck in what?")."""
        with self._lock:
            state = self.threads.get(thread_name)
            ident = state.ident if state else None
        frame = sys._current_frames().get(ident) if ident else None
        return traceback.format_stack(frame) if frame is not None else None

    def task_stats(self, window: float = 60.0) -> dict[str, dict[str, Any]]:
        """Per task type over the last `window` seconds (≤ 1 h): counts and wait/run p50/p95/p99 in ms."""
        return {name: summarize([h]) for name, h in self._histograms(window).items()}

    def histograms(self) -> dict[str, dict[str, dict[str, Any]]]:
        """The raw 1 min and 1 h histograms per task type (JSON-safe), for another process to merge
        exactly (an API-only process shows the union of its deployment's workers)."""
        return {
            key: {
                name: {
                    "done": h["done"],
                    "failed": h["failed"],
                    "wait": {str(i): n for i, n in h["wait"].items()},
                    "run": {str(i): n for i, n in h["run"].items()},
                }
                for name, h in self._histograms(window).items()
            }
            for key, window in (("1m", 60.0), ("1h", 3600.0))
        }

    def _histograms(self, window: float) -> dict[str, dict[str, Any]]:
        now = self.clock()
        with self._lock:
            slots = {
                name: (t.minute if window <= 60 else t.hour).live(now, min(window, 3600.0))
                for name, t in self._timings.items()
            }
        out: dict[str, dict[str, Any]] = {}
        for name in sorted(slots):
            mine = slots[name]
            if not mine:
                continue
            waits: dict[int, int] = {}
            runs: dict[int, int] = {}
            for slot in mine:
                for i, n in slot.wait.items():
                    waits[i] = waits.get(i, 0) + n
                for i, n in slot.run.items():
                    runs[i] = runs.get(i, 0) + n
            out[name] = {
                "done": sum(s.done for s in mine),
                "failed": sum(s.failed for s in mine),
                "wait": waits,
                "run": runs,
            }
        return out

    def throughput(self, seconds: int = 60) -> dict[str, list[int]]:
        """Tasks finished (done, failed) in each of the last `seconds` seconds, oldest first."""
        now = self.clock()
        newest = int(now)
        done = [0] * seconds
        failed = [0] * seconds
        with self._lock:
            for timings in self._timings.values():
                for slot in timings.minute.slots:
                    age = newest - slot.epoch
                    if 0 <= age < seconds:
                        done[seconds - 1 - age] += slot.done
                        failed[seconds - 1 - age] += slot.failed
        return {"done": done, "failed": failed}

    def stats(self) -> dict[str, Any]:
        """Everything the queue panel shows, from memory: windows of 1 min and 1 h, throughput, oldest wait."""
        series = self.throughput(60)
        return {
            "windows": {"1m": self.task_stats(60.0), "1h": self.task_stats(3600.0)},
            "throughput": series["done"],
            "done_per_min": sum(series["done"]),
            "failed_per_min": sum(series["failed"]),
            "oldest_pending_age_s": _round(self.oldest_pending_age()),
        }

    def forget_pending(self) -> None:
        """After the pending queue was purged: nothing we saw enqueued is waiting any more."""
        with self._lock:
            self._enqueued.clear()

    def enqueued_at(self, task_id: str) -> datetime | None:
        with self._lock:
            at = self._enqueued.get(task_id)
        return datetime.fromtimestamp(at, UTC) if at else None

    def oldest_pending_age(self) -> float | None:
        with self._lock:
            if not self._enqueued:
                return None
            first = next(iter(self._enqueued.values()))
        return self.clock() - first

    def threads_snapshot(self) -> list[dict[str, Any]]:
        now = self.clock()
        alive = set(self.consumer.thread_names()) if self.consumer is not None else set()
        alive_threads = {t.name for t in threading.enumerate()}
        out = []
        with self._lock:
            states = [ThreadState(**vars(s)) for s in self.threads.values()]
        for s in sorted(states, key=lambda s: s.name):
            if alive and s.name not in alive:
                continue
            dead = s.name not in alive_threads
            out.append(
                {
                    "name": s.name,
                    "state": "dead" if dead else ("busy" if s.task else "idle"),
                    "task": s.task,
                    "task_id": s.task_id,
                    "design_id": s.design_id,
                    "busy_for_s": round(now - s.started, 3) if s.started else None,
                    "heartbeat_age_s": round(now - s.last_beat, 3) if s.last_beat else None,
                    "progress_age_s": round(now - s.last_progress, 3) if s.last_progress else None,
                    "stage": s.stage if s.task else None,
                    "helper_pid": s.helper_pid if s.task else None,
                    "no_progress_s": round(now - s.progress_at, 3) if s.task and s.progress_at else None,
                }
            )
        return out


def summarize(histograms: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts and wait/run p50/p95/p99 (ms) of one task type, merged over histograms (bucket keys
    int, or str as published); merging the buckets keeps the percentiles exact to a bucket."""
    waits: dict[int, int] = {}
    runs: dict[int, int] = {}
    done = failed = 0
    for h in histograms:
        done += int(h.get("done", 0))
        failed += int(h.get("failed", 0))
        for into, part in ((waits, h.get("wait", {})), (runs, h.get("run", {}))):
            for i, n in part.items():
                into[int(i)] = into.get(int(i), 0) + int(n)
    return {
        "done": done,
        "failed": failed,
        **{f"wait_p{q}_ms": _ms(_hist_percentile(waits, q / 100)) for q in (50, 95, 99)},
        **{f"run_p{q}_ms": _ms(_hist_percentile(runs, q / 100)) for q in (50, 95, 99)},
    }


def merge_windows(reports: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """The `windows` of several processes' `histograms()`, merged per window and task type."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for key in ("1m", "1h"):
        names = sorted({name for p in reports for name in (p.get(key) or {})})
        out[key] = {name: summarize([p[key][name] for p in reports if name in (p.get(key) or {})]) for name in names}
    return out


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
