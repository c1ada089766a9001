"""Bad input gets a clear 4xx problem+json naming the field or the limit; users only see their own designs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from customify import records
from tests.conftest import LiveApp, serve

GOOD: dict[str, Any] = {
    "name": "Shirt",
    "product": "tshirt",
    "color": "#1e3a8a",
    "layers": [{"type": "text", "text": "HI"}],
}


def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status and body["title"] and body["detail"]
    assert "Traceback" not in response.text
    return body  # type: ignore[no-any-return]


def pointers(body: dict[str, Any]) -> list[str]:
    return [e["pointer"] for e in body.get("errors", [])]


def with_layer(**layer: Any) -> dict[str, Any]:
    return dict(GOOD, layers=[layer])


@pytest.fixture(scope="module")
def refusing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApp]:
    """One app for this module's tests that only send what it refuses, or only read: nothing they do
    changes what another of them sees (those that check nothing was written see every refusal)."""
    with serve(tmp_path_factory.mktemp("refusing")) as app:
        yield app


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        (dict(GOOD, product="spaceship"), "/product"),
        (dict(GOOD, color="blue"), "/color"),
        (dict(GOOD, color="#123456"), "/color"),  # not offered for this product
        (dict(GOOD, name=""), "/name"),
        (dict(GOOD, name="x" * 201), "/name"),
        (with_layer(type="text", text="HI", font="Comic Sans"), "/layers/0/font"),
        (with_layer(type="text", text="HI", font="/etc/passwd"), "/layers/0/font"),
        (with_layer(type="text", text="HI", x=1.5), "/layers/0/x"),
        (with_layer(type="text", text="HI", y=-0.1), "/layers/0/y"),
        (with_layer(type="text", text="HI", size="big"), "/layers/0/size"),
        (with_layer(type="text", text="x" * 501), "/layers/0/text"),
        (with_layer(type="text", text="HI", color="#ggg000"), "/layers/0/color"),
        (with_layer(type="text", text="HI", anchor="middle"), "/layers/0/anchor"),
        (with_layer(type="text", text="HI", bogus=1), "/layers/0"),
        (with_layer(type="sticker"), "/layers/0"),
        (with_layer(type="image", asset_id="00000000-0000-4000-8000-00000000abcd"), "/layers/0/asset_id"),
        (with_layer(type="shape", shape="star"), "/layers/0/shape"),
        (with_layer(type="shape", shape="line", x=0.1, y=0.1), "/layers/0"),
        (dict(GOOD, layers=[{"type": "text", "text": "x"}] * 21), "/layers"),
        ({"name": "no product", "color": "#ffffff"}, ""),
    ],
)
def test_invalid_designs_are_422_naming_the_field(refusing: LiveApp, body: dict[str, Any], pointer: str) -> None:
    response = refusing.client.post("/api/v1/designs", json=body)
    assert response.status_code in (400, 422), response.text
    found = problem(response, response.status_code)
    assert any(p.startswith(pointer) for p in pointers(found)), found
    assert refusing.client.get("/api/v1/designs").json()["items"] == []  # nothing half-written


def test_limits_named_in_the_error(refusing: LiveApp) -> None:
    too_many = dict(GOOD, layers=[{"type": "text", "text": "x"}] * 21)
    body = problem(refusing.client.post("/api/v1/designs", json=too_many), 422)
    assert "limits.max_layers" in body["detail"]
    body = problem(refusing.client.post("/api/v1/designs", json=with_layer(type="text", text="y" * 501)), 422)
    assert "limits.max_text_length" in body["detail"]


@pytest.mark.parametrize("raw", [b"{not json", b"", b"[]", b'"text"', b"\xff\xfe"])
def test_malformed_bodies_are_4xx(refusing: LiveApp, raw: bytes) -> None:
    response = refusing.client.post("/api/v1/designs", content=raw, headers={"content-type": "application/json"})
    assert 400 <= response.status_code < 500, response.text
    problem(response, response.status_code)


def test_a_body_of_the_wrong_type_points_at_the_document(refusing: LiveApp) -> None:
    body = problem(refusing.client.post("/api/v1/designs", json=[]), 422)
    assert body["errors"] == [{"pointer": "", "detail": "Expected `object`, got `array`"}]
    assert body["detail"].startswith("body: ")


def test_unknown_design_and_bad_ids(refusing: LiveApp) -> None:
    problem(refusing.client.get("/api/v1/designs/00000000-0000-4000-8000-000000000000"), 404)
    problem(refusing.client.get("/api/v1/designs/not-a-uuid"), 404)
    problem(refusing.client.get("/api/v1/designs/not-a-uuid/preview.png"), 404)
    problem(refusing.client.delete("/api/v1/designs/not-a-uuid"), 404)
    problem(refusing.client.patch("/api/v1/designs/not-a-uuid", json={"name": "x"}), 404)
    problem(refusing.client.post("/api/v1/designs/not-a-uuid/render"), 404)
    problem(refusing.client.get("/api/v1/nothing-here"), 404)


def test_wrong_method_and_query_params(live: LiveApp) -> None:
    problem(live.client.put("/api/v1/designs"), 405)
    problem(live.client.get("/api/v1/designs", params={"limit": 0}), 400)
    problem(live.client.get("/api/v1/designs", params={"limit": "many"}), 400)
    problem(live.client.get("/api/v1/designs", params={"status": "lost"}), 400)
    problem(live.client.get("/api/v1/designs", params={"cursor": "garbage!"}), 400)
    design = live.design()
    problem(live.client.get(f"/api/v1/designs/{design['id']}", params={"wait": 31}), 400)
    problem(live.client.get(f"/api/v1/designs/{design['id']}", params={"wait": -1}), 400)


def test_patch_validation(live: LiveApp) -> None:
    design = live.design()
    problem(live.client.patch(f"/api/v1/designs/{design['id']}", json={}), 422)
    body = problem(live.client.patch(f"/api/v1/designs/{design['id']}", json={"product": "mug"}), 422)
    assert "product" in body["detail"]
    body = problem(
        live.client.patch(
            f"/api/v1/designs/{design['id']}", json={"layers": [{"type": "text", "text": "x", "font": "Nope"}]}
        ),
        422,
    )
    assert pointers(body) == ["/layers/0/font"]
    assert live.client.get(f"/api/v1/designs/{design['id']}").json()["version"] == 1


def test_preview_404_until_published(make_live: Any) -> None:
    app = make_live(consumer=False)
    design = app.design()
    body = problem(app.client.get(f"/api/v1/designs/{design['id']}/preview.png"), 404)
    assert "no preview yet" in body["detail"]
    waited = app.client.get(f"/api/v1/designs/{design['id']}", params={"wait": 0.3}).json()
    assert waited["status"] == "draft"


def test_keys_and_cross_user_404(live: LiveApp) -> None:
    with live.rt.transaction() as session:
        _, alice = records.create_user(session, "alice@example.com")
        _, bob = records.create_user(session, "bob@example.com")
    as_alice = {"Authorization": f"Bearer {alice}"}
    as_bob = {"Authorization": f"Bearer {bob}"}
    created = live.client.post("/api/v1/designs", json=GOOD, headers=as_alice)
    assert created.status_code == 201
    design_id = created.json()["id"]
    assert live.client.get(f"/api/v1/designs/{design_id}", headers=as_alice).status_code == 200
    problem(live.client.get(f"/api/v1/designs/{design_id}", headers=as_bob), 404)
    problem(live.client.get(f"/api/v1/designs/{design_id}"), 404)  # the dev user is someone else too
    problem(live.client.delete(f"/api/v1/designs/{design_id}", headers=as_bob), 404)
    assert live.client.get("/api/v1/designs", headers=as_bob).json()["items"] == []
    problem(live.client.get("/api/v1/designs", headers={"Authorization": "Bearer nope"}), 401)
    problem(live.client.get("/api/v1/designs", headers={"Authorization": "Basic abc"}), 401)


def test_the_embedded_dashboards_key_is_the_operator_even_where_keys_are_required(make_live: Any) -> None:
    app = make_live(dev_mode="off")
    problem(app.client.get("/api/v1/system/worker-status"), 401)
    local = {"Authorization": f"Bearer {app.rt.local_key}"}
    assert app.client.get("/api/v1/system/worker-status", headers=local).status_code == 200
    assert app.client.get("/api/v1/designs", headers=local).status_code == 200
    problem(app.client.get("/api/v1/designs", headers={"Authorization": f"Bearer {app.rt.local_key}x"}), 401)


def test_key_required_when_dev_mode_off(make_live: Any) -> None:
    app = make_live(dev_mode="off")
    body = problem(app.client.get("/api/v1/designs"), 401)
    assert "customify users create" in body["detail"]
    assert "dev_mode is off" in body["detail"] and "non-loopback" not in body["detail"]  # it is on loopback
    with app.rt.transaction() as session:
        _, key = records.create_user(session, "carol@example.com")
    assert app.client.get("/api/v1/designs", headers={"Authorization": f"Bearer {key}"}).status_code == 200


def test_keys_are_stored_hashed(live: LiveApp) -> None:
    from sqlalchemy import select

    from customify.models import ApiKey

    with live.rt.transaction() as session:
        _, key = records.create_user(session, "dave@example.com")
    with live.rt.sessions() as session:
        hashes = list(session.scalars(select(ApiKey.key_hash)))
    assert key not in hashes and records.hash_key(key) in hashes


def test_products_and_openapi(refusing: LiveApp) -> None:
    products = refusing.client.get("/api/v1/products").json()
    assert {p["key"] for p in products} >= {"tshirt", "hoodie", "mug", "poster", "tote", "phone_case"}
    for product in products:
        left, top, right, bottom = product["print_area"]
        assert 0 <= left < right <= product["canvas"][0] and 0 <= top < bottom <= product["canvas"][1]
        assert product["colors"]
    schema = refusing.client.get("/schema/openapi.json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    for path in (
        "/api/v1/designs",
        "/api/v1/designs/{design_id}",
        "/api/v1/system/health",
        "/api/v1/system/worker-status",
        "/api/v1/system/debug-task",
        "/api/v1/assets",
    ):
        assert path in paths, sorted(paths)
