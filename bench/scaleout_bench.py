"""Scale-out figures (issue 6), on the real Postgres and Redis of this machine:

1. throughput of 1, 2 and 4 `customify worker` processes (1 render thread each) on
   Postgres + Redis for the same 300 designs posted through one `customify api`, as ratios
   to 1 process, alternated over rounds;
2. enqueue -> start latency at idle with each queue backend (SQLite, PostgresHuey, Redis),
   enqueued by this process and executed by a `customify worker` subprocess: the scale-out
   case, where SQLite polls (no in-process doorbell) and Postgres/Redis block on the server.

Every run gets its own Postgres database (dropped after) and Huey queue name (keys deleted).
Usage: python bench/scaleout_bench.py [--designs 300] [--rounds 2] [--samples 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psycopg
import redis
from sqlalchemy import create_engine, func, select

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import banner, busy_cores, free_port, med, out, pct, tempdir, wait_quiet

from customify import db
from customify.config import load_config
from customify.models import Design
from customify.runtime import Runtime

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/0"


@contextmanager
def pg_database() -> Iterator[str]:
    name = f"customify_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    url = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    try:
        engine = db.make_sync_engine(url)
        db.upgrade(engine)
        engine.dispose()
        yield url
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'drop database if exists "{name}" with (force)')


@contextmanager
def queue_name() -> Iterator[str]:
    name = f"customify_bench_{uuid.uuid4().hex[:10]}"
    try:
        yield name
    finally:
        with redis.Redis.from_url(REDIS_URL) as client:
            keys = list(client.scan_iter(match=f"huey.*{name}*", count=1000))
            if keys:
                client.delete(*keys)


def spawn(args: list[str], config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CUSTOMIFY_") and k != "DATABASE_URL"}
    return subprocess.Popen(
        [sys.executable, "-m", "customify", *args, "--config", str(config)],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        cwd=config.parent,
    )


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()


def write_config(root: Path, **keys: str) -> Path:
    config = root / "customify.toml"
    lines = [f'data_dir = "{root / "data"}"'] + [f'{k} = "{v}"' for k, v in keys.items()]
    config.write_text("\n".join(lines) + "\n")
    return config


def wait_workers(api: str, n: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status = httpx.get(f"{api}/api/v1/system/worker-status", timeout=5).json()
            if sum(1 for w in status["workers"].values() if not w["stale"]) >= n:
                return
        except (httpx.HTTPError, KeyError, ValueError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{n} workers never registered at {api}")


async def post_designs(api: str, count: int) -> None:
    async with httpx.AsyncClient(base_url=api, timeout=60, limits=httpx.Limits(max_connections=16)) as client:
        sem = asyncio.Semaphore(16)

        async def one(i: int) -> None:
            async with sem:
                r = await client.post(
                    "/api/v1/designs",
                    json={
                        "name": f"bench {i}",
                        "product": "tshirt",
                        "color": "#1e3a8a",
                        "layers": [
                            {
                                "type": "text",
                                "text": f"Team #{i}",
                                "size": 0.12,
                                "color": "#ffffff",
                                "x": 0.5,
                                "y": 0.2,
                            },
                            {
                                "type": "shape",
                                "shape": "ellipse",
                                "x": 0.5,
                                "y": 0.6,
                                "width": 0.4,
                                "height": 0.2,
                                "fill": "#f59e0b",
                            },
                        ],
                    },
                )
                r.raise_for_status()

        await asyncio.gather(*(one(i) for i in range(count)))


def throughput(workers: int, designs: int, sweep_interval: float) -> tuple[float, int]:
    """(designs published per second, render claims) with `workers` worker processes (1 thread each)."""
    with tempdir() as root, pg_database() as url, queue_name() as name:
        config = write_config(root, database_url=url, queue_url=REDIS_URL, queue_name=name)
        config.write_text(config.read_text() + f"[render]\nsweep_interval = {sweep_interval}\n")
        port = free_port()
        procs = [spawn(["api", "--port", str(port)], config, root / "api.log")]
        procs += [spawn(["worker", "--workers", "1"], config, root / f"w{i}.log") for i in range(workers)]
        engine = create_engine(db.driver_url(url))
        try:
            api = f"http://127.0.0.1:{port}"
            wait_workers(api, workers)
            started = time.perf_counter()
            asyncio.run(post_designs(api, designs))
            while True:
                with engine.connect() as conn:
                    done = conn.scalar(select(func.count()).where(Design.status == "published"))
                if done == designs:
                    break
                time.sleep(0.05)
            rate = designs / (time.perf_counter() - started)
            with engine.connect() as conn:
                claims = int(conn.scalar(select(func.sum(Design.attempts))) or 0)
            return rate, claims
        finally:
            engine.dispose()
            stop(procs)


def idle_latency(kind: str, samples: int, gap: float) -> list[float]:
    """Enqueue here -> execution start in a worker subprocess, after `gap` s of idle each time."""
    with tempdir() as root, pg_database() as url, queue_name() as name:
        queue = {"sqlite": "", "postgres": url, "redis": REDIS_URL}[kind]
        keys = {"database_url": url, "queue_name": name, **({"queue_url": queue} if queue else {})}
        config = write_config(root, **keys)
        rt = Runtime(load_config(config, {}, {}))
        worker = spawn(["worker", "--workers", "2"], config, root / "worker.log")
        try:
            rt.tasks.debug().get(blocking=True, timeout=30)  # the worker is up
            latencies = []
            for _ in range(samples):
                time.sleep(gap)
                sent = time.time()
                result = rt.tasks.debug().get(blocking=True, timeout=10, backoff=1.0, max_delay=0.005)
                latencies.append((result["at"] - sent) * 1000)
            return latencies
        finally:
            stop([worker])
            rt.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--designs", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--gap", type=float, default=1.5, help="idle seconds before each latency sample")
    parser.add_argument(
        "--sweep-interval",
        type=float,
        default=5.0,
        help="render.sweep_interval; drafts queued longer than max(2x, 10 s) are re-driven",
    )
    parser.add_argument("--skip-latency", action="store_true")
    args = parser.parse_args()
    banner("scale-out: worker processes on Postgres + Redis; idle enqueue -> start per queue backend")

    out(
        f"\n## throughput, {args.designs} designs, 1 api + N workers x 1 thread, Postgres + Redis, "
        f"render.sweep_interval = {args.sweep_interval:g}"
    )
    rates: dict[int, list[float]] = {1: [], 2: [], 4: []}
    for r in range(args.rounds):
        order = [1, 2, 4] if r % 2 == 0 else [4, 2, 1]
        for n in order:
            before = wait_quiet(threshold=0.5, max_wait=60)  # not in the middle of someone's test suite
            rate, claims = throughput(n, args.designs, args.sweep_interval)
            rates[n].append(rate)
            out(
                f"round {r + 1}: {n} worker process(es): {rate:.1f} designs/s, {claims} render claims "
                f"for {args.designs} designs (machine busy before: {before:.1f} cores, after: "
                f"{busy_cores():.1f})"
            )
    base = med(rates[1])
    for n, values in rates.items():
        out(f"{n} process(es): median {med(values):.1f} designs/s, ratio to 1: {med(values) / base:.2f}")

    if args.skip_latency:
        return
    out(f"\n## enqueue -> start at idle ({args.gap:g} s idle before each), worker in another process")
    for kind in ("sqlite", "postgres", "redis"):
        values = idle_latency(kind, args.samples, args.gap)
        out(
            f"{kind}: p50 {pct(values, 50):.1f} ms, p95 {pct(values, 95):.1f} ms, "
            f"min {min(values):.1f}, max {max(values):.1f} (n={len(values)})"
        )


if __name__ == "__main__":
    main()
