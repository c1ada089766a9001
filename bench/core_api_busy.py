"""Figure 5: the API while renders saturate the CPU: GET throughput >= 0.9 x idle and
p99 <= 2 x idle.

`customify run --no-tui` runs as a subprocess; load comes from `wrk` (Debian
package; a second process on loopback) with a fixed duration, against
GET /api/v1/designs/{id} (a database read) and GET /api/v1/products (no I/O).
Idle and busy windows alternate. For a busy window this script first POSTs a
batch of designs (sized from the measured render rate so the queue outlasts the
window), waits until the POSTs are answered, then runs wrk; afterwards it checks
through worker-status that renders were still queued or running when wrk
ended (else the window is flagged "drained"). Run twice: with the shipped
render.worker_nice (10) and with worker_nice = 0, to show what it buys.

    python bench/core_api_busy.py [--seconds 5] [--rounds 3] [--connections 8]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CpuWindow, RunProcess, banner, med, out, tempdir, typical_spec, upload_asset, wait_quiet

UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def wrk(url: str, seconds: float, connections: int) -> dict[str, float]:
    """One wrk run: requests/s and latency percentiles (ms)."""
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "--timeout", "5s", url]
    text = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30, check=True).stdout
    result: dict[str, float] = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    result["rps"] = float(m.group(1)) if m else float("nan")
    for q in ("50", "75", "90", "99"):
        m = re.search(rf"^\s+{q}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        result[f"p{q}"] = float(m.group(1)) * UNITS[m.group(2)] if m else float("nan")
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    result["errors"] = float(m.group(1)) if m else 0.0
    return result


async def post_batch(base_url: str, asset: str, count: int) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        sem = asyncio.Semaphore(8)

        async def one(n: int) -> None:
            async with sem:
                (await client.post("/api/v1/designs", json=typical_spec(asset, n))).raise_for_status()

        await asyncio.gather(*(one(n) for n in range(count)))


def queue_busy(client: httpx.Client) -> tuple[int, int]:
    status = client.get("/api/v1/system/worker-status").json()
    return int(status["queue"]["pending"]), len(status["active_tasks"])


def drain(client: httpx.Client, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pending, active = queue_busy(client)
        if pending == 0 and active == 0:
            return
        time.sleep(0.2)


def render_rate(client: httpx.Client, base_url: str, asset: str, count: int = 30) -> float:
    t0 = time.perf_counter()
    asyncio.run(post_batch(base_url, asset, count))
    drain(client)
    return count / (time.perf_counter() - t0)


def scenario(nice: int, args: argparse.Namespace) -> dict[str, dict[str, list[dict[str, float]]]]:
    results: dict[str, dict[str, list[dict[str, float]]]] = {}
    with tempdir() as tmp:
        data = tmp / "data"
        data.mkdir()
        config = f"[render]\nworker_nice = {nice}\n"
        with contextlib.ExitStack() as stack:
            if args.split:  # `customify api` + `customify worker` on one data dir: no GIL shared with renders
                proc = stack.enter_context(RunProcess(data, config_text=config, command=("api",)))
                stack.enter_context(RunProcess(data, config_text=config, command=("worker",)))
                proc.wait_healthy()  # healthy once the worker has registered
            else:
                proc = stack.enter_context(RunProcess(data, config_text=config))
                proc.wait_healthy()
            with httpx.Client(base_url=proc.base_url, timeout=60) as client:
                asset = upload_asset(client)
                design = client.post("/api/v1/designs", json=typical_spec(asset, 0)).json()["id"]
                client.get(f"/api/v1/designs/{design}", params={"wait": 20})
                rate = render_rate(client, proc.base_url, asset)
                batch = int(rate * (args.seconds + 4)) + 10
                out(f"worker_nice={nice}: measured {rate:.1f} renders/s -> {batch} designs per busy window")
                urls = {
                    "design": f"{proc.base_url}/api/v1/designs/{design}",
                    "products": f"{proc.base_url}/api/v1/products",
                }
                for name in urls:
                    results[name] = {"idle": [], "busy": []}
                wrk(urls["design"], 1, args.connections)  # warm-up
                for r in range(args.rounds):
                    for name, url in urls.items():
                        for phase in ("idle", "busy") if r % 2 == 0 else ("busy", "idle"):
                            wait_quiet(max_wait=args.quiet_wait)
                            if phase == "busy":
                                asyncio.run(post_batch(proc.base_url, asset, batch))
                            window = CpuWindow(proc.pid)
                            res = wrk(url, args.seconds, args.connections)
                            res.update(window.stop())
                            if phase == "busy":
                                pending, active = queue_busy(client)
                                res["drained"] = float(pending == 0 and active == 0)
                                drain(client)
                            results[name][phase].append(res)
                            flag = " DRAINED (window not fully busy)" if res.get("drained") else ""
                            out(
                                f"  round {r} {name:8s} {phase}: {res['rps']:8.0f} req/s  p50 {res['p50']:6.2f} ms  "
                                f"p99 {res['p99']:6.2f} ms  non-2xx {res['errors']:.0f}  CPU cores: server "
                                f"{res['server_cores']:.2f} wrk {res['loadgen_cores']:.2f} other tenants "
                                f"{res['foreign_cores']:.2f}{flag}"
                            )
    return results


def summarize(nice: int, results: dict[str, dict[str, list[dict[str, float]]]]) -> None:
    for name, phases in results.items():
        idle, busy = phases["idle"], phases["busy"]
        rps = med([b["rps"] / i["rps"] for i, b in zip(idle, busy, strict=True)])
        p99 = med([b["p99"] / i["p99"] for i, b in zip(idle, busy, strict=True)])
        out(
            f"worker_nice={nice} GET {name:8s}: idle {med([i['rps'] for i in idle]):7.0f} req/s p99 "
            f"{med([i['p99'] for i in idle]):6.2f} ms | busy {med([b['rps'] for b in busy]):7.0f} req/s p99 "
            f"{med([b['p99'] for b in busy]):6.2f} ms | throughput ratio {rps:.2f} (target >= 0.9), "
            f"p99 ratio {p99:.2f} (target <= 2); other tenants' CPU median "
            f"{med([x['foreign_cores'] for x in idle + busy]):.2f} cores"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--nice", default="10,0", help="worker_nice values to run")
    parser.add_argument("--quiet-wait", type=float, default=30.0)
    parser.add_argument(
        "--split",
        action="store_true",
        help="`customify api` and `customify worker` as two processes instead of `customify run`",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install wrk")
    banner("core_api_busy: API GET throughput and p99, idle vs renders saturating the CPU")
    out(
        f"# wrk -t1 -c{args.connections} -d{args.seconds:g}s --latency; "
        f"{'customify api + customify worker (two processes)' if args.split else 'customify run (one process)'}"
    )
    all_results: dict[int, Any] = {}
    for nice in [int(x) for x in args.nice.split(",")]:
        all_results[nice] = scenario(nice, args)
    out()
    for nice, results in all_results.items():
        summarize(nice, results)


if __name__ == "__main__":
    main()
