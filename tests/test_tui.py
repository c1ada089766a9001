"""The dashboard: Pilot against a real running Customify, liveness made real, and SVG snapshots.

The snapshots use a fixed instance (FakeClient) and a frozen clock, so they only
change when the screen does.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from PIL import Image, ImageDraw
from rich.console import Console
from textual.app import App, ComposeResult
from textual.pilot import Pilot
from textual.widgets import DataTable, Label

from customify import tasks as tasks_module
from tests.conftest import LiveApp, hold_renders
from tui.app import Dashboard
from tui.client import ApiClient, StreamEvent, parse_sse
from tui.screens import DesignScreen, HelpScreen, PromptScreen, StackScreen
from tui.widgets import DesignsTable, HeaderBar, ProblemBanner, WorkersPanel

SIZE = (130, 42)


# The import contract is in tests/test_boundaries.py.


def test_sse_parser_is_tolerant() -> None:
    assert parse_sse([": heartbeat"]) is None
    event = parse_sse(["id: 7", "event: queue", 'data: {"pending": 3}'])
    assert event == StreamEvent("queue", {"pending": 3}, 7)
    assert parse_sse(["event: x", "data: not json"]) == StreamEvent("x", {}, None)
    assert parse_sse(["event: x", "data: [1, 2]"]) == StreamEvent("x", {}, None)


class TableOnly(App[None]):
    def compose(self) -> ComposeResult:
        yield DesignsTable(id="designs")


def painted_rows(table: DesignsTable) -> list[str]:
    """The table's lines as the compositor gets them (through DataTable's render caches)."""
    return [table.render_line(y).text for y in range(1, table.row_count + 1)]


@pytest.mark.asyncio
async def test_a_design_update_repaints_its_row_with_the_new_cells_and_leaves_the_others() -> None:
    designs = [
        {
            "id": f"{i:08d}-0000-0000-0000-000000000000",
            "name": f"design {i}",
            "status": "draft",
            "product": "mug",
            "version": 1,
        }
        for i in range(3)
    ]
    app = TableOnly()
    async with app.run_test(size=(100, 10)) as pilot:
        table = app.query_one(DesignsTable)
        table.rebuild(designs)
        await pilot.pause()
        before = painted_rows(table)  # fills the render caches
        assert all("draft" in line for line in before)
        assert table.update_design(dict(designs[1], status="published", version=2, render_ms=41.5))
        after = painted_rows(table)
        assert "published" in after[1] and " 42 " in after[1] and "draft" not in after[1]
        assert after[0] == before[0] and after[2] == before[2]
        assert table.update_design(dict(designs[1], status="failed", version=2))  # and again
        assert "failed" in painted_rows(table)[1]
        assert not table.update_design({"id": "not-shown", "status": "failed"})


# Pilot against a real Customify ---------------------------------------------


async def until(pilot: Pilot[Any], check: Callable[[], Any], seconds: float = 10.0) -> Any:
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        value = check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("the screen never got there")
        await pilot.pause(0.05)


def dashboard(live: LiveApp) -> Dashboard:
    return Dashboard(ApiClient(live.base_url))


def table_statuses(app: Dashboard) -> dict[str, str]:
    table = app.screen.query_one(DesignsTable)
    return {str(key.value): str(table.get_row(key)[2]) for key in table.rows}


def plain(renderable: Any) -> str:
    console = Console(width=SIZE[0], record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def banner(app: Dashboard) -> str:
    widget = app._main.query_one(ProblemBanner)
    return plain(widget.shown) if widget.display else ""


def workers_text(app: Dashboard) -> str:
    return plain(app._main.query_one(WorkersPanel).shown)


def header_text(app: Dashboard) -> str:
    return plain(app._main.query_one(HeaderBar).shown)


@pytest.mark.asyncio
async def test_loads_then_a_sample_design_arrives_and_publishes_in_place(live: LiveApp) -> None:
    first = live.design(name="already there")
    live.wait(first["id"])
    app = dashboard(live)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: first["id"] in table_statuses(app))
        assert table_statuses(app)[first["id"]] == "published"
        await until(pilot, lambda: app.state.connected)  # the page can arrive before the stream's hello
        await pilot.press("n")
        created = await until(pilot, lambda: [i for i in table_statuses(app) if i != first["id"]])
        assert live.client.get(f"/api/v1/designs/{created[0]}").status_code == 200
        await until(pilot, lambda: table_statuses(app).get(created[0]) == "published")
        table = app.screen.query_one(DesignsTable)
        assert table.get_row_index(created[0]) == 0, "newest first"
        assert table.selected_id() == created[0], "the cursor goes to the design `n` just created"
        await until(pilot, lambda: app.state.queue.get("done_per_min", 0) >= 1)


@pytest.mark.asyncio
async def test_pause_resume_and_worker_threads_from_keys(live: LiveApp) -> None:
    app = dashboard(live)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.state.queue)
        await pilot.press("p")
        await until(pilot, lambda: live.rt.consumer is not None and live.rt.consumer.paused)
        await until(pilot, lambda: "consuming is paused" in banner(app))
        await pilot.press("p")
        await until(pilot, lambda: live.rt.consumer is not None and not live.rt.consumer.paused)
        await until(pilot, lambda: banner(app) == "")
        await pilot.press("w")
        assert isinstance(app.screen, PromptScreen)
        await pilot.press("ctrl+a", "ctrl+k", "9", "9", "enter")
        assert isinstance(app.screen, PromptScreen), "99 is refused"
        await pilot.press("backspace", "backspace", "3", "enter")
        await until(pilot, lambda: live.rt.consumer is not None and live.rt.consumer.workers == 3)
        await until(pilot, lambda: len(app.state.threads()) == 3)


@pytest.mark.asyncio
async def test_retry_a_failed_design_then_delete_it(live: LiveApp, monkeypatch: pytest.MonkeyPatch) -> None:
    from customify.render import RenderError

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RenderError("the font exploded")

    monkeypatch.setattr(tasks_module, "render_job", broken)
    design = live.design(name="will fail")
    assert live.wait(design["id"])["status"] == "failed"
    monkeypatch.undo()
    app = dashboard(live)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: table_statuses(app).get(design["id"]) == "failed")
        await pilot.press("r")
        await until(pilot, lambda: table_statuses(app).get(design["id"]) == "published")
        assert live.client.get(f"/api/v1/designs/{design['id']}").json()["version"] == 2
        await pilot.press("r")  # not failed any more: refused, nothing queued
        await pilot.pause(0.3)
        assert live.client.get(f"/api/v1/designs/{design['id']}").json()["version"] == 2
        await pilot.press("d")
        await pilot.press("y")
        await until(pilot, lambda: design["id"] not in table_statuses(app))
        assert live.client.get(f"/api/v1/designs/{design['id']}").status_code == 404


@pytest.mark.asyncio
async def test_detail_screen_copy_open_and_back(live: LiveApp) -> None:
    design = live.design(name="detail me")
    live.wait(design["id"])
    app = dashboard(live)
    opened: list[str] = []
    app.open_url = lambda url, new_tab=True: opened.append(url)  # type: ignore[method-assign]
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: design["id"] in table_statuses(app))
        await pilot.press("enter")
        assert isinstance(app.screen, DesignScreen) and app.screen.design_id == design["id"]
        screen = app.screen
        await until(pilot, lambda: screen.design.get("status") == "published")
        await until(pilot, lambda: screen.query_one("#detail-tasks", DataTable).row_count >= 1)
        await until(pilot, lambda: screen.query_one("#detail-preview").image is not None)
        await pilot.press("c")
        assert app.clipboard == design["id"]
        await pilot.press("o")
        assert opened == [f"{live.base_url}/api/v1/designs/{design['id']}/preview.png"]
        await pilot.press("escape")
        assert not isinstance(app.screen, DesignScreen)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")


@pytest.mark.asyncio
async def test_filter_search_revoke_and_purge_with_typed_confirmation(live: LiveApp) -> None:
    live.client.post("/api/v1/control/pause")
    designs = [live.design(name=f"queued {i}") for i in range(3)]
    app = dashboard(live)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: len(table_statuses(app)) == 3)
        await pilot.press("slash", "q", "u", "e", "u", "e", "d", " ", "1", "enter")
        await until(pilot, lambda: list(table_statuses(app)) == [designs[1]["id"]])
        await pilot.press("x")
        await until(pilot, lambda: len(live.client.get("/api/v1/control/pending").json()) == 3)
        await until(pilot, lambda: any("revoked 1" in n.message for n in app._notifications))
        await pilot.press("escape")  # leaves the table focused; clear the search from the field
        app.screen.query_one("#search").value = ""
        await until(pilot, lambda: len(table_statuses(app)) == 3)
        await pilot.press("f")  # draft only
        await until(pilot, lambda: app.status_filter == "draft" and len(table_statuses(app)) == 3)
        await pilot.press("P")
        await until(pilot, lambda: isinstance(app.screen, PromptScreen))
        assert "3" in str(app.screen.question)
        await pilot.press("p", "u", "r", "g", "enter")
        assert isinstance(app.screen, PromptScreen), "only the whole word confirms"
        await pilot.press("e", "enter")
        await until(pilot, lambda: live.client.get("/api/v1/control/pending").json() == [])
        await until(pilot, lambda: any("purged 3" in n.message for n in app._notifications))


@pytest.mark.asyncio
async def test_stack_of_a_blocked_worker(live: LiveApp, monkeypatch: pytest.MonkeyPatch) -> None:
    release, entered = hold_renders(monkeypatch)
    design = live.design()
    assert entered.wait(5)
    app = dashboard(live)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: any(t.get("design_id") == design["id"] for t in app.state.threads()))
            await pilot.press("s")
            await until(pilot, lambda: isinstance(app.screen, StackScreen))
            assert any("release.wait" in line for line in app.screen.stack["stack"])
    finally:
        release.set()


# Liveness, made real ----------------------------------------------------------


@pytest.mark.asyncio
async def test_red_when_the_consumer_stops_while_work_waits_then_clears(live: LiveApp) -> None:
    app = dashboard(live)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.state.queue)
        assert banner(app) == ""
        live.rt.stop_consumer()
        design = live.design(name="nobody will take me")
        await until(pilot, lambda: "no live worker thread (0 of 2 beating) while 1 task(s) wait" in banner(app))
        assert "thread died" in workers_text(app)
        assert "FAILING" in header_text(app)
        live.rt.start_consumer()
        await until(pilot, lambda: table_statuses(app).get(design["id"]) == "published")
        await until(pilot, lambda: banner(app) == "")
        assert "thread died" not in workers_text(app)


@pytest.mark.asyncio
async def test_red_when_workers_beat_but_never_consume_then_clears(
    make_live: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The old system's failure: workers alive and beating, registered, answering, and consuming nothing.
    live = make_live(render={"stall_seconds": 1.0})
    real_dequeue = live.rt.huey.dequeue
    monkeypatch.setattr(live.rt.huey, "dequeue", lambda: None)
    app = dashboard(live)
    async with app.run_test(size=SIZE) as pilot:
        design = live.design(name="stuck behind a deaf consumer")
        await until(pilot, lambda: "the consumer is not consuming" in banner(app))
        assert "beats, no progress" in workers_text(app) or "beats, never finished" in workers_text(app)
        assert "1 wait" in workers_text(app)
        monkeypatch.setattr(live.rt.huey, "dequeue", real_dequeue)
        live.rt.huey.doorbell.ring(2)
        await until(pilot, lambda: table_statuses(app).get(design["id"]) == "published")
        await until(pilot, lambda: banner(app) == "")


@pytest.mark.asyncio
async def test_red_when_a_worker_is_stuck_in_a_task_then_clears(
    make_live: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    live = make_live(workers=1, render={"timeout_seconds": 1.0, "stall_seconds": 0.5})
    release, entered = hold_renders(monkeypatch)
    design = live.design(name="stuck")
    assert entered.wait(5)
    app = dashboard(live)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: "Worker-1 has run render_design_preview for" in banner(app))
            assert "past the 1 s render timeout" in banner(app)
            assert "past the timeout" in workers_text(app)
            release.set()
            await until(pilot, lambda: banner(app) == "", seconds=15)
            assert design["id"] in table_statuses(app)
    finally:
        release.set()


class Outage:
    """A TCP proxy in front of the API that can drop every connection and refuse new ones."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def up(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def down(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in list(self.writers):
            writer.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self.writers -= {writer, up_writer}


