"""HEAD wherever GET works and OPTIONS that lists what a route allows (RFC 9110 9.3.2, 9.3.7).

Litestar answers 405 to HEAD on a GET-only route and its automatic OPTIONS lists only one
handler's methods; this wrapper sits in front of Litestar's own handling (and after its CORS
middleware, which still answers preflight requests) and takes the method table from the app's
routes, so it cannot disagree with them.
"""

from __future__ import annotations

import re
from typing import Any

from litestar import Litestar
from litestar.enums import ScopeType
from litestar.routes import HTTPRoute
from litestar.types import ASGIApp, Message, Receive, Scope, Send


def route_methods(app: Litestar) -> list[tuple[re.Pattern[str], frozenset[str]]]:
    """(path pattern, methods its handlers serve) for every HTTP route of the app."""
    table: dict[str, set[str]] = {}
    for route in app.routes:
        if isinstance(route, HTTPRoute):
            methods = table.setdefault(route.path_format.rstrip("/") or "/", set())
            methods.update(str(m).upper() for m in route.methods if str(m).upper() != "OPTIONS")
    return [
        (re.compile(re.sub(r"\\\{[^}]*\\\}", "[^/]+", re.escape(path)) + "/?"), frozenset(methods))
        for path, methods in table.items()
    ]


def allowed(methods: frozenset[str]) -> list[str]:
    extra = {"HEAD"} if "GET" in methods else set()
    return sorted(methods | extra | {"OPTIONS"})


class Methods:
    def __init__(self, app: ASGIApp, table: list[tuple[re.Pattern[str], frozenset[str]]]) -> None:
        self.app = app
        self.table = table

    def _methods(self, path: str) -> frozenset[str] | None:
        # A literal route wins over a parameter at the same place (/designs/x vs /designs/{id}).
        found = [methods for pattern, methods in self.table if pattern.fullmatch(path)]
        return frozenset().union(*found) if found else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or scope.get("method") not in ("HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        methods = self._methods(scope["path"])
        if methods is None:
            await self.app(scope, receive, send)
            return
        if scope.get("method") == "OPTIONS":
            headers = {k.lower(): v for k, v in scope["headers"]}
            if b"access-control-request-method" in headers and b"origin" in headers:
                await self.app(scope, receive, send)  # a CORS preflight: Litestar's CORS answers it
                return
            await send(
                {
                    "type": "http.response.start",
                    "status": 204,
                    "headers": [(b"allow", ", ".join(allowed(methods)).encode()), (b"content-length", b"0")],
                }
            )
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        if "HEAD" in methods or "GET" not in methods:
            await self.app(scope, receive, send)
            return
        await self._head(scope, receive, send)

    async def _head(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the GET and send its status and headers only; a stream (SSE) sees its client leave."""
        finished = False

        async def send_head(message: Message) -> None:
            nonlocal finished
            if message["type"] == "http.response.start":
                await send(message)
            elif message["type"] == "http.response.body" and not finished:
                finished = True
                await send({"type": "http.response.body", "body": b"", "more_body": False})

        async def receive_head() -> Any:
            if finished:
                return {"type": "http.disconnect"}
            message = await receive()
            return {"type": "http.disconnect"} if finished else message

        get_scope: Any = {**scope, "method": "GET"}
        await self.app(get_scope, receive_head, send_head)
