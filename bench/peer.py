"""Customify side by side with the stack it replaces (issue 18, part 1).

The same render function (Customify's renderer on `_common.typical_spec`, drawn, encoded and written
to two files) behind three stacks, started fresh in each round, in interleaved rounds, driven by the
same async client on loopback:

- `run`:    `customify run --no-tui`, SQLite, 2 worker threads (as shipped);
- `split`:  `customify api` + `customify worker` (2 threads) on Postgres + Redis;
- `celery`: FastAPI (uvicorn, httptools + uvloop) + Celery 5 prefork (concurrency 2, acks_late,
            prefetch 1, max_tasks_per_child 1000) + Redis broker + Postgres results
            (`bench/_peer_app.py`): the design row in Postgres, the task claims it, renders, publishes
            it with an outbox row and enqueues the mail task, as Customify does.

Per stack and round:
1. start -> first published design (from spawning the processes; the client POSTs as soon as
   the API answers and waits as its kind of client does); server-side: rendered_at - spawn;
2. idle RSS after warm-up (every process of the stack; Postgres backends of its database as PSS);
3. burst: 200 designs POSTed at once (16 connections); designs/s server-side (first created ->
   last rendered) and client-side, CPU ms per design (the stack's processes + its Postgres
   backends), and the ratio to a bare loop of the same render in as many processes, run right
   after the burst (same round); one client waits for the 200 in turn, as its kind of client does;
   then, once the stack is idle again, the same burst with every design's own client waiting for it
   from its creation (200 held `?wait=` against 200 clients polling every 100 ms);
4. 50% load: open-loop arrivals at half the burst throughput just measured (or --rate), evenly
   spaced and Poisson; e2e as clients see it (Customify: `GET ?wait=` long-poll; celery: GET every
   100 ms, the old API has no long-poll) and server-side (rendered_at - created_at); p50/p95/p99,
   and p95 / the median render_ms of the same designs;
5. API GET throughput and p99 (wrk, 8 connections) idle, then while a backlog saturates the workers.

    .venv/bin/pip install -e '.[bench]'   # celery, fastapi, psycopg-pool, psutil; wrk from Debian
    .venv/bin/python bench/peer.py --rounds 3
    .venv/bin/python bench/peer.py --rounds 1 --burst 10 --paced-seconds 2 --backlog 40 --wrk-seconds 1  # smoke
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg
import redis

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from _common import (  # noqa: E402
    HOST,
    asset_png,
    banner,
    free_port,
    loadavg,
    med,
    out,
    pct,
    tempdir,
    typical_spec,
    wait_quiet,
)

PG = "postgresql://postgres@127.0.0.1:5432"
REDIS_URL = "redis://127.0.0.1:6379/0"
BIN = Path(sys.executable).parent
STACKS = ("run", "split", "celery")


def ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("CUSTOMIFY_", "PEER_")) and k != "DATABASE_URL"}


# Stacks -------------------------------------------------------------------------------------------


class Stack:
    name = ""
    design_path = ""
    products_path = ""
    long_poll = False

    def __init__(self, root: Path, workers: int) -> None:
        self.root = root
        self.workers = workers
        self.port = free_port()
        self.base_url = f"http://{HOST}:{self.port}"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.database: str | None = None
        self.asset_id = ""
        self.spawned_at = 0.0  # time.time() when the first process was spawned
        self.worker_nice: int | None = None  # Customify's render.worker_nice (None: as shipped)

    def spawn(self, args: list[str], log: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        handle = (self.root / log).open("wb")
        self.procs.append(
            subprocess.Popen(
                args, stdout=handle, stderr=subprocess.STDOUT, env=env or clean_env(), cwd=str(cwd or self.root)
            )
        )

    def create_database(self) -> str:
        name = f"perf_peer_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(f"{PG}/test", autocommit=True) as conn:
            conn.execute(f'create database "{name}"')
        self.database = name
        return f"{PG}/{name}"

    def start(self) -> None:
        raise NotImplementedError

    async def ready(self, client: httpx.AsyncClient) -> None:
        """Wait until the API answers (the asset upload too, for Customify)."""
        raise NotImplementedError

    def spec(self, n: int) -> dict[str, Any]:
        return typical_spec(self.asset_id, n)

    async def create(self, client: httpx.AsyncClient, n: int) -> dict[str, Any]:
        response = await client.post(self.design_path, json=self.spec(n))
        response.raise_for_status()
        return response.json()  # type: ignore[no-any-return]

    async def wait(self, client: httpx.AsyncClient, design_id: str, seconds: float = 60) -> dict[str, Any]:
        """As this stack's clients wait: Customify long-polls, the old API is polled every 100 ms."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                if self.long_poll:
                    design = (await client.get(f"{self.design_path}/{design_id}", params={"wait": 10})).json()
                else:
                    await asyncio.sleep(0.1)
                    design = (await client.get(f"{self.design_path}/{design_id}")).json()
            except httpx.TransportError:  # a kept-alive connection the server closed as it was reused: ask again
                if time.monotonic() > deadline:
                    raise
                continue
            if design["status"] in ("published", "failed") or time.monotonic() > deadline:
                return design  # type: ignore[no-any-return]

    def pids(self) -> list[int]:
        """Every process of the stack (children included), not the shared database and broker servers."""
        found: set[int] = set()
        for proc in self.procs:
            try:
                p = psutil.Process(proc.pid)
                found.add(p.pid)
                found.update(c.pid for c in p.children(recursive=True))
            except psutil.NoSuchProcess:
                pass
        return sorted(found)

    def backend_pids(self) -> list[int]:
        if self.database is None:
            return []
        with psycopg.connect(f"{PG}/test", autocommit=True) as conn:
            rows = conn.execute("select pid from pg_stat_activity where datname = %s", (self.database,)).fetchall()
        return [r[0] for r in rows]

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                for child in self._children(proc.pid):
                    child.kill()
                proc.kill()
                proc.wait(5)
        self.cleanup()

    @staticmethod
    def _children(pid: int) -> list[psutil.Process]:
        try:
            return psutil.Process(pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def cleanup(self) -> None:
        if self.database:
            with psycopg.connect(f"{PG}/test", autocommit=True) as conn:
                conn.execute(f'drop database if exists "{self.database}" with (force)')


class CustomifyStack(Stack):
    design_path = "/api/v1/designs"
    products_path = "/api/v1/products"
    long_poll = True

    def config(self, **keys: str) -> Path:
        path = self.root / "customify.toml"
        lines = [f'data_dir = "{self.root / "data"}"', f"workers = {self.workers}"]
        lines += [f'{k} = "{v}"' for k, v in keys.items()]
        if self.worker_nice is not None:
            lines += ["[render]", f"worker_nice = {self.worker_nice}"]
        path.write_text("\n".join(lines) + "\n")
        return path

    async def ready(self, client: httpx.AsyncClient) -> None:
        deadline = time.monotonic() + 60
        png = asset_png()  # once: made on every 5 ms retry it took ~3/4 of a core from the starting server
        while True:
            try:
                response = await client.post("/api/v1/assets", files={"file": ("logo.png", png, "image/png")})
                response.raise_for_status()
                self.asset_id = response.json()["id"]
                return
            except httpx.TransportError:
                if time.monotonic() > deadline or any(p.poll() is not None for p in self.procs):
                    raise RuntimeError(f"{self.name} did not start: {self.log_tail()}") from None
                await asyncio.sleep(0.005)

    def log_tail(self) -> str:
        return " | ".join(p.read_text(errors="replace")[-600:] for p in self.root.glob("*.log"))


class RunStack(CustomifyStack):
    name = "run"

    def start(self) -> None:
        config = self.config()
        self.spawned_at = time.time()
        self.spawn(
            [
                str(BIN / "customify"),
                "run",
                "--no-tui",
                "--host",
                HOST,
                "--port",
                str(self.port),
                "--config",
                str(config),
            ],
            "run.log",
        )


class SplitStack(CustomifyStack):
    name = "split"

    def start(self) -> None:
        url = self.create_database()
        self.queue = f"perf_peer_{uuid.uuid4().hex[:10]}"
        from customify import db  # migrated before the clock starts: Postgres is migrated by `customify db upgrade`

        engine = db.make_sync_engine(url)
        db.upgrade(engine)
        engine.dispose()
        config = self.config(database_url=url, queue_url=REDIS_URL, queue_name=self.queue)
        self.spawned_at = time.time()
        self.spawn(
            [str(BIN / "customify"), "api", "--host", HOST, "--port", str(self.port), "--config", str(config)],
            "api.log",
        )
        self.spawn([str(BIN / "customify"), "worker", "--config", str(config)], "worker.log")

    def cleanup(self) -> None:
        super().cleanup()
        with redis.Redis.from_url(REDIS_URL) as client:
            keys = list(client.scan_iter(match=f"huey.*{self.queue}*", count=1000))
            if keys:
                client.delete(*keys)


class CeleryStack(Stack):
    name = "celery"
    design_path = "/designs"
    products_path = "/products"

    def start(self) -> None:
        url = self.create_database()
        self.queue = f"perf_peer_{uuid.uuid4().hex[:10]}"
        sys.path.insert(0, str(BENCH))
        from _peer_app import SCHEMA

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(SCHEMA)
        asset = self.root / "asset.png"
        asset.write_bytes(asset_png())
        self.asset_id = str(uuid.uuid4())
        env = clean_env() | {
            "PEER_DSN": url,
            "PEER_BROKER": REDIS_URL,
            "PEER_DATA": str(self.root / "data"),
            "PEER_ASSETS": json.dumps({self.asset_id: str(asset)}),
            "PEER_QUEUE": self.queue,
        }
        self.spawned_at = time.time()
        self.spawn(
            [
                str(BIN / "uvicorn"),
                "_peer_app:api",
                "--host",
                HOST,
                "--port",
                str(self.port),
                "--loop",
                "uvloop",
                "--http",
                "httptools",
                "--no-access-log",
                "--log-level",
                "warning",
            ],
            "api.log",
            env,
            cwd=BENCH,
        )
        self.spawn(
            [
                str(BIN / "celery"),
                "-A",
                "_peer_app",
                "worker",
                "--pool",
                "prefork",
                "--concurrency",
                str(self.workers),
                "--prefetch-multiplier",
                "1",
                "--max-tasks-per-child",
                "1000",
                "--loglevel",
                "warning",
                "-Q",
                self.queue,
                "--without-gossip",
                "--without-mingle",
            ],
            "worker.log",
            env,
            cwd=BENCH,
        )

    async def ready(self, client: httpx.AsyncClient) -> None:
        deadline = time.monotonic() + 60
        while True:
            try:
                if (await client.get("/health")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or any(p.poll() is not None for p in self.procs):
                raise RuntimeError(f"celery stack did not start: {(self.root / 'api.log').read_text()[-800:]}")
            await asyncio.sleep(0.005)

    def cleanup(self) -> None:
        super().cleanup()
        with redis.Redis.from_url(REDIS_URL) as client:
            keys = [
                k
                for pattern in (f"*{self.queue}*", "celery-task-meta-*")
                for k in client.scan_iter(match=pattern, count=1000)
            ]
            if keys:
                client.delete(*keys)


def make_stack(name: str, root: Path, workers: int) -> Stack:
    return {"run": RunStack, "split": SplitStack, "celery": CeleryStack}[name](root, workers)


# Measurements -----------------------------------------------------------------------------------


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    found = {}
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            found[pid] = t.user + t.system + t.children_user + t.children_system
        except psutil.NoSuchProcess:
            pass
    return found


def cpu_since(before: dict[int, float], pids: list[int]) -> float:
    """CPU seconds `pids` used since `before` (cpu_seconds); a process new since then counts in full."""
    return sum(t - before.get(pid, 0) for pid, t in cpu_seconds(pids).items())


def memory(stack: Stack) -> tuple[float, float, int]:
    """(MB RSS of the stack's processes, MB PSS of its Postgres backends, process count)."""
    rss = 0
    pids = stack.pids()
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            rss += psutil.Process(pid).memory_info().rss
    pss = 0
    for pid in stack.backend_pids():
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            pss += psutil.Process(pid).memory_full_info().pss
    return rss / 1e6, pss / 1e6, len(pids)


async def first_design(stack: Stack, client: httpx.AsyncClient) -> dict[str, float]:
    await stack.ready(client)
    design = await stack.create(client, 0)
    done = await stack.wait(client, design["id"])
    seen = time.time()
    assert done["status"] == "published", done
    return {"client_s": seen - stack.spawned_at, "server_s": ts(done["rendered_at"]) - stack.spawned_at}


async def burst(stack: Stack, client: httpx.AsyncClient, count: int, each_waits: bool = False) -> dict[str, float]:
    """`count` designs POSTed at once (16 connections). Then one client waits for them in turn
    (`each_waits` False) or every design's client waits for its own from the moment it was created, as
    its kind of client does (Customify: a held `?wait=`; the peer: a GET every 100 ms)."""
    sem = asyncio.Semaphore(16)
    pids = stack.pids() + stack.backend_pids()
    cpu0 = cpu_seconds(pids)

    async def one(i: int) -> str:
        async with sem:
            return str((await stack.create(client, i))["id"])

    async def one_waiting(i: int) -> dict[str, Any]:
        return await stack.wait(client, await one(i), 120)

    t0, client_cpu0 = time.time(), time.process_time()
    if each_waits:
        designs = await asyncio.gather(*(one_waiting(i) for i in range(count)))
    else:
        ids = await asyncio.gather(*(one(i) for i in range(count)))
        designs = [await stack.wait(client, design_id, 120) for design_id in ids]
    t1 = time.time()
    cpu = cpu_since(cpu0, stack.pids() + stack.backend_pids())
    assert all(d["status"] == "published" for d in designs), [d["status"] for d in designs]
    first, last = min(ts(d["created_at"]) for d in designs), max(ts(d["rendered_at"]) for d in designs)
    return {
        "server": count / (last - first),
        "client": count / (t1 - t0),
        "cpu_ms": cpu * 1000 / count,
        "client_cpu_ms": (time.process_time() - client_cpu0) * 1000 / count,  # the load generator's own
        "render_ms": med([d["render_ms"] for d in designs]),
    }


async def settled(stack: Stack, seconds: float = 20) -> None:
    """Until the stack's processes use under 0.05 cores over half a second (at most `seconds`)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pids = stack.pids()
        before = cpu_seconds(pids)
        await asyncio.sleep(0.5)
        if cpu_since(before, pids) < 0.025:
            return


def _bare_one(args: tuple[str, int, str]) -> float:
    from customify.render.pool import RenderJob, run_job

    asset, n, out_dir = args
    spec = typical_spec("a", n)
    t0 = time.perf_counter()
    run_job(RenderJob(spec, {"a": asset}, 1, 300, "webp", f"{out_dir}/{n}.png", f"{out_dir}/{n}.webp"))
    return time.perf_counter() - t0


def bare_loop(pool: Any, asset: str, out_dir: Path, count: int, workers: int) -> float:
    """Renders/s of the same render in `workers` processes, writing the same files."""
    out_dir.mkdir(exist_ok=True)
    pool.map(_bare_one, [(asset, n, str(out_dir)) for n in range(workers * 2)])  # warm
    t0 = time.perf_counter()
    pool.map(_bare_one, [(asset, n, str(out_dir)) for n in range(count)], chunksize=1)
    rate = count / (time.perf_counter() - t0)
    shutil.rmtree(out_dir, ignore_errors=True)
    return rate


async def paced(
    stack: Stack, client: httpx.AsyncClient, rate: float, seconds: float, poisson: bool, seed: int
) -> dict[str, Any]:
    rnd = random.Random(seed)
    count = max(1, int(rate * seconds))
    results: list[tuple[float, float, float]] = []

    async def one(n: int) -> None:
        t0 = time.time()
        design = await stack.create(client, n)
        done = await stack.wait(client, design["id"])
        seen = time.time()
        if done["status"] == "published":
            results.append(
                ((seen - t0) * 1000, (ts(done["rendered_at"]) - ts(done["created_at"])) * 1000, done["render_ms"])
            )

    tasks = []
    start = time.monotonic()
    at = 0.0
    for n in range(count):
        delay = start + at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(n)))
        at += rnd.expovariate(rate) if poisson else 1 / rate
    await asyncio.gather(*tasks)
    client_ms = [r[0] for r in results]
    server_ms = [r[1] for r in results]
    render = med([r[2] for r in results])
    return {
        "n": len(results),
        "render_ms": render,
        **{f"client_p{q}": pct(client_ms, q) for q in (50, 95, 99)},
        **{f"server_p{q}": pct(server_ms, q) for q in (50, 95, 99)},
        "client_p95_x": pct(client_ms, 95) / render,
        "server_p95_x": pct(server_ms, 95) / render,
    }


def wrk(url: str, seconds: float, connections: int = 8) -> tuple[float, float]:
    """(requests/s, p99 ms)."""
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "--timeout", "5s", url]
    # Its own session (and autogroup): the load generator stands for clients elsewhere, not a share of the
    # server's own group.
    text = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30, start_new_session=True).stdout
    rps = p99 = float("nan")
    for line in text.splitlines():
        parts = line.split()
        if line.startswith("Requests/sec:"):
            rps = float(parts[1])
        elif parts[:1] == ["99%"]:
            value = parts[1]
            p99 = (
                float(value[:-2])
                if value.endswith("ms")
                else (float(value[:-2]) / 1000 if value.endswith("us") else float(value[:-1]) * 1000)
            )
    return rps, p99


async def api_busy(
    stack: Stack, client: httpx.AsyncClient, design_id: str, backlog: int, seconds: float
) -> dict[str, float]:
    urls = {
        "design": f"{stack.base_url}{stack.design_path}/{design_id}",
        "products": f"{stack.base_url}{stack.products_path}",
    }
    found: dict[str, float] = {}
    for key, url in urls.items():
        wrk(url, 1)
        found[f"{key}_idle_rps"], found[f"{key}_idle_p99"] = await asyncio.to_thread(wrk, url, seconds)
    sem = asyncio.Semaphore(16)

    async def one(i: int) -> str:
        async with sem:
            return str((await stack.create(client, 10_000 + i))["id"])

    ids = await asyncio.gather(*(one(i) for i in range(backlog)))
    await asyncio.sleep(0.5)
    for key, url in urls.items():
        found[f"{key}_busy_rps"], found[f"{key}_busy_p99"] = await asyncio.to_thread(wrk, url, seconds)
    last = (await client.get(f"{stack.design_path}/{ids[-1]}")).json()
    found["backlog_left"] = float(last["status"] not in ("published", "failed"))
    for key in urls:
        found[f"{key}_ratio"] = found[f"{key}_busy_rps"] / found[f"{key}_idle_rps"]
        found[f"{key}_p99_ratio"] = found[f"{key}_busy_p99"] / found[f"{key}_idle_p99"]
    return found


async def measure(stack: Stack, args: argparse.Namespace, pool: Any, asset: str, rnd_seed: int) -> dict[str, Any]:
    row: dict[str, Any] = {"stack": stack.name, "loadavg_before": loadavg()}
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60, limits=limits) as client:
        row["first"] = await first_design(stack, client)
        for d in await asyncio.gather(*(stack.create(client, i) for i in range(args.workers * 2))):
            await stack.wait(client, d["id"])
        await asyncio.sleep(args.idle_seconds)
        row["rss_mb"], row["backends_pss_mb"], row["processes"] = memory(stack)
        row["burst"] = await burst(stack, client, args.burst)
        # The stack stays up while the bare loop runs: what it still uses then slows the baseline.
        pids = stack.pids() + stack.backend_pids()
        cpu0, t0 = cpu_seconds(pids), time.monotonic()
        row["bare"] = await asyncio.to_thread(bare_loop, pool, asset, stack.root / "bare", args.burst, args.workers)
        row["stack_cores_during_bare"] = cpu_since(cpu0, pids) / (time.monotonic() - t0)
        row["burst"]["ratio_bare"] = row["burst"]["server"] / row["bare"]
        await settled(stack)  # Customify sends the burst's mails after its renders
        row["burst_each"] = await burst(stack, client, args.burst, each_waits=True)
        await settled(stack)
        rate = args.rate or row["burst"]["server"] * 0.5
        row["rate"] = rate
        row["even"] = await paced(stack, client, rate, args.paced_seconds, False, rnd_seed)
        row["poisson"] = await paced(stack, client, rate, args.paced_seconds, True, rnd_seed)
        design = await stack.create(client, 99)
        await stack.wait(client, design["id"])
        row["api"] = await api_busy(stack, client, design["id"], args.backlog, args.wrk_seconds)
    row["loadavg_after"] = loadavg()
    return row


def show(row: dict[str, Any]) -> None:
    b, e, p, a, f = row["burst"], row["even"], row["poisson"], row["api"], row["first"]
    out(
        f"  {row['stack']:7s} first design {f['client_s']:.2f} s (server {f['server_s']:.2f}) | "
        f"idle RSS {row['rss_mb']:.0f} MB in {row['processes']} processes + PG backends {row['backends_pss_mb']:.0f} MB PSS | "
        f"burst {b['server']:.1f}/s server, {b['client']:.1f}/s client, bare {row['bare']:.1f}/s -> {b['ratio_bare']:.2f} "
        f"(the idle stack meanwhile: {row['stack_cores_during_bare']:.2f} cores), "
        f"CPU {b['cpu_ms']:.1f} ms/design, render p50 {b['render_ms']:.1f} ms"
    )
    be = row["burst_each"]
    out(
        f"  {row['stack']:7s} burst, each design's client waiting: {be['server']:.1f}/s server, "
        f"CPU {be['cpu_ms']:.1f} ms/design (the load generator's {be['client_cpu_ms']:.1f} besides), "
        f"render p50 {be['render_ms']:.1f} ms"
    )
    for label, r in (("even", e), ("poisson", p)):
        out(
            f"  {row['stack']:7s} {label:7s} @ {row['rate']:.1f}/s n={r['n']} render p50 {r['render_ms']:.1f} ms | client "
            f"p50/95/99 {r['client_p50']:.1f}/{r['client_p95']:.1f}/{r['client_p99']:.1f} ms (p95 {r['client_p95_x']:.2f}x) | "
            f"server {r['server_p50']:.1f}/{r['server_p95']:.1f}/{r['server_p99']:.1f} ms (p95 {r['server_p95_x']:.2f}x)"
        )
    out(
        f"  {row['stack']:7s} API GET design {a['design_idle_rps']:.0f} -> {a['design_busy_rps']:.0f} req/s "
        f"({a['design_ratio']:.2f}), p99 {a['design_idle_p99']:.1f} -> {a['design_busy_p99']:.1f} ms | products "
        f"{a['products_idle_rps']:.0f} -> {a['products_busy_rps']:.0f} ({a['products_ratio']:.2f}), p99 "
        f"{a['products_idle_p99']:.1f} -> {a['products_busy_p99']:.1f} ms | backlog left {bool(a['backlog_left'])} | "
        f"loadavg {row['loadavg_before']} -> {row['loadavg_after']}"
    )


def summary(rows: list[dict[str, Any]]) -> None:
    def m(stack: str, get: Callable[[dict[str, Any]], float]) -> float:
        return med([get(r) for r in rows if r["stack"] == stack])

    metrics: list[tuple[str, Callable[[dict[str, Any]], float], str]] = [
        ("burst designs/s (server)", lambda r: r["burst"]["server"], "{:.1f}"),
        ("burst / bare loop", lambda r: r["burst"]["ratio_bare"], "{:.2f}"),
        ("burst, each client waiting, designs/s", lambda r: r["burst_each"]["server"], "{:.1f}"),
        ("  its CPU ms per design (the stack)", lambda r: r["burst_each"]["cpu_ms"], "{:.1f}"),
        ("  the load generator's CPU ms per design", lambda r: r["burst_each"]["client_cpu_ms"], "{:.1f}"),
        ("CPU ms per design", lambda r: r["burst"]["cpu_ms"], "{:.1f}"),
        ("paced rate /s", lambda r: r["rate"], "{:.1f}"),
        ("even p50 client ms", lambda r: r["even"]["client_p50"], "{:.1f}"),
        ("even p95 client ms", lambda r: r["even"]["client_p95"], "{:.1f}"),
        ("even p99 client ms", lambda r: r["even"]["client_p99"], "{:.1f}"),
        ("even p95 server ms", lambda r: r["even"]["server_p95"], "{:.1f}"),
        ("even p95 client / render", lambda r: r["even"]["client_p95_x"], "{:.2f}"),
        ("poisson p50 client ms", lambda r: r["poisson"]["client_p50"], "{:.1f}"),
        ("poisson p95 client ms", lambda r: r["poisson"]["client_p95"], "{:.1f}"),
        ("poisson p99 client ms", lambda r: r["poisson"]["client_p99"], "{:.1f}"),
        ("poisson p95 server ms", lambda r: r["poisson"]["server_p95"], "{:.1f}"),
        ("GET design busy/idle", lambda r: r["api"]["design_ratio"], "{:.2f}"),
        ("GET design busy p99 ms", lambda r: r["api"]["design_busy_p99"], "{:.1f}"),
        ("GET products busy/idle", lambda r: r["api"]["products_ratio"], "{:.2f}"),
        ("GET products busy p99 ms", lambda r: r["api"]["products_busy_p99"], "{:.1f}"),
        ("idle RSS MB (processes)", lambda r: r["rss_mb"], "{:.0f}"),
        ("+ PG backends PSS MB", lambda r: r["backends_pss_mb"], "{:.0f}"),
        ("start -> first design s (client)", lambda r: r["first"]["client_s"], "{:.2f}"),
        ("start -> first design s (server)", lambda r: r["first"]["server_s"], "{:.2f}"),
    ]
    present = [s for s in STACKS if any(r["stack"] == s for r in rows)]
    out()
    out("| figure (median of rounds) | " + " | ".join(present) + " | run/celery | split/celery |")
    out("|---|" + "---|" * (len(present) + 2))
    for label, get, f in metrics:
        values = {s: m(s, get) for s in present}
        ratios = [
            f"{values[s] / values['celery']:.2f}" if "celery" in values and s in values else "-"
            for s in ("run", "split")
        ]
        out(f"| {label} | " + " | ".join(f.format(values[s]) for s in present) + " | " + " | ".join(ratios) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stacks", default=",".join(STACKS))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--burst", type=int, default=200)
    parser.add_argument("--rate", type=float, default=None, help="paced arrivals/s (default: half the burst)")
    parser.add_argument("--paced-seconds", type=float, default=10)
    parser.add_argument("--backlog", type=int, default=600)
    parser.add_argument("--wrk-seconds", type=float, default=4)
    parser.add_argument("--idle-seconds", type=float, default=3)
    parser.add_argument(
        "--worker-nice", type=int, default=None, help="Customify's render.worker_nice (default: as shipped)"
    )
    parser.add_argument("--quiet-wait", type=float, default=0, help="wait up to this long for a quiet machine")
    parser.add_argument("--json", default=None, help="write every round's figures here")
    args = parser.parse_args()
    banner("peer: Customify vs FastAPI + Celery 5 + Redis + Postgres, same render, interleaved rounds")
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed (apt-get install wrk)")
    servers: dict[str, float] = {}
    for proc in psutil.process_iter(["name"]):
        name = proc.info["name"] or ""
        if name.startswith(("redis-server", "postgres")):
            with contextlib.suppress(psutil.Error):
                key = "redis-server" if name.startswith("redis") else "postgres"
                servers[key] = servers.get(key, 0.0) + proc.memory_full_info().pss / 1e6
    out(
        "# shared servers, not counted in the stacks' RSS (split and celery both need them): "
        + ", ".join(
            f"{k} {v:.0f} MB PSS (all its processes, other tenants' databases included)" for k, v in servers.items()
        )
    )
    stacks = args.stacks.split(",")
    rows: list[dict[str, Any]] = []
    ctx = multiprocessing.get_context("spawn")
    with tempdir("cfy-peer-") as tmp, ctx.Pool(args.workers) as pool:
        asset = tmp / "asset.png"
        asset.write_bytes(asset_png())
        # The bare loop's processes start (and import) now, not during the first stack's start-up.
        pool.map(_bare_one, [(str(asset), n, str(tmp)) for n in range(args.workers)])
        for rnd in range(args.rounds):
            order = stacks[rnd % len(stacks) :] + stacks[: rnd % len(stacks)]
            for name in order:
                if args.quiet_wait:
                    wait_quiet(max_wait=args.quiet_wait)
                root = tmp / f"{name}-{rnd}"
                root.mkdir()
                stack = make_stack(name, root, args.workers)
                stack.worker_nice = args.worker_nice
                try:
                    stack.start()
                    row = asyncio.run(measure(stack, args, pool, str(asset), rnd))
                finally:
                    stack.stop()
                    shutil.rmtree(root, ignore_errors=True)
                row["round"] = rnd
                rows.append(row)
                out(f"round {rnd}:")
                show(row)
    summary(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
