"""The API contract: the OpenAPI document states what the server does, and the HTTP conventions hold."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import LiveApp, eventually, png_bytes, serve


def openapi(live: LiveApp) -> dict[str, Any]:
    response = live.client.get("/schema/openapi.json")
    assert response.status_code == 200
    doc: dict[str, Any] = response.json()
    return doc


@pytest.fixture(scope="module")
def reading(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApp]:
    """One app for this module's tests that only read the OpenAPI document and the docs page."""
    with serve(tmp_path_factory.mktemp("reading")) as app:
        yield app


def test_every_error_is_documented_as_problem_json(reading: LiveApp) -> None:
    doc = openapi(reading)
    bearer = doc["components"]["securitySchemes"]["bearer"]
    assert bearer["type"] == "http" and bearer["scheme"] == "bearer"
    for path, item in doc["paths"].items():
        for method, op in item.items():
            errors = {code: r for code, r in op["responses"].items() if code.startswith(("4", "5"))}
            assert "503" in errors, (method, path)
            for code, response in errors.items():
                if method == "head":
                    assert "content" not in response
                    continue
                assert list(response["content"]) == ["application/problem+json"], (method, path, code)
                assert response["content"]["application/problem+json"]["schema"] == {
                    "$ref": "#/components/schemas/ProblemDetails"
                }
            if path == "/api/v1/system/health":
                assert op["security"] == [{}]
            else:
                assert op["security"] == [{}, {"bearer": []}] and "401" in errors, (method, path)
    create = doc["paths"]["/api/v1/designs"]["post"]["responses"]
    assert {"201", "400", "401", "403", "413", "415", "422", "429", "503"} <= set(create)


def test_operator_operations_are_marked(reading: LiveApp) -> None:
    paths = openapi(reading)["paths"]
    for path, method in [
        ("/api/v1/control/pause", "post"),
        ("/api/v1/system/worker-status", "get"),
        ("/api/v1/system/debug-task", "post"),
    ]:
        op = paths[path][method]
        assert op["x-operator-only"] is True and "operator" in op["tags"] and "Operator only" in op["description"]
        assert "403" in op["responses"]
    assert "x-operator-only" not in paths["/api/v1/designs"]["post"]


def test_schema_is_as_strict_as_the_server(live: LiveApp) -> None:
    doc = openapi(live)
    defs = doc["components"]["schemas"]
    for name in ("DesignIn", "DesignPatch", "TextLayer", "ImageLayer", "ShapeLayer", "WorkersIn"):
        assert defs[name]["additionalProperties"] is False, name
    assert set(defs["DesignIn"]["properties"]["product"]["enum"]) == {
        p["key"] for p in live.client.get("/api/v1/products").json()
    }
    text = defs["TextLayer"]["properties"]
    assert "DejaVu Sans" in text["font"]["enum"] and set(text["weight"]["enum"]) == {"regular", "bold"}
    width = text["width"]["anyOf"][0]
    assert width["exclusiveMinimum"] == 0 and width["maximum"] == 1
    x2 = defs["ShapeLayer"]["properties"]["x2"]["anyOf"][0]
    assert x2["minimum"] == 0 and x2["maximum"] == 1
    shapes = defs["ShapeLayer"]["properties"]["shape"]["enum"]
    assert set(shapes) == {"rectangle", "rounded_rectangle", "ellipse", "line"}
    upload = doc["paths"]["/api/v1/assets"]["post"]["requestBody"]
    assert upload["required"] and upload["content"]["multipart/form-data"]["schema"]["required"] == ["file"]
    example = doc["paths"]["/api/v1/designs"]["post"]["requestBody"]["content"]["application/json"]["examples"]
    assert live.client.post("/api/v1/designs", json=example["readme"]["value"]).status_code == 201


def test_event_stream_is_documented_as_such(reading: LiveApp) -> None:
    ok = openapi(reading)["paths"]["/api/v1/events"]["get"]["responses"]["200"]
    assert list(ok["content"]) == ["text/event-stream"]
    assert {"design.status", "queue", "hello"} <= set(ok["content"]["text/event-stream"]["schema"]["x-event-types"])