@pytest.mark.asyncio
async def test_unreachable_api_keeps_data_greyed_and_reconnects(live: LiveApp) -> None:
    design = live.design(name="survives the outage")
    live.wait(design["id"])
    outage = Outage(int(live.base_url.rsplit(":", 1)[1]))
    await outage.up()
    app = Dashboard(ApiClient(f"http://127.0.0.1:{outage.port}"))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: design["id"] in table_statuses(app) and app.state.connected)
        await outage.down()
        await until(pilot, lambda: not app.state.connected)
        assert app._main.has_class("-stale")
        assert "API unreachable" in header_text(app)
        assert design["id"] in table_statuses(app), "the last data stays on screen"
        fresh = live.design(name="made during the outage")
        await outage.up()
        await until(pilot, lambda: app.state.connected, seconds=15)
        assert not app._main.has_class("-stale")
        await until(pilot, lambda: fresh["id"] in table_statuses(app))  # replayed from Last-Event-ID
        await outage.down()


# Snapshots (fixed data, frozen clock) -------------------------------------------

T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z


def thread(name: str, state: str = "idle", **kw: Any) -> dict[str, Any]:
    base = {
        "name": name,
        "state": state,
        "task": None,
        "task_id": None,
        "design_id": None,
        "busy_for_s": None,
        "heartbeat_age_s": 0.4,
        "progress_age_s": 3.2,
    }
    base.update(kw)
    return base


