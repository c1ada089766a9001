"""How fast each fault of issue 11's matrix is named by health, and what health costs.

For each fault: an in-process app (render.stall_seconds = STALL), the fault injected,
health polled every 20 ms until it names the cause; the time from injection (for the
stall rows: from the design being queued on the frozen helper) to that answer. Median of
ROUNDS. Goal: ≤ stall_seconds + 2 s for every row.

Then health's own cost: p50 of GET /api/v1/system/health on an idle app, and /products
throughput with a monitor calling health once a second against none (alternated rounds).

    .venv/bin/python bench/signals_detect.py [--rounds 3] [--only frozen-all,...]

Rows needing what this machine may lack are skipped with the reason: Postgres
(read-only database), Redis (queue down), root and tmpfs (disk full).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import LiveApp, banner, fmt, med, out, pct, tempdir

STALL = 2.0
ROUNDS = 3
PG_ADMIN = os.environ.get("CUSTOMIFY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
DESIGN = {
    "name": "bench",
    "product": "tshirt",
    "color": "#1e3a8a",
    "layers": [{"type": "text", "text": "HELLO", "x": 0.5, "y": 0.3}],
}


def reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def until_named(client: httpx.Client, words: str, code: int | None, limit: float = 60.0) -> float:
    """Seconds until health answers (with `code`) a problem containing `words`."""
    started = time.perf_counter()
    while time.perf_counter() - started < limit:
        response = client.get("/api/v1/system/health")
        body = response.json()
        if (code is None or response.status_code == code) and any(
            words in p["detail"] for p in body.get("problems", [])
        ):
            return time.perf_counter() - started
        time.sleep(0.02)
    raise RuntimeError(f"not named within {limit} s: {words!r}")


@contextlib.contextmanager
def app(tmp: Path, **overrides: Any) -> Iterator[tuple[LiveApp, httpx.Client]]:
    live = LiveApp(tmp / f"data-{time.monotonic_ns()}", **overrides)
    client = httpx.Client(base_url=live.base_url, timeout=30)
    try:
        yield live, client
    finally:
        client.close()
        live.stop()


def publish(client: httpx.Client, name: str = "warm") -> str:
    design = client.post("/api/v1/designs", json=dict(DESIGN, name=name)).json()
    done = client.get(f"/api/v1/designs/{design['id']}", params={"wait": 20}).json()
    assert done["status"] == "published", done
    return str(design["id"])


# Rows: each returns the detection time of one round -------------------------------


def frozen_all(tmp: Path) -> float:
    with app(tmp, workers=1, render={"stall_seconds": STALL, "timeout_seconds": 120.0}) as (live, client):
        publish(client)
        [pid] = live.rt.renderers.pids()
        os.kill(pid, signal.SIGSTOP)
        try:
            client.post("/api/v1/designs", json=dict(DESIGN, name="frozen"))
            return until_named(client, "no progress", 503)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def frozen_one(tmp: Path) -> float:
    with app(tmp, workers=2, render={"stall_seconds": STALL, "timeout_seconds": 120.0}) as (live, client):
        publish(client)
        [pid] = live.rt.renderers.pids()
        os.kill(pid, signal.SIGSTOP)
        try:
            client.post("/api/v1/designs", json=dict(DESIGN, name="frozen"))
            return until_named(client, "no progress", 200)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def wedged_thread(tmp: Path) -> float:
    from customify import tasks

    release = threading.Event()
    real = tasks.render_job

    def held(*args: Any, **kwargs: Any) -> Any:
        release.wait(60)
        return real(*args, **kwargs)

    tasks.render_job = held  # type: ignore[assignment]
    try:
        with app(tmp, workers=1, render={"pool": "thread", "stall_seconds": STALL, "timeout_seconds": 120.0}) as (
            _,
            client,
        ):
            client.post("/api/v1/designs", json=dict(DESIGN, name="wedged"))
            try:
                return until_named(client, "no progress", 503)
            finally:
                release.set()
    finally:
        tasks.render_job = real  # type: ignore[assignment]


def db_read_only(tmp: Path) -> float:
    import psycopg

    from tests.test_postgres import pg_database

    with pg_database() as url, app(tmp, database_url=url) as (_, client):
        publish(client)
        name = url.rsplit("/", 1)[1]

        def switch(on: bool) -> None:
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'alter database "{name}" set default_transaction_read_only = {"on" if on else "off"}')
                conn.execute(
                    "select pg_terminate_backend(pid) from pg_stat_activity "
                    "where datname = %s and pid <> pg_backend_pid()",
                    (name,),
                )

        started = time.perf_counter()
        switch(True)
        try:
            until_named(client, "the database is read-only", 503)
            return time.perf_counter() - started
        finally:
            switch(False)


def disk_full(tmp: Path) -> float:
    mount = tmp / f"small-{time.monotonic_ns()}"
    mount.mkdir()
    if (
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)], capture_output=True).returncode
        != 0
    ):
        raise SkipRow("cannot mount a tmpfs (needs root)")
    try:
        with app(mount, render={"stall_seconds": STALL}) as (_, client):
            publish(client)
            started = time.perf_counter()
            with open(mount / "filler", "wb") as handle, contextlib.suppress(OSError):
                while True:
                    handle.write(b"\0" * (1 << 20))
                    handle.flush()
            until_named(client, "the data dir is full", 503)
            took = time.perf_counter() - started
            (mount / "filler").unlink()
            return took
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def smtp_down(tmp: Path) -> float:
    from bench._common import free_port

    port = free_port()  # nothing listens: every send is refused
    with app(tmp, smtp_url=f"smtp://127.0.0.1:{port}") as (_, client):
        client.post("/api/v1/designs", json=dict(DESIGN, name="mail down"))
        return until_named(client, "not sent yet", 200)


def queue_down(tmp: Path) -> float:
    from tests.test_postgres import Proxy, redis_queue_name

    with redis_queue_name() as name:
        proxy = Proxy(6379)
        try:
            with app(tmp, queue_url=f"redis://127.0.0.1:{proxy.port}/0", queue_name=name) as (_, client):
                publish(client)
                started = time.perf_counter()
                proxy.cut()
                until_named(client, "queue unreachable", 503)
                took = time.perf_counter() - started
                proxy.restore()
                return took
        finally:
            proxy.close()


def missing_task(tmp: Path) -> float:
    from customify.runtime import Runtime

    with app(tmp) as (live, client):
        older = Runtime(live.rt.config)
        older.huey._registry.unregister(older.tasks.send_email.task_class)
        older.observer.identity = "older-version:1"
        started = time.perf_counter()
        older.prepare_database()
        older.start_consumer(workers=1, periodic=False)
        try:
            until_named(client, "cannot run send_email", 503)
            return time.perf_counter() - started
        finally:
            older.close()


def clock_skew(tmp: Path) -> float:
    with app(tmp) as (live, client):
        started = time.perf_counter()
        live.rt.observer.clock = lambda: time.time() + 30
        try:
            until_named(client, "clock is", None)
            return time.perf_counter() - started
        finally:
            live.rt.observer.clock = time.time


class SkipRow(Exception):
    pass


ROWS: dict[str, tuple[Callable[[Path], float], Callable[[], str | None]]] = {
    "frozen-all": (frozen_all, lambda: None),
    "frozen-one": (frozen_one, lambda: None),
    "wedged-thread": (wedged_thread, lambda: None),
    "db-read-only": (db_read_only, lambda: None if reachable(5432) else "no Postgres on 127.0.0.1:5432"),
    "disk-full": (disk_full, lambda: None if os.geteuid() == 0 else "needs root for a tmpfs"),
    "smtp-down": (smtp_down, lambda: None),
    "queue-down": (queue_down, lambda: None if reachable(6379) else "no Redis on 127.0.0.1:6379"),
    "missing-task": (missing_task, lambda: None),
    "clock-skew": (clock_skew, lambda: None),
}


def health_cost(tmp: Path, rounds: int) -> None:
    with app(tmp) as (_, client):
        for _ in range(20):
            client.get("/api/v1/system/health")
        times = []
        for _ in range(300):
            t0 = time.perf_counter()
            client.get("/api/v1/system/health")
            times.append((time.perf_counter() - t0) * 1000)
        out(
            f"health latency, idle app, 300 sequential calls: p50 {pct(times, 0.5):.2f} ms, "
            f"p95 {pct(times, 0.95):.2f} ms"
        )

        def products_rate(seconds: float, monitor: bool) -> float:
            stop = threading.Event()

            def poll() -> None:
                with httpx.Client(base_url=str(client.base_url), timeout=10) as other:
                    while not stop.wait(1.0):
                        other.get("/api/v1/system/health")

            poller = threading.Thread(target=poll, daemon=True)
            if monitor:
                poller.start()
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                client.get("/api/v1/products")
                n += 1
            stop.set()
            return n / (time.perf_counter() - t0)

        with_, without = [], []
        for _ in range(rounds):
            without.append(products_rate(5.0, False))
            with_.append(products_rate(5.0, True))
        out(
            f"/products req/s (one sequential client, 5 s rounds, alternated): without a monitor "
            f"{fmt(without, '/s')}; with health once a second {fmt(with_, '/s')}; "
            f"ratio of medians {med(with_) / med(without):.3f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--only", default="", help="comma-separated rows (default all), or 'cost'")
    args = parser.parse_args()
    only = [x for x in args.only.split(",") if x]
    banner(f"signals_detect: time to name each fault (stall_seconds = {STALL:g}), median of {args.rounds}")
    with tempdir() as tmp:
        for name, (row, missing) in ROWS.items():
            if only and name not in only:
                continue
            reason = missing()
            if reason:
                out(f"{name:<14} skipped: {reason}")
                continue
            times: list[float] = []
            try:
                for _ in range(args.rounds):
                    times.append(row(tmp))
            except SkipRow as exc:
                out(f"{name:<14} skipped: {exc}")
                continue
            out(f"{name:<14} median {med(times):.2f} s (runs: {', '.join(f'{t:.2f}' for t in times)})")
        if not only or "cost" in only:
            health_cost(tmp, args.rounds)


if __name__ == "__main__":
    main()
