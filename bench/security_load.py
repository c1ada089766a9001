"""Issue 12's figures: the server under hostile load, helper memory, fair sharing.

1. connections: health p99 and /products throughput (wrk, 1 thread, 8 connections) while
   2,000 slow connections (silent, or trickling a request head that never ends; reopened when
   the server closes them) and 200 SSE subscribers are held, as a ratio to the same wrk run idle.
2. memory: render helper RSS after N distinct 25-megapixel uploads, each placed in a poster
   and rendered, against render.helper_max_memory_mb.
3. fairness: create → published for customer B's one-layer mug, idle and while customer A
   has 20 heavy designs queued (rotated 500-character text layers, under the cost limit).

`customify run --no-tui` runs as a subprocess on loopback, in a fresh data dir per part.

    .venv/bin/python bench/security_load.py [--part all|connections|memory|fairness]
        [--slow 2000] [--sse 200] [--seconds 5] [--uploads 20] [--heavy 20] [--cap N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RunProcess, banner, med, out, rss_kb, tempdir
from core_api_busy import wrk

HEAVY_TEXT = {
    "type": "text",
    "text": ("lorem ipsum dolor sit amet " * 19)[:500],
    "size": 0.05,
    "width": 1.0,
    "rotation": 33,
}


# 1. Slow connections and event-stream subscribers ---------------------------------------------


class Hostile:
    """Holds `slow` slowloris connections (reopened when closed) and `sse` event-stream subscribers."""

    def __init__(self, port: int, slow: int, sse: int) -> None:
        self.port, self.slow, self.sse = port, slow, sse
        self.reopened = 0
        self.streams_open = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> Hostile:
        self._thread.start()
        time.sleep(3)  # let them connect
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(30)

    async def _slow_one(self, n: int) -> None:
        while not self._stop.is_set():
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(0.5)
                continue
            try:
                if n % 2:
                    writer.write(b"GET /api/v1/products HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                while not self._stop.is_set():
                    if n % 2:
                        writer.write(b"X-a: b\r\n")  # a trickle: a header line every 2 s
                        await writer.drain()
                    with contextlib.suppress(TimeoutError):
                        if not await asyncio.wait_for(reader.read(1024), 2.0):
                            break  # closed by the server: come back, as an attacker would
            except OSError:
                pass
            finally:
                writer.close()
            self.reopened += 1

    async def _subscriber(self, client: httpx.AsyncClient) -> None:
        while not self._stop.is_set():
            try:
                async with client.stream("GET", "/api/v1/events", headers={"Accept": "text/event-stream"}) as r:
                    self.streams_open += 1
                    try:
                        async for _ in r.aiter_bytes():
                            if self._stop.is_set():
                                return
                    finally:
                        self.streams_open -= 1
            except httpx.HTTPError:
                await asyncio.sleep(0.5)

    async def _run(self) -> None:
        limits = httpx.Limits(max_connections=self.sse + 10)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{self.port}", limits=limits, timeout=httpx.Timeout(10, read=None)
        ) as client:
            tasks = [asyncio.create_task(self._slow_one(n)) for n in range(self.slow)]
            tasks += [asyncio.create_task(self._subscriber(client)) for _ in range(self.sse)]
            while not self._stop.is_set():
                await asyncio.sleep(0.2)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def part_connections(args: argparse.Namespace) -> None:
    banner(f"connections: wrk idle vs {args.slow} slow connections + {args.sse} SSE subscribers")
    with tempdir() as tmp, RunProcess(tmp / "data") as app:
        app.wait_healthy()
        base = app.base_url
        rows = []
        for rnd in range(args.rounds):
            idle_h = wrk(f"{base}/api/v1/system/health", args.seconds, 8)
            idle_p = wrk(f"{base}/api/v1/products", args.seconds, 8)
            with Hostile(app.port, args.slow, args.sse) as hostile:
                open_fds = len(os.listdir(f"/proc/{app.pid}/fd"))
                busy_h = wrk(f"{base}/api/v1/system/health", args.seconds, 8)
                busy_p = wrk(f"{base}/api/v1/products", args.seconds, 8)
                streams = hostile.streams_open
            rows.append((idle_h, idle_p, busy_h, busy_p))
            out(
                f"round {rnd + 1}: health p99 idle {idle_h['p99']:.2f} ms, held {busy_h['p99']:.2f} ms "
                f"(ratio {busy_h['p99'] / idle_h['p99']:.2f}); /products idle {idle_p['rps']:.0f}/s, held "
                f"{busy_p['rps']:.0f}/s (ratio {busy_p['rps'] / idle_p['rps']:.2f}); errors "
                f"{busy_h['errors'] + busy_p['errors']:.0f}; server fds {open_fds}, SSE open {streams}, "
                f"slow connections closed by the server and reopened {hostile.reopened}"
            )
        out(
            f"median: health p99 ratio {med([b['p99'] / a['p99'] for a, _, b, _ in rows]):.2f}, "
            f"/products throughput ratio {med([d['rps'] / c['rps'] for _, c, _, d in rows]):.2f}"
        )


# 2. Helper memory ----------------------------------------------------------------------------


def big_png(n: int, side: int = 5000) -> bytes:
    img = Image.new("RGB", (side, side), ((n * 37) % 256, (n * 91) % 256, (n * 13) % 256))
    buf = io.BytesIO()
    img.save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def helpers(client: httpx.Client, pid: int) -> tuple[list[int], dict[str, Any]]:
    status = client.get("/api/v1/system/worker-status").json()
    [me] = [w for w in status["workers"].values() if w["pid"] == pid]
    return me["pool"]["processes"], me["pool"]


def part_memory(args: argparse.Namespace) -> None:
    banner(f"memory: helper RSS after {args.uploads} distinct 25-megapixel uploads rendered")
    with tempdir() as tmp, RunProcess(tmp / "data") as app:
        app.wait_healthy()
        peak = 0
        with httpx.Client(base_url=app.base_url, timeout=120) as client:
            for n in range(args.uploads):
                asset = client.post("/api/v1/assets", files={"file": (f"{n}.png", big_png(n), "image/png")})
                asset.raise_for_status()
                spec = {
                    "name": f"poster {n}",
                    "product": "poster",
                    "color": "#ffffff",
                    "layers": [{"type": "image", "asset_id": asset.json()["id"], "width": 0.8}],
                }
                design = client.post("/api/v1/designs", json=spec).json()
                done = client.get(f"/api/v1/designs/{design['id']}", params={"wait": 30}).json()
                assert done["status"] == "published", done
                pids, pool = helpers(client, app.pid)
                rss = [rss_kb(p) or 0 for p in pids]
                peak = max([peak, *rss])
                if n % 5 == 4 or n == args.uploads - 1:
                    out(
                        f"after {n + 1}: helpers {[f'{r / 1024:.0f} MB' for r in rss]}, recycled "
                        f"{pool.get('recycled')}, ceiling {pool.get('max_memory_mb')} MB"
                    )
        out(f"peak helper RSS seen between renders: {peak / 1024:.0f} MB")


# 3. Fair sharing -----------------------------------------------------------------------------


def customer_key(data_dir: Path, email: str) -> str:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "customify"), "users", "create", email, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        check=True,
    )
    return next(line for line in done.stdout.splitlines() if line.startswith("api key: "))[9:]


def time_to_publish(client: httpx.Client, headers: dict[str, str]) -> float:
    spec = {
        "name": "mug",
        "product": "mug",
        "color": "#ffffff",
        "layers": [{"type": "text", "text": "Best dad", "size": 0.15}],
    }
    started = time.perf_counter()
    design = client.post("/api/v1/designs", json=spec, headers=headers).json()
    done = client.get(f"/api/v1/designs/{design['id']}", params={"wait": 30}, headers=headers).json()
    while done["status"] not in ("published", "failed"):
        done = client.get(f"/api/v1/designs/{design['id']}", params={"wait": 30}, headers=headers).json()
    return time.perf_counter() - started


def part_fairness(args: argparse.Namespace) -> None:
    banner(f"fairness: customer B's small design while customer A has {args.heavy} heavy designs queued")
    with tempdir() as tmp:
        (tmp / "data").mkdir()
        alice, bob = customer_key(tmp / "data", "a@example.com"), customer_key(tmp / "data", "b@example.com")
        config = f"[limits]\nmax_renders_in_flight_per_user = {args.cap}\n" if args.cap else None
        with (
            RunProcess(tmp / "data", config_text=config) as app,
            httpx.Client(base_url=app.base_url, timeout=120) as client,
        ):
            app.wait_healthy()
            as_a, as_b = {"Authorization": f"Bearer {alice}"}, {"Authorization": f"Bearer {bob}"}
            idle = [time_to_publish(client, as_b) for _ in range(args.rounds + 1)][1:]  # first: helper start
            busy = []
            for _ in range(args.rounds):
                heavy = {"name": "heavy", "product": "poster", "color": "#ffffff", "layers": [HEAVY_TEXT] * 5}
                ids = []
                for _ in range(args.heavy):
                    response = client.post("/api/v1/designs", json=heavy, headers=as_a)
                    response.raise_for_status()
                    ids.append(response.json()["id"])
                time.sleep(0.5)
                busy.append(time_to_publish(client, as_b))
                started = time.perf_counter()
                for design_id in ids:
                    client.get(f"/api/v1/designs/{design_id}", params={"wait": 30}, headers=as_a)
                out(
                    f"  B published in {busy[-1]:.2f} s; A's {args.heavy} heavy designs drained "
                    f"{time.perf_counter() - started:.1f} s later"
                )
            out(
                f"B idle: median {med(idle):.2f} s; with A's backlog: median {med(busy):.2f} s "
                f"(ratio {med(busy) / med(idle):.2f})"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", default="all", choices=["all", "connections", "memory", "fairness"])
    parser.add_argument("--slow", type=int, default=2000)
    parser.add_argument("--sse", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--uploads", type=int, default=20)
    parser.add_argument("--heavy", type=int, default=20)
    parser.add_argument(
        "--cap",
        type=int,
        default=0,
        help="limits.max_renders_in_flight_per_user for the fairness part (0: the default; "
        "a large number shows the run without fair sharing)",
    )
    args = parser.parse_args()
    if args.part in ("all", "connections"):
        part_connections(args)
    if args.part in ("all", "memory"):
        part_memory(args)
    if args.part in ("all", "fairness"):
        part_fairness(args)


if __name__ == "__main__":
    main()