def fixed_design(i: int, status: str) -> dict[str, Any]:
    return {
        "id": f"{i:08x}-0000-4000-8000-000000000000",
        "name": f"Design {i}",
        "product": "tshirt",
        "color": "#1e3a8a",
        "status": status,
        "version": 1 + i % 3,
        "render_ms": 40.0 + i if status == "published" else None,
        "error": "font 'Comic' is not shipped" if status == "failed" else None,
        "preview_url": None,
        "thumbnail_url": None,
        "preview_version": 1 if status == "published" else None,
        "created_at": f"2027-01-15T07:{59 - i:02d}:00Z",
        "updated_at": f"2027-01-15T07:{59 - i:02d}:30Z",
        "attempts": 1,
        "layers": [
            {"type": "text", "text": "HELLO", "font": "DejaVu Sans", "x": 0.5, "y": 0.2},
            {"type": "shape", "shape": "ellipse", "fill": "#f59e0b", "x": 0.5, "y": 0.6},
        ],
    }


def queue_event(threads: list[dict[str, Any]], problems: list[str], pending: int = 4) -> dict[str, Any]:
    stats = {
        "done": 120,
        "failed": 2,
        "wait_p50_ms": 12.1,
        "wait_p95_ms": 48.3,
        "wait_p99_ms": 97.0,
        "run_p50_ms": 44.2,
        "run_p95_ms": 61.0,
        "run_p99_ms": 88.5,
    }
    return {
        "kind": "queue",
        "at": T0,
        "pending": pending,
        "scheduled": 1,
        "in_flight": sum(1 for t in threads if t["state"] == "busy"),
        "windows": {
            "1m": {"render_design_preview": stats, "send_email": dict(stats, done=118, failed=0)},
            "1h": {"render_design_preview": dict(stats, done=4200)},
        },
        "throughput": [(i * 7) % 5 for i in range(60)],
        "done_per_min": 120,
        "failed_per_min": 2,
        "oldest_pending_age_s": 1.5,
        "threads": threads,
        "consumer": True,
        "concurrency": len(threads),
        "paused": False,
        "stopped": False,
        "problems": problems,
        "healthy": not problems,
        "uptime_s": 3723.0,
    }


