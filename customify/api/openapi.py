"""The OpenAPI document states every response: error codes with the shared problem+json schema,
bearer security, operator-only operations, the event stream's media type, closed objects.

Litestar documents each operation's success response from its handler's types; the rest is
added here once, by rule, when the document is first built (lazily, on the first request
for it), so no operation can forget it.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgspec
from litestar import Litestar
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import OpenAPI
from litestar.router import Router
from litestar.routes import HTTPRoute
from litestar.static_files import create_static_files_router

from customify import schemas
from customify.api.auth import operator_only
from customify.api.errors import PROBLEM, TITLES
from customify.config import Limits
from customify.render.products import PRODUCTS
from customify.render.spec import full_match

BEARER = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key (`customify users create EMAIL`). Optional in dev mode: a "
        "request from loopback without a key acts as the dev user (an operator).",
    }
}
ANONYMOUS_OK: list[dict[str, list[str]]] = [{}, {"bearer": []}]
OPERATOR_NOTE = (
    "**Operator only**: the dev user on loopback, or the key of a user created with "
    "`customify users create EMAIL --operator`; anyone else gets 403."
)
PUBLIC = {("/api/v1/system/health", "get"), ("/api/v1/system/health", "head")}
UNSAFE = {"post", "put", "patch", "delete"}
# Structs that refuse unknown fields: their schemas say so (additionalProperties: false).
CLOSED = ("DesignIn", "DesignPatch", "TextLayer", "ImageLayer", "ShapeLayer", "WorkersIn")
EXAMPLE_DESIGN: dict[str, Any] = {
    "name": "Team shirt",
    "product": "tshirt",
    "color": "#1e3a8a",
    "layers": [
        {"type": "text", "text": "HELLO", "size": 0.12, "color": "#ffffff", "y": 0.2},
        {"type": "shape", "shape": "ellipse", "y": 0.6, "width": 0.4, "height": 0.2, "fill": "#f59e0b"},
    ],
}


DOCS_ASSETS = "/schema/assets"


def swagger_assets() -> Path:
    """Swagger UI's files as the swagger-ui-py package ships them (found without importing it:
    its adapters import Jinja and YAML, which the docs page does not need)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the swagger-ui-py package is missing; reinstall customify")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


def docs_page() -> SwaggerRenderPlugin:
    """The docs page at /schema, loading Swagger UI from this server: it works offline."""
    return SwaggerRenderPlugin(
        js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
        css_url=f"{DOCS_ASSETS}/swagger-ui.css",
        standalone_preset_js_url=f"{DOCS_ASSETS}/swagger-ui-standalone-preset.js",
        favicon=f"<link rel='icon' type='image/png' href='{DOCS_ASSETS}/favicon-32x32.png'>",
    )


def docs_assets() -> Router:
    return create_static_files_router(
        path=DOCS_ASSETS, directories=[swagger_assets()], include_in_schema=False, cache_control=None
    )


class FieldError(msgspec.Struct):
    pointer: str
    detail: str


class ProblemDetails(msgspec.Struct):
    """RFC 9457 problem details, as every error of this API is sent (application/problem+json)."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldError] = []


class ContractOpenAPI(OpenAPI):
    """Litestar's document, completed by `complete` when it is turned into JSON."""

    operator_operations: set[tuple[str, str]] = set()
    limits: Limits = Limits()

    def to_schema(self) -> dict[str, Any]:
        return complete(super().to_schema(), self.operator_operations, self.limits)


@dataclasses.dataclass
class ContractConfig(OpenAPIConfig):
    operator_operations: set[tuple[str, str]] = dataclasses.field(default_factory=set)
    limits: Limits = dataclasses.field(default_factory=Limits)

    def to_openapi_schema(self) -> OpenAPI:
        base = super().to_openapi_schema()
        doc = ContractOpenAPI(**{f.name: getattr(base, f.name) for f in dataclasses.fields(base)})
        doc.operator_operations = self.operator_operations
        doc.limits = self.limits
        return doc


def mark_operators(app: Litestar, config: ContractConfig) -> None:
    """Note which operations an operator guard protects (the guard is the one source)."""
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            if operator_only in handler.resolve_guards():
                for method in handler.http_methods:
                    config.operator_operations.add((route.path_format, method.lower()))


def _problem(status: int) -> dict[str, Any]:
    return {
        "description": TITLES.get(status, "Error"),
        "content": {PROBLEM: {"schema": {"$ref": "#/components/schemas/ProblemDetails"}}},
    }


