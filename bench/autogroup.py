"""render.worker_nice on an autogroup kernel (issue 18, part 2's lead): the API's CPU share under a
render backlog, with the helpers' autogroup at worker_nice (as shipped) and at 0 (as before).

Each render helper starts its own session, hence its own autogroup (`/proc/<pid>/autogroup`) when
`/proc/sys/kernel/sched_autogroup_enabled` is 1; the kernel first shares the CPU between groups by
the groups' nice, then between the processes of a group by theirs. The helpers now set their group's
nice to `render.worker_nice` (customify/render/pool.py main()). This script starts `customify run`,
renders a few designs (the helpers start), measures `GET /products` with wrk idle, then POSTs a
backlog and alternates windows in the same server and backlog: helpers' groups at nice 10 (shipped)
and reset to 0 by this script (the behaviour before: process nice 10, group nice 0). Per window:
requests/s and p99 of wrk, and the CPU (cores) of the server process, of the helpers, of wrk.

    .venv/bin/python bench/autogroup.py --rounds 2 --seconds 4 --backlog 600
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import time
from pathlib import Path

import httpx
import psutil

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from _common import RunProcess, banner, loadavg, med, out, tempdir, typical_spec, upload_asset  # noqa: E402
from peer import wrk  # noqa: E402


def cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def set_group_nice(pids: list[int], nice: int) -> list[str]:
    groups = []
    for pid in pids:
        path = Path(f"/proc/{pid}/autogroup")
        path.write_text(str(nice))
        groups.append(path.read_text().strip())
    return groups


def window(url: str, seconds: float, server: int, helpers: list[int]) -> dict[str, float]:
    s0, h0, t0 = cpu([server]), cpu(helpers), time.perf_counter()
    rps, p99 = wrk(url, seconds)
    wall = time.perf_counter() - t0
    return {"rps": rps, "p99": p99, "server": (cpu([server]) - s0) / wall, "helpers": (cpu(helpers) - h0) / wall}


async def post(base: str, count: int, asset: str, first: int = 0) -> list[str]:
    sem = asyncio.Semaphore(16)
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:

        async def one(i: int) -> str:
            async with sem:
                r = await client.post("/api/v1/designs", json=typical_spec(asset, i))
                r.raise_for_status()
                return str(r.json()["id"])

        return await asyncio.gather(*(one(first + i) for i in range(count)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=4)
    parser.add_argument("--backlog", type=int, default=600)
    args = parser.parse_args()
    banner("autogroup: the API's share of the CPU under a render backlog, helpers' group nice 10 vs 0")
    enabled = Path("/proc/sys/kernel/sched_autogroup_enabled")
    out(f"# sched_autogroup_enabled = {enabled.read_text().strip() if enabled.exists() else 'absent'}")
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed (apt-get install wrk)")
    with tempdir("cfy-autogroup-") as tmp, RunProcess(tmp / "data") as proc:
        proc.wait_healthy(60)
        with httpx.Client(base_url=proc.base_url, timeout=60) as client:
            asset = upload_asset(client)
        for design_id in asyncio.run(post(proc.base_url, 4, asset)):
            httpx.get(f"{proc.base_url}/api/v1/designs/{design_id}", params={"wait": 30}, timeout=60)
        helpers = [c.pid for c in psutil.Process(proc.pid).children()]
        out(
            f"# server {Path(f'/proc/{proc.pid}/autogroup').read_text().strip()}; helpers "
            + "; ".join(Path(f"/proc/{p}/autogroup").read_text().strip() for p in helpers)
        )
        url = f"{proc.base_url}/api/v1/products"
        wrk(url, 1)
        idle = window(url, args.seconds, proc.pid, helpers)
        out(
            f"idle: {idle['rps']:.0f} req/s p99 {idle['p99']:.1f} ms, server {idle['server']:.2f} cores; "
            f"loadavg {loadavg()}"
        )
        ids = asyncio.run(post(proc.base_url, args.backlog, asset, 100))
        rows: dict[int, list[dict[str, float]]] = {10: [], 0: []}
        for rnd in range(args.rounds):
            for nice in (10, 0) if rnd % 2 == 0 else (0, 10):
                groups = set_group_nice(helpers, nice)
                w = window(url, args.seconds, proc.pid, helpers)
                rows[nice].append(w)
                out(
                    f"round {rnd} helpers' groups at nice {nice:2d} ({groups[0]}): {w['rps']:.0f} req/s "
                    f"({w['rps'] / idle['rps']:.2f} of idle), p99 {w['p99']:.1f} ms ({w['p99'] / idle['p99']:.1f}x), "
                    f"server {w['server']:.2f} cores, helpers {w['helpers']:.2f} cores "
                    f"(server share {w['server'] / (w['server'] + w['helpers']):.2f}); loadavg {loadavg()}"
                )
        set_group_nice(helpers, 10)
        last = httpx.get(f"{proc.base_url}/api/v1/designs/{ids[-1]}", timeout=30).json()["status"]
        out(f"backlog still pending at the end: {last not in ('published', 'failed')}")
        for nice, found in rows.items():
            out(
                f"median, groups at nice {nice:2d}: {med([w['rps'] for w in found]) / idle['rps']:.2f} of idle "
                f"req/s, p99 {med([w['p99'] for w in found]) / idle['p99']:.1f}x idle, server "
                f"{med([w['server'] for w in found]):.2f} cores, helpers {med([w['helpers'] for w in found]):.2f} cores"
            )


if __name__ == "__main__":
    main()