class FakeClient(ApiClient):
    """A fixed instance; `fail_stream` turns the stream (and reloads) into refusals."""

    def __init__(self, queue: dict[str, Any], fail_stream: bool = False) -> None:
        super().__init__("http://127.0.0.1:8000")
        self.queue = queue
        self.fail_stream = fail_stream
        self.loads = 0
        self.items = [
            fixed_design(i, s)
            for i, s in enumerate(
                ["rendering", "draft", "published", "failed", "published", "published", "draft", "published"]
            )
        ]

    async def worker_status(self) -> dict[str, Any]:
        self.loads += 1
        if self.fail_stream and self.loads > 1:
            raise httpx.ConnectError("refused")
        return {
            "database": "sqlite:////srv/customify/customify.db",
            "broker": "redis://:***@cache:6379/0",
            "clock_drift_s": {"database": 0.004},
            "problems": self.queue["problems"],
        }

    async def health(self) -> dict[str, Any]:
        return {"status": "ok", "checks": {}}

    async def designs(
        self, status: str | None = None, limit: int = 100, cursor: str | None = None, every_owner: bool = False
    ) -> dict[str, Any]:
        return {"items": [d for d in self.items if status in (None, d["status"])], "next_cursor": "abc"}

    async def design(self, design_id: str, every_owner: bool = False) -> dict[str, Any] | None:
        return next((d for d in self.items if d["id"] == design_id), None)

    async def design_tasks(self, design_id: str, limit: int = 50) -> list[dict[str, Any]]:
        return [
            {
                "task_id": "t1",
                "task": "render_design_preview",
                "design_id": design_id,
                "state": "failed",
                "attempt": 1,
                "worker": "host:1/Worker-1",
                "enqueued_at": "2027-01-15T07:57:00Z",
                "started_at": "2027-01-15T07:57:00.120Z",
                "finished_at": "2027-01-15T07:57:01Z",
                "wait_ms": 120.0,
                "run_ms": 880.0,
                "error": "OperationalError: database is locked",
            },
            {
                "task_id": "t2",
                "task": "render_design_preview",
                "design_id": design_id,
                "state": "succeeded",
                "attempt": 2,
                "worker": "host:1/Worker-2",
                "enqueued_at": "2027-01-15T07:57:02Z",
                "started_at": "2027-01-15T07:57:03.500Z",
                "finished_at": "2027-01-15T07:57:03.545Z",
                "wait_ms": 1500.0,
                "run_ms": 45.0,
                "error": None,
            },
        ]

    async def thumbnail(self, design_id: str) -> bytes | None:
        image = Image.new("RGB", (300, 300), "#e5e7eb")
        draw = ImageDraw.Draw(image)
        draw.rectangle((60, 40, 240, 280), fill="#1e3a8a")
        draw.ellipse((100, 150, 200, 200), fill="#f59e0b")
        out = io.BytesIO()
        image.save(out, "PNG")
        return out.getvalue()

    async def events(self, last_event_id: int | None = None) -> AsyncIterator[StreamEvent]:
        if self.fail_stream and self.loads > 1:
            raise httpx.ConnectError("refused")
        yield StreamEvent("hello", {"kind": "hello", "at": T0, "missed": False})
        for i, (kind, extra) in enumerate(
            [
                ("task.started", {"task": "render_design_preview", "worker": "Worker-1", "wait_ms": 12.0}),
                ("design.status", {"status": "rendering", "version": 1}),
                ("task.succeeded", {"task": "send_email", "worker": "Worker-2", "run_ms": 51.0}),
                (
                    "task.failed",
                    {
                        "task": "render_design_preview",
                        "worker": "Worker-2",
                        "run_ms": 880.0,
                        "error": "RenderError: font 'Comic' is not shipped",
                    },
                ),
            ]
        ):
            yield StreamEvent(kind, {"kind": kind, "at": T0 - 5 + i, "design_id": self.items[0]["id"], **extra}, i + 1)
        yield StreamEvent("queue", self.queue, 10)
        if self.fail_stream:
            raise httpx.ReadError("connection reset by peer")
        await asyncio.Event().wait()

    async def aclose(self) -> None:
        await super().aclose()


class FrozenClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


HEALTHY = queue_event(
    [
        thread(
            "Worker-1",
            "busy",
            task="render_design_preview",
            design_id="00000000-0000-4000-8000-000000000000",
            busy_for_s=0.8,
            heartbeat_age_s=0.8,
            progress_age_s=0.9,
        ),
        thread("Worker-2"),
    ],
    [],
)
STALLED = queue_event(
    [
        thread("Worker-1", heartbeat_age_s=0.3, progress_age_s=95.0),
        thread("Worker-2", heartbeat_age_s=0.6, progress_age_s=95.0),
    ],
    [
        "4 task(s) wait but no worker has finished anything for 95 s although 2 worker thread(s) "
        "beat: the consumer is not consuming"
    ],
)


def snapshot_app(queue: dict[str, Any], fail_stream: bool = False) -> tuple[Dashboard, FrozenClock]:
    clock = FrozenClock()
    app = Dashboard(FakeClient(queue, fail_stream), clock=clock, live_clock=False)
    app.backoff_base = 3600.0  # one attempt, then a long wait: a stable screen
    return app, clock


async def settle(pilot: Pilot[Any], check: Callable[[], Any]) -> None:
    await until(pilot, check)
    await pilot.pause(0.3)
    app = pilot.app
    assert isinstance(app, Dashboard)
    app.redraw(frozenset({"all"}))
    await pilot.pause()


