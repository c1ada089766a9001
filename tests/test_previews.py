"""Instant previews: the same renderer as the final render, at the size asked for, cached, limited."""

from __future__ import annotations

import base64
import json
import threading
from typing import Any

import pytest
from PIL import ImageChops

from customify.render import PRODUCTS
from customify.render.pool import RenderPool
from tests.conftest import LiveApp, assert_color_near, open_image, png_bytes

SPEC = {
    "name": "Team shirt",
    "product": "tshirt",
    "color": "#1e3a8a",
    "layers": [
        {"type": "text", "text": "HELLO", "weight": "bold", "size": 0.12, "color": "#ffffff", "x": 0.5, "y": 0.2},
        {
            "type": "shape",
            "shape": "ellipse",
            "x": 0.5,
            "y": 0.6,
            "width": 0.4,
            "height": 0.2,
            "fill": "#f59e0b",
            "stroke": "#000000",
            "stroke_width": 0.005,
        },
    ],
}


def test_png_at_canvas_size_is_pixel_identical_to_the_published_preview(live: LiveApp) -> None:
    upload = live.client.post("/api/v1/assets", files={"file": ("a.png", png_bytes((80, 60), (200, 0, 0, 255)))})
    spec = {
        **SPEC,
        "layers": [
            *SPEC["layers"],
            {"type": "image", "asset_id": upload.json()["id"], "x": 0.3, "y": 0.8, "width": 0.2},
        ],
    }
    canvas = max(PRODUCTS["tshirt"].canvas)
    instant = live.client.post("/api/v1/previews", params={"format": "png", "size": canvas}, json=spec)
    assert instant.status_code == 200, instant.text
    assert instant.headers["content-type"] == "image/png"
    design = live.design(**spec)
    assert live.wait(design["id"])["status"] == "published"
    published = live.client.get(f"/api/v1/designs/{design['id']}/preview.png").content
    a, b = open_image(instant.content), open_image(published)
    assert a.size == b.size == PRODUCTS["tshirt"].canvas
    assert ImageChops.difference(a.convert("RGB"), b.convert("RGB")).getbbox() is None


def test_default_is_webp_at_600_drawn_at_that_size(live: LiveApp) -> None:
    response = live.client.post("/api/v1/previews", json=SPEC)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/webp"
    image = open_image(response.content)
    assert image.format == "WEBP" and max(image.size) == 600
    # pixel probes: the orange ellipse in the middle of the print area, the shirt's blue beside it
    product = PRODUCTS["tshirt"]
    scale = 600 / max(product.canvas)
    left, top, right, bottom = product.print_area
    cx = (left + (right - left) * 0.5) * scale
    cy = (top + (bottom - top) * 0.6) * scale
    assert_color_near(image.convert("RGB").getpixel((int(cx), int(cy))), (245, 158, 11), 50)
    jpeg = live.client.post("/api/v1/previews", params={"format": "jpeg", "size": 200}, json=SPEC)
    assert jpeg.headers["content-type"] == "image/jpeg" and max(open_image(jpeg.content).size) == 200


def test_etag_cache_and_get_for_img_src(live: LiveApp) -> None:
    first = live.client.post("/api/v1/previews", json=SPEC)
    etag = first.headers["etag"]
    renamed = live.client.post("/api/v1/previews", json={**SPEC, "name": "other name"})
    assert renamed.headers["etag"] == etag and renamed.content == first.content  # the name draws nothing
    other = live.client.post("/api/v1/previews", json={**SPEC, "color": "#ffffff"})
    assert other.headers["etag"] != etag
    assert live.client.post("/api/v1/previews", params={"size": 300}, json=SPEC).headers["etag"] != etag
    assert live.client.post("/api/v1/previews", json=SPEC, headers={"If-None-Match": etag}).status_code == 304
    encoded = base64.urlsafe_b64encode(json.dumps(SPEC).encode()).decode().rstrip("=")
    got = live.client.get("/api/v1/previews", params={"spec": encoded})
    assert got.status_code == 200 and got.headers["etag"] == etag and got.content == first.content
    # no design row, no task
    assert live.client.get("/api/v1/designs").json()["items"] == []


