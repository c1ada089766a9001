"""Web dashboard figures (issue 15): first paint of / and /designs with 10,000 designs, the server CPU that
10 idle open tabs add, and how long a status change takes to reach an open page at ~50 events/s.

`customify run --no-tui` as a subprocess on loopback, its database seeded with N published designs
(all sharing one real render's files). The browser is Debian's Chromium through Playwright.

- first paint: server time + transfer of the HTML (a fresh connection per request, as a new tab), and
  the browser's first-contentful-paint of a fresh tab (HTML, CSS, scripts; thumbnails load lazily after);
- idle tabs: the server process's CPU over a window with no tab open, then with 10 tabs open on
  /designs and / (the event stream and its queue stats each second), same run, alternated;
- status change → page: designs on an open /designs page are re-rendered through the API at a pace
  that makes ~50 events/s on the stream (each re-render is ~8 events: enqueued, started, rendering,
  published, succeeded, and the mail task's); for each `design.status` event the page records when it
  arrived and when the card showed that status (its badge changes from the event at once; the card's
  server-rendered HTML, with the new thumbnail, follows); the figure is DOM time minus the event's
  server timestamp (same machine clock); also printed: until the card's new HTML is in.

    .venv/bin/python bench/web_bench.py [--designs 10000] [--rounds 20] [--idle-seconds 30] [--seconds 20]
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import insert, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import RunProcess, banner, fmt, med, out, proc_cpu, tempdir, wait_quiet
from customify import db
from customify.models import DEV_USER_ID, Design

ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SPEC = {
    "name": "bench",
    "product": "tshirt",
    "color": "#1e3a8a",
    "layers": [{"type": "text", "text": "HELLO", "size": 0.12, "color": "#ffffff", "x": 0.5, "y": 0.2}],
}

RECORDER = """
() => {
  window.benchSeen = [];  // [design id, status, server time ms, arrived ms]
  window.benchDom = [];   // [design id, status, in the DOM ms]
  window.benchEvents = 0;
  document.getElementById('sse-sink').addEventListener('htmx:sseBeforeMessage', (e) => {
    window.benchEvents++;
    if (e.detail.type !== 'design.status') return;
    const d = JSON.parse(e.detail.data);
    window.benchSeen.push([d.design_id, d.status, d.at * 1000, Date.now()]);
  });
  new MutationObserver((records) => {
    const now = Date.now();
    for (const r of records) {
      const nodes = r.type === 'attributes' ? [r.target] : Array.from(r.addedNodes);
      for (const n of nodes) {
        if (n.nodeType === 1 && n.id && n.id.startsWith('d-')) {
          window.benchDom.push([n.id.slice(2), n.getAttribute('data-status'), now, r.type === 'childList']);
        }
      }
    }
  }).observe(document.getElementById('cards'), {childList: true, subtree: true, attributes: true,
                                                attributeFilter: ['data-status']});
}
"""


def stage(what: str) -> None:
    print(f"  … {what}", file=sys.stderr, flush=True)


def seed(app: RunProcess, count: int) -> float:
    """One real render, then `count - 1` published designs sharing its files (inserted in one transaction)."""
    with httpx.Client(base_url=app.base_url, timeout=60) as client:
        first = client.post("/api/v1/designs", json=SPEC).json()
        done = client.get(f"/api/v1/designs/{first['id']}", params={"wait": 30}).json()
        assert done["status"] == "published", done
    engine = db.make_sync_engine(f"sqlite:///{app.data_dir / 'customify.db'}")
    started = time.perf_counter()
    with engine.begin() as conn:
        row = conn.execute(
            text("select preview_key, thumbnail_key from designs where id = :id"), {"id": first["id"]}
        ).one()
        now = datetime.now(UTC)
        rows = [
            {
                "id": str(uuid.uuid4()),
                "owner_id": DEV_USER_ID,
                "name": f"bench design {i}",
                "product": "tshirt",
                "color": "#1e3a8a",
                "layers": SPEC["layers"],
                "status": "published",
                "version": 1,
                "preview_version": 1,
                "preview_key": row[0],
                "thumbnail_key": row[1],
                "render_ms": 42.0,
                "attempts": 1,
                "created_at": now - timedelta(seconds=count - i),
                "updated_at": now,
                "rendered_at": now,
            }
            for i in range(count - 1)
        ]
        conn.execute(insert(Design), rows)
    engine.dispose()
    return time.perf_counter() - started


def server_paint(base_url: str, path: str) -> tuple[float, int]:
    """Milliseconds from connect to the last byte of the HTML over a new connection, and its size.

    A plain socket: an HTTP client library's own set-up (httpx builds an SSL context per client,
    tens of ms) is not the server's time."""
    host, port = base_url.removeprefix("http://").rsplit(":", 1)
    request = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/html\r\nConnection: close\r\n\r\n").encode()
    t0 = time.perf_counter()
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    took = (time.perf_counter() - t0) * 1000
    response = b"".join(chunks)
    assert response.startswith(b"HTTP/1.1 200"), response[:100]
    return took, len(response)


