"""RFC 9457 problem+json for every error: no request, however malformed, gets a 500 page or a traceback."""

from __future__ import annotations

import logging
import re
from typing import Any

from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException
from sqlalchemy.exc import OperationalError

log = logging.getLogger("customify.api")

PROBLEM = "application/problem+json"


class Problem(HTTPException):
    """An HTTP error with a title, a detail and optional per-field errors."""

    def __init__(self, status: int, title: str, detail: str, errors: list[dict[str, str]] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(status_code=status, detail=detail, headers=headers)
        self.title = title
        self.errors = errors or []


def field_error(pointer: str, detail: str) -> dict[str, str]:
    return {"pointer": pointer, "detail": detail}


def problem_response(status: int, title: str, detail: str, errors: list[dict[str, str]] | None = None,
                     headers: dict[str, str] | None = None) -> Response[Any]:
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


TITLES = {400: "Bad request", 401: "Unauthorized", 403: "Forbidden", 404: "Not found",
           405: "Method not allowed", 409: "Conflict", 413: "Payload too large",
           415: "Unsupported media type", 416: "Range not satisfiable", 422: "Validation failed",
           429: "Too many requests",
           503: "Service unavailable", 504: "Gateway timeout"}


def handle_problem(request: Request[Any, Any, Any], exc: Problem) -> Response[Any]:
    return problem_response(exc.status_code, exc.title, exc.detail, exc.errors, exc.headers)


def handle_validation(request: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    """Litestar's validation errors → 422 for a body that decodes but is invalid, 400 for the rest."""
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
        pointer, text = msgspec_problem(message) if " - at `" in message else (
            "" if key == "data" else to_pointer(key), message)
        errors.append(field_error(pointer, text))
    malformed = any("malformed" in e["detail"].lower() for e in errors) or (not errors and "body" in exc.detail.lower())
    status = 400 if (bad_params or malformed or not errors) else 422
    detail = "; ".join(f"{e['pointer'] or 'body'}: {e['detail']}" for e in errors) or exc.detail
    return problem_response(status, TITLES[status], detail, errors)


def handle_http(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    status = exc.status_code
    title = TITLES.get(status, "Error")
    return problem_response(status, title, exc.detail or title, headers=exc.headers)


def handle_database(request: Request[Any, Any, Any], exc: OperationalError) -> Response[Any]:
    log.warning("database unavailable for %s %s: %s [%s]", request.method, request.url.path,
                str(exc.orig).splitlines()[0] if exc.orig else exc, (exc.statement or "")[:60])
    return problem_response(503, "Service unavailable",
                            "the database is unavailable or busy; retry shortly",
                            headers={"Retry-After": "2"})


def handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return problem_response(500, "Internal server error",
                            "an unexpected error occurred; it has been logged")


exception_handlers: dict[Any, Any] = {
    Problem: handle_problem,
    ValidationException: handle_validation,
    HTTPException: handle_http,
    OperationalError: handle_database,
    Exception: handle_unexpected,
}

__all__ = ["PROBLEM", "MediaType", "Problem", "exception_handlers", "field_error", "problem_response"]
