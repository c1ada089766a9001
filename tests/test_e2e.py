"""The old system's six checks, against the real app on a loopback port, plus the flows around them."""

from __future__ import annotations

import asyncio
import email
import email.policy
import time
from typing import Any

import httpx
import pytest

from customify import tasks as tasks_module
from customify.render.products import PRODUCTS
from tests.conftest import LiveApp, assert_color_near, eventually, hold_renders, open_image

BLUE = (0x1E, 0x3A, 0x8A)
WHITE = (255, 255, 255)


def test_1_debug_task_round_trips(live: LiveApp) -> None:
    response = live.client.post("/api/v1/system/debug-task")
    assert response.status_code == 200
    body = response.json()
    assert body["result"]["pong"] is True
    assert body["result"]["worker"].startswith("Worker-")
    assert body["roundtrip_ms"] < 5000


def test_debug_task_504_without_consumer(make_live: Any) -> None:
    app = make_live(consumer=False)
    started = time.monotonic()
    response = app.client.post("/api/v1/system/debug-task")
    assert response.status_code == 504
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "no worker answered" in response.json()["detail"]
    assert time.monotonic() - started < 8


@pytest.mark.slow
def test_debug_task_504_names_busy_threads_and_a_pause(make_live: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The 504 says why nothing answered when this process can tell: every thread busy, or a pause."""
    release, entered = hold_renders(monkeypatch)
    app = make_live(workers=1)
    app.design()
    assert entered.wait(10)
    busy = app.client.post("/api/v1/system/debug-task")
    assert busy.status_code == 504
    assert "all 1 worker thread(s) of this process are busy" in busy.json()["detail"]
    assert app.client.post("/api/v1/control/pause").status_code == 200
    release.set()
    paused = app.client.post("/api/v1/system/debug-task")
    assert paused.status_code == 504
    assert "paused by an operator" in paused.json()["detail"]


def test_3_design_published_with_preview_pixels(live: LiveApp) -> None:
    created = live.design()
    assert created["status"] == "draft"
    assert created["version"] == 1
    done = live.wait(created["id"], 3)
    assert done["status"] == "published", done
    assert done["preview_url"].startswith(live.base_url)
    assert done["preview_version"] == 1 and done["render_ms"] > 0

    preview = live.client.get(done["preview_url"])
    assert preview.status_code == 200 and preview.headers["content-type"] == "image/png"
    assert preview.headers["etag"]
    image = open_image(preview.content).convert("RGB")
    product = PRODUCTS["tshirt"]
    assert image.size == product.canvas
    left, top, _right, bottom = product.print_area
    # The garment is the design's colour below the text, the text is white where the spec puts it.
    assert_color_near(image.getpixel((600, 750)), BLUE, tolerance=45)  # type: ignore[arg-type]
    text_y = top + int(0.2 * (bottom - top))
    box = image.crop((600 - 100, text_y - 30, 600 + 100, text_y + 30))
    white = sum(1 for px in box.get_flattened_data() if min(px) > 235)  # type: ignore[union-attr]
    assert white > 500, f"only {white} white text pixels near ({600}, {text_y})"
    # No text outside the print area on that row.
    outside = image.crop((290, text_y - 30, left - 5, text_y + 30))
    assert not any(min(px) > 235 for px in outside.get_flattened_data())  # type: ignore[union-attr]

    thumb = live.client.get(done["thumbnail_url"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/webp"
    small = open_image(thumb.content)
    assert small.format == "WEBP" and max(small.size) == 300
    assert_color_near(small.convert("RGB").getpixel((150, 190)), BLUE, tolerance=45)  # type: ignore[arg-type]

    again = live.client.get(done["preview_url"], headers={"If-None-Match": preview.headers["etag"]})
    assert again.status_code == 304
    # HEAD: the same headers, no body (link checkers and caches ask this way).
    for url, response in ((done["preview_url"], preview), (done["thumbnail_url"], thumb)):
        headed = live.client.head(url)
        assert headed.status_code == 200 and headed.content == b""
        assert headed.headers["etag"] == response.headers["etag"]
        assert headed.headers["content-type"] == response.headers["content-type"]
        assert int(headed.headers["content-length"]) == len(response.content)


def test_4_health_ok_then_503_when_consumer_stops(live: LiveApp) -> None:
    ok = live.client.get("/api/v1/system/health")
    assert ok.status_code == 200
    assert ok.json()["status"] == "ok"
    assert set(ok.json()["checks"]) >= {"database", "queue", "consumer"}
    assert live.client.head("/api/v1/system/health").status_code == 200  # monitors that ask with HEAD
    live.rt.stop_consumer()
    bad = live.client.get("/api/v1/system/health")
    assert bad.status_code == 503
    assert bad.json()["checks"]["consumer"]["ok"] is False
    assert "no live worker" in bad.json()["checks"]["consumer"]["detail"]
    headed = live.client.head("/api/v1/system/health")
    assert headed.status_code == 503 and headed.content == b""


def test_5_worker_status_shows_an_inflight_render(live: LiveApp, monkeypatch: pytest.MonkeyPatch) -> None:
    release, entered = hold_renders(monkeypatch, 10)
    design = live.design()
    assert entered.wait(5)
    status = live.client.get("/api/v1/system/worker-status").json()
    release.set()
    assert status["workers_available"] is True
    assert {"debug_task", "render_design_preview", "send_email"} <= set(status["registered_tasks"])
    (worker,) = status["workers"].values()
    assert worker["pid"] > 0 and worker["concurrency"] == 2 and len(worker["threads"]) == 2
    assert [a["design_id"] for a in status["active_tasks"]] == [design["id"]]
    assert status["active_tasks"][0]["task"] == "render_design_preview"
    assert status["broker"].startswith("sqlite:///")
    assert "pending" in status["queue"]
    assert live.wait(design["id"])["status"] == "published"


@pytest.mark.slow
def test_6_load_200_designs_all_published(live: LiveApp) -> None:
    async def post_all() -> list[str]:
        limits = httpx.Limits(max_connections=20)
        async with httpx.AsyncClient(base_url=live.base_url, timeout=60, limits=limits) as client:

            async def one(i: int) -> str:
                response = await client.post(
                    "/api/v1/designs",
                    json={
                        "name": f"load {i}",
                        "product": "mug",
                        "color": "#ffffff",
                        "layers": [{"type": "text", "text": f"#{i}", "size": 0.2, "color": "#b91c1c"}],
                    },
                )
                assert response.status_code == 201, response.text
                return str(response.json()["id"])

            return await asyncio.gather(*(one(i) for i in range(200)))

    ids = asyncio.run(post_all())
    assert len(set(ids)) == 200
    deadline = time.monotonic() + 120
    statuses: dict[str, str] = {}
    for design_id in ids:
        left = max(1, min(30, int(deadline - time.monotonic())))
        statuses[design_id] = live.wait(design_id, left)["status"]
    assert set(statuses.values()) == {"published"}, {s: list(statuses.values()).count(s) for s in statuses.values()}
    listing = live.client.get("/api/v1/designs", params={"status": "published", "limit": 200}).json()
    assert len(listing["items"]) == 200


def test_idle_consumer_wakes_on_enqueue(make_live: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # With polling capped at 30 s, only the in-process doorbell starts the render at once: after the
    # create, a ring wakes an idle worker (its wait returns True), not its poll timer (a timed check
    # of the same failed on a loaded machine).
    from customify.queue import Doorbell

    monkeypatch.setattr("customify.queue.POLL_MAX", 30.0)
    wakes: list[tuple[float, bool]] = []
    real_wait = Doorbell.wait

    def wait(self: Doorbell, timeout: float) -> bool:
        rung = real_wait(self, timeout)
        wakes.append((time.monotonic(), rung))
        return rung

    monkeypatch.setattr(Doorbell, "wait", wait)
    app = make_live()
    assert app.rt.consumer is not None
    # Both idle workers back off (their next poll 1.5 s or more away) before the design arrives.
    eventually(lambda: all(worker.delay >= 1.5 for worker, _ in app.rt.consumer.worker_threads))
    created = time.monotonic()
    design = app.design()
    done = app.wait(design["id"], 10)
    assert done["status"] == "published"
    assert any(rung for at, rung in wakes if at >= created), wakes[-6:]
    runs = app.client.get("/api/v1/system/tasks", params={"design_id": design["id"]}).json()
    assert runs[0]["wait_ms"] is not None


def test_patch_rerenders_and_old_render_never_overwrites(live: LiveApp, monkeypatch: pytest.MonkeyPatch) -> None:
    first = live.design()
    assert live.wait(first["id"])["status"] == "published"
    v1_preview = live.client.get(
        first["preview_url"] if first["preview_url"] else f"/api/v1/designs/{first['id']}/preview.png"
    ).content

    real = tasks_module.render_job
    release, entered = hold_renders(monkeypatch, 10)
    patched = live.client.patch(f"/api/v1/designs/{first['id']}", json={"color": "#b91c1c"})
    assert patched.status_code == 200 and patched.json()["version"] == 2
    assert entered.wait(5)  # v2 is rendering and held
    # While v2 renders, the v1 preview is still served.
    still = live.client.get(f"/api/v1/designs/{first['id']}/preview.png")
    assert still.status_code == 200 and still.content == v1_preview
    # A v3 arrives before v2 finishes: v2 must not publish over it.
    patched3 = live.client.patch(f"/api/v1/designs/{first['id']}", json={"color": "#15803d"})
    assert patched3.json()["version"] == 3
    monkeypatch.setattr(tasks_module, "render_job", real)
    release.set()
    done = eventually(
        lambda: (d := live.wait(first["id"]))["preview_version"] == 3 and d, describe=lambda: live.wait(first["id"])
    )
    assert done["status"] == "published" and done["preview_version"] == 3
    image = open_image(live.client.get(f"/api/v1/designs/{first['id']}/preview.png").content).convert("RGB")
    assert_color_near(image.getpixel((600, 750)), (0x15, 0x80, 0x3D), tolerance=45)  # type: ignore[arg-type]

    def renders() -> list[dict[str, Any]]:
        runs = live.client.get("/api/v1/system/tasks", params={"design_id": first["id"]}).json()
        return [r for r in runs if r["task"] == "render_design_preview"]

    # Once every render of it has ended (the held v2 one too), v3 is still what is published.
    eventually(lambda: len(renders()) >= 3 and all(r["state"] != "started" for r in renders()), describe=renders)
    assert live.wait(first["id"])["preview_version"] == 3


def test_idempotent_post(live: LiveApp) -> None:
    body = {"name": "Idem", "product": "tshirt", "color": "#ffffff", "layers": []}
    headers = {"Idempotency-Key": "order-42"}
    a = live.client.post("/api/v1/designs", json=body, headers=headers)
    b = live.client.post("/api/v1/designs", json=body, headers=headers)
    assert a.status_code == b.status_code == 201
    assert a.json()["id"] == b.json()["id"]
    assert b.headers["idempotent-replayed"] == "true"
    other = live.client.post("/api/v1/designs", json=dict(body, name="Other"), headers=headers)
    assert other.status_code == 422 and "Idempotency-Key" in other.json()["detail"]
    assert len(live.client.get("/api/v1/designs").json()["items"]) == 1


def test_rerender_after_failure_and_delete(live: LiveApp) -> None:
    design = live.design()
    assert live.wait(design["id"])["status"] == "published"
    again = live.client.post(f"/api/v1/designs/{design['id']}/render")
    assert again.status_code == 202 and again.json()["version"] == 2
    assert live.wait(design["id"])["preview_version"] == 2
    folder = live.rt.files.renders / design["id"]
    assert sorted(p.name.split("-")[0] for p in folder.iterdir()) == ["v2", "v2"]  # v1 files removed
    gone = live.client.delete(f"/api/v1/designs/{design['id']}")
    assert gone.status_code == 204
    assert live.client.get(f"/api/v1/designs/{design['id']}").status_code == 404
    assert not folder.exists()


def test_mail_written_to_outbox_once(live: LiveApp) -> None:
    design = live.design()
    assert live.wait(design["id"])["status"] == "published"
    (mail,) = eventually(lambda: list(live.rt.files.outbox.glob("*.eml")))
    message = email.message_from_bytes(mail.read_bytes(), policy=email.policy.default)
    assert message["Subject"] == "Your design \u201cTeam shirt\u201d is ready"
    assert message["To"] == "dev@localhost"
    assert message["Message-ID"].startswith("<design-ready.")
    body = message.get_body(preferencelist=("plain",))
    assert body is not None and f"/api/v1/designs/{design['id']}/preview.png" in body.get_content()
    (attachment,) = list(message.iter_attachments())
    assert attachment.get_content_type() == "image/webp"
    assert open_image(attachment.get_content()).size[0] == 300


def test_pagination_newest_first(live: LiveApp) -> None:
    ids = [live.design(name=f"d{i}", layers=[])["id"] for i in range(5)]
    page1 = live.client.get("/api/v1/designs", params={"limit": 2}).json()
    page2 = live.client.get("/api/v1/designs", params={"limit": 2, "cursor": page1["next_cursor"]}).json()
    page3 = live.client.get("/api/v1/designs", params={"limit": 2, "cursor": page2["next_cursor"]}).json()
    seen = [d["id"] for d in page1["items"] + page2["items"] + page3["items"]]
    assert seen == list(reversed(ids))
    assert page3["next_cursor"] is None
