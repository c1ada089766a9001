"""Figure 1: `customify run` to healthy (target <= 1.5 s) and idle RSS (target <= 150 MB).

Starts `customify run --no-tui` as a subprocess on a free loopback port, polls
GET /api/v1/system/health every 5 ms until 200, and times Popen -> 200.
Alternates a fresh data dir ("cold": migrations run) with a reused one
("warm"). After the warm start it lets the process settle and reads VmRSS
from /proc/PID/status, the server's and its render helpers' (its children,
started with the consumer); then renders a few designs and reads it again.
Last, Popen -> the first design published (asset upload, POST, `GET ?wait=`)
in fresh processes on a fresh data dir, as a first user would see it.

    python bench/core_startup.py [--runs 7] [--settle 5]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RunProcess, banner, med, out, rss_kb, tempdir, typical_spec, upload_asset, wait_quiet


def children_rss_mb(pid: int) -> list[float]:
    """VmRSS of each child process of `pid` (the render helpers), in MB. A child is listed under the
    thread that started it (a worker thread's helper under that thread), so every thread is read."""
    kids: set[str] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids.update((task / "children").read_text().split())
        except OSError:
            continue
    return [kb / 1024 for kb in (rss_kb(int(k)) for k in sorted(kids)) if kb]


def first_design(data: Path) -> float:
    """Seconds from Popen to the first design published, as a client sees it."""
    proc = RunProcess(data)
    try:
        proc.wait_healthy()
        with httpx.Client(base_url=proc.base_url, timeout=30) as client:
            asset = upload_asset(client)
            design = client.post("/api/v1/designs", json=typical_spec(asset, 0)).json()
            done = client.get(f"/api/v1/designs/{design['id']}", params={"wait": 20}).json()
        took = time.perf_counter() - proc.started
        assert done["status"] == "published", done
        return took
    finally:
        proc.stop()


def import_time() -> float:
    """Seconds for a bare `python -c 'import customify.cli, customify.api, customify.runtime'`."""
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", "import customify.cli, customify.api, customify.runtime"], check=True, timeout=60
    )
    return time.perf_counter() - t0


def python_start() -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True, timeout=60)
    return time.perf_counter() - t0


