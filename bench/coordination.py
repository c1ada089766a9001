"""The database load of many worker processes' coordination (issue 18, part 3).

Simulates N worker processes against one Postgres, each running only the coordination code a
`customify worker` runs, on its own connection pool, at the shipped intervals: the heartbeat
(`heartbeats.publish` of a ~3 KB report + the scheduler lease, one transaction every
HEARTBEAT_INTERVAL = 2 s) and the sweeper (its three queries, every render.sweep_interval = 5 s),
against a database holding --designs designs (bench/scale.py's fill; default: the 100k one).
The workers are spread over --procs processes (threads inside each: a thread per simulated
worker, each with its own engine, so the database sees N clients as N processes would make).

Reports over --seconds: transactions/s and statements/s (pg_stat_database; the client's own count),
and the CPU of the Postgres backends serving them (from /proc, summed), per simulated worker, as a
share of one core. Target: <= 1% of one core per worker process.

    .venv/bin/python bench/scale.py fill --sizes 100000 --backends postgres    # once
    .venv/bin/python bench/coordination.py --workers 50 --seconds 30
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import psycopg

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))
from _common import banner, loadavg, out  # noqa: E402

PG = "postgresql://postgres@127.0.0.1:5432"


def report(i: int) -> dict[str, Any]:
    """About the size of a real worker's report: 2 threads, 1 m and 1 h histograms of 3 task types."""
    rnd = random.Random(i)
    hist = {
        name: {
            "count": 1000,
            "failed": 3,
            "wait": {str(b): rnd.randrange(1, 50) for b in range(20)},
            "run": {str(b): rnd.randrange(1, 50) for b in range(30, 50)},
        }
        for name in ("render_design_preview", "send_email", "debug_task")
    }
    return {
        "concurrency": 2,
        "pool": {"implementation": "process", "processes": [1000 + i, 2000 + i]},
        "paused": False,
        "stopped": False,
        "threads": [
            {"name": f"Worker-{t}", "state": "idle", "task": None, "heartbeat_age_s": 0.2, "progress_age_s": None}
            for t in (1, 2)
        ],
        "task_stats": {},
        "histograms": {"1m": hist, "1h": hist},
        "throughput": {"done": [rnd.randrange(0, 30) for _ in range(60)], "failed": [0] * 60},
        "queue": "redis",
        "clock_drift_s": 0.001,
    }


def worker(url: str, index: int, seconds: float, counts: Any, lock: Any) -> None:
    from customify import db, heartbeats, records

    engine = db.make_sync_engine(url)
    sessions = db.session_factory(engine)
    identity = f"sim-{os.getpid()}-{index}:{index}"
    started = datetime.now(UTC)
    payload = report(index)
    statements = 0
    deadline = time.monotonic() + seconds
    # Spread the first beats and sweeps, as processes started at different times would be.
    next_beat = time.monotonic() + random.uniform(0, heartbeats.HEARTBEAT_INTERVAL)
    next_sweep = time.monotonic() + random.uniform(0, 5.0)
    try:
        while (now := time.monotonic()) < deadline:
            if now >= next_beat:
                with sessions() as session, session.begin():
                    heartbeats.publish(session, identity, "sim", index, started, payload)
                    heartbeats.acquire_lease(session, heartbeats.SCHEDULER, identity, heartbeats.LEASE_SECONDS)
                statements += 5  # clock, upsert, forget, lease update (+ insert when not held)
                next_beat += heartbeats.HEARTBEAT_INTERVAL
            if now >= next_sweep:
                with sessions() as session, session.begin():
                    records.designs_to_redrive(session, 60.0, 60.0)
                    records.reset_stale_sends(session, 60.0)
                    records.mails_to_redrive(session, 60.0)
                statements += 3
                next_sweep += 5.0
            time.sleep(max(0.0, min(next_beat, next_sweep) - time.monotonic()))
        with sessions() as session, session.begin():
            heartbeats.remove(session, identity)
    finally:
        engine.dispose()
        with lock:
            counts.value += statements


def process(url: str, first: int, n: int, seconds: float, counts: Any, lock: Any) -> None:
    threads = [threading.Thread(target=worker, args=(url, first + i, seconds, counts, lock)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def backend_cpu(dbname: str) -> dict[int, float]:
    with psycopg.connect(f"{PG}/test", autocommit=True) as conn:
        pids = [r[0] for r in conn.execute("select pid from pg_stat_activity where datname = %s", (dbname,))]
    found = {}
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            found[pid] = t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return found


def xacts(dbname: str) -> int:
    with psycopg.connect(f"{PG}/test", autocommit=True) as conn:
        row = conn.execute(
            "select xact_commit + xact_rollback from pg_stat_database where datname = %s", (dbname,)
        ).fetchone()
    return int(row[0]) if row else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=50)
    parser.add_argument("--procs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--designs", type=int, default=100_000)
    args = parser.parse_args()
    banner(f"coordination: {args.workers} simulated worker processes against one Postgres")
    dbname = f"perf_scale_{args.designs}"
    url = f"{PG}/{dbname}"
    ctx = multiprocessing.get_context("spawn")
    counts, lock = ctx.Value("q", 0), ctx.Lock()
    per = [args.workers // args.procs + (1 if i < args.workers % args.procs else 0) for i in range(args.procs)]
    procs = [
        ctx.Process(target=process, args=(url, sum(per[:i]), n, args.seconds + 5, counts, lock))
        for i, n in enumerate(per)
    ]
    for p in procs:
        p.start()
    time.sleep(5)  # connect, first beats
    cpu0, x0, t0 = backend_cpu(dbname), xacts(dbname), time.monotonic()
    sample = time.monotonic() + args.seconds / 2
    cpu_mid = {}
    while time.monotonic() < t0 + args.seconds:
        time.sleep(0.5)
        if not cpu_mid and time.monotonic() > sample:
            cpu_mid = backend_cpu(dbname)  # catches backends that appeared after the start
    cpu1, x1, wall = backend_cpu(dbname), xacts(dbname), time.monotonic() - t0
    for p in procs:
        p.join(60)
    used = sum(
        cpu1.get(pid, cpu_mid.get(pid, 0.0)) - cpu0.get(pid, cpu_mid.get(pid, 0.0)) for pid in set(cpu1) | set(cpu0)
    )
    tps = (x1 - x0) / wall
    cores = used / wall
    stmts = counts.value / (args.seconds + 5)
    out(
        f"{args.workers} workers over {wall:.1f} s: {tps:.1f} transactions/s ({tps / args.workers:.2f} per worker), "
        f"~{stmts:.0f} statements/s ({stmts / args.workers:.2f} per worker); Postgres backends "
        f"{cores:.3f} cores = {cores * 100 / args.workers:.3f}% of a core per worker "
        f"({len(cpu1)} backends); loadavg {loadavg()}"
    )


if __name__ == "__main__":
    main()
