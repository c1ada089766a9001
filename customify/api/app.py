"""The Litestar app factory: `create_app(config) -> Litestar`, used by the CLI, the tests and the server."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.config.compression import CompressionConfig
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.di import Provide
from litestar.middleware import DefineMiddleware

from customify import db, records, web
from customify.api.assets import AssetController
from customify.api.auth import provide_user, provide_viewer
from customify.api.control import ControlController
from customify.api.designs import DesignController, ProductController
from customify.api.errors import exception_handlers
from customify.api.events import EventController, event_ticker
from customify.api.methods import Methods, route_methods
from customify.api.metrics import HttpMetricsMiddleware, MetricsController
from customify.api.openapi import ContractConfig, docs_assets, docs_page, mark_operators
from customify.api.previews import PreviewController, preview_pool
from customify.api.security import RequestGuard, crafted_input_handlers
from customify.api.system import SystemController
from customify.api.webhooks import WebhookController
from customify.config import Config
from customify.metrics import HttpMetrics
from customify.runtime import Runtime

log = logging.getLogger("customify.api")


def create_app(
    config: Config, *, consumer: bool = True, runtime: Runtime | None = None, on_ready: Callable[[], None] | None = None
) -> Litestar:
    """The HTTP API. With `consumer=True` the lifespan also runs the worker threads and scheduler."""
    rt = runtime or Runtime(config)
    http_metrics = HttpMetrics()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        if not rt.prepared:
            rt.prepare_database()
        with rt.transaction() as session:
            records.ensure_dev_user(session)
        if consumer:
            rt.start_consumer(single_process=db.is_sqlite(rt.database_url) and rt.queue_kind == "sqlite")
        rt.start_relay(listen=True)  # other processes' events for ?wait= and the event stream
        if on_ready is not None:
            on_ready()
        try:
            yield
        finally:
            rt.stop_consumer(graceful=True)

    openapi = ContractConfig(
        title="Customify", version="1", path="/schema", render_plugins=[docs_page()], limits=config.limits
    )
    app = Litestar(
        route_handlers=[
            DesignController,
            ProductController,
            AssetController,
            SystemController,
            EventController,
            ControlController,
            MetricsController,
            WebhookController,
            PreviewController,
            web.web_router(config),
            docs_assets(),
        ],
        dependencies={
            "viewer": Provide(provide_viewer),
            "user_id": Provide(provide_user),
        },
        exception_handlers={**exception_handlers, **crafted_input_handlers, **web.exception_handlers},
        # The metrics count every request, those the guard refuses too.
        middleware=[
            HttpMetricsMiddleware(http_metrics),
            DefineMiddleware(RequestGuard, config=config),
        ],  # Host, Origin, Content-Type
        template_config=web.template_config(),
        csrf_config=web.csrf_config(config),
        lifespan=[lifespan, event_ticker, preview_pool],
        state=State({"rt": rt, "http_metrics": http_metrics}),
        request_max_body_size=config.limits.max_upload_bytes + 1_000_000,
        openapi_config=openapi,
        cors_config=cors(config),
        # JSON above ~1 kB (design and task lists, the OpenAPI document); files are already compressed
        # images and the event stream must flush each event, so neither is.
        compression_config=CompressionConfig(
            backend="brotli",
            brotli_quality=4,
            brotli_gzip_fallback=True,
            gzip_compress_level=6,
            minimum_size=1024,
            exclude=UNCOMPRESSED,
        ),
        debug=False,
        # Our CLI configures logging (a file while the dashboard owns the terminal);
        # Litestar's default would replace the root handlers with its own stderr one.
        logging_config=None,
    )
    mark_operators(app, openapi)
    app.asgi_handler = Methods(app.asgi_handler, route_methods(app))
    return app


UNCOMPRESSED = [r"^/api/v1/designs/[^/]+/(preview\.png|thumbnail)$", r"^/api/v1/assets/.", r"^/api/v1/events"]


def cors(config: Config) -> CORSConfig | None:
    """Browsers on the configured origins may call the API (keys travel as a header, never as cookies)."""
    if not config.cors_origins:
        return None
    return CORSConfig(
        allow_origins=list(config.cors_origins),
        allow_credentials=False,
        allow_methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
        allow_headers=[
            "Authorization",
            "Content-Type",
            "Idempotency-Key",
            "If-None-Match",
            "If-Range",
            "Range",
            "Last-Event-ID",
        ],
        expose_headers=["ETag", "Location", "Retry-After", "Content-Range", "Idempotent-Replayed"],
        max_age=600,
    )
