"""Instant previews: p50/p95 of POST /api/v1/previews for the typical design at 600 px, idle and while
background renders saturate the workers, side by side with the same spec rendered through the queue.

`customify run --no-tui` runs as a subprocess (2 worker threads, render helpers). Each preview is a new
spec (the text changes, as when a customer types), so none is a cache hit; cache hits are measured apart.
A busy window first POSTs a backlog of designs sized to outlast it and checks afterwards that renders
were still queued (else the window is flagged "drained"). Idle and busy windows alternate.

    python bench/preview_bench.py [--rounds 3] [--previews 60] [--backlog 400]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RunProcess, asset_png, banner, fmt, out, pct, tempdir, typical_spec, upload_asset

CONFIG = "[previews]\nper_minute = 1000000\n"


def previews(client: httpx.Client, asset_id: str, count: int, tag: str) -> list[float]:
    times = []
    for i in range(count):
        spec = typical_spec(asset_id, i)
        spec["layers"][0]["text"] = f"{tag} {i}"  # a new spec each time: no cache hit
        t0 = time.perf_counter()
        response = client.post("/api/v1/previews", params={"size": 600}, json=spec)
        times.append((time.perf_counter() - t0) * 1000)
        response.raise_for_status()
    return times


def queued(client: httpx.Client, asset_id: str, count: int) -> list[float]:
    """The same spec through the queue: POST the design, wait until it is published."""
    times = []
    for i in range(count):
        t0 = time.perf_counter()
        design = client.post("/api/v1/designs", json=typical_spec(asset_id, 10_000 + i)).json()
        done = client.get(f"/api/v1/designs/{design['id']}", params={"wait": 30}).json()
        times.append((time.perf_counter() - t0) * 1000)
        assert done["status"] == "published", done
    return times


def bare(asset_png_bytes: bytes, count: int) -> list[float]:
    """The preview's own work in this process (draw + WebP), CPU time: what the HTTP figures are made of."""
    import io

    from PIL import Image

    from customify.render.preview import draw_preview, encode_preview

    image = Image.open(io.BytesIO(asset_png_bytes))
    image.load()
    times = []
    for i in range(count):
        spec = typical_spec("a", i)
        spec["layers"][0]["text"] = f"bare {i}"
        t0 = time.process_time()
        encode_preview(draw_preview(spec, {"a": image}, 600), "tshirt", "webp", 1)
        times.append((time.process_time() - t0) * 1000)
    return times


def pending(client: httpx.Client) -> int:
    status = client.get("/api/v1/system/worker-status").json()
    return int(status["queue"]["pending"]) + int(status["queue"]["in_flight"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--previews", type=int, default=60)
    parser.add_argument("--backlog", type=int, default=400)
    parser.add_argument("--queued", type=int, default=5)
    args = parser.parse_args()
    banner("instant previews at 600 px: idle vs while background renders saturate the workers")
    with tempdir() as root:
        data = root / "data"
        data.mkdir()
        with RunProcess(data, config_text=CONFIG) as proc, httpx.Client(base_url=proc.base_url, timeout=60) as client:
            proc.wait_healthy()
            asset_id = upload_asset(client)
            previews(client, asset_id, 5, "warm")  # the preview helper starts on first use
            queued(client, asset_id, 2)  # the render helpers too
            idle: list[float] = []
            busy: list[float] = []
            queue_idle: list[float] = []
            queue_busy: list[float] = []
            hits: list[float] = []
            cpu: list[float] = []
            for rnd in range(args.rounds):
                cpu += bare(asset_png(), 20)
                idle += previews(client, asset_id, args.previews, f"idle{rnd}")
                queue_idle += queued(client, asset_id, args.queued)
                for i in range(args.backlog):
                    client.post("/api/v1/designs", json=typical_spec(asset_id, i))
                before = pending(client)
                busy += previews(client, asset_id, args.previews, f"busy{rnd}")
                queue_busy += queued(client, asset_id, args.queued)
                after = pending(client)
                flag = "" if after > 0 else "  (drained: the backlog ran out during the window)"
                out(f"round {rnd + 1}: backlog {before} before the busy window, {after} after{flag}")
                spec = typical_spec(asset_id, 0)
                client.post("/api/v1/previews", json=spec)
                for _ in range(20):
                    t0 = time.perf_counter()
                    client.post("/api/v1/previews", json=spec).raise_for_status()
                    hits.append((time.perf_counter() - t0) * 1000)
                while pending(client) > 0:  # let the backlog finish before the next idle window
                    time.sleep(0.5)
            out()
            out(f"bare draw + WebP, CPU time:      {fmt(cpu)}")
            out(f"preview 600 px, idle:            {fmt(idle)}")
            out(f"preview 600 px, renders running: {fmt(busy)}")
            out(f"preview cache hit:               {fmt(hits)}")
            out(f"queued render e2e, idle:         {fmt(queue_idle)}")
            out(f"queued render e2e, busy:         {fmt(queue_busy)}")
            out()
            out(
                f"targets: p50 <= 25 ms, p95 <= 60 ms while busy -> p50 {pct(busy, 50):.1f} ms, "
                f"p95 {pct(busy, 95):.1f} ms"
            )


if __name__ == "__main__":
    main()
