"""Fair sharing between customers, the create rate limit and the render cost limit (issue 12, item 3)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from customify import records
from tests.conftest import LiveApp, eventually, hold_renders, png_bytes
from tests.test_api import GOOD, problem
from tests.test_postgres import REDIS_URL, _reachable, pg_database, redis_queue_name

SERVERS = _reachable(5432) and _reachable(6379)


def customer(app: LiveApp, email: str) -> dict[str, str]:
    with app.rt.transaction() as session:
        _, key = records.create_user(session, email)
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.slow), pytest.param("redis", marks=pytest.mark.slow)]
)
def queue_backend(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    if request.param == "sqlite":
        yield {}
        return
    if not SERVERS:
        pytest.skip("PostgreSQL and Redis on 127.0.0.1 are needed")
    with ExitStack() as stack:
        url = stack.enter_context(pg_database())
        name = stack.enter_context(redis_queue_name())
        yield {"database_url": url, "queue_url": url if request.param == "postgres" else REDIS_URL, "queue_name": name}


def test_one_customer_cannot_hold_every_worker(
    make_live: Callable[..., LiveApp], queue_backend: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two workers, so one render in flight per customer while another waits: B's design is drawn
    next to A's first, not after A's whole backlog (today: A's first two hold both workers)."""
    release, _ = hold_renders(monkeypatch, timeout=60)
    app = make_live(consumer=False, workers=2, **queue_backend)  # the queue fills before a worker starts
    alice, bob = customer(app, "alice@example.com"), customer(app, "bob@example.com")
    theirs = [
        app.client.post("/api/v1/designs", json=dict(GOOD, name=f"A{n}"), headers=alice).json()["id"] for n in range(4)
    ]
    mine = app.client.post("/api/v1/designs", json=dict(GOOD, name="B"), headers=bob).json()["id"]
    app.rt.start_consumer()
    try:

        def rendering() -> set[str]:
            with app.rt.transaction() as session:
                return {d for d in [*theirs, mine] if records.get_design(session, None, d).status == "rendering"}  # type: ignore[union-attr]

        held = eventually(lambda: found if len(found := rendering()) == 2 else None, 30)
        assert mine in held and len(held & set(theirs)) == 1, "B's design waits behind A's backlog"
    finally:
        release.set()
    for design_id in [*theirs, mine]:
        headers = bob if design_id == mine else alice
        done = app.client.get(f"/api/v1/designs/{design_id}", params={"wait": 30}, headers=headers).json()
        assert done["status"] == "published", done  # A's wait their turn, then all are drawn


def test_alone_a_customer_uses_every_worker(make_live: Callable[..., LiveApp], monkeypatch: pytest.MonkeyPatch) -> None:
    release, _ = hold_renders(monkeypatch, timeout=60)
    app = make_live(workers=2)
    alice = customer(app, "alice@example.com")
    ids = [app.client.post("/api/v1/designs", json=GOOD, headers=alice).json()["id"] for _ in range(3)]
    try:

        def rendering() -> int:
            with app.rt.transaction() as session:
                return sum(records.get_design(session, None, d).status == "rendering" for d in ids)  # type: ignore[union-attr]

        eventually(lambda: rendering() == 2, 30)  # nobody else waits: no worker stays idle
    finally:
        release.set()


def test_create_rate_limit_is_429_with_retry_after(make_live: Callable[..., LiveApp]) -> None:
    app = make_live(consumer=False, limits={"designs_per_minute": 3})
    alice, bob = customer(app, "alice@example.com"), customer(app, "bob@example.com")
    for _ in range(3):
        assert app.client.post("/api/v1/designs", json=GOOD, headers=alice).status_code == 201
    response = app.client.post("/api/v1/designs", json=GOOD, headers=alice)
    body = problem(response, 429)
    assert "limits.designs_per_minute = 3" in body["detail"]
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert app.client.post("/api/v1/designs", json=GOOD, headers=bob).status_code == 201  # per user
    assert app.client.post("/api/v1/designs", json=GOOD).status_code == 201  # the operator (dev user)
    assert len(app.client.get("/api/v1/designs", headers=alice).json()["items"]) == 3


HEAVY_TEXT: dict[str, Any] = {
    "type": "text",
    "text": ("lorem ipsum dolor sit amet " * 19)[:500],
    "size": 0.05,
    "width": 1.0,
    "rotation": 33,
}


def test_a_design_too_costly_to_render_is_refused_at_create(live: LiveApp) -> None:
    heavy = dict(GOOD, product="poster", color="#ffffff", layers=[HEAVY_TEXT] * 20)
    body = problem(live.client.post("/api/v1/designs", json=heavy), 422)
    assert "limits.max_render_megapixels = 60" in body["detail"] and body["errors"][0]["pointer"] == "/layers"
    assert live.client.get("/api/v1/designs").json()["items"] == []
    fine = dict(heavy, layers=[HEAVY_TEXT] * 3)
    assert live.client.post("/api/v1/designs", json=fine).status_code == 201
    created = live.design(product="poster", color="#ffffff")
    patched = live.client.patch(f"/api/v1/designs/{created['id']}", json={"layers": [HEAVY_TEXT] * 20})
    assert "limits.max_render_megapixels" in problem(patched, 422)["detail"]


def test_image_pixels_count_in_the_cost(make_live: Callable[..., LiveApp]) -> None:
    app = make_live(consumer=False, limits={"max_render_megapixels": 8})
    asset = app.client.post("/api/v1/assets", files={"file": ("big.png", png_bytes((2500, 2500)), "image/png")})
    assert asset.status_code == 201, asset.text
    layer = {"type": "image", "asset_id": asset.json()["id"], "width": 0.5}
    body = problem(app.client.post("/api/v1/designs", json=dict(GOOD, layers=[layer] * 3)), 422)
    assert "limits.max_render_megapixels = 8" in body["detail"]
    assert app.client.post("/api/v1/designs", json=dict(GOOD, layers=[layer])).status_code == 201