def error_codes(path: str, method: str, op: dict[str, Any], operator: bool) -> Iterable[int]:
    """The error statuses one operation can answer, by the rules the server applies."""
    public = (path, method) in PUBLIC
    body = op.get("requestBody")
    if op.get("parameters") or body:
        yield 400  # a malformed parameter or body
    if not public:
        yield 401  # a malformed or unknown key; no key off loopback
    if operator or method in UNSAFE or any(p.get("name") == "owner" for p in op.get("parameters", [])):
        yield 403  # not an operator (also ?owner=all); a cross-site request
    if "{" in path:
        yield 404
    if body:
        yield 413
        yield 415
        yield 422
    if (path.startswith("/api/v1/control/") and method != "get") or path.endswith("/stack"):
        yield 409  # this process runs no consumer
    if path == "/api/v1/designs" and method == "post":
        yield 429
    if path == "/api/v1/system/debug-task":
        yield 504
    yield 503  # the database (or the queue) is unavailable


def complete(doc: dict[str, Any], operators: set[tuple[str, str]], limits: Limits | None = None) -> dict[str, Any]:
    components = doc.setdefault("components", {})
    defs = components.setdefault("schemas", {})
    _, problem_defs = msgspec.json.schema_components([ProblemDetails], ref_template="#/components/schemas/{name}")
    defs.update(problem_defs)
    # The spec's own schemas, as msgspec states them: Litestar drops the lower bound of optional numbers.
    _, spec_defs = msgspec.json.schema_components(
        [schemas.DesignIn, schemas.DesignPatch, schemas.WorkersIn], ref_template="#/components/schemas/{name}"
    )
    defs.update({name: schema for name, schema in spec_defs.items() if name in defs})
    components["securitySchemes"] = BEARER
    for name in CLOSED:
        if name in defs:
            defs[name]["additionalProperties"] = False
    if "DesignIn" in defs:
        defs["DesignIn"]["examples"] = [EXAMPLE_DESIGN]
    _server_rules(defs, limits or Limits())
    for path, item in doc.get("paths", {}).items():
        for method, op in item.items():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            operator = (path, method) in operators
            responses = op["responses"]
            for status in error_codes(path, method, op, operator):
                responses[str(status)] = _problem(status) if method != "head" else {"description": TITLES[status]}
            if (path, method) in PUBLIC:
                op["security"] = [{}]
            else:
                op["security"] = ANONYMOUS_OK
            if operator:
                op["tags"] = [*op.get("tags", []), "operator"]
                op["x-operator-only"] = True
                op["description"] = f"{op.get('description', '')}\n\n{OPERATOR_NOTE}".strip()
    _files(doc)
    _previews(doc)
    _heads(doc)
    _events(doc)
    _upload(doc)
    _design_example(doc)
    return doc


def _any_case(hex_colour: str) -> str:
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in hex_colour)


def _server_rules(defs: dict[str, Any], limits: Limits) -> None:
    """What check_spec enforces beyond each field's type, stated in the schema: the configured
    limits, a product's colours, a line's end point, a shape's ink; a PATCH changes something."""
    for name in ("DesignIn", "DesignPatch"):
        if name not in defs:
            continue
        props = defs[name]["properties"]
        props["name"]["maxLength"] = limits.max_name_length
        props["layers"]["maxItems"] = limits.max_layers
    if "DesignPatch" in defs:
        defs["DesignPatch"]["minProperties"] = 1
    if "TextLayer" in defs:
        defs["TextLayer"]["properties"]["text"]["maxLength"] = limits.max_text_length
    if "ShapeLayer" in defs:
        number = {"type": "number", "minimum": 0, "maximum": 1}
        defs["ShapeLayer"]["allOf"] = [
            {
                "if": {"properties": {"shape": {"const": "line"}}, "required": ["shape"]},
                "then": {"properties": {"x2": number, "y2": number}, "required": ["x2", "y2"]},
            },
            {
                "anyOf": [
                    {"properties": {"fill": {"type": "string"}}, "required": ["fill"]},
                    {"properties": {"stroke": {"type": "string"}}, "required": ["stroke"]},
                ]
            },
        ]
    if "DesignIn" in defs:
        defs["DesignIn"]["allOf"] = [
            {
                "if": {"properties": {"product": {"const": key}}, "required": ["product"]},
                "then": {
                    "properties": {
                        "color": {
                            "type": "string",
                            "pattern": full_match(
                                "(?:" + "|".join(_any_case(c) for c in product.colors) + ")(?:[0-9a-fA-F]{2})?"
                            ),
                        }
                    }
                },
            }
            for key, product in PRODUCTS.items()
        ]


FILE_PATHS = (
    "/api/v1/designs/{design_id}/preview.png",
    "/api/v1/designs/{design_id}/thumbnail",
    "/api/v1/assets/{asset_id}",
)


