"""Dashboard figures (issue 4): key press → answered, event → screen current, with 10,000 designs in
the database and 50 events/s; how much the dashboard loads; the observer's cost per task.

One process: the real app on a loopback port (as the tests run it) and the dashboard headless
(Textual's `run_test`) talking to it over HTTP and SSE. The event load is published into the
app's hub from a thread at a steady rate, as the worker threads would; the marker events are
ordinary `design.status` events for designs on screen.

    python bench/tui_bench.py [--designs 10000] [--rate 50] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import socket
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec
import uvicorn
from huey import signals as S
from sqlalchemy import text
from textual import events

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import banner, fmt, med, out, tempdir
from customify import records
from customify.api import create_app
from customify.config import load_config
from customify.events import EventHub
from customify.models import DEV_USER_ID
from customify.observer import Observer
from customify.runtime import Runtime
from tui.app import Dashboard
from tui.client import ApiClient
from tui.screens import DesignScreen
from tui.widgets import DesignsTable

SPEC = {
    "name": "bench",
    "product": "mug",
    "color": "#ffffff",
    "layers": [{"type": "text", "text": "x", "size": 0.2, "color": "#b91c1c", "x": 0.5, "y": 0.5}],
}


def send_key(app: Dashboard, key: str) -> None:
    """As the terminal driver delivers a key (Pilot.press would also wait for the app to be idle,
    which under a steady event stream measures the stream, not the key)."""
    event = events.Key(key, key if len(key) == 1 else None)
    event.set_sender(app)
    assert app._driver is not None
    app._driver.send_message(event)


def stage(what: str) -> None:
    print(f"  … {what}", file=sys.stderr, flush=True)


def seed(rt: Runtime, count: int) -> float:
    started = time.perf_counter()
    with rt.transaction() as session:
        records.ensure_dev_user(session)
        for i in range(count):
            records.create_design(session, DEV_USER_ID, dict(SPEC, name=f"bench {i}"), None, None)
        session.execute(text("update designs set status = 'published', render_ms = 42.0"))
    return time.perf_counter() - started


def start(data_dir: Path) -> tuple[Runtime, uvicorn.Server, threading.Thread, str]:
    config = load_config(
        None, {}, {"data_dir": str(data_dir), "port": 0, "host": "127.0.0.1", "render": {"sweep_interval": 0}}
    )
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(512)
    config = msgspec.structs.replace(config, port=sock.getsockname()[1])
    rt = Runtime(config)
    rt.prepare_database()
    server = uvicorn.Server(uvicorn.Config(create_app(config, runtime=rt), log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    return rt, server, thread, config.base_url


def load(rt: Runtime, ids: list[str], rate: float, stop: threading.Event) -> None:
    """`rate` events a second into the hub, like busy workers: task and design events for real designs."""
    kinds = ["task.enqueued", "task.started", "design.status", "task.succeeded"]
    period = 1.0 / rate
    next_at = time.perf_counter()
    rng = random.Random(1)
    i = 0
    while not stop.is_set():
        design_id = rng.choice(ids)
        kind = kinds[i % len(kinds)]
        data: dict[str, Any] = {"design_id": design_id, "task": "render_design_preview", "task_id": str(i)}
        if kind == "design.status":
            data.update(status="rendering", version=1)
        rt.hub.publish(kind, **data)
        i += 1
        next_at += period
        time.sleep(max(0.0, next_at - time.perf_counter()))


async def dashboard_figures(rt: Runtime, base_url: str, rate: float, seconds: float) -> dict[str, Any]:
    app = Dashboard(ApiClient(base_url))
    figures: dict[str, Any] = {}
    async with app.run_test(size=(130, 42)) as pilot:
        t0 = time.perf_counter()
        await asyncio.wait_for(app.loaded.wait(), 30)
        stage("loaded")
        table = app._main.query_one(DesignsTable)
        while table.row_count == 0:
            await asyncio.sleep(0.005)
        figures["first_screen_ms"] = (time.perf_counter() - t0) * 1000
        figures["rows_loaded"] = len(app.state.designs)
        shown = list(app.state.designs)[:30]
        # "Painted" = the screen's compositor rendered an update (headless, the driver then writes
        # nothing, but the widgets' lines were rendered). Pilot.pause() would wait for the process to
        # be idle, which under a steady event stream in this process is its 1 s cap, not a frame.
        frames = [0]
        display = app._display

        def counting_display(screen: Any, renderable: Any) -> None:
            display(screen, renderable)
            if renderable is not None:
                frames[0] += 1

        app._display = counting_display  # type: ignore[method-assign]

        async def painted_after(frame: int) -> None:
            while frames[0] <= frame:
                await asyncio.sleep(0.001)

        applied: dict[tuple[str, str], int] = {}
        update_design = table.update_design

        def recording(design: dict[str, Any]) -> bool:
            # Background fetches may put a row back to its database status right after a marker, so
            # record the frame count when each status reaches the table instead of polling the cell.
            result = update_design(design)
            applied.setdefault((str(design.get("id")), str(design.get("status"))), frames[0])
            return result

        table.update_design = recording  # type: ignore[method-assign]
        cursor_moved_at = [0]
        watch_cursor = table.watch_cursor_coordinate

        def recording_cursor(old: Any, new: Any) -> None:
            watch_cursor(old, new)
            cursor_moved_at[0] = frames[0]

        table.watch_cursor_coordinate = recording_cursor  # type: ignore[method-assign]
        stop = threading.Event()
        loader = threading.Thread(target=load, args=(rt, list(app.state.designs), rate, stop), daemon=True)
        loader.start()
        await asyncio.sleep(2)  # under load from here on
        stage("under load")
        event_ms: list[float] = []
        key_ms: list[float] = []
        deadline = time.perf_counter() + seconds
        n = 0
        while time.perf_counter() < deadline:
            # Event → screen: a marker status on a visible row, until the cell shows it.
            design_id = shown[n % len(shown)]
            marker = f"m{n}"  # a status no other event carries
            sent = time.perf_counter()
            rt.hub.publish("design.status", design_id=design_id, status=marker, version=1)
            while (design_id, marker) not in applied:
                await asyncio.sleep(0.001)
            await painted_after(applied[design_id, marker])  # and the frame that shows it
            event_ms.append((time.perf_counter() - sent) * 1000)
            # Key press → answered: j/k moves the cursor.
            before = table.cursor_row
            sent = time.perf_counter()
            send_key(app, "j" if n % 2 == 0 else "k")
            while table.cursor_row == before:
                await asyncio.sleep(0.001)
            await painted_after(cursor_moved_at[0])  # and the frame that shows it
            key_ms.append((time.perf_counter() - sent) * 1000)
            n += 1
            await asyncio.sleep(0.2)
        stage("events and keys done")
        # Heavier keys: filter (a page from the server) and opening a design's detail screen.
        filter_ms = []
        pages = 0
        designs = app.client.designs

        async def counting(*args: Any, **kwargs: Any) -> dict[str, Any]:
            nonlocal pages
            result = await designs(*args, **kwargs)
            pages += 1
            return result

        app.client.designs = counting  # type: ignore[method-assign]
        for _ in range(4):  # draft, rendering, published, failed (a page from the server each)
            before, sent = pages, time.perf_counter()
            send_key(app, "f")
            while pages == before:
                await asyncio.sleep(0.002)
            await painted_after(frames[0])
            filter_ms.append((time.perf_counter() - sent) * 1000)
        await pilot.press("f")  # back to all
        await asyncio.sleep(0.5)
        stage("filter done")
        detail_ms = []
        for _ in range(5):
            sent = time.perf_counter()
            send_key(app, "enter")
            while not (isinstance(app.screen, DesignScreen) and app.screen.design):
                await asyncio.sleep(0.002)
                if time.perf_counter() - sent > 5:
                    stage(f"detail not shown: screen={app.screen!r} rows={table.row_count} focused={app.focused!r}")
                    sent = time.perf_counter()
            detail_ms.append((time.perf_counter() - sent) * 1000)
            await pilot.press("escape")
            await pilot.pause()
        stop.set()
        loader.join()
        figures.update(
            event_ms=event_ms,
            key_ms=key_ms,
            filter_ms=filter_ms,
            detail_ms=detail_ms,
            rows_after=len(app.state.designs),
        )
    return figures


async def _cancel_all() -> None:
    """Cancel a loop's other tasks and wait for them, so none is destroyed while pending."""
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def observer_cost(tasks: int = 20_000) -> dict[str, float]:
    """µs per task for ENQUEUED + EXECUTING + COMPLETE through the observer (hub with 0 and 2 subscribers)."""
    render = type("render_design_preview", (), {})
    results = {}
    for subscribers in (0, 2):
        hub = EventHub()
        obs = Observer(hub)
        loops = []
        for _ in range(subscribers):  # each an SSE stream's loop, draining as the server would
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, daemon=True).start()

            async def drain(hub: EventHub = hub) -> None:
                with hub.subscribe() as queue:
                    while True:
                        await queue.get()

            asyncio.run_coroutine_threadsafe(drain(), loop)
            loops.append(loop)
        while hub.subscriber_count() < subscribers:
            time.sleep(0.01)
        items = []
        for i in range(tasks):
            t = render()
            t.id, t.args = str(uuid.UUID(int=i)), (str(uuid.UUID(int=i)), 1)
            items.append(t)
        rounds = []
        for chunk in range(5):
            batch = items[chunk * tasks // 5 : (chunk + 1) * tasks // 5]
            started = time.perf_counter()
            for t in batch:
                obs._on_signal(S.SIGNAL_ENQUEUED, t)
                obs._on_signal(S.SIGNAL_EXECUTING, t)
                obs._on_signal(S.SIGNAL_COMPLETE, t)
            rounds.append((time.perf_counter() - started) / len(batch) * 1e6)
        results[f"us_per_task_{subscribers}_subscribers"] = med(rounds)
        started = time.perf_counter()
        for _ in range(100):
            obs.stats()
        results[f"stats_ms_{subscribers}"] = (time.perf_counter() - started) / 100 * 1000
        for loop in loops:
            asyncio.run_coroutine_threadsafe(_cancel_all(), loop).result(5)
            loop.call_soon_threadsafe(loop.stop)
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--designs", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    for name in ("httpx", "huey", "customify", "asyncio"):
        logging.getLogger(name).setLevel(logging.WARNING)
    banner("dashboard: key press and event → screen under load; observer cost per task")
    cost = observer_cost()
    out(
        f"observer per task (enqueued+executing+complete): {cost['us_per_task_0_subscribers']:.1f} µs "
        f"with no subscriber, {cost['us_per_task_2_subscribers']:.1f} µs with 2 SSE subscribers; "
        f"stats() {cost['stats_ms_0']:.2f} ms"
    )
    with tempdir("cfy-tui-bench-") as data:
        rt, server, thread, base_url = start(data)
        took = seed(rt, args.designs)
        out(f"seeded {args.designs} designs in {took:.1f} s")
        try:
            figures = asyncio.run(dashboard_figures(rt, base_url, args.rate, args.seconds))
        finally:
            server.should_exit = True
            rt.hub.close()
            thread.join(15)
            rt.close()
    out(
        f"first screen (designs loaded and shown): {figures['first_screen_ms']:.0f} ms; rows loaded "
        f"{figures['rows_loaded']} of {args.designs} (after the run: {figures['rows_after']})"
    )
    out(f"event -> screen current at {args.rate:g} events/s: {fmt(figures['event_ms'])}")
    out(f"key j/k -> cursor moved: {fmt(figures['key_ms'])}")
    out(f"key f (filter, a page from the server) -> table shows it: {fmt(figures['filter_ms'])}")
    out(f"key enter -> detail screen with its design: {fmt(figures['detail_ms'])}")


if __name__ == "__main__":
    main()
