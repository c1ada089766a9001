"""The API's hot reads on the reader thread (customify/reader.py) against one `asyncio.to_thread` per read
(what the API did before), in the same app, the same run, alternating rounds.

The app is called in-process over ASGI (no sockets, no HTTP parser: what is left is the app's own CPU),
`--concurrency` requests at a time, as wrk's connections would: `GET /api/v1/designs/{id}` (the
typical design, published) and `GET /api/v1/designs` (a page of 50). Prints requests/s and the
process's CPU per request.

    python bench/reader_hop.py [--requests 4000] [--rounds 3] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import banner, med, out, tempdir, typical_spec

from customify.api import create_app
from customify.config import load_config
from customify.runtime import Runtime

Message = dict[str, Any]


class ToThread:
    """The hop as it was: each read alone, on the loop's default executor."""

    def __init__(self, rt: Runtime) -> None:
        self.reader = rt.reader

    async def __call__(self, fn: Any, *args: Any) -> Any:
        return await asyncio.to_thread(self.reader._one, fn, args)


async def call(app: Any, method: str, path: str, body: bytes = b"", content_type: bytes = b"") -> list[Message]:
    headers = [(b"host", b"127.0.0.1:8000")]
    if body:
        headers += [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


async def measure(app: Any, path: str, requests: int, concurrency: int) -> tuple[float, float]:
    """(requests/s, CPU µs per request)."""

    async def worker(n: int) -> None:
        for _ in range(n):
            sent = await call(app, "GET", path)
            assert sent[0]["status"] == 200, sent

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker(requests // concurrency) for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    done = requests // concurrency * concurrency
    return done / wall, cpu / done * 1e6


async def run(args: argparse.Namespace, root: Path) -> None:
    config = load_config(None, {}, {"data_dir": str(root / "data"), "render": {"start_helpers": False}})
    rt = Runtime(config)
    app = create_app(config, consumer=False, runtime=rt)
    startup: asyncio.Queue[Message] = asyncio.Queue()
    replies: asyncio.Queue[Message] = asyncio.Queue()
    await startup.put({"type": "lifespan.startup"})
    lifespan = asyncio.create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, startup.get, replies.put)
    )
    assert (await replies.get())["type"] == "lifespan.startup.complete"
    spec = typical_spec("00000000-0000-0000-0000-000000000000")
    spec["layers"] = [layer for layer in spec["layers"] if layer["type"] != "image"]  # no upload: the text layers
    ids = []
    for i in range(60):
        sent = await call(
            app, "POST", "/api/v1/designs", json.dumps({**spec, "name": f"d{i}"}).encode(), b"application/json"
        )
        ids.append(json.loads(sent[1]["body"])["id"])
    paths = {"GET design": f"/api/v1/designs/{ids[0]}", "GET list (50)": "/api/v1/designs"}
    reader = rt.reader
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for round_ in range(args.rounds):
        for mode in ("reader", "to_thread"):
            rt.reader = reader if mode == "reader" else ToThread(rt)  # type: ignore[assignment]
            for name, path in paths.items():
                await measure(app, path, args.requests // 10, args.concurrency)  # warm
                rps, cpu = await measure(app, path, args.requests // (5 if "list" in name else 1), args.concurrency)
                results.setdefault((name, mode), []).append((rps, cpu))
                out(f"round {round_} {mode:9s} {name:14s} {rps:7.0f} req/s  {cpu:6.0f} µs CPU/request")
    rt.reader = reader
    out()
    out("| request | reader req/s | to_thread req/s | ratio | reader µs CPU | to_thread µs CPU |")
    out("|---|---|---|---|---|---|")
    for name in paths:
        a, b = results[(name, "reader")], results[(name, "to_thread")]
        ra, rb = med([r for r, _ in a]), med([r for r, _ in b])
        out(
            f"| {name} | {ra:.0f} | {rb:.0f} | {ra / rb:.2f} | {med([c for _, c in a]):.0f} | {med([c for _, c in b]):.0f} |"
        )
    await startup.put({"type": "lifespan.shutdown"})
    await lifespan
    rt.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    banner("the API's hot reads: the reader thread vs asyncio.to_thread per read (in-process ASGI)")
    with tempdir() as root:
        uvloop.run(run(args, root))


if __name__ == "__main__":
    main()