def browser_paint(browser: Any, base_url: str, path: str) -> float:
    context = browser.new_context(base_url=base_url, viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.goto(path, wait_until="load")
    fcp = page.evaluate("""() => new Promise((resolve) => {
        const find = () => performance.getEntriesByName('first-contentful-paint')[0];
        if (find()) return resolve(find().startTime);
        new PerformanceObserver(() => find() && resolve(find().startTime)).observe({type: 'paint', buffered: true});
    })""")
    context.close()
    return float(fcp)


def idle_cpu(app: RunProcess, browser: Any, tabs: int, seconds: float) -> float:
    """Server CPU (% of one core) over `seconds` with `tabs` tabs open (half on /designs, half on /)."""
    contexts = []
    for i in range(tabs):
        context = browser.new_context(base_url=app.base_url)
        page = context.new_page()
        page.goto("/designs" if i % 2 == 0 else "/")
        page.wait_for_selector("#live.up", timeout=30_000)  # no eval: the pages' CSP forbids it
        contexts.append(context)
    time.sleep(3)  # settle: thumbnails, first queue stats
    c0, t0 = proc_cpu(app.pid), time.perf_counter()
    time.sleep(seconds)
    used = (proc_cpu(app.pid) - c0) / (time.perf_counter() - t0) * 100
    for context in contexts:
        context.close()
    time.sleep(1)
    return used


def status_latency(app: RunProcess, browser: Any, seconds: float, per_second: float) -> dict[str, Any]:
    context = browser.new_context(base_url=app.base_url, viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.goto("/designs")
    page.wait_for_selector("#live.up", timeout=30_000)  # no eval: the pages' CSP forbids it
    page.evaluate(RECORDER)
    ids = page.eval_on_selector_all("#cards .card", "cards => cards.map(c => c.id.slice(2))")
    period, sent = 1.0 / per_second, 0
    with httpx.Client(base_url=app.base_url, timeout=30) as client:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            client.post(f"/api/v1/designs/{ids[sent % len(ids)]}/render")
            sent += 1
            time.sleep(max(0.0, t0 + sent * period - time.perf_counter()))
        wall = time.perf_counter() - t0
        time.sleep(3)  # the last renders land
    seen, dom, events = page.evaluate("[window.benchSeen, window.benchDom, window.benchEvents]")
    context.close()
    latencies, cards, missing = [], [], 0
    for design_id, status, at_ms, _arrived in seen:
        shown = [(t, html) for d, s, t, html in dom if d == design_id and s == status and t >= at_ms - 5]
        if shown:
            latencies.append(min(t for t, _ in shown) - at_ms)
            cards += [min(t for t, html in shown if html) - at_ms] if any(html for _, html in shown) else []
        else:
            missing += 1  # a later status replaced it before this one was drawn (coalesced)
    return {
        "latencies": latencies,
        "cards": cards,
        "missing": missing,
        "events_per_s": events / (wall + 3),
        "rerenders": sent,
        "status_events": len(seen),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--designs", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=20, help="first-paint samples per page")
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    parser.add_argument("--seconds", type=float, default=20.0, help="status-change load duration")
    parser.add_argument("--rerenders", type=float, default=7.0, help="re-renders per second (~7 events each)")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    banner("web dashboard")
    with tempdir() as tmp, sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        data = tmp / "data"
        data.mkdir()
        with RunProcess(data) as app:
            app.wait_healthy()
            stage(f"seeding {args.designs} designs")
            took = seed(app, args.designs)
            out(f"seeded {args.designs} designs in {took:.1f} s")
            busy = wait_quiet()
            out(f"machine busy before measuring: {busy:.2f} cores of 2 (shared, noisy)")
            stage("first paint")
            for path in ("/", "/designs"):
                server_paint(app.base_url, path)  # warm: templates compiled, caches
                samples = [server_paint(app.base_url, path) for _ in range(args.rounds)]
                fcp = [browser_paint(browser, app.base_url, path) for _ in range(max(5, args.rounds // 2))]
                out(
                    f"{path:9} server + transfer {fmt([s for s, _ in samples])}, {samples[0][1] // 1024} KiB; "
                    f"browser first-contentful-paint {fmt(fcp)}"
                )
            stage("idle tabs")
            rows = []
            for _ in range(2):  # alternated: 0 tabs, 10 tabs, 0, 10
                rows.append(
                    (idle_cpu(app, browser, 0, args.idle_seconds), idle_cpu(app, browser, 10, args.idle_seconds))
                )
            for none, ten in rows:
                out(f"server CPU idle: no tab {none:.2f}% of a core, 10 tabs {ten:.2f}% → added {ten - none:.2f}%")
            added = med([ten - none for none, ten in rows])
            out(f"added by 10 idle tabs, median of {len(rows)}: {added:.2f}% of one core")
            stage("status changes")
            result = status_latency(app, browser, args.seconds, args.rerenders)
            out(
                f"status change → card in the page: {fmt(result['latencies'])} "
                f"({len(result['latencies'])} of {result['status_events']} status events drawn, "
                f"{result['missing']} coalesced into a later status), stream {result['events_per_s']:.1f} events/s, "
                f"{result['rerenders']} re-renders"
            )
            out(f"status change → the card's new HTML (thumbnail) in the page: {fmt(result['cards'])}")
        browser.close()


if __name__ == "__main__":
    main()
