"""Where the time around a render goes under real clients (issue 18, part 2): p95 against load.

`customify run --no-tui` (SQLite, 2 worker threads, helpers at worker_nice 10: as shipped) in its own
session, started with CUSTOMIFY_STAGE_LOG (customify.tasks: one JSON line per published render with
the worker thread's and its helper's timestamps; nothing is timed without it). Per round:

1. burst: `--burst` designs POSTed at once (16 connections), then each long-polled; capacity = designs/s
   server-side (first created -> last rendered), and the bound the burst's own render times give
   (threads x 1 / mean helper render), so burst / bound says what the work around the render costs;
2. for each level (30/50/70/90% of that capacity): evenly spaced arrivals for `--seconds`, each a
   client that POSTs then long-polls its design (`GET ?wait=30`), as real clients do.

Per design the critical path is cut into stages, from timestamps on one clock (time.time()):

    api      POST sent (client)        -> enqueued (Huey's signal, API thread)
    queue    enqueued                  -> executing (a worker thread dequeued it)
    claim    executing                 -> claimed (history hook, claim transaction)
    hand-in  claimed                   -> the helper read the job (event, job built, msgpack, pipe, wake-up)
    render   the helper read the job   -> it answered (draw, encode, write the two files)
    hand-out the helper answered       -> the thread has the reply (pipe, poll wake-up, decode)
    store    -> files moved into place (put_files)
    publish  -> publish transaction committed (three statements and the outbox row)
    announce -> the "published" event is out (old renders removed, metrics, hub)
    wake     -> the client has the answer (loop wake-up, re-read, response, client)

and, off the critical path, `mail` (the send_email enqueue after the event). Stages add up to e2e.
During the burst, the time each helper waits between two renders of its thread, in the same pieces.
CPU per level: the server process, its helpers, this client, everything else on the machine (cores,
and ms per design): where the 2-vCPU machine is the bound, these say so.

    .venv/bin/python bench/stages.py --rounds 2
    .venv/bin/python bench/stages.py --rounds 1 --burst 60 --seconds 3 --levels 50    # smoke
    .venv/bin/python bench/stages.py --client-nice 10   # the load generator at lower priority
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import HOST, banner, cpu_totals, free_port, loadavg, out, pct, tempdir, typical_spec, upload_asset

STAGES = ("api", "queue", "claim", "hand-in", "render", "hand-out", "store", "publish", "announce", "wake")
# (stage, from mark, to mark): marks of the stage log, plus the client's "sent" and "woken".
CUTS = (
    ("api", "sent", "enqueued"),
    ("queue", "enqueued", "executing"),
    ("claim", "executing", "claimed"),
    ("hand-in", "claimed", "helper_began"),
    ("render", "helper_began", "helper_ended"),
    ("hand-out", "helper_ended", "returned"),
    ("store", "returned", "stored"),
    ("publish", "stored", "published"),
    ("announce", "published", "announced"),
    ("wake", "announced", "woken"),
)


def ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


@dataclass
class Sample:
    n: int
    sent: float = 0.0
    answered: float = 0.0
    woken: float = 0.0
    design: dict[str, Any] = field(default_factory=dict)


class Server:
    def __init__(self, root: Path, workers: int, worker_nice: int | None) -> None:
        self.root = root
        self.port = free_port()
        self.base_url = f"http://{HOST}:{self.port}"
        self.stage_log = root / "stages.jsonl"
        data = root / "data"
        data.mkdir()
        args = [str(Path(sys.executable).parent / "customify"), "run", "--no-tui", "--host", HOST]
        args += ["--port", str(self.port), "--data-dir", str(data), "--workers", str(workers)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("CUSTOMIFY_") and k != "DATABASE_URL"}
        env["CUSTOMIFY_STAGE_LOG"] = str(self.stage_log)
        if worker_nice is not None:
            config = root / "customify.toml"
            config.write_text(f"[render]\nworker_nice = {worker_nice}\n")
            args += ["--config", str(config)]
        self.log = (root / "server.log").open("wb")
        # Its own session, as a service started from its own terminal or unit (its own autogroup).
        self.proc = subprocess.Popen(
            args, cwd=str(root), env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def pids(self) -> list[int]:
        try:
            me = psutil.Process(self.proc.pid)
            return [me.pid, *(c.pid for c in me.children(recursive=True))]
        except psutil.NoSuchProcess:
            return []

    def cpu(self) -> float:
        total = 0.0
        for pid in self.pids():
            try:
                times = psutil.Process(pid).cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                pass
        return total

    def thread_cpu(self) -> dict[int, float]:
        """CPU seconds of each thread of the server process, by native thread id."""
        found: dict[int, float] = {}
        for task in Path(f"/proc/{self.proc.pid}/task").glob("*"):
            try:
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            found[int(task.name)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return found

    def own_cpu(self) -> float:
        """The server process alone (API, worker threads' bookkeeping), without its render helpers."""
        try:
            times = psutil.Process(self.proc.pid).cpu_times()
        except psutil.NoSuchProcess:
            return 0.0
        return float(times.user + times.system)

    def marks(self) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        if self.stage_log.exists():
            for line in self.stage_log.read_text().splitlines():
                row = json.loads(line)
                found[row.pop("design_id")] = {k: v for k, v in row.items() if v is not None}
        return found

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


async def wait_ready(client: httpx.AsyncClient, server: Server) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"customify run exited: {(server.root / 'server.log').read_text()[-2000:]}")
        try:
            if (await client.get("/api/v1/system/health")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.01)
    raise RuntimeError("customify run not healthy after 30 s")


