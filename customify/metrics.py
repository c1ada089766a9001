"""Prometheus metrics: this process's counters, and the figures a scrape reads from the deployment.

`WorkerMetrics` counts what a consumer process does (tasks by outcome, wait and
run times, renders by product, mail and webhook deliveries, render helpers);
its `snapshot()` rides in the heartbeat, so any API process exports every
worker's figures, labelled `worker="host:pid"` (`DeploymentCollector`). A
worker that restarts is a new `worker` label whose counters start at 0, with
a `_created` timestamp: Prometheus' `rate()` treats it as a reset.
"""

from __future__ import annotations

import platform
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from huey import signals
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

# Seconds: wait and run times of tasks, and renders (a typical render is ~45 ms, a backlog minutes).
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
TASK_EVENTS = ("enqueued", "started", "succeeded", "failed", "retried")
THREAD_STATES = ("busy", "idle", "stalled")
# Every stall rule gets a gauge (0 or 1), present even when quiet, so an alert can be written on it.
PROBLEM_RULES = (
    "no_live_worker",
    "not_consuming",
    "no_progress",
    "task_overrun",
    "consumer_stopped",
    "workers_paused",
    "stale_worker_process",
)


class _Hist:
    __slots__ = ("buckets", "count", "sum")

    def __init__(self) -> None:
        self.buckets = [0] * len(BUCKETS)  # non-cumulative counts per bucket; beyond the last is count - sum
        self.count = 0
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.count += 1
        self.sum += seconds
        for i, bound in enumerate(BUCKETS):
            if seconds <= bound:
                self.buckets[i] += 1
                break


class WorkerMetrics:
    """Monotonic counters of one process, fed by Huey's signals and a few calls from the tasks."""

    def __init__(self, enqueued_at: Callable[[str], Any] | None = None) -> None:
        self.created = time.time()
        self._lock = threading.Lock()
        self._enqueued_at = enqueued_at
        self._started: dict[str, float] = {}
        self.tasks: dict[tuple[str, str], int] = {}
        self.wait: dict[str, _Hist] = {}
        self.run: dict[str, _Hist] = {}
        self.render: dict[str, _Hist] = {}
        self.deliveries: dict[tuple[str, str], int] = {}  # (kind mail|webhook, outcome) -> count

    def attach(self, huey: Any) -> None:
        huey.signal()(self._on_signal)

    def _count(self, task: str, event: str) -> None:
        key = (task, event)
        self.tasks[key] = self.tasks.get(key, 0) + 1

    def _on_signal(self, signal: str, task: Any, *args: Any) -> None:
        name = type(task).__name__
        now = time.time()
        with self._lock:
            if signal == signals.SIGNAL_ENQUEUED:
                self._count(name, "enqueued")
            elif signal == signals.SIGNAL_EXECUTING:
                self._count(name, "started")
                self._started[task.id] = now
                at = self._enqueued_at(task.id) if self._enqueued_at else None
                if at is not None:
                    self.wait.setdefault(name, _Hist()).observe(max(0.0, now - at.timestamp()))
            elif signal in (signals.SIGNAL_COMPLETE, signals.SIGNAL_ERROR):
                self._count(name, "succeeded" if signal == signals.SIGNAL_COMPLETE else "failed")
                started = self._started.pop(task.id, None)
                if started is not None:
                    self.run.setdefault(name, _Hist()).observe(now - started)
            elif signal == signals.SIGNAL_RETRYING:
                self._count(name, "retried")

    def rendered(self, product: str, seconds: float) -> None:
        with self._lock:
            self.render.setdefault(product, _Hist()).observe(seconds)

    def delivered(self, kind: str, ok: bool) -> None:
        """A mail or webhook delivery attempt that reached its end (ok) or failed."""
        key = (kind, "delivered" if ok else "failed")
        with self._lock:
            self.deliveries[key] = self.deliveries.get(key, 0) + 1

    def snapshot(self, helpers: dict[str, int] | None = None) -> dict[str, Any]:
        """JSON-safe, for the heartbeat (an API process exports it labelled by worker)."""

        def hists(table: dict[str, _Hist]) -> dict[str, Any]:
            return {k: {"b": list(h.buckets), "n": h.count, "s": h.sum} for k, h in table.items()}

        with self._lock:
            return {
                "created": self.created,
                "tasks": [[t, e, n] for (t, e), n in sorted(self.tasks.items())],
                "wait": hists(self.wait),
                "run": hists(self.run),
                "render": hists(self.render),
                "deliveries": [[k, o, n] for (k, o), n in sorted(self.deliveries.items())],
                "helpers": dict(helpers or {}),
            }


class HttpMetrics:
    """Requests by route template and status, with latency (this API process only)."""

    def __init__(self) -> None:
        self.requests = Counter(
            "customify_http_requests",
            "HTTP requests by method, route and status",
            ["method", "route", "status"],
            registry=None,
        )
        self.latency = Histogram(
            "customify_http_request_duration_seconds",
            "HTTP request latency by route",
            ["method", "route"],
            registry=None,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
        )

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def registry(self, scrape: Scrape) -> CollectorRegistry:
        """A registry for one scrape: these HTTP figures plus the scrape's."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self.requests)
        registry.register(self.latency)
        registry.register(ScrapeCollector(scrape))
        return registry


def problem_rules(problems: Iterable[str]) -> dict[str, int]:
    """Which stall rule each consumer problem of customify.status is (they carry words, not rule names):
    the one piece of glue to the rules' module, kept here so it follows it when it changes."""
    active = dict.fromkeys(PROBLEM_RULES, 0)
    for text in problems:
        if "no live worker" in text or "no worker process has a fresh heartbeat" in text:
            active["no_live_worker"] = 1
        elif "not consuming" in text:
            active["not_consuming"] = 1
        elif text.startswith("no progress"):
            active["no_progress"] = 1
        elif "render timeout" in text:
            active["task_overrun"] = 1
        elif "consumer is stopped" in text:
            active["consumer_stopped"] = 1
        elif "every worker process is paused" in text:
            active["workers_paused"] = 1
    return active