def test_control_answers_are_typed(live: LiveApp) -> None:
    paths = openapi(live)["paths"]
    ok = paths["/api/v1/control/purge"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/Purged"}
    assert live.client.post("/api/v1/control/purge").json() == {"purged": 0}
    assert live.client.post("/api/v1/control/pause").json() == {"paused": True}
    assert live.client.post("/api/v1/control/resume").json() == {"paused": False}


def test_head_wherever_get_works_and_options_lists_the_methods(live: LiveApp) -> None:
    design = live.design()
    for path in [
        "/api/v1/products",
        "/api/v1/designs",
        f"/api/v1/designs/{design['id']}",
        "/api/v1/control/stats",
        "/api/v1/system/tasks",
        "/schema/openapi.json",
    ]:
        got = live.client.get(path)
        head = live.client.head(path)
        assert head.status_code == 200 and head.content == b"", path
        assert head.headers["content-type"] == got.headers["content-type"], path
    assert live.client.head("/api/v1/designs/00000000-0000-4000-8000-00000000dead").status_code == 404
    with live.client.stream("HEAD", "/api/v1/events") as stream:  # a stream: headers only, then it ends
        assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream")
        assert stream.read() == b""
    allow = live.client.options("/api/v1/designs")
    assert allow.status_code == 204 and allow.headers["allow"] == "GET, HEAD, OPTIONS, POST"
    one = live.client.options(f"/api/v1/designs/{design['id']}").headers["allow"]
    assert one == "DELETE, GET, HEAD, OPTIONS, PATCH"


def test_json_is_compressed_above_a_kilobyte(live: LiveApp) -> None:
    for encoding in ("gzip", "br"):
        response = live.client.get("/schema/openapi.json", headers={"Accept-Encoding": encoding})
        assert response.headers["content-encoding"] == encoding and response.json()["openapi"]
    small = live.client.post("/api/v1/control/purge", headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in small.headers


def test_cors_only_for_configured_origins(make_live: Any) -> None:
    closed = make_live()
    assert (
        "access-control-allow-origin"
        not in closed.client.get("/api/v1/products", headers={"Origin": "https://shop.example"}).headers
    )
    app = make_live(cors_origins=["https://shop.example"])
    preflight = app.client.options(
        "/api/v1/designs",
        headers={
            "Origin": "https://shop.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert preflight.status_code in (200, 204)
    assert preflight.headers["access-control-allow-origin"] == "https://shop.example"
    assert preflight.headers["access-control-max-age"] == "600"
    assert "access-control-allow-credentials" not in preflight.headers
    simple = app.client.get("/api/v1/products", headers={"Origin": "https://shop.example"})
    assert simple.headers["access-control-allow-origin"] == "https://shop.example"
    other = app.client.get("/api/v1/products", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers


def test_files_answer_conditional_and_range_requests(live: LiveApp) -> None:
    design = live.wait(live.design()["id"])
    asset = live.client.post("/api/v1/assets", files={"file": ("a.png", png_bytes(), "image/png")}).json()
    for url in (design["preview_url"], design["thumbnail_url"], asset["url"]):
        full = live.client.get(url)
        assert full.status_code == 200 and full.headers["accept-ranges"] == "bytes"
        assert full.headers["x-content-type-options"] == "nosniff"
        assert full.headers["content-security-policy"] == "default-src 'none'; sandbox"
        etag, size = full.headers["etag"], len(full.content)
        for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
            for method in ("GET", "HEAD"):
                again = live.client.request(method, url, headers={"If-None-Match": header})
                assert again.status_code == 304 and again.content == b"", (url, header, method)
                assert again.headers["etag"] == etag and again.headers["x-content-type-options"] == "nosniff"
        assert live.client.get(url, headers={"If-None-Match": '"other"'}).status_code == 200
        part = live.client.get(url, headers={"Range": "bytes=0-9"})
        assert part.status_code == 206 and part.content == full.content[:10]
        assert part.headers["content-range"] == f"bytes 0-9/{size}"
        tail = live.client.get(url, headers={"Range": "bytes=-5"})
        assert tail.status_code == 206 and tail.content == full.content[-5:]
        rest = live.client.get(url, headers={"Range": f"bytes={size - 3}-", "If-Range": etag})
        assert rest.status_code == 206 and rest.content == full.content[-3:]
        stale = live.client.get(url, headers={"Range": "bytes=0-9", "If-Range": '"old"'})
        assert stale.status_code == 200 and stale.content == full.content
        beyond = live.client.get(url, headers={"Range": f"bytes={size}-"})
        assert beyond.status_code == 416 and beyond.headers["content-range"] == f"bytes */{size}"
        assert beyond.headers["content-type"].startswith("application/problem+json")


def test_every_validation_error_in_one_problem(live: LiveApp) -> None:
    body = {
        "name": "",
        "product": "tshirt",
        "color": "#1e3a8a\n",
        "extra": 1,
        "layers": [
            {"type": "text", "text": "ok"},
            {"type": "text", "text": "x", "font": "Comic Sans"},
            {"type": "shape", "shape": "star", "width": 2},
        ],
    }
    response = live.client.post("/api/v1/designs", json=body)
    assert response.status_code == 422 and response.headers["content-type"].startswith("application/problem+json")
    pointers = [e["pointer"] for e in response.json()["errors"]]
    assert pointers == ["/name", "/color", "/layers/1/font", "/layers/2/shape", "/layers/2/width", "/extra"]
    patch = live.client.patch(
        f"/api/v1/designs/{live.design()['id']}",
        json={"layers": [{"type": "image"}, {"type": "text", "text": "x", "size": 0}]},
    )
    assert [e["pointer"] for e in patch.json()["errors"]] == ["/layers/0", "/layers/1/size"]


def test_a_missing_body_says_so(live: LiveApp) -> None:
    design = live.design()
    for method, path in [
        ("POST", "/api/v1/designs"),
        ("PATCH", f"/api/v1/designs/{design['id']}"),
        ("PUT", "/api/v1/control/workers"),
    ]:
        for content in (None, b"", b" \n"):
            response = live.client.request(method, path, content=content, headers={"Content-Type": "application/json"})
            assert response.status_code == 400, (method, path, content)
            assert response.json()["detail"] == "a JSON body is required"


def test_docs_page_works_offline(reading: LiveApp) -> None:
    page = reading.client.get("/schema/swagger")
    assert page.status_code == 200 and "SwaggerUIBundle" in page.text
    assert "http://" not in page.text and "https://" not in page.text, "the page must not load from elsewhere"
    for asset in re.findall(r"""(?:src|href)=['"](/schema/assets/[^'"]+)['"]""", page.text):
        response = reading.client.get(asset)
        assert response.status_code == 200 and len(response.content) > 100, asset
    assert (
        reading.client.get("/schema/assets/swagger-ui-bundle.js")
        .headers["content-type"]
        .startswith(("application/javascript", "text/javascript"))
    )


def test_a_name_only_patch_renders_nothing_and_mails_no_one(live: LiveApp) -> None:
    design = live.wait(live.design()["id"])
    etag = live.client.head(design["preview_url"]).headers["etag"]
    for name in ("Renamed", "Renamed again", "Final name"):
        renamed = live.client.patch(f"/api/v1/designs/{design['id']}", json={"name": name})
        assert renamed.status_code == 200
        body = renamed.json()
        assert body["name"] == name and body["status"] == "published"
        assert (body["version"], body["preview_version"]) == (design["version"], design["preview_version"])
        assert body["updated_at"] > design["updated_at"]
        assert live.client.head(design["preview_url"]).headers["etag"] == etag
    # A drawn change afterwards: one more render and one more mail, none for the three renames.
    live.client.patch(f"/api/v1/designs/{design['id']}", json={"color": "#ffffff"})
    assert live.wait(design["id"])["status"] == "published"
    runs = live.client.get("/api/v1/system/tasks", params={"design_id": design["id"]}).json()
    assert len([r for r in runs if r["task"] == "render_design_preview"]) == 2, runs
    eventually(lambda: len(list(live.rt.files.outbox.glob("*.eml"))) == 2)
    assert len([r for r in runs if r["task"] == "send_email"]) <= 2
