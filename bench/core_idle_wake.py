"""Figure 2: first render start after 60 s idle (target <= 10 ms).

Each mode runs in its own child process (the real app in-process on a loopback
port, as tests/conftest.py does): one warm-up design, then `--idle` seconds
with nothing to do, then POST /api/v1/designs. The render task's wait (enqueue
-> execute) is read from Huey's signals in-process and from
GET /api/v1/system/tasks?design_id=… (the task history's wait_ms). Modes:

- doorbell:      the shipped consumer (in-process enqueue rings the doorbell)
- poll-1s:       doorbell disabled (EmbeddedWorker.sleep = huey's Worker.sleep),
                 the shipped polling backoff 0.05 s x1.5 capped at 1 s
- huey-default:  doorbell disabled and Huey's default cap max_delay = 10 s

Children of one round run in parallel (idle processes do not compete),
staggered by a few seconds so their POSTs do not coincide.

    python bench/core_idle_wake.py [--idle 60] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import LiveApp, banner, med, out, tempdir, typical_spec, upload_asset

MODES = ("doorbell", "poll-1s", "huey-default")


def child(mode: str, idle: float, data_dir: Path) -> dict[str, Any]:
    import httpx
    from huey import signals as S
    from huey.consumer import Worker

    import customify.queue as q

    if mode != "doorbell":
        q.EmbeddedWorker.sleep = Worker.sleep  # type: ignore[method-assign]
    if mode == "huey-default":
        q.POLL_INITIAL, q.POLL_MAX = 0.1, 10.0
    app = LiveApp(data_dir)
    stamps: dict[tuple[str, str], float] = {}
    lock = threading.Lock()

    def on_signal(signal: str, task: Any, *args: Any) -> None:
        if type(task).__name__ == "render_design_preview":
            with lock:
                stamps.setdefault((signal, task.args[0]), time.perf_counter())

    app.rt.huey.signal(S.SIGNAL_ENQUEUED, S.SIGNAL_EXECUTING, S.SIGNAL_COMPLETE)(on_signal)
    result: dict[str, Any] = {"mode": mode, "idle_s": idle}
    try:
        with httpx.Client(base_url=app.base_url, timeout=60) as client:
            asset = upload_asset(client)
            warm = client.post("/api/v1/designs", json=typical_spec(asset, 0)).json()["id"]
            client.get(f"/api/v1/designs/{warm}", params={"wait": 20})
            time.sleep(1.0)  # let the mail task finish too: from here on, nothing to do
            for label, pause in (("after_idle", idle), ("hot", 0.0)):
                time.sleep(pause)
                t_post = time.perf_counter()
                response = client.post("/api/v1/designs", json=typical_spec(asset, 1))
                t_resp = time.perf_counter()
                design = response.json()["id"]
                done = client.get(f"/api/v1/designs/{design}", params={"wait": 30}).json()
                t_done = time.perf_counter()
                history = client.get("/api/v1/system/tasks", params={"design_id": design}).json()
                with lock:
                    enq = stamps.get((S.SIGNAL_ENQUEUED, design))
                    exe = stamps.get((S.SIGNAL_EXECUTING, design))
                result[label] = {
                    "wait_ms_signals": None if not (enq and exe) else round((exe - enq) * 1000, 3),
                    "wait_ms_history": history[0]["wait_ms"] if history else None,
                    "post_to_start_ms": None if not exe else round((exe - t_post) * 1000, 3),
                    "post_ms": round((t_resp - t_post) * 1000, 3),
                    "post_to_published_seen_ms": round((t_done - t_post) * 1000, 3),
                    "render_ms": done.get("render_ms"),
                    "status": done.get("status"),
                }
    finally:
        app.stop()
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--idle", type=float, default=60.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--data", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(args.child, args.idle, Path(args.data))), flush=True)
        return

    banner("core_idle_wake: first render start after an idle period")
    modes = args.modes.split(",")
    results: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    with tempdir() as tmp:
        for r in range(args.rounds):
            procs = []
            for i, mode in enumerate(modes):
                data = tmp / f"{mode}-{r}"
                procs.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            __file__,
                            "--child",
                            mode,
                            "--idle",
                            str(args.idle + 4 * i),
                            "--data",
                            str(data),
                        ],
                        stdout=subprocess.PIPE,
                        stderr=subprocess.DEVNULL,
                        text=True,
                    )
                )
            for mode, proc in zip(modes, procs, strict=True):
                stdout, _ = proc.communicate(timeout=args.idle + 180)
                lines = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")]
                if not lines:
                    out(f"round {r} {mode}: child failed (exit {proc.returncode})")
                    continue
                res = json.loads(lines[-1][7:])
                results[mode].append(res)
                a, h = res["after_idle"], res["hot"]
                out(
                    f"round {r} {mode:13s} idle {res['idle_s']:.0f}s: wait {a['wait_ms_signals']} ms "
                    f"(history {a['wait_ms_history']}), POST->start {a['post_to_start_ms']} ms, "
                    f"POST->published seen {a['post_to_published_seen_ms']} ms, render {a['render_ms']} ms | "
                    f"hot: wait {h['wait_ms_signals']} ms, render {h['render_ms']} ms"
                )
    out()
    out("summary (median over rounds): render task wait = Huey SIGNAL_ENQUEUED -> SIGNAL_EXECUTING, target <= 10 ms")
    for mode in modes:
        rs = results[mode]
        if not rs:
            continue
        waits = [r["after_idle"]["wait_ms_signals"] for r in rs]
        hist = [r["after_idle"]["wait_ms_history"] for r in rs]
        p2s = [r["after_idle"]["post_to_start_ms"] for r in rs]
        hot = [r["hot"]["wait_ms_signals"] for r in rs]
        out(
            f"  {mode:13s} after idle: wait {med(waits):9.2f} ms (max {max(waits):.2f}; history wait_ms "
            f"{med(hist):.2f}), POST->start {med(p2s):.2f} ms | hot: wait {med(hot):.2f} ms"
        )


if __name__ == "__main__":
    main()
