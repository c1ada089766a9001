"""Figure 1: `customify run` to healthy (target <= 1.5 s) and idle RSS (target <= 150 MB).

Starts `customify run --no-tui` as a subprocess on a free loopback port, polls
GET /api/v1/system/health every 5 ms until 200, and times Popen -> 200.
Alternates a fresh data dir ("cold": migrations run) with a reused one
("warm"). After the warm start it lets the process settle and reads VmRSS
from /proc/PID/status; then renders a few designs and reads it again.

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
                finally:
                    stops.append(proc.stop())
            out(
                f"run {i}: cold {cold[-1]:.3f}s  warm {warm[-1]:.3f}s  idle RSS {rss_idle[-1]:.1f} MB  "
                f"(machine busy before: {quiet:.2f} cores)"
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
        finally:
            proc.stop()

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
    out(
        f"RSS fresh process idle {before:.1f} MB -> after {args.renders} renders + {args.settle:g}s idle {after:.1f} MB"
    )


if __name__ == "__main__":
    main()
