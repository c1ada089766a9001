"""The cyclic garbage collector's pauses in a serving process, with the start-up heap frozen (as shipped:
`gc.freeze()` once ready, customify/cli.py) and without (the probe unfreezes it again).

`customify run --no-tui` runs as a subprocess with a probe (a `sitecustomize` on its PYTHONPATH) that
records every collection over 5 ms; `wrk` reads one published design while the probe listens. Rounds
alternate the two modes.

    python bench/gc_pauses.py [--rounds 2] [--seconds 4] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RunProcess, banner, med, out, tempdir, typical_spec, upload_asset, wait_quiet

PROBE = """
import gc, json, os, threading, time
_log = open(os.environ["GC_PROBE_LOG"], "a", buffering=1)
_began = {}
def _timed(phase, info):
    if phase == "start":
        _began["t"] = time.perf_counter()
    elif (took := time.perf_counter() - _began.get("t", time.perf_counter())) > 0.005:
        _log.write(json.dumps({"at": time.time(), "gen": info["generation"], "ms": took * 1000}) + "\\n")
gc.callbacks.append(_timed)
if os.environ.get("GC_PROBE_UNFREEZE"):
    def _unfreeze():
        while not gc.get_freeze_count():
            time.sleep(0.05)
        gc.unfreeze()
    threading.Thread(target=_unfreeze, daemon=True).start()
"""


def wrk(url: str, seconds: float) -> tuple[float, float]:
    """Requests/s and p99 (ms) of one `wrk -t1 -c8` run."""
    done = subprocess.run(
        ["wrk", "-t1", "-c8", f"-d{seconds:g}s", "--latency", url], capture_output=True, text=True, check=True
    )
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", done.stdout)[1])  # type: ignore[index]
    value, unit = re.search(r"99%\s+([\d.]+)(us|ms|s)", done.stdout).groups()  # type: ignore[union-attr]
    return rps, float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def round_of(frozen: bool, seconds: float, runs: int) -> tuple[list[float], list[float], list[float]]:
    with tempdir() as root:
        probe_dir = root / "probe"
        probe_dir.mkdir()
        (probe_dir / "sitecustomize.py").write_text(PROBE)
        log = root / "gc.jsonl"
        os.environ.update(PYTHONPATH=str(probe_dir), GC_PROBE_LOG=str(log))
        os.environ.pop("GC_PROBE_UNFREEZE", None)
        if not frozen:
            os.environ["GC_PROBE_UNFREEZE"] = "1"
        app = RunProcess(root / "data")
        try:
            app.wait_healthy()
            with httpx.Client(base_url=app.base_url, timeout=30) as client:
                design = client.post("/api/v1/designs", json=typical_spec(upload_asset(client))).json()
                client.get(f"/api/v1/designs/{design['id']}", params={"wait": 20})
            time.sleep(3)  # the helpers' warm-up is over
            began = time.time()
            results = [wrk(f"{app.base_url}/api/v1/designs/{design['id']}", seconds) for _ in range(runs)]
            pauses = [
                p["ms"] for p in map(json.loads, log.read_text().splitlines()) if p["at"] >= began and p["gen"] == 2
            ]
        finally:
            app.stop()
    return [r for r, _ in results], [p for _, p in results], pauses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=4)
    parser.add_argument("--runs", type=int, default=3, help="wrk runs per round")
    args = parser.parse_args()
    banner("GC pauses while serving GET /api/v1/designs/{id} (wrk -t1 -c8)")
    wait_quiet()
    rows: dict[bool, tuple[list[float], list[float], list[float]]] = {True: ([], [], []), False: ([], [], [])}
    for _ in range(args.rounds):
        for frozen in (True, False):
            for into, values in zip(rows[frozen], round_of(frozen, args.seconds, args.runs), strict=True):
                into.extend(values)
    for frozen, (rps, p99, pauses) in rows.items():
        out(
            f"{'frozen (shipped)' if frozen else 'not frozen':<17} req/s median {med(rps):7.0f}  "
            f"p99 median {med(p99):6.1f} ms (max {max(p99):6.1f})  full collections while serving: {len(pauses)}, "
            f"longest {max(pauses, default=0):6.1f} ms"
        )


if __name__ == "__main__":
    main()
