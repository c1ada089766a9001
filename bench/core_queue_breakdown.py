"""Diagnosis for figure 3: where the queue + bookkeeping milliseconds of one design go.

In-process (a Runtime with its consumer, no HTTP): design rows are inserted,
then render tasks are enqueued one at a time (each after the previous design's
mail task finished, so nothing queues). The bench wraps, without changing
them, the pieces a render task goes through and times each per task:

  wait          Huey SIGNAL_ENQUEUED -> SIGNAL_EXECUTING (wake-up + dequeue), of which
    enq_to_wake   SIGNAL_ENQUEUED -> the worker's doorbell wait returns
    dequeue       huey.dequeue() (SQLite queue: begin exclusive, select, delete)
    deq_to_exec   dequeue returned -> SIGNAL_EXECUTING
  hist_start    pre_execute hook: task-history row (a write transaction)
  claim         records.claim_render's transaction
  render_ms     the task's own figure (load spec/assets, render, encode, write files)
  publish       records.mark_published's transaction
  mail_enqueue  enqueue of the send_email task
  hist_end      post_execute hook: task-history update (a write transaction)
  txn_lock_wait time spent waiting for the process's SQLite write lock, all txns of the task
  txn_count     write transactions in the task

Runs with the shipped worker_nice (10) and with 0, alternating.

    python bench/core_queue_breakdown.py [--designs 40] [--rounds 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import asset_png, banner, out, pct, tempdir, typical_spec, wait_quiet

STAGES = (
    "wait",
    "enq_to_wake",
    "dequeue",
    "deq_to_exec",
    "hist_start",
    "claim",
    "render_ms",
    "publish",
    "mail_enqueue",
    "hist_end",
    "txn_lock_wait",
    "txn_total",
    "txn_count",
    "enqueue_to_done",
    "overhead",
)


def measure(nice: int, designs: int, tmp: Path) -> dict[str, list[float]]:
    from huey import signals as S

    from customify import records, tasks
    from customify.config import load_config
    from customify.models import DEV_USER_ID
    from customify.runtime import Runtime

    config = load_config(None, {}, {"data_dir": str(tmp / f"data-{nice}-{time.time_ns()}"), "port": 0})
    import msgspec

    config = msgspec.structs.replace(config, render=msgspec.structs.replace(config.render, worker_nice=nice))
    rt = Runtime(config)
    rt.prepare_database()
    png = asset_png()
    sha = hashlib.sha256(png).hexdigest()
    rt.files.put(f"assets/{sha[:2]}/{sha}.png", png)
    with rt.transaction() as session:
        records.ensure_dev_user(session)
        asset_id = records.create_asset(session, DEV_USER_ID, sha, "png", 400, 400, len(png), "logo.png").id

    local = threading.local()
    per_task: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    mail_done = threading.Event()

    def current() -> dict[str, float] | None:
        task_id = getattr(local, "task_id", None)
        return per_task[task_id] if task_id else None

    # Write transactions: the same logic as Runtime.transaction, timed.
    write_lock = rt._write_lock

    @contextmanager
    def transaction() -> Iterator[Any]:
        t0 = time.perf_counter()
        with write_lock:
            t1 = time.perf_counter()
            with rt.sessions() as session, session.begin():
                yield session
        t2 = time.perf_counter()
        rec = current()
        if rec is not None:
            rec["txn_lock_wait"] += (t1 - t0) * 1000
            rec["txn_total"] += (t2 - t0) * 1000
            rec["txn_count"] += 1

    rt.transaction = transaction  # type: ignore[method-assign]

    def timed(label: str, fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                rec = current()
                if rec is not None:
                    rec[label] += (time.perf_counter() - t0) * 1000

        return wrapper

    orig_start, orig_end = tasks._history_start, tasks._history_end

    def hist_start(rt_: Any, task: Any) -> None:
        if type(task).__name__ == "render_design_preview":
            local.task_id = task.id
        else:
            local.task_id = None
        timed("hist_start", orig_start)(rt_, task)

    def hist_end(rt_: Any, task: Any, exc: Any) -> None:
        timed("hist_end", orig_end)(rt_, task, exc)
        if type(task).__name__ == "send_email":
            mail_done.set()

    tasks._history_start = hist_start  # type: ignore[assignment]
    tasks._history_end = hist_end  # type: ignore[assignment]
    rt.tasks = dataclasses.replace(rt.tasks, send_email=timed("mail_enqueue", rt.tasks.send_email))

    stamps: dict[str, dict[str, float]] = defaultdict(dict)

    def on_signal(signal: str, task: Any, *args: Any) -> None:
        if type(task).__name__ == "render_design_preview":
            stamps[task.id][signal] = time.perf_counter()

    rt.huey.signal(S.SIGNAL_ENQUEUED, S.SIGNAL_EXECUTING, S.SIGNAL_COMPLETE)(on_signal)

    doorbell = rt.huey.doorbell  # type: ignore[attr-defined]
    bell_wait, huey_dequeue = doorbell.wait, rt.huey.dequeue

    def wait(timeout: float) -> bool:
        rung = bell_wait(timeout)
        local.woke = time.perf_counter() if rung else None
        return rung

    def dequeue() -> Any:
        t0 = time.perf_counter()
        task = huey_dequeue()
        t1 = time.perf_counter()
        if task is not None and type(task).__name__ == "render_design_preview":
            stamps[task.id]["woke"] = getattr(local, "woke", None) or t0
            stamps[task.id]["deq0"], stamps[task.id]["deq1"] = t0, t1
        local.woke = None
        return task

    doorbell.wait = wait
    rt.huey.dequeue = dequeue  # type: ignore[method-assign]

    # claim and publish transactions: distinguish them by order within the task
    orig_tx = rt.transaction

    @contextmanager
    def labelled() -> Iterator[Any]:
        rec = current()
        n = int(rec["txn_count"]) if rec is not None else -1
        t0 = time.perf_counter()
        with orig_tx() as session:
            yield session
        if rec is not None:
            # order inside a render task: 0 claim, 1 publish (task history is written in batches
            # by rt.history's own thread, outside the task)
            label = {0: "claim", 1: "publish"}.get(n)
            if label:
                rec[label] += (time.perf_counter() - t0) * 1000

    rt.transaction = labelled  # type: ignore[method-assign]

    rt.start_consumer()
    results: dict[str, list[float]] = defaultdict(list)
    try:
        for n in range(designs + 3):
            with rt.transaction() as session:
                design_id = records.create_design(session, DEV_USER_ID, typical_spec(asset_id, n)).id
            mail_done.clear()
            result = rt.tasks.render(design_id, 1)
            if not mail_done.wait(30):
                raise RuntimeError("the design's mail task did not finish")
            time.sleep(0.02)
            with rt.sessions() as session:
                render_ms = records.get_design(session, None, design_id).render_ms
            if n < 3:
                continue  # warm-up
            rec = per_task[result.id]
            st = stamps[result.id]
            rec["wait"] = (st[S.SIGNAL_EXECUTING] - st[S.SIGNAL_ENQUEUED]) * 1000
            rec["render_ms"] = render_ms
            rec["enq_to_wake"] = (st["woke"] - st[S.SIGNAL_ENQUEUED]) * 1000
            rec["dequeue"] = (st["deq1"] - st["deq0"]) * 1000
            rec["deq_to_exec"] = (st[S.SIGNAL_EXECUTING] - st["deq1"]) * 1000
            rec["enqueue_to_done"] = (st[S.SIGNAL_COMPLETE] - st[S.SIGNAL_ENQUEUED]) * 1000
            rec["overhead"] = rec["enqueue_to_done"] - render_ms
            for stage in STAGES:
                results[stage].append(rec.get(stage, 0.0))
    finally:
        rt.close()
        tasks._history_start, tasks._history_end = orig_start, orig_end
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--designs", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--nice", default="10,0")
    args = parser.parse_args()
    banner("core_queue_breakdown: per-stage cost of one render task (sequential, in-process)")
    agg: dict[int, dict[str, list[float]]] = {}
    with tempdir() as tmp:
        for r in range(args.rounds):
            for nice in [int(x) for x in args.nice.split(",")]:
                quiet = wait_quiet(max_wait=30)
                res = measure(nice, args.designs, tmp)
                bucket = agg.setdefault(nice, defaultdict(list))
                for k, v in res.items():
                    bucket[k].extend(v)
                out(
                    f"round {r} worker_nice={nice}: overhead p50 {pct(res['overhead'], 50):.2f} ms, "
                    f"wait p50 {pct(res['wait'], 50):.2f} ms, render p50 {pct(res['render_ms'], 50):.1f} ms "
                    f"(machine busy before {quiet:.2f} cores)"
                )
    out()
    out("per render task, p50 / p95 in ms (txn_count is a count):")
    header = "  " + f"{'stage':16s}" + "".join(f"{f'nice={n}':>20s}" for n in agg)
    out(header)
    for stage in STAGES:
        cells = "".join(f"{pct(agg[n][stage], 50):9.2f} /{pct(agg[n][stage], 95):8.2f}" + " " for n in agg)
        out(f"  {stage:16s}{cells}")
    out("  overhead = enqueue_to_done (Huey ENQUEUED -> COMPLETE signals) - render_ms; target p50 <= 5 ms")


if __name__ == "__main__":
    main()
