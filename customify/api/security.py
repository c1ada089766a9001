"""What a browser page must not be able to do: the request guard in front of every route.

Bound to loopback without keys (dev mode), any page the developer visits could
otherwise drive the API: a "simple" cross-site POST needs no CORS preflight, and a
DNS-rebinding page talks to 127.0.0.1 under its own host name. Three rules:

- In dev mode only loopback `Host` values are served (`localhost`, `127.0.0.1`,
  `[::1]`, any port, plus `public_url`'s host): anything else is a 421.
- A state-changing request (not GET, HEAD, OPTIONS) with a cross-site `Origin`,
  `Origin: null` or `Sec-Fetch-Site: cross-site` is a 403, unless its Origin is
  listed in `cors_origins`. Scripts, the dashboard and curl send no Origin.
- A body sent to a JSON endpoint must say `Content-Type: application/json` (an
  upload, `multipart/form-data`): anything else is a 415, so an HTML form's
  `text/plain` body is never parsed as JSON.
"""

from __future__ import annotations

import asyncio
import logging
import math
import traceback
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import litestar
import msgspec
from litestar import Request, Response
from litestar.enums import RequestEncodingType, ScopeType
from litestar.types import ASGIApp, HTTPResponseBodyEvent, HTTPResponseStartEvent, Receive, Scope, Send

from customify import records
from customify.api.errors import Problem, handle_unexpected, problem_response
from customify.config import Config, is_loopback
from customify.runtime import Runtime

log = logging.getLogger("customify.api")

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def split_host(value: str) -> tuple[str, str]:
    """`Host` (or an Origin's netloc) → (lower-case host without brackets, port or "")."""
    value = value.strip().lower()
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        return host, rest.removeprefix(":")
    if value.count(":") == 1:
        host, _, port = value.partition(":")
        return host.rstrip("."), port
    return value.rstrip("."), ""


def origin_of(url: str) -> str:
    """`scheme://host[:port]` of a URL, lower-case, as browsers send it in `Origin`."""
    parts = urlsplit(url.strip())
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}" if parts.scheme and parts.netloc else ""


class Rules:
    """The guard's judgements for one configuration (built once per app)."""

    def __init__(self, config: Config) -> None:
        self.host_check = config.dev_user_allowed
        public = urlsplit(config.public_url) if config.public_url else None
        self.public_host = split_host(public.netloc)[0] if public and public.netloc else ""
        self.public_origin = origin_of(config.public_url) if config.public_url else ""
        # `cors_origins` comes with the contract helper's CORS support; listed origins may send writes.
        self.cors_origins = frozenset(origin_of(o) or o.lower() for o in getattr(config, "cors_origins", ()))

    def host_allowed(self, host_header: str) -> bool:
        if not self.host_check or not host_header:  # no Host at all: not a browser (they always send one)
            return True
        host, _ = split_host(host_header)
        return is_loopback(host) or (bool(self.public_host) and host == self.public_host)

    def cross_site(self, headers: dict[str, str]) -> str | None:
        """Why a state-changing request looks cross-site, or None."""
        origin = headers.get("origin")
        if origin is not None:
            normal = origin.strip().lower().rstrip("/")
            if normal in self.cors_origins:
                return None
            if normal == "null":
                return "Origin: null (a sandboxed or file page)"
            own = {self.public_origin} if self.public_origin else set()
            host = headers.get("host", "")
            if host:
                own |= {f"http://{host.lower()}", f"https://{host.lower()}"}
            if normal not in own:
                return f"Origin {origin.strip()!r} is not this server's"
        if headers.get("sec-fetch-site", "").strip().lower() == "cross-site":
            return "Sec-Fetch-Site: cross-site"
        return None


def expected_body(handler: Any) -> str | None:
    """The media type a route handler decodes its `data` with (None: it takes no body)."""
    try:
        param = handler.parsed_fn_signature.parameters.get("data")
    except AttributeError:
        return None
    media = getattr(getattr(param, "kwarg_definition", None), "media_type", None) if param is not None else None
    if param is not None and media is None:
        return RequestEncodingType.JSON.value  # a plain `data: T` is JSON in Litestar
    return getattr(media, "value", media)


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def body_refused(expected: str, headers: dict[str, str]) -> str | None:
    """Why the request's Content-Type does not fit the endpoint, or None."""
    has_body = headers.get("content-length", "0").strip() not in ("", "0") or "transfer-encoding" in headers
    if not has_body:
        return None
    media = _media_type(headers.get("content-type", ""))
    if expected == RequestEncodingType.JSON.value:
        if media == "application/json" or (media.startswith("application/") and media.endswith("+json")):
            return None
        return (
            f"this endpoint takes JSON; send the body with `Content-Type: application/json` "
            f"(got {media or 'no Content-Type'})"
        )
    if expected == RequestEncodingType.MULTI_PART.value and media != "multipart/form-data":
        return (
            "this endpoint takes an upload; send it as multipart/form-data "
            f"(got {media or 'no Content-Type'}), e.g. curl -F file=@image.png"
        )
    return None


