"""The API contract: the OpenAPI document states what the server does, and the HTTP conventions hold."""

from __future__ import annotations

from typing import Any

from tests.conftest import LiveApp


def openapi(live: LiveApp) -> dict[str, Any]:
    response = live.client.get("/schema/openapi.json")
    assert response.status_code == 200
    doc: dict[str, Any] = response.json()
    return doc


def test_every_error_is_documented_as_problem_json(live: LiveApp) -> None:
    doc = openapi(live)
    bearer = doc["components"]["securitySchemes"]["bearer"]
    assert bearer["type"] == "http" and bearer["scheme"] == "bearer"
    for path, item in doc["paths"].items():
        for method, op in item.items():
            errors = {code: r for code, r in op["responses"].items() if code.startswith(("4", "5"))}
            assert "503" in errors, (method, path)
            for code, response in errors.items():
                assert list(response["content"]) == ["application/problem+json"], (method, path, code)
                assert response["content"]["application/problem+json"]["schema"] == {
                    "$ref": "#/components/schemas/ProblemDetails"}
            if path == "/api/v1/system/health":
                assert op["security"] == [{}]
            else:
                assert op["security"] == [{}, {"bearer": []}] and "401" in errors, (method, path)
    create = doc["paths"]["/api/v1/designs"]["post"]["responses"]
    assert {"201", "400", "401", "403", "413", "415", "422", "429", "503"} <= set(create)


def test_operator_operations_are_marked(live: LiveApp) -> None:
    paths = openapi(live)["paths"]
    for path, method in [("/api/v1/control/pause", "post"), ("/api/v1/system/worker-status", "get"),
                         ("/api/v1/system/debug-task", "post")]:
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
        p["key"] for p in live.client.get("/api/v1/products").json()}
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


def test_event_stream_is_documented_as_such(live: LiveApp) -> None:
    ok = openapi(live)["paths"]["/api/v1/events"]["get"]["responses"]["200"]
    assert list(ok["content"]) == ["text/event-stream"]
    assert {"design.status", "queue", "hello"} <= set(ok["content"]["text/event-stream"]["schema"]["x-event-types"])


def test_control_answers_are_typed(live: LiveApp) -> None:
    paths = openapi(live)["paths"]
    ok = paths["/api/v1/control/purge"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/Purged"}
    assert live.client.post("/api/v1/control/purge").json() == {"purged": 0}
    assert live.client.post("/api/v1/control/pause").json() == {"paused": True}
    assert live.client.post("/api/v1/control/resume").json() == {"paused": False}