def thread_state(thread: dict[str, Any], timeout: float, fresh: float = 5.0) -> str:
    """busy, idle, or stalled (dead, silent, or inside one task past the render timeout)."""
    if thread.get("state") == "dead":
        return "stalled"
    if thread.get("state") == "busy":
        return "stalled" if (thread.get("busy_for_s") or 0) > timeout else "busy"
    age = thread.get("heartbeat_age_s")
    return "idle" if age is not None and age < fresh else "stalled"


class Scrape:
    """What one scrape read, gathered off the event loop (database, queue) before collecting, and the
    figures of this process it reports: the render timeout (a thread busy longer is stalled) and the
    kinds of database and queue (customify_build_info)."""

    def __init__(self, render_timeout: float, database_kind: str, queue_kind: str) -> None:
        self.render_timeout = render_timeout
        self.database_kind = database_kind  # the database URL's scheme: sqlite, postgresql...
        self.queue_kind = queue_kind
        self.designs: dict[str, int] = {}
        self.queue: dict[tuple[str, str], int] = {}  # (state pending|scheduled, priority) -> count
        self.workers: list[dict[str, Any]] = []  # {"id", "metrics", "threads", "stale"}
        self.problems: dict[str, int] = dict.fromkeys(PROBLEM_RULES, 0)


def _families(scrape: Scrape) -> Iterator[Metric]:
    designs = GaugeMetricFamily("customify_designs", "Designs by status", labels=["status"])
    for status in ("draft", "rendering", "published", "failed"):
        designs.add_metric([status], scrape.designs.get(status, 0))
    yield designs
    queue = GaugeMetricFamily(
        "customify_queue_tasks", "Queued tasks by state and priority", labels=["state", "priority"]
    )
    for (state, priority), n in sorted(scrape.queue.items()):
        queue.add_metric([state, priority], n)
    yield queue
    tasks = CounterMetricFamily("customify_tasks", "Task events by task and event", labels=["worker", "task", "event"])
    wait = HistogramMetricFamily(
        "customify_task_wait_seconds", "Time from enqueue to start, per task", labels=["worker", "task"]
    )
    run = HistogramMetricFamily("customify_task_run_seconds", "Run time per task", labels=["worker", "task"])
    render = HistogramMetricFamily("customify_render_seconds", "Render time by product", labels=["worker", "product"])
    deliveries = CounterMetricFamily(
        "customify_deliveries", "Mail and webhook deliveries by outcome", labels=["worker", "kind", "outcome"]
    )
    helpers = CounterMetricFamily(
        "customify_render_helpers", "Render helper processes by event", labels=["worker", "event"]
    )
    threads = GaugeMetricFamily("customify_worker_threads", "Worker threads by state", labels=["worker", "state"])
    timeout = scrape.render_timeout
    for worker in scrape.workers:
        wid = worker["id"]
        m = worker.get("metrics") or {}
        created = m.get("created")
        for task, event, n in m.get("tasks", []):
            tasks.add_metric([wid, task, event], n, created=created)
        for family, table in ((wait, m.get("wait", {})), (run, m.get("run", {})), (render, m.get("render", {}))):
            for key, h in table.items():
                cumulative, buckets = 0, []
                for bound, n in zip(BUCKETS, h["b"], strict=False):
                    cumulative += n
                    buckets.append((repr(bound), cumulative))
                buckets.append(("+Inf", h["n"]))
                family.add_metric([wid, key], buckets, h["s"])
        for kind, outcome, n in m.get("deliveries", []):
            deliveries.add_metric([wid, kind, outcome], n, created=created)
        for event, n in (m.get("helpers") or {}).items():
            helpers.add_metric([wid, event], n, created=created)
        states = dict.fromkeys(THREAD_STATES, 0)
        if not worker.get("stale"):
            for thread in worker.get("threads", []):
                states[thread_state(thread, timeout)] += 1
        for state, n in states.items():
            threads.add_metric([wid, state], n)
    yield from (tasks, wait, run, render, deliveries, helpers, threads)
    problems = GaugeMetricFamily(
        "customify_problem_active", "A stall rule that fires now (1) or not (0)", labels=["rule"]
    )
    for rule, value in scrape.problems.items():
        problems.add_metric([rule], value)
    yield problems
    info = GaugeMetricFamily(
        "customify_build_info",
        "Version and backends of this process",
        labels=["version", "python", "database", "queue"],
    )
    info.add_metric([_version(), platform.python_version(), scrape.database_kind, scrape.queue_kind], 1)
    yield info


def _version() -> str:
    try:
        return version("customify")
    except PackageNotFoundError:  # pragma: no cover (run from a source tree)
        return "unknown"


class ScrapeCollector(Collector):
    """The families of one scrape (a fresh registry per scrape: concurrent scrapes share nothing)."""

    def __init__(self, scrape: Scrape) -> None:
        self.scrape = scrape

    def collect(self) -> Iterable[Metric]:
        return list(_families(self.scrape))
