"""The web dashboard and gallery at `/`, served by the API's own Litestar app.

Server-rendered Jinja pages; htmx (vendored in `static/`, no CDN, works offline)
swaps fragments, and its SSE extension holds one `GET /api/v1/events`
connection per tab. `create_app` mounts `web_router(config)` and takes its
`template_config`, `csrf_config` and the HTML error pages from here.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from litestar import Response, Router, get
from litestar.config.csrf import CSRFConfig
from litestar.datastructures import ResponseHeader
from litestar.di import Provide
from litestar.exceptions import HTTPException
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import File, Template
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

from customify.api.errors import Problem
from customify.api.errors import exception_handlers as api_handlers
from customify.config import Config
from customify.web.auth import (
    AnyRequest,
    LoginController,
    LoginRequired,
    PageForbidden,
    forbidden,
    page_operator,
    page_viewer,
    to_login,
)
from customify.web.operators import OperatorController
from customify.web.pages import PageController

HERE = Path(__file__).parent
CSRF_COOKIE = "customify_csrf"
# Defence in depth behind the templates' escaping: only this site's own scripts run (no inline script,
# no eval), nothing is framed. Inline style attributes carry a design's colour swatch.
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; "
    "base-uri 'self'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


@get("/favicon.ico", include_in_schema=False, cache=False)
async def favicon() -> File:
    return File(
        HERE / "static" / "favicon.ico",
        media_type="image/x-icon",
        content_disposition_type="inline",
        headers={"Cache-Control": "public, max-age=86400"},
    )


def headers(config: Config) -> dict[str, str]:
    """HEADERS; with storage.serve = "redirect" previews come from the bucket's presigned URLs: any image source."""
    if config.storage.serve != "redirect":
        return HEADERS
    csp = HEADERS["Content-Security-Policy"].replace("img-src 'self' data:", "img-src * data:")
    return {**HEADERS, "Content-Security-Policy": csp}


def web_router(config: Config) -> Router:
    pages = Router(
        path="/",
        route_handlers=[PageController, OperatorController],
        dependencies={"viewer": Provide(page_viewer), "operator": Provide(page_operator)},
        exception_handlers={LoginRequired: to_login, PageForbidden: forbidden},
        include_in_schema=False,
    )
    static = create_static_files_router(
        path="/static", directories=[HERE / "static"], include_in_schema=False, cache_control=None
    )
    return Router(
        path="/",
        route_handlers=[pages, LoginController, static, favicon],
        include_in_schema=False,
        response_headers=[ResponseHeader(name=name, value=value) for name, value in headers(config).items()],
    )


def template_config() -> TemplateConfig[JinjaTemplateEngine]:
    return TemplateConfig(directory=HERE / "templates", engine=JinjaTemplateEngine, engine_callback=_template_filters)


def csrf_config(config: Config) -> CSRFConfig:
    """Litestar's double-submit token on every state-changing request to the pages; the JSON API
    (`/api/`, keys in headers, no cookies for writes) is outside it."""
    return CSRFConfig(
        secret=config.secret_key or secrets.token_hex(32),
        cookie_name=CSRF_COOKIE,
        cookie_samesite="strict",
        cookie_secure=config.base_url.startswith("https://"),
        cookie_httponly=True,  # the pages carry the token in their forms and headers
        exclude=["^/api/", "^/schema"],
    )


def _wants_html(request: AnyRequest) -> bool:
    path = request.url.path
    return not path.startswith(("/api/", "/schema")) and "text/html" in request.headers.get("accept", "")


def error_page(request: AnyRequest, exc: HTTPException) -> Response[Any]:
    """HTML for a browser's page (unknown page, a refused form); problem+json for the API and scripts."""
    if not _wants_html(request):  # the API's own handler for this exception class
        handler = next(api_handlers[cls] for cls in type(exc).__mro__ if cls in api_handlers)
        return handler(request, exc)  # type: ignore[no-any-return]
    status = exc.status_code
    titles = {403: "Forbidden", 404: "Page not found"}
    message = (
        exc.detail
        if isinstance(exc, Problem)
        else {
            404: "There is no page here.",
            403: "The form was refused: its security token is missing or expired. Reload the page and try again.",
        }.get(status, exc.detail)
    )
    return Template(
        "error.html",
        status_code=status,
        context={"viewer": None, "title": titles.get(status, "Error"), "message": message},
    )


exception_handlers: dict[Any, Any] = {404: error_page, 403: error_page, 400: error_page, 422: error_page}


def _template_filters(engine: JinjaTemplateEngine) -> None:
    from customify.web import filters

    engine.engine.filters.update(filters.FILTERS)
    engine.engine.globals.update(version=_asset_version())


def _asset_version() -> str:
    """A cache-buster for the static files: changes when any of them does."""
    newest = max(p.stat().st_mtime_ns for p in (HERE / "static").iterdir())
    return format(newest % 10**9, "x")


__all__ = ["csrf_config", "exception_handlers", "template_config", "web_router"]