def test_bad_input_is_the_design_validation(live: LiveApp) -> None:
    def problem(response: Any, status: int) -> dict[str, Any]:
        assert response.status_code == status, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        return response.json()  # type: ignore[no-any-return]

    bad_font = {**SPEC, "layers": [{"type": "text", "text": "x", "font": "Comic", "x": 0.5, "y": 0.5}]}
    body = problem(live.client.post("/api/v1/previews", json=bad_font), 422)
    assert body["errors"][0]["pointer"] == "/layers/0/font"
    assert problem(live.client.post("/api/v1/designs", json=bad_font), 422)["errors"] == body["errors"]
    problem(live.client.post("/api/v1/previews", json={**SPEC, "product": "sock"}), 422)
    problem(live.client.post("/api/v1/previews", params={"size": 5000}, json=SPEC), 422)
    problem(live.client.post("/api/v1/previews", params={"format": "gif"}, json=SPEC), 400)
    problem(live.client.get("/api/v1/previews", params={"spec": "!!!"}), 400)
    wrong = base64.urlsafe_b64encode(json.dumps({**SPEC, "color": 3}).encode()).decode()
    assert problem(live.client.get("/api/v1/previews", params={"spec": wrong}), 422)["errors"][0]["pointer"] == "/color"


def test_beyond_max_concurrent_is_a_429(make_live: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    app = make_live(previews={"max_concurrent": 1}, render={"pool": "thread"})
    release, entered = threading.Event(), threading.Event()
    real = RenderPool.preview

    def held(self: RenderPool, job: Any, deadline: float) -> bytes:
        entered.set()
        release.wait(30)
        return real(self, job, deadline)

    monkeypatch.setattr(RenderPool, "preview", held)
    first: list[int] = []
    thread = threading.Thread(target=lambda: first.append(app.client.post("/api/v1/previews", json=SPEC).status_code))
    thread.start()
    try:
        assert entered.wait(20)
        busy = app.client.post("/api/v1/previews", json={**SPEC, "color": "#ffffff"})
        assert busy.status_code == 429 and busy.headers["retry-after"] == "1"
        assert "previews.max_concurrent" in busy.json()["detail"]
    finally:
        release.set()
        thread.join(30)
    assert first == [200]


def test_per_minute_limit_is_a_429_with_retry_after(make_live: Any) -> None:
    app = make_live(previews={"per_minute": 2}, render={"pool": "thread"})
    for color in ("#ffffff", "#1e3a8a"):
        assert app.client.post("/api/v1/previews", json={**SPEC, "color": color}).status_code == 200
    assert app.client.post("/api/v1/previews", json={**SPEC, "color": "#ffffff"}).status_code == 200  # cached
    limited = app.client.post("/api/v1/previews", json={**SPEC, "color": "#111827"})
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    assert "previews.per_minute" in limited.json()["detail"]


def test_another_users_asset_is_refused_even_when_cached(live: LiveApp) -> None:
    from customify import records

    with live.rt.transaction() as session:
        _, alice = records.create_user(session, "alice@example.com")
    as_alice = {"Authorization": f"Bearer {alice}"}
    upload = live.client.post("/api/v1/assets", headers=as_alice, files={"file": ("a.png", png_bytes())})
    spec = {**SPEC, "layers": [{"type": "image", "asset_id": upload.json()["id"], "x": 0.5, "y": 0.5, "width": 0.3}]}
    assert live.client.post("/api/v1/previews", headers=as_alice, json=spec).status_code == 200
    refused = live.client.post("/api/v1/previews", json=spec)  # the dev user: someone else
    assert refused.status_code == 422 and refused.json()["errors"][0]["pointer"] == "/layers/0/asset_id"