async def one(client: httpx.AsyncClient, spec: dict[str, Any], sample: Sample) -> Sample:
    sample.sent = time.time()
    response = await client.post("/api/v1/designs", json=spec)
    response.raise_for_status()
    sample.answered = time.time()
    design_id = response.json()["id"]
    while True:
        design = (await client.get(f"/api/v1/designs/{design_id}", params={"wait": 30})).json()
        if design["status"] in ("published", "failed"):
            break
    sample.woken = time.time()
    sample.design = design
    return sample


async def burst(client: httpx.AsyncClient, asset: str, count: int, first: int) -> list[Sample]:
    """All POSTed at once (16 connections), then long-polled one after the other, as bench/peer.py."""
    sem = asyncio.Semaphore(16)

    async def posted(sample: Sample) -> Sample:
        async with sem:
            sample.sent = time.time()
            response = await client.post("/api/v1/designs", json=typical_spec(asset, sample.n))
            response.raise_for_status()
            sample.answered = time.time()
            sample.design = response.json()
        return sample

    async def waited(sample: Sample) -> Sample:
        while sample.design["status"] not in ("published", "failed"):
            sample.design = (await client.get(f"/api/v1/designs/{sample.design['id']}", params={"wait": 30})).json()
        sample.woken = time.time()
        return sample

    samples = await asyncio.gather(*(posted(Sample(first + i)) for i in range(count)))
    return [await waited(s) for s in samples]  # one waiting client at a time, as peer.py (woken: not e2e)


async def paced(client: httpx.AsyncClient, asset: str, rate: float, seconds: float, first: int) -> list[Sample]:
    loop = asyncio.get_running_loop()
    count = max(1, round(rate * seconds))
    start = loop.time() + 0.05
    running = []
    for i in range(count):
        delay = start + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        running.append(asyncio.create_task(one(client, typical_spec(asset, first + i), Sample(first + i))))
    return list(await asyncio.gather(*running))


# Between two renders of one worker thread its helper waits: the thread's turnaround, in pieces.
TURN = (
    ("hand-out", "helper_ended", "returned"),
    ("store", "returned", "stored"),
    ("publish", "stored", "published"),
    ("announce", "published", "announced"),
    ("mail", "announced", "mailed"),
    ("next task", "mailed", "+executing"),  # history hooks, Huey's completion, dequeue, signals
    ("claim", "+executing", "+claimed"),
    ("hand-in", "+claimed", "+helper_began"),
)