FILE_MEDIA = {
    "/api/v1/designs/{design_id}/thumbnail": ("image/webp", "image/jpeg"),
    "/api/v1/assets/{asset_id}": ("image/png", "image/jpeg", "image/webp"),
}


def _files(doc: dict[str, Any]) -> None:
    """Previews, thumbnails and assets answer conditional and range requests."""
    for path in FILE_PATHS:
        op = doc.get("paths", {}).get(path, {}).get("get")
        if op is None:
            continue
        responses = op["responses"]
        media = FILE_MEDIA.get(path)
        if media is not None:
            responses["200"]["content"] = {m: {"schema": {"type": "string", "format": "binary"}} for m in media}
        responses["206"] = {
            "description": "The byte range asked for (`Range: bytes=first-last`)",
            "content": responses["200"].get("content", {}),
        }
        responses["304"] = {"description": "Not modified: If-None-Match holds the file's ETag"}
        responses["416"] = _problem(416)
        op.setdefault("parameters", []).extend(
            [
                {"name": name, "in": "header", "required": False, "schema": {"type": "string"}, "description": text}
                for name, text in (
                    ("Range", "one byte range, `bytes=first-last`, `bytes=first-` or `bytes=-suffix`"),
                    ("If-None-Match", "entity tags (weak comparison), a list, or `*`"),
                    ("If-Range", "the ETag the Range applies to"),
                )
            ]
        )


PREVIEW_MEDIA = ("image/webp", "image/png", "image/jpeg")  # ?format=webp (default), png or jpeg


def _previews(doc: dict[str, Any]) -> None:
    """An instant preview answers in the format asked for."""
    for op in doc.get("paths", {}).get("/api/v1/previews", {}).values():
        ok = op.get("responses", {}).get("200")
        if ok is not None:
            ok["content"] = {m: {"schema": {"type": "string", "format": "binary"}} for m in PREVIEW_MEDIA}


def _heads(doc: dict[str, Any]) -> None:
    """HEAD wherever GET works (api/methods.py): the GET's status and headers, no body."""
    for item in doc.get("paths", {}).values():
        get = item.get("get")
        if get is None or "head" in item:
            continue
        head = copy.deepcopy(get)
        head["operationId"] = f"{get.get('operationId', 'Get')}Head"
        head["summary"] = f"{get.get('summary', '')} (headers only)".strip()
        for response in head["responses"].values():
            response.pop("content", None)
        item["head"] = head


def _events(doc: dict[str, Any]) -> None:
    op = doc.get("paths", {}).get("/api/v1/events", {}).get("get")
    if op is None:
        return
    op["responses"]["200"] = {
        "description": "A stream of server-sent events (see the operation's description for the event types).",
        "content": {
            "text/event-stream": {
                "schema": {
                    "type": "object",
                    "required": ["data"],
                    "description": (
                        "One event: `id:`, `event:` and `data:` (JSON) lines; `:` comment lines are heartbeats."
                    ),
                    "properties": {
                        "event": {"type": "string", "enum": list(EVENT_TYPES)},
                        "data": {"type": "string", "contentMediaType": "application/json"},
                        "id": {"type": "string"},
                        "retry": {"type": "integer"},
                    },
                    "x-event-types": list(EVENT_TYPES),
                }
            }
        },
    }


# What a finished task did to its design (observer: `task.<outcome>`; tasks.run_render and run_send_email say).
TASK_OUTCOMES = ("succeeded", "published", "failed", "retrying", "discarded", "skipped", "sent")
EVENT_TYPES = (
    "hello",
    "design.status",
    "design.deleted",
    "task.enqueued",
    "task.started",
    *(f"task.{outcome}" for outcome in TASK_OUTCOMES),
    "task.revoked",
    "task.expired",
    "worker.state",
    "system.problems",
    "problem",
    "problem.cleared",
    "webhook.delivered",
    "webhook.failed",
    "control",
    "queue",
    "server.closing",
)


def _upload(doc: dict[str, Any]) -> None:
    op = doc.get("paths", {}).get("/api/v1/assets", {}).get("post")
    if op is None:
        return
    op["requestBody"] = {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "a PNG, JPEG or WebP image (checked by decoding)",
                        }
                    },
                }
            }
        },
    }


def _design_example(doc: dict[str, Any]) -> None:
    op = doc.get("paths", {}).get("/api/v1/designs", {}).get("post")
    if op is None:
        return
    media = op.get("requestBody", {}).get("content", {}).get("application/json")
    if media is not None:
        media["examples"] = {"readme": {"summary": "The README's design", "value": EXAMPLE_DESIGN}}


__all__ = ["ContractConfig", "ProblemDetails", "complete", "mark_operators"]