def stages(data: Path, variant: str) -> dict[str, float]:
    """One run of _startup_stages.py: {stage: seconds}."""
    child = Path(__file__).resolve().parent / "_startup_stages.py"
    proc = subprocess.run(
        [sys.executable, str(child), str(data), variant],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=str(data.parent),
    )
    line = [ln for ln in proc.stdout.splitlines() if "total=" in ln]
    if not line:
        raise RuntimeError(f"stage run failed: {proc.stderr[-2000:]}")
    return {k: float(v) for k, v in (item.split("=") for item in line[-1].split())}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7, help="starts of each kind (cold, warm)")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds idle before reading RSS")
    parser.add_argument("--renders", type=int, default=20, help="designs rendered before the second RSS read")
    parser.add_argument("--first-runs", type=int, default=3, help="fresh processes timed to the first design")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=30.0,
        help="wait up to this long for the machine to be quiet before each run",
    )
    args = parser.parse_args()
    banner("core_startup: `customify run` to healthy, idle RSS")

    cold: list[float] = []
    warm: list[float] = []
    stops: list[float] = []
    rss_idle: list[float] = []
    rss_helpers: list[list[float]] = []
    imports = [import_time() for _ in range(3)]
    bare = [python_start() for _ in range(3)]
    with tempdir() as tmp:
        for i in range(args.runs):
            data = tmp / f"data{i}"
            data.mkdir()
            quiet = wait_quiet(max_wait=args.quiet_wait)
            for kind in ("cold", "warm"):
                proc = RunProcess(data)
                try:
                    took = proc.wait_healthy()
                    (cold if kind == "cold" else warm).append(took)
                    if kind == "warm":
                        time.sleep(args.settle)
                        kb = rss_kb(proc.pid)
                        if kb:
                            rss_idle.append(kb / 1024)
                        rss_helpers.append(children_rss_mb(proc.pid))
                finally:
                    stops.append(proc.stop())
            helpers = " + ".join(f"{mb:.1f}" for mb in rss_helpers[-1]) or "none"
            out(
                f"run {i}: cold {cold[-1]:.3f}s  warm {warm[-1]:.3f}s  idle RSS {rss_idle[-1]:.1f} MB, helpers "
                f"{helpers} MB  (machine busy before: {quiet:.2f} cores)"
            )

        # RSS after some renders (Pillow buffers, product bases cached), then idle again.
        data = tmp / "data-renders"
        data.mkdir()
        proc = RunProcess(data)
        try:
            proc.wait_healthy()
            time.sleep(args.settle)
            before = (rss_kb(proc.pid) or 0) / 1024
            with httpx.Client(base_url=proc.base_url, timeout=30) as client:
                asset = upload_asset(client)
                ids = [
                    client.post("/api/v1/designs", json=typical_spec(asset, n)).json()["id"]
                    for n in range(args.renders)
                ]
                for design_id in ids:
                    client.get(f"/api/v1/designs/{design_id}", params={"wait": 20})
            time.sleep(args.settle)
            after = (rss_kb(proc.pid) or 0) / 1024
            helpers_after = children_rss_mb(proc.pid)
        finally:
            proc.stop()
        # Started again on that data dir: its designs are all t-shirts, and the helpers warm only those.
        proc = RunProcess(data)
        try:
            proc.wait_healthy()
            time.sleep(args.settle)
            restarted = (rss_kb(proc.pid) or 0) / 1024
            helpers_restarted = children_rss_mb(proc.pid)
        finally:
            proc.stop()

        firsts = []
        for i in range(args.first_runs):
            wait_quiet(max_wait=args.quiet_wait)
            data = tmp / f"data-first{i}"
            data.mkdir()
            firsts.append(first_design(data))
            out(f"first design {i}: {firsts[-1]:.3f}s from Popen (fresh data dir)")

        # Where the time goes (in-process replay of cli._serve), shipped code vs a lean variant.
        data = tmp / "data-stages"
        data.mkdir()
        stages(data, "normal")  # migrate once
        runs: dict[str, list[dict[str, float]]] = {"normal": [], "lean": []}
        for _ in range(args.runs):
            wait_quiet(max_wait=args.quiet_wait)
            for variant in runs:
                runs[variant].append(stages(data, variant))

    out()
    out(
        "start-up stages, warm data dir, median seconds of each increment (in-process replay of cli._serve;"
        " import_httpx is the bench's own client, not part of `customify run`):"
    )
    names = list(runs["normal"][0])
    out(f"  {'stage':32s} {'shipped':>8s} {'lean':>8s}")
    for name in names:
        out(f"  {name:32s} {med([r[name] for r in runs['normal']]):8.3f} {med([r[name] for r in runs['lean']]):8.3f}")
    out(
        "  lean = sys.modules['psycopg'/'redis']=None before importing huey (all-SQLite config) and "
        "prepare_database skipping alembic when alembic_version is already at head"
    )
    out()
    out(f"python -c pass: median {med(bare):.3f}s; importing customify.cli+api+runtime: median {med(imports):.3f}s")
    out(
        f"to healthy, cold (fresh data dir, migrations): median {med(cold):.3f}s  "
        f"min {min(cold):.3f} max {max(cold):.3f}  (n={len(cold)})"
    )
    out(
        f"to healthy, warm (existing data dir):          median {med(warm):.3f}s  "
        f"min {min(warm):.3f} max {max(warm):.3f}  (n={len(warm)})   target <= 1.5 s"
    )
    out(f"SIGTERM to exit: median {med(stops):.3f}s max {max(stops):.3f}s")
    out(
        f"idle RSS after {args.settle:g}s settle: median {med(rss_idle):.1f} MB  max {max(rss_idle):.1f}   "
        f"target <= 150 MB"
    )
    helper_sums = [sum(h) for h in rss_helpers]
    out(
        f"render helpers (started with the consumer), idle after {args.settle:g}s: median {len(rss_helpers[-1])} x "
        f"{med([mb for h in rss_helpers for mb in h]):.1f} MB = {med(helper_sums):.1f} MB; "
        f"server + helpers {med([a + b for a, b in zip(rss_idle, helper_sums, strict=True)]):.1f} MB"
    )
    out(
        f"RSS fresh process idle {before:.1f} MB -> after {args.renders} renders + {args.settle:g}s idle {after:.1f} MB "
        f"(helpers then: {' + '.join(f'{mb:.1f}' for mb in helpers_after) or 'none'} MB)"
    )
    out(
        f"started again on that data dir (t-shirt designs only), idle after {args.settle:g}s: {restarted:.1f} MB + "
        f"helpers {' + '.join(f'{mb:.1f}' for mb in helpers_restarted) or 'none'} MB"
    )
    out(
        f"Popen -> first design published (fresh data dir, asset upload, POST, ?wait=): median {med(firsts):.3f}s "
        f"min {min(firsts):.3f} max {max(firsts):.3f} (n={len(firsts)})"
    )


if __name__ == "__main__":
    main()
