"""The Litestar app factory: `create_app(config) -> Litestar`, used by the CLI, the tests and the server."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, Request
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from customify import db, store
from customify.api.assets import AssetController
from customify.api.control import ControlController
from customify.api.designs import DesignController, ProductController
from customify.api.errors import Problem, exception_handlers
from customify.api.events import EventController, event_ticker
from customify.api.system import SystemController
from customify.config import Config
from customify.runtime import Runtime

log = logging.getLogger("customify.api")


async def provide_session(state: State) -> AsyncIterator[AsyncSession]:
    """The request's read session (aiosqlite or psycopg async); writes go through `designs.write`."""
    async with AsyncSession(state.async_engine, expire_on_commit=False) as session:
        yield session


async def provide_user(request: Request[Any, Any, Any], state: State) -> str:
    """The id of the requesting user: a bearer key, or the dev user on loopback."""
    header = request.headers.get("authorization", "")
    rt: Runtime = state.rt
    if header:
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Problem(401, "Unauthorized", "use the header `Authorization: Bearer <key>`",
                          headers={"WWW-Authenticate": "Bearer"})
        user_id = await asyncio.to_thread(rt.read, store.user_id_for_key, key.strip())
        if user_id is None:
            raise Problem(401, "Unauthorized", "unknown API key; create one with `customify users create EMAIL`",
                          headers={"WWW-Authenticate": "Bearer"})
        return user_id
    if rt.config.dev_user_allowed:
        return store.DEV_USER_ID
    raise Problem(401, "Unauthorized", "an API key is required when bound to a non-loopback address; "
                  "send `Authorization: Bearer <key>` (create one with `customify users create EMAIL`)",
                  headers={"WWW-Authenticate": "Bearer"})


def create_app(config: Config, *, consumer: bool = True, runtime: Runtime | None = None,
               on_ready: Callable[[], None] | None = None) -> Litestar:
    """The HTTP API. With `consumer=True` the lifespan also runs the worker threads and scheduler."""
    rt = runtime or Runtime(config)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        if not rt.prepared:
            rt.prepare_database()
        engine: AsyncEngine = db.make_async_engine(rt.database_url)
        app.state.async_engine = engine
        with rt.transaction() as session:
            store.ensure_dev_user(session)
        if consumer:
            rt.start_consumer(single_process=db.is_sqlite(rt.database_url) and rt.queue_kind == "sqlite")
        if on_ready is not None:
            on_ready()
        try:
            yield
        finally:
            rt.stop_consumer(graceful=True)
            await engine.dispose()

    return Litestar(
        route_handlers=[DesignController, ProductController, AssetController, SystemController,
                        EventController, ControlController],
        dependencies={
            "session": Provide(provide_session),
            "user_id": Provide(provide_user),
        },
        exception_handlers=exception_handlers,
        lifespan=[lifespan, event_ticker],
        state=State({"rt": rt}),
        request_max_body_size=config.limits.max_upload_bytes + 1_000_000,
        openapi_config=OpenAPIConfig(title="Customify", version="1", path="/schema",
                                     render_plugins=[SwaggerRenderPlugin()]),
        debug=False,
        # Our CLI configures logging (a file while the dashboard owns the terminal);
        # Litestar's default would replace the root handlers with its own stderr one.
        logging_config=None,
    )