def test_snapshot_main_screen(snap_compare: Any) -> None:
    app, _ = snapshot_app(HEALTHY)

    async def ready(pilot: Pilot[Any]) -> None:
        await settle(pilot, lambda: app.state.queue and app._main.query_one(DesignsTable).row_count == 8)

    assert snap_compare(app, terminal_size=SIZE, run_before=ready)


def test_snapshot_stalled(snap_compare: Any) -> None:
    app, _ = snapshot_app(STALLED)

    async def ready(pilot: Pilot[Any]) -> None:
        await settle(pilot, lambda: app.state.queue and app._main.query_one(DesignsTable).row_count == 8)

    assert snap_compare(app, terminal_size=SIZE, run_before=ready)


def test_snapshot_disconnected(snap_compare: Any) -> None:
    app, clock = snapshot_app(HEALTHY, fail_stream=True)

    async def ready(pilot: Pilot[Any]) -> None:
        await until(pilot, lambda: app.state.attempt >= 1)
        clock.now = T0 + 25  # the last data is 25 s old
        await settle(pilot, lambda: app._main.query_one(DesignsTable).row_count == 8)

    assert snap_compare(app, terminal_size=SIZE, run_before=ready)


def test_snapshot_detail_screen(snap_compare: Any) -> None:
    app, _ = snapshot_app(HEALTHY)

    async def ready(pilot: Pilot[Any]) -> None:
        await until(pilot, lambda: app._main.query_one(DesignsTable).row_count == 8)
        published = next(d for d in app.state.designs.values() if d["status"] == "published")
        app.push_screen(DesignScreen(published["id"], app.client, app.state))
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, DesignScreen)
        await until(pilot, lambda: screen.query("#detail-preview") and screen.query_one("#detail-preview").image)
        await pilot.pause(0.3)

    assert snap_compare(app, terminal_size=SIZE, run_before=ready)


@pytest.mark.asyncio
async def test_a_refused_key_says_so_and_a_customer_key_shows_only_their_designs(live: LiveApp) -> None:
    from customify import records

    with live.rt.transaction() as session:
        _, alice = records.create_user(session, "alice@example.com")
    theirs = live.design(name="the dev user's")
    mine = live.client.post(
        "/api/v1/designs",
        json={"name": "alice's", "product": "mug", "color": "#ffffff", "layers": []},
        headers={"Authorization": f"Bearer {alice}"},
    )
    app = Dashboard(ApiClient(live.base_url, "cfy_not-a-key"))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: "KEY REFUSED" in header_text(app))
        assert "the API refused the key: unknown API key" in header_text(app)
        assert "UNREACHABLE" not in header_text(app)
    app = Dashboard(ApiClient(live.base_url, alice))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.state.connected and mine.json()["id"] in table_statuses(app))
        assert theirs["id"] not in table_statuses(app)
        assert "customer key: your designs only" in header_text(app)


