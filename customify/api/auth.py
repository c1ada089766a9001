"""Who is asking: a bearer key's user, or the dev user on loopback; and whether they are an operator.

Customers see and change their own designs. Operators (the dev user, and users created with
`customify users create EMAIL --operator`) also see the whole queue (worker status, task
history, every event) and control it (pause, resize, revoke, purge, stacks, debug task).
"""

from __future__ import annotations

import asyncio
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.handlers.base import BaseRouteHandler

from customify import records
from customify.api.errors import Problem
from customify.config import is_loopback
from customify.models import DEV_USER_ID
from customify.runtime import Runtime

_KEY_HINT = "create one with `customify users create EMAIL`"
LAST_USED_RESOLUTION = 60.0  # seconds: last_used_at is written at most once a minute per key
KEY_COOKIE = "customify_key"  # set by the web login page (customify.web.auth); read here for GET/HEAD only


@dataclass(frozen=True)
class Viewer:
    user_id: str
    operator: bool


async def resolve_viewer(connection: ASGIConnection[Any, Any, Any, Any]) -> Viewer:
    """Once per request (kept on the request's state for the guard and the handler)."""
    cached = connection.state.get("viewer")
    if isinstance(cached, Viewer):
        return cached
    rt: Runtime = connection.app.state.rt
    header = connection.headers.get("authorization", "")
    cookie = connection.cookies.get(KEY_COOKIE) if connection.scope.get("method") in ("GET", "HEAD") else None
    if not header and cookie:  # a logged-in browser page reading the API (events, previews); never a write
        header = f"Bearer {cookie}"
    if header:
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Problem(
                401,
                "Unauthorized",
                "use the header `Authorization: Bearer <key>`",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if hmac.compare_digest(key.strip().encode(), rt.local_key.encode()):
            viewer = Viewer(DEV_USER_ID, True)  # this process's own dashboard
        else:
            found = await rt.reader(records.viewer_for_key, key.strip())
            if found is None:
                raise Problem(
                    401,
                    "Unauthorized",
                    f"unknown API key (revoked, or never issued); {_KEY_HINT}",
                    headers={"WWW-Authenticate": "Bearer"},
                )
            viewer = Viewer(found.user_id, found.operator)
            last = found.last_used_at
            if last is None or (datetime.now(UTC) - last).total_seconds() > LAST_USED_RESOLUTION:
                await asyncio.to_thread(rt.write, records.touch_key, found.key_id)
    elif rt.config.dev_user_allowed:
        viewer = Viewer(DEV_USER_ID, True)
    else:
        raise Problem(
            401,
            "Unauthorized",
            (
                "an API key is required when bound to a non-loopback address; "
                if not is_loopback(rt.config.host)
                else "an API key is required: dev_mode is off; "
            )
            + f"send `Authorization: Bearer <key>` ({_KEY_HINT})",
            headers={"WWW-Authenticate": "Bearer"},
        )
    connection.state["viewer"] = viewer
    return viewer


async def provide_viewer(request: Request[Any, Any, Any], state: State) -> Viewer:
    return await resolve_viewer(request)


async def provide_user(viewer: NamedDependency[Viewer]) -> str:
    """The id of the requesting user (designs and assets are theirs)."""
    return viewer.user_id


async def operator_only(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """The whole queue is the operator's: the dev user on loopback, or an operator's key."""
    if not (await resolve_viewer(connection)).operator:
        raise Problem(
            403,
            "Forbidden",
            "this is for operators: call it from the server's loopback address "
            "without an API key, or with the key of a user created with "
            "`customify users create EMAIL --operator`",
        )