async def send_problem(send: Send, status: int, title: str, detail: str) -> None:
    body = msgspec.json.encode({"type": "about:blank", "title": title, "status": status, "detail": detail})
    start: HTTPResponseStartEvent = {
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/problem+json"), (b"content-length", str(len(body)).encode())],
    }
    await send(start)
    end: HTTPResponseBodyEvent = {"type": "http.response.body", "body": body, "more_body": False}
    await send(end)


class RequestGuard:
    """ASGI middleware (per route, so it knows the handler's body type) applying the three rules."""

    def __init__(self, app: ASGIApp, config: Config) -> None:
        self.app = app
        self.rules = Rules(config)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        refusal = self.judge(scope, headers)
        if refusal is not None:
            await send_problem(send, *refusal)
            return
        await self.app(scope, receive, send)

    def judge(self, scope: Scope, headers: dict[str, str]) -> tuple[int, str, str] | None:
        host = headers.get("host", "")
        if not self.rules.host_allowed(host):
            return (
                421,
                "Misdirected request",
                f"this server answers to localhost, 127.0.0.1 and [::1] in dev mode, not {host!r} "
                "(a page using DNS rebinding looks like this); set public_url to serve another name",
            )
        method = str(scope.get("method", "GET")).upper()
        if method in SAFE_METHODS:
            return None
        why = self.rules.cross_site(headers)
        if why is not None:
            return (
                403,
                "Forbidden",
                f"cross-site request refused ({why}); a web app on another origin must be listed in cors_origins",
            )
        expected = expected_body(scope.get("route_handler"))
        if expected is not None and (reason := body_refused(expected, headers)) is not None:
            return 415, "Unsupported media type", reason
        return None


# Rate of creation ---------------------------------------------------------------


async def check_create_rate(rt: Runtime, user_id: str) -> None:
    """limits.designs_per_minute, a sliding minute counted in the database (so across API processes);
    a 429 with Retry-After: when the oldest design of the window leaves it."""
    limit = rt.config.limits.designs_per_minute
    if not limit:
        return
    now = datetime.now(UTC)
    recent = await asyncio.to_thread(rt.read, records.designs_created_since, user_id, now - timedelta(minutes=1))
    if len(recent) < limit:
        return
    retry = max(1, math.ceil((recent[-limit] + timedelta(minutes=1) - now).total_seconds()))
    raise Problem(
        429,
        "Too many requests",
        f"{len(recent)} designs in the last minute reach limits.designs_per_minute = {limit}; retry in {retry} s",
        headers={"Retry-After": str(retry)},
    )


# Crafted bodies ---------------------------------------------------------------

_BODY_PARSING = ("_kwargs", "_multipart.py", "connection", "serialization")
_LITESTAR = Path(litestar.__file__).parent
_OURS = Path(__file__).parents[1]


def _while_parsing_body(exc: BaseException) -> bool:
    """True when `exc` was raised decoding the request body (in Litestar), not in code of ours."""
    files = [Path(frame.filename) for frame in traceback.extract_tb(exc.__traceback__)]
    return not any(f.is_relative_to(_OURS) for f in files) and any(
        f.is_relative_to(_LITESTAR) and f.relative_to(_LITESTAR).parts[0] in _BODY_PARSING for f in files
    )


def handle_crafted_body(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """JSON nested a thousand deep (RecursionError), a binary multipart part without a filename
    (UnicodeDecodeError): a 400 and one log line, not a 500 and sixty lines of traceback."""
    if not _while_parsing_body(exc):
        return handle_unexpected(request, exc)
    if isinstance(exc, RecursionError):
        detail = "the JSON body is nested too deeply (the API takes documents a few levels deep)"
    else:
        detail = (
            "a multipart part is not text and has no filename; send files with a filename "
            "(e.g. curl -F file=@image.png)"
        )
    log.warning("refused %s %s: %s", request.method, request.url.path, detail)
    return problem_response(400, "Bad request", detail)


crafted_input_handlers: dict[Any, Any] = {RecursionError: handle_crafted_body, UnicodeDecodeError: handle_crafted_body}


__all__ = [
    "RequestGuard",
    "Rules",
    "body_refused",
    "check_create_rate",
    "crafted_input_handlers",
    "expected_body",
    "split_host",
]