def turnaround(samples: list[Sample], marks: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """During a burst: per worker thread, consecutive renders; what the helper waited for between them."""
    ids = {s.design.get("id") for s in samples}
    by_thread: dict[str, list[dict[str, Any]]] = {}
    for design_id, m in marks.items():
        if design_id in ids and "helper_began" in m and "mailed" in m and "thread" in m:
            by_thread.setdefault(m["thread"], []).append(m)
    pieces: dict[str, list[float]] = {name: [] for name, _, _ in TURN}
    gaps: list[float] = []
    busy = idle = 0.0
    for renders in by_thread.values():
        renders.sort(key=lambda m: m["helper_began"])
        for prev, nxt in itertools.pairwise(renders):
            pair = {**prev, **{f"+{k}": v for k, v in nxt.items()}}
            if any(a not in pair or b not in pair for _, a, b in TURN):
                continue
            for name, a, b in TURN:
                pieces[name].append((pair[b] - pair[a]) * 1000)
            gap = (nxt["helper_began"] - prev["helper_ended"]) * 1000
            gaps.append(gap)
            idle += gap
            busy += (prev["helper_ended"] - prev["helper_began"]) * 1000
    return {
        "gap_p50": pct(gaps, 50),
        "gap_mean": statistics.fmean(gaps) if gaps else float("nan"),
        "idle_share": idle / (idle + busy) if busy else float("nan"),
        "pieces_mean": {k: statistics.fmean(v) if v else float("nan") for k, v in pieces.items()},
        "pieces_p50": {k: pct(v, 50) for k, v in pieces.items()},
    }


def cut(samples: list[Sample], marks: dict[str, dict[str, Any]]) -> list[dict[str, float]]:
    """Per design: e2e, the stages (ms), render_ms, server-side, mail; designs without a full set are left out."""
    rows = []
    for s in samples:
        m = marks.get(s.design.get("id", ""))
        if s.design.get("status") != "published" or not m:
            continue
        m = {**m, "sent": s.sent, "woken": s.woken}
        if any(a not in m or b not in m for _, a, b in CUTS):
            continue
        row = {name: (m[b] - m[a]) * 1000 for name, a, b in CUTS}
        row["e2e"] = (s.woken - s.sent) * 1000
        row["render_ms"] = float(s.design.get("render_ms") or 0)
        row["server"] = (ts(s.design["rendered_at"]) - ts(s.design["created_at"])) * 1000
        row["mail"] = (m.get("mailed", m["announced"]) - m["announced"]) * 1000
        row["thread"] = (m.get("mailed", m["announced"]) - m["executing"]) * 1000  # worker thread busy, per render
        row["answered"] = (s.answered - s.sent) * 1000
        rows.append(row)
    return rows


class Cpu:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.t0 = time.perf_counter()
        self.busy0, _ = cpu_totals()
        self.server0 = server.cpu()
        self.own0 = server.own_cpu()
        self.threads0 = server.thread_cpu()
        self.me0 = time.process_time()

    def stop(self) -> dict[str, float]:
        wall = time.perf_counter() - self.t0
        busy1, _ = cpu_totals()
        server = self.server.cpu() - self.server0
        own = self.server.own_cpu() - self.own0
        threads1 = self.server.thread_cpu()
        workers = {int(m["tid"]) for m in self.server.marks().values() if "tid" in m}
        pid = self.server.proc.pid
        split = {"loop": 0.0, "workers": 0.0, "other threads": 0.0}
        for tid, seconds in threads1.items():
            used = seconds - self.threads0.get(tid, 0.0)
            split["loop" if tid == pid else "workers" if tid in workers else "other threads"] += used
        me = time.process_time() - self.me0
        other = max(0.0, (busy1 - self.busy0) - server - me)
        return {
            "wall": wall,
            "server_s": server,
            "own_s": own,
            "split": split,
            "client_s": me,
            "other_s": other,
            "busy_s": busy1 - self.busy0,
        }


def summarize(
    label: str, rate: float, rows: list[dict[str, float]], cpu: dict[str, float], done: int
) -> dict[str, Any]:
    helper = [r["render"] for r in rows]
    e2e = [r["e2e"] for r in rows]
    render_p50 = pct(helper, 50)
    total = statistics.fmean(e2e) if e2e else float("nan")
    found: dict[str, Any] = {
        "level": label,
        "rate": rate,
        "n": len(rows),
        "render_p50": render_p50,
        "render_ms_p50": pct([r["render_ms"] for r in rows], 50),
        "e2e_p50": pct(e2e, 50),
        "e2e_p95": pct(e2e, 95),
        "e2e_p99": pct(e2e, 99),
        "p95_over_render": pct(e2e, 95) / render_p50,
        "overhead_p50": pct([r["e2e"] - r["render"] for r in rows], 50),
        "server_p95": pct([r["server"] for r in rows], 95),
        "thread_p50": pct([r["thread"] for r in rows], 50),
        "mail_p50": pct([r["mail"] for r in rows], 50),
        "stages_p50": {s: pct([r[s] for r in rows], 50) for s in STAGES},
        "stages_p95": {s: pct([r[s] for r in rows], 95) for s in STAGES},
        "shares": {s: statistics.fmean([r[s] for r in rows]) / total for s in STAGES} if rows else {},
        "cpu": {
            "server_cores": cpu["server_s"] / cpu["wall"],
            "client_cores": cpu["client_s"] / cpu["wall"],
            "other_cores": cpu["other_s"] / cpu["wall"],
            "busy_cores": cpu["busy_s"] / cpu["wall"],
            "server_ms_per_design": 1000 * cpu["server_s"] / max(1, done),
            "process_ms_per_design": 1000 * cpu["own_s"] / max(1, done),
            "threads_ms_per_design": {k: 1000 * v / max(1, done) for k, v in cpu["split"].items()},
            "client_ms_per_design": 1000 * cpu["client_s"] / max(1, done),
        },
    }
    return found


def show(row: dict[str, Any]) -> None:
    c = row["cpu"]
    out(
        f"  {row['level']:>5s} {row['rate']:5.1f}/s n={row['n']:4d} | render p50 {row['render_p50']:5.1f} "
        f"(render_ms {row['render_ms_p50']:5.1f}) | e2e p50/p95/p99 {row['e2e_p50']:6.1f} / {row['e2e_p95']:6.1f} / "
        f"{row['e2e_p99']:6.1f} ms | p95/render {row['p95_over_render']:4.2f} | overhead p50 {row['overhead_p50']:5.2f} "
        f"| server p95 {row['server_p95']:6.1f} | thread p50 {row['thread_p50']:5.1f} mail {row['mail_p50']:4.2f}"
    )
    out("        stage p50 ms: " + "  ".join(f"{s} {row['stages_p50'][s]:.2f}" for s in STAGES))
    out("        stage p95 ms: " + "  ".join(f"{s} {row['stages_p95'][s]:.2f}" for s in STAGES))
    out("        share of e2e: " + "  ".join(f"{s} {100 * v:.1f}%" for s, v in row["shares"].items()))
    out(
        f"        cpu cores: server+helpers {c['server_cores']:.2f}  client {c['client_cores']:.2f}  "
        f"other {c['other_cores']:.2f}  machine busy {c['busy_cores']:.2f} of 2 | per design: server+helpers "
        f"{c['server_ms_per_design']:.1f} ms (server process {c['process_ms_per_design']:.1f}, helpers "
        f"{c['server_ms_per_design'] - c['process_ms_per_design']:.1f}), client {c['client_ms_per_design']:.1f} ms"
    )
    out(
        "        server process CPU per design by thread: "
        + "  ".join(f"{k} {v:.1f} ms" for k, v in c["threads_ms_per_design"].items())
        + " (loop: the event loop; workers: the Huey worker threads; other: asyncio.to_thread's pool, history,"
        " heartbeats, scheduler)"
    )


async def round_(args: argparse.Namespace, root: Path, index: int) -> list[dict[str, Any]]:
    server = Server(root, args.workers, args.worker_nice)
    rows: list[dict[str, Any]] = []
    try:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=60, limits=limits) as client:
            await wait_ready(client, server)
            with httpx.Client(base_url=server.base_url, timeout=30) as sync_client:
                asset = await asyncio.to_thread(upload_asset, sync_client)
            await burst(client, asset, args.workers * 4, 0)  # helpers used, SQLite and caches warm
            await asyncio.sleep(1.0)
            cpu = Cpu(server)
            started = time.time()
            samples = await burst(client, asset, args.burst, 1000)
            used = cpu.stop()
            designs = [s.design for s in samples]
            first = min(ts(d["created_at"]) for d in designs)
            last = max(ts(d["rendered_at"]) for d in designs)
            capacity = len(designs) / (last - first)
            marks = server.marks()
            cuts = cut(samples, marks)
            turn = turnaround(samples, marks)
            helper_mean = statistics.fmean([r["render"] for r in cuts])
            render_ms_mean = statistics.fmean([r["render_ms"] for r in cuts])
            bound = args.workers * 1000 / helper_mean
            out(
                f"round {index}: burst {len(designs)} designs: {capacity:.1f}/s server-side "
                f"(client {len(designs) / (time.time() - started):.1f}/s); bound {bound:.1f}/s "
                f"({args.workers} threads / mean helper render {helper_mean:.1f} ms; render_ms mean "
                f"{render_ms_mean:.1f}): burst / bound {capacity / bound:.3f}; worker thread per design "
                f"p50 {pct([r['thread'] for r in cuts], 50):.1f} ms; loadavg {loadavg()}"
            )
            burst_row = summarize("burst", capacity, cuts, used, len(samples))
            burst_row.update(capacity=capacity, bound=bound, ratio=capacity / bound, turnaround=turn)
            show(burst_row)
            out(
                f"        helper idle between two renders of its thread: p50 {turn['gap_p50']:.2f} ms, mean "
                f"{turn['gap_mean']:.2f} ms = {100 * turn['idle_share']:.1f}% of the helpers' time; mean ms: "
                + "  ".join(f"{k} {v:.2f}" for k, v in turn["pieces_mean"].items())
            )
            rows.append(burst_row)
            first_n = 10_000
            for level in args.levels:
                await asyncio.sleep(args.gap)
                rate = capacity * level / 100
                cpu = Cpu(server)
                samples = await paced(client, asset, rate, args.seconds, first_n)
                used = cpu.stop()
                first_n += len(samples) + 1
                row = summarize(f"{level}%", rate, cut(samples, server.marks()), used, len(samples))
                row["loadavg"] = loadavg()
                show(row)
                rows.append(row)
    finally:
        server.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--burst", type=int, default=200)
    parser.add_argument("--levels", type=lambda v: [int(x) for x in v.split(",")], default=[30, 50, 70, 90])
    parser.add_argument("--seconds", type=float, default=8.0, help="of evenly spaced arrivals per level")
    parser.add_argument("--gap", type=float, default=1.0, help="seconds of rest between levels")
    parser.add_argument("--worker-nice", type=int, default=None, help="render.worker_nice (default: as shipped)")
    parser.add_argument(
        "--client-nice", type=int, default=0, help="run this load generator at this nice (and its autogroup)"
    )
    parser.add_argument("--json", type=Path, default=None, help="write every row here")
    args = parser.parse_args()
    banner("stages: where the time around a render goes, clients long-polling, p95 against load")
    if args.client_nice:
        os.setpriority(os.PRIO_PROCESS, 0, args.client_nice)
        with contextlib.suppress(OSError):  # this session's autogroup (the server runs in a session of its own)
            Path("/proc/self/autogroup").write_text(str(args.client_nice))
    everything: list[dict[str, Any]] = []
    with tempdir() as tmp:
        for index in range(args.rounds):
            root = tmp / f"round{index}"
            root.mkdir()
            out(f"# round {index} at {time.strftime('%H:%M:%S', time.gmtime())} UTC, loadavg {loadavg()}")
            rows = asyncio.run(round_(args, root, index))
            for row in rows:
                row["round"] = index
            everything += rows
    out()
    out("medians over rounds (p95/render = e2e p95 / the helper's render p50 at that level):")
    out(
        f"  {'level':>6s} {'rate/s':>7s} {'render':>7s} {'e2e p50':>8s} {'p95':>7s} {'p99':>7s} {'p95/r':>6s} "
        f"{'ovh p50':>8s} {'srv p95':>8s} {'cores':>6s} {'client':>7s}"
    )
    for level in ["burst", *(f"{v}%" for v in args.levels)]:
        mine = [r for r in everything if r["level"] == level]
        if not mine:
            continue

        def m(key: str, rows: list[dict[str, Any]] = mine) -> float:
            return float(statistics.median(r[key] for r in rows))

        cores = statistics.median(r["cpu"]["busy_cores"] for r in mine)
        client = statistics.median(r["cpu"]["client_cores"] for r in mine)
        out(
            f"  {level:>6s} {m('rate'):7.1f} {m('render_p50'):7.1f} {m('e2e_p50'):8.1f} {m('e2e_p95'):7.1f} "
            f"{m('e2e_p99'):7.1f} {m('p95_over_render'):6.2f} {m('overhead_p50'):8.2f} {m('server_p95'):8.1f} "
            f"{cores:6.2f} {client:7.2f}"
        )
        if level == "burst":
            out("         burst / bound: " + ", ".join(f"{r['ratio']:.3f}" for r in mine))
    if args.json:
        args.json.write_text(json.dumps(everything, indent=1))


if __name__ == "__main__":
    main()
