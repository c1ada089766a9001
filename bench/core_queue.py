"""Figure 3: queue + bookkeeping cost per design, and enqueue -> done at 50% load.

Against `customify run --no-tui` as a subprocess on a loopback port (2 worker
threads by default), driven over HTTP by this process:

1. sequential: one design at a time (POST, then GET ?wait= until published).
   Per design, from the task history (GET /api/v1/system/tasks?design_id=…):
   enqueue -> done = wait_ms + run_ms of the render task; minus the design's
   own render_ms (render + encode + file writes, timed inside the task) =
   queue + bookkeeping (enqueue, dequeue, claim, history rows, publish
   transaction, mail enqueue). Target p50 <= 5 ms. Also client-side:
   POST sent -> published seen (long-poll) minus render_ms.
2. max throughput: a burst of designs POSTed at once; renders/s from the task
   history (first start -> last finish).
3. 50% load: open-loop arrivals at half that rate (Poisson, then evenly
   spaced), enqueue -> done p50/p95 and p95 / render time (render time = the
   median render_ms of phase 1, same run). Target p95 <= 1.3 x render time.

    python bench/core_queue.py [--seq 40] [--burst 100] [--load-seconds 15]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CpuWindow, RunProcess, banner, fmt, med, out, pct, tempdir, typical_spec, upload_asset, wait_quiet

RENDER = "render_design_preview"


def parse_ts(value: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


async def history(client: httpx.AsyncClient, design_id: str) -> dict[str, Any] | None:
    rows = (await client.get("/api/v1/system/tasks", params={"design_id": design_id})).json()
    renders = [r for r in rows if r["task"] == RENDER and r["state"] == "succeeded"]
    return renders[-1] if renders else None


async def wait_published(client: httpx.AsyncClient, design_id: str, seconds: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while True:
        design = (await client.get(f"/api/v1/designs/{design_id}", params={"wait": 10})).json()
        if design["status"] in ("published", "failed") or time.monotonic() > deadline:
            return design  # type: ignore[no-any-return]


async def collect(client: httpx.AsyncClient, ids: list[str]) -> list[dict[str, Any]]:
    """Per design: render_ms, wait_ms, run_ms, e2e_ms (enqueue->done), start/finish timestamps."""
    sem = asyncio.Semaphore(8)

    async def one(design_id: str) -> dict[str, Any] | None:
        async with sem:
            design = await wait_published(client, design_id)
            h = await history(client, design_id)
        if design["status"] != "published" or h is None or h["wait_ms"] is None:
            return None
        return {
            "id": design_id,
            "render_ms": design["render_ms"],
            "wait_ms": h["wait_ms"],
            "run_ms": h["run_ms"],
            "e2e_ms": h["wait_ms"] + h["run_ms"],
            "started": parse_ts(h["started_at"]),
            "finished": parse_ts(h["finished_at"]),
        }

    rows = await asyncio.gather(*(one(d) for d in ids))
    return [r for r in rows if r is not None]


async def post(client: httpx.AsyncClient, asset: str, n: int) -> tuple[str, float]:
    t0 = time.perf_counter()
    response = await client.post("/api/v1/designs", json=typical_spec(asset, n))
    response.raise_for_status()
    return str(response.json()["id"]), t0


async def sequential(client: httpx.AsyncClient, asset: str, count: int) -> tuple[list[dict[str, Any]], list[float]]:
    ids, client_e2e = [], []
    for n in range(count):
        design_id, t0 = await post(client, asset, n)
        design = await wait_published(client, design_id)
        client_e2e.append((time.perf_counter() - t0) * 1000 - (design["render_ms"] or 0))
        ids.append(design_id)
        await asyncio.sleep(0.05)  # let the mail task of this design run before the next one
    return await collect(client, ids), client_e2e


async def burst(client: httpx.AsyncClient, asset: str, count: int) -> float:
    sem = asyncio.Semaphore(8)

    async def one(n: int) -> str:
        async with sem:
            return (await post(client, asset, n))[0]

    ids = await asyncio.gather(*(one(n) for n in range(count)))
    rows = await collect(client, list(ids))
    span = max(r["finished"] for r in rows) - min(r["started"] for r in rows)
    return len(rows) / span


async def open_loop(
    client: httpx.AsyncClient, asset: str, rate: float, seconds: float, poisson: bool, seed: int
) -> tuple[list[dict[str, Any]], float]:
    rnd = random.Random(seed)
    times, t = [], 0.0
    count = max(10, min(400, int(rate * seconds)))
    for _ in range(count):
        times.append(t)
        t += rnd.expovariate(rate) if poisson else 1.0 / rate
    start = time.perf_counter()
    tasks = []
    for n, at in enumerate(times):
        delay = start + at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(post(client, asset, n)))
    ids = [design_id for design_id, _ in await asyncio.gather(*tasks)]
    achieved = count / (time.perf_counter() - start)
    return await collect(client, ids), achieved


async def run(args: argparse.Namespace) -> None:
    with tempdir() as tmp:
        data = tmp / "data"
        data.mkdir()
        extra = ["--workers", str(args.workers)] if args.workers else []
        config = None if args.nice is None else f"[render]\nworker_nice = {args.nice}\n"
        with RunProcess(data, extra=extra, config_text=config) as proc:
            proc.wait_healthy()
            async with httpx.AsyncClient(
                base_url=proc.base_url, timeout=60, limits=httpx.Limits(max_connections=200)
            ) as client:
                asset = upload_asset(httpx.Client(base_url=proc.base_url, timeout=30))
                await sequential(client, asset, 5)  # warm-up

                for rep in range(args.reps):
                    out(
                        f"--- repetition {rep + 1}/{args.reps} (loadavg {Path('/proc/loadavg').read_text().split()[0]})"
                    )
                    quiet = wait_quiet(max_wait=args.quiet_wait)
                    window = CpuWindow(proc.pid)
                    seq, client_over = await sequential(client, asset, args.seq)
                    cpu = window.stop()
                    render = [r["render_ms"] for r in seq]
                    over = [r["e2e_ms"] - r["render_ms"] for r in seq]
                    render_time = med(render)
                    out(
                        f"sequential ({len(seq)} designs, one at a time; machine busy before {quiet:.2f} cores, "
                        f"other tenants during {cpu['foreign_cores']:.2f} cores):"
                    )
                    out(f"  render_ms (inside the task)            {fmt(render)}")
                    out(f"  wait_ms (enqueue -> execute)           {fmt([r['wait_ms'] for r in seq])}")
                    out(
                        f"  run_ms - render_ms (in-task bookkeeping) {fmt([r['run_ms'] - r['render_ms'] for r in seq])}"
                    )
                    out(f"  queue + bookkeeping = enqueue->done - render_ms  {fmt(over)}   target p50 <= 5 ms")
                    out(f"  client: POST sent -> published seen - render_ms   {fmt(client_over)}")

                    wait_quiet(max_wait=args.quiet_wait)
                    window = CpuWindow(proc.pid)
                    rate_max = await burst(client, asset, args.burst)
                    cpu = window.stop()
                    out(
                        f"max throughput: {rate_max:.2f} renders/s (burst of {args.burst}, {args.workers or 2} workers; "
                        f"other tenants {cpu['foreign_cores']:.2f} cores)"
                    )
                    rate = rate_max / 2
                    for poisson in (True, False):
                        wait_quiet(max_wait=args.quiet_wait)
                        window = CpuWindow(proc.pid)
                        rows, achieved = await open_loop(client, asset, rate, args.load_seconds, poisson, seed=rep)
                        e2e = [r["e2e_ms"] for r in rows]
                        loaded_render = med([r["render_ms"] for r in rows])
                        kind = "Poisson" if poisson else "evenly spaced"
                        cpu = window.stop()
                        out(
                            f"50% load, {kind} arrivals at {rate:.2f}/s (achieved {achieved:.2f}/s, {len(rows)} designs; "
                            f"other tenants {cpu['foreign_cores']:.2f} cores):"
                        )
                        out(f"  enqueue -> done  {fmt(e2e)}")
                        out(f"  wait_ms          {fmt([r['wait_ms'] for r in rows])}")
                        out(f"  render_ms        {fmt([r['render_ms'] for r in rows])}")
                        out(
                            f"  p95 / render time (sequential median {render_time:.1f} ms) = "
                            f"{pct(e2e, 95) / render_time:.2f}   target <= 1.3;  p50 ratio {pct(e2e, 50) / render_time:.2f}; "
                            f"p95 / median render_ms under this load ({loaded_render:.1f} ms) = "
                            f"{pct(e2e, 95) / loaded_render:.2f}"
                        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seq", type=int, default=40)
    parser.add_argument("--burst", type=int, default=100)
    parser.add_argument("--load-seconds", type=float, default=15.0)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--nice", type=int, default=None, help="render.worker_nice (default: as shipped)")
    parser.add_argument("--quiet-wait", type=float, default=30.0)
    args = parser.parse_args()
    banner("core_queue: queue + bookkeeping per design, enqueue -> done at 50% load")
    asyncio.run(asyncio.wait_for(run(args), timeout=900))


if __name__ == "__main__":
    main()