@pytest.mark.asyncio
async def test_ctrl_c_quits_like_any_server(live: LiveApp) -> None:
    app = dashboard(live)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.loaded.is_set())
        await pilot.press("ctrl+c")
        await until(pilot, lambda: app._exit)
    assert app.return_code == 0


def test_header_says_connecting_until_something_fails_even_with_the_first_page_on_screen() -> None:
    from tui.state import DashboardState
    from tui.widgets import HeaderBar

    state = DashboardState("http://127.0.0.1:8000")
    state.received_at = 1000.0  # the first page arrived over HTTP; the event stream is not open yet
    header = HeaderBar()
    header.show(state, 1000.5)
    assert "CONNECTING" in plain(header.shown) and "connecting to the event stream" in plain(header.shown)
    assert "UNREACHABLE" not in plain(header.shown)
    state.attempt, state.error = 1, "connection refused"
    header.show(state, 1001.0)
    assert "UNREACHABLE" in plain(header.shown) and "API unreachable: connection refused" in plain(header.shown)


def test_state_reads_the_servers_problems_and_severities() -> None:
    from tui.state import DashboardState

    stalled = {
        "check": "consumer",
        "severity": "degraded",
        "thread": "Worker-1",
        "pid": 4242,
        "seconds": 12.0,
        "detail": "no progress: Worker-1 has made no progress for 12 s running render_design_preview",
    }
    state = DashboardState("http://x", queue={"problems": [stalled], "pending": 3})
    assert state.healthy() is True and state.status_word() == "degraded"
    assert state.problems() == [stalled["detail"]]
    reason = state.thread_reason({"name": "Worker-1", "state": "busy"})
    assert reason == ("bad", "no progress 12s, helper 4242 frozen")
    assert state.thread_reason({"name": "Worker-2", "state": "busy"}) == ("ok", "working")
    failing = dict(stalled, severity="failing")
    state.queue = {"problems": [failing]}
    assert state.healthy() is False and state.status_word() == "failing"
    state.queue = {"problems": ["an older server's words"]}  # strings still read
    assert state.problems() == ["an older server's words"] and state.healthy() is False


@pytest.mark.asyncio
async def test_an_operator_switches_to_every_users_designs_and_back(live: LiveApp) -> None:
    from customify import records

    with live.rt.transaction() as session:
        _, alice = records.create_user(session, "alice@example.com")
    mine = live.design(name="the dev user's")
    app = dashboard(live)  # the dev user: an operator
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: mine["id"] in table_statuses(app))
        theirs = live.client.post(
            "/api/v1/designs",
            json={"name": "alice's", "product": "mug", "color": "#ffffff", "layers": []},
            headers={"Authorization": f"Bearer {alice}"},
        )
        await pilot.pause(1.0)  # the stream carries it; still not in the dev user's own table
        assert theirs.json()["id"] not in table_statuses(app)
        await pilot.press("a")
        await until(pilot, lambda: theirs.json()["id"] in table_statuses(app) and mine["id"] in table_statuses(app))
        await until(pilot, lambda: table_statuses(app)[theirs.json()["id"]] == "published")  # live, another's
        assert "every user's" in str(app._main.query_one("#filter-label", Label).render())
        await pilot.press("a")
        await until(pilot, lambda: theirs.json()["id"] not in table_statuses(app))
    app = Dashboard(ApiClient(live.base_url, alice))  # a customer: not theirs to see
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.loaded.is_set() and app.state.connected)
        await pilot.press("a")
        await pilot.pause(0.5)
        assert mine["id"] not in table_statuses(app) and not app.state.every_owner
