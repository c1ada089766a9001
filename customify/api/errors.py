"""RFC 9457 problem+json for every error: no request, however malformed, gets a 500 page or a traceback."""

from __future__ import annotations

import logging
import re
import types
import typing
from typing import Any

import msgspec
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.utils.scope.state import ScopeState
from sqlalchemy.exc import OperationalError

from customify.errors import database_line

log = logging.getLogger("customify.api")

PROBLEM = "application/problem+json"


class Problem(HTTPException):
    """An HTTP error with a title, a detail and optional per-field errors."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        errors: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status_code=status, detail=detail, headers=headers)
        self.title = title
        self.errors = errors or []


def field_error(pointer: str, detail: str) -> dict[str, str]:
    return {"pointer": pointer, "detail": detail}


def problem_response(
    status: int,
    title: str,
    detail: str,
    errors: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response[Any]:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    if errors:
        body["errors"] = errors
    return Response(body, status_code=status, media_type=PROBLEM, headers=headers)


def to_pointer(path: str) -> str:
    """msgspec's `$.layers[2].font` or Litestar's `layers[2].font` → JSON pointer `/layers/2/font`."""
    path = path.removeprefix("$").lstrip(".")
    parts = [p for p in re.split(r"[.\[\]]+", path) if p]
    return "/" + "/".join(parts) if parts else ""


def msgspec_problem(message: str) -> tuple[str, str]:
    """(pointer, message) from a msgspec ValidationError text."""
    if " - at `" in message:
        text, where = message.rsplit(" - at `", 1)
        return to_pointer(where.rstrip("`")), text
    return "", message


TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Payload too large",
    415: "Unsupported media type",
    416: "Range not satisfiable",
    422: "Validation failed",
    429: "Too many requests",
    503: "Service unavailable",
    504: "Gateway timeout",
}


def handle_problem(request: Request[Any, Any, Any], exc: Problem) -> Response[Any]:
    return problem_response(exc.status_code, exc.title, exc.detail, exc.errors, exc.headers)


BODY_REQUIRED = "a JSON body is required"


def _struct_of(tp: Any) -> Any:
    """The type under Annotated/Optional wrappers (one level)."""
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def body_errors(value: Any, tp: Any, pointer: str = "") -> list[dict[str, str]]:
    """Every error of `value` against `tp`, each with its JSON pointer: msgspec stops at the first,
    so structs are checked field by field and lists item by item (a tagged union by its tag)."""
    try:
        msgspec.convert(value, tp)
        return []
    except msgspec.ValidationError as exc:
        where, text = msgspec_problem(str(exc))
        first = [field_error(pointer + where, text)]
    tp = _struct_of(tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if isinstance(value, list):  # list[X] | UnsetType
            lists = [a for a in args if typing.get_origin(_struct_of(a)) is list]
            return body_errors(value, lists[0], pointer) or first if lists else first
        tagged = {
            getattr(a.__struct_config__, "tag", None): a
            for a in args
            if isinstance(a, type) and issubclass(a, msgspec.Struct)
        }
        if isinstance(value, dict) and value.get("type") in tagged:
            return body_errors(value, tagged[value["type"]], pointer) or first
        return first
    if origin is list and isinstance(value, list) and args:
        return [e for i, item in enumerate(value) for e in body_errors(item, args[0], f"{pointer}/{i}")] or first
    if not (isinstance(tp, type) and issubclass(tp, msgspec.Struct) and isinstance(value, dict)):
        return first
    errors: list[dict[str, str]] = []
    hints = typing.get_type_hints(tp, include_extras=True)
    info = msgspec.inspect.type_info(tp)
    assert isinstance(info, msgspec.inspect.StructType)
    tag_field = tp.__struct_config__.tag_field
    for field in info.fields:
        if field.encode_name in value:
            errors += body_errors(value[field.encode_name], hints[field.name], f"{pointer}/{field.encode_name}")
        elif field.required:
            errors.append(field_error(pointer, f"Object missing required field `{field.encode_name}`"))
    known = {f.encode_name for f in info.fields} | ({tag_field} if tag_field else set())
    if tp.__struct_config__.forbid_unknown_fields:
        errors += [
            field_error(f"{pointer}/{key}", f"Object contains unknown field `{key}`")
            for key in value
            if key not in known
        ]
    return errors or first


def _all_body_errors(request: Request[Any, Any, Any]) -> list[dict[str, str]] | None:
    """All the errors of a JSON body that decodes but does not validate; None when that is not the case."""
    try:
        data_field = request.route_handler.parsed_data_field
        raw = ScopeState.from_scope(request.scope).body
        if data_field is None or not isinstance(raw, bytes):
            return None
        value = msgspec.json.decode(raw)
        return body_errors(value, data_field.annotation) or None
    except Exception:  # no route, no cached body, not JSON, an exotic type: keep Litestar's own error
        return None


def _missing_body(request: Request[Any, Any, Any]) -> Response[Any] | None:
    """400 for a JSON endpoint called without a body (or only whitespace)."""
    if request.method not in ("POST", "PUT", "PATCH") or "json" not in request.headers.get("content-type", "json"):
        return None
    raw = ScopeState.from_scope(request.scope).body
    if isinstance(raw, bytes) and not raw.strip():
        return problem_response(400, TITLES[400], BODY_REQUIRED, [field_error("", BODY_REQUIRED)])
    return None


def handle_validation(request: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    """Litestar's validation errors → 422 for a body that decodes but is invalid, 400 for the rest."""
    missing = _missing_body(request)
    if missing is not None:
        return missing
    errors = []
    bad_params = False
    for item in exc.extra if isinstance(exc.extra, list) else []:
        if not isinstance(item, dict):
            continue
        key = str(item.get("key") or "")
        source = getattr(item.get("source"), "value", item.get("source"))
        message = str(item.get("message", "invalid"))
        if source and source != "body":
            bad_params = True
            errors.append(field_error(f"{source}:{key}" if key else str(source), message))
            continue
        # The whole body is wrong (`[]`, a string): Litestar names the handler's parameter, `data`;
        # the JSON pointer of the document itself is "".
        pointer, text = (
            msgspec_problem(message) if " - at `" in message else ("" if key == "data" else to_pointer(key), message)
        )
        errors.append(field_error(pointer, text))
    malformed = any("malformed" in e["detail"].lower() for e in errors) or (not errors and "body" in exc.detail.lower())
    status = 400 if (bad_params or malformed or not errors) else 422
    if status == 422:
        errors = _all_body_errors(request) or errors
    detail = "; ".join(f"{e['pointer'] or 'body'}: {e['detail']}" for e in errors) or exc.detail
    return problem_response(status, TITLES[status], detail, errors)


def handle_http(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    status = exc.status_code
    missing = _missing_body(request) if status == 400 else None
    if missing is not None:
        return missing
    title = TITLES.get(status, "Error")
    return problem_response(status, title, exc.detail or title, headers=exc.headers)


def handle_database(request: Request[Any, Any, Any], exc: OperationalError) -> Response[Any]:
    log.warning(
        "database unavailable for %s %s: %s [%s]",
        request.method,
        request.url.path,
        database_line(exc),
        (exc.statement or "")[:60],
    )
    return problem_response(
        503, "Service unavailable", "the database is unavailable or busy; retry shortly", headers={"Retry-After": "2"}
    )


def handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return problem_response(500, "Internal server error", "an unexpected error occurred; it has been logged")


exception_handlers: dict[Any, Any] = {
    Problem: handle_problem,
    ValidationException: handle_validation,
    HTTPException: handle_http,
    OperationalError: handle_database,
    Exception: handle_unexpected,
}

__all__ = ["PROBLEM", "MediaType", "Problem", "exception_handlers", "field_error", "problem_response"]
