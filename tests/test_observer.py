"""The observer's timings: percentiles within the histogram's ±5%, 1 min and 1 h windows, bounded memory."""

from __future__ import annotations

import math
import random
import sys
import uuid
from typing import Any

from huey import signals as S

from customify.events import EventHub
from customify.observer import Observer

Render = type("render_design_preview", (), {})
Mail = type("send_email", (), {})


def task(cls: type, *args: Any) -> Any:
    t = cls()
    t.id = str(uuid.uuid4())
    t.args = args
    return t


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def run_one(obs: Observer, clock: Clock, cls: type, wait: float, run: float, ok: bool = True) -> None:
    t = task(cls, "design-1", 1)
    obs._on_signal(S.SIGNAL_ENQUEUED, t)
    clock.now += wait
    obs._on_signal(S.SIGNAL_EXECUTING, t)
    clock.now += run
    obs._on_signal(S.SIGNAL_COMPLETE if ok else S.SIGNAL_ERROR, t, *(() if ok else (ValueError("x"),)))


def observer() -> tuple[Observer, Clock]:
    obs = Observer(EventHub())
    clock = Clock()
    obs.clock = clock
    return obs, clock


def test_percentiles_are_within_five_percent() -> None:
    obs, clock = observer()
    rng = random.Random(7)
    runs = sorted(rng.uniform(0.020, 0.200) for _ in range(50))
    for run in runs:
        run_one(obs, clock, Render, wait=0.010, run=run)
    stats = obs.task_stats(60)["render_design_preview"]
    assert stats["done"] == 50 and stats["failed"] == 0
    for q, key in ((0.50, "run_p50_ms"), (0.95, "run_p95_ms"), (0.99, "run_p99_ms")):
        exact = runs[math.ceil(q * len(runs)) - 1] * 1000  # nearest-rank percentile
        assert abs(stats[key] - exact) / exact < 0.06, (key, stats[key], exact)
    assert abs(stats["wait_p50_ms"] - 10.0) < 0.6


def test_one_minute_and_one_hour_windows() -> None:
    obs, clock = observer()
    run_one(obs, clock, Render, 0.001, 0.050)
    run_one(obs, clock, Mail, 0.001, 0.010, ok=False)
    clock.now += 120  # two minutes later
    run_one(obs, clock, Render, 0.001, 0.050)
    minute = obs.task_stats(60)
    hour = obs.task_stats(3600)
    assert minute["render_design_preview"]["done"] == 1 and "send_email" not in minute
    assert hour["render_design_preview"]["done"] == 2 and hour["send_email"]["failed"] == 1
    clock.now += 3600
    assert obs.task_stats(3600) == {}
    stats = obs.stats()
    assert set(stats["windows"]) == {"1m", "1h"} and len(stats["throughput"]) == 60
    assert stats["done_per_min"] == 0


def test_throughput_series_counts_each_second() -> None:
    obs, clock = observer()
    for _ in range(3):
        run_one(obs, clock, Render, 0.0, 0.0)
    clock.now += 1
    run_one(obs, clock, Render, 0.0, 0.0, ok=False)
    series = obs.throughput(60)
    assert series["done"][-2:] == [3, 0] and series["failed"][-1] == 1
    assert obs.stats()["done_per_min"] == 3 and obs.stats()["failed_per_min"] == 1


def test_memory_is_bounded() -> None:
    obs, clock = observer()
    for _ in range(20_000):
        run_one(obs, clock, Render, 0.0005, 0.003)
        clock.now += 0.2  # over an hour of history
    timings = obs._timings["render_design_preview"]
    assert len(timings.minute.slots) == 60 and len(timings.hour.slots) == 60
    buckets = sum(len(s.run) + len(s.wait) for s in timings.minute.slots + timings.hour.slots)
    assert buckets < 120 * 320 * 2
    assert sys.getsizeof(obs._enqueued) < 10_000  # finished tasks leave the pending map


def test_revoked_and_purged_tasks_stop_counting_as_pending() -> None:
    obs, clock = observer()
    a, b = task(Render, "d", 1), task(Render, "e", 1)
    obs._on_signal(S.SIGNAL_ENQUEUED, a)
    obs._on_signal(S.SIGNAL_ENQUEUED, b)
    clock.now += 2
    assert obs.oldest_pending_age() == 2
    obs._on_signal(S.SIGNAL_REVOKED, a)
    assert obs.enqueued_at(a.id) is None and obs.enqueued_at(b.id) is not None
    obs.forget_pending()
    assert obs.oldest_pending_age() is None
