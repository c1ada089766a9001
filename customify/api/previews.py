"""Instant previews for editors: a design spec in, its image out, with no row, no task and no mail.

Validated exactly as a design is; drawn at the size asked for by the same
renderer code as the final render, in a small pool of render helpers of its
own (so it never waits behind queued renders, and at normal CPU priority);
answered from a bytes-bounded cache when the same spec comes again.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import threading
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Litestar, Request, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import JSONBody, QueryParameter

from customify import schemas
from customify.api.designs import _unprocessable, check_assets, check_spec
from customify.api.errors import Problem, field_error, msgspec_problem
from customify.render import PRODUCTS, RenderError
from customify.render.pool import PreviewJob, RenderCrashed, RenderPool, RenderTimeout
from customify.render.preview import FORMATS
from customify.runtime import Runtime
from customify.tasks import _asset_paths

DEFAULT_SIZE = 600
MIN_SIZE = 16
START_WAIT = 1.0  # seconds a request waits for a free preview helper before a 429
PREVIEW_TIMEOUT = 10.0
Format = Literal["webp", "png", "jpeg"]


# The HTTP server refuses a request line past ~16 kB (measured) before the app sees it: a longer spec is a POST.
SPEC_QUERY_MAX = 12_000


class PreviewCache:
    """Least recently used, bounded by the bytes it holds."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            data = self._items.get(key)
            if data is not None:
                self._items.move_to_end(key)
            return data

    def put(self, key: str, data: bytes) -> None:
        if len(data) > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            self.bytes -= len(old) if old is not None else 0
            self._items[key] = data
            self.bytes += len(data)
            while self.bytes > self.max_bytes:
                _, dropped = self._items.popitem(last=False)
                self.bytes -= len(dropped)


class Previews:
    """One API process's preview helpers, cache and limits."""

    def __init__(self, rt: Runtime) -> None:
        settings = rt.config.previews
        self.rt = rt
        render = rt.config.render
        # Normal priority: ahead of the renders' helpers, which run at worker_nice.
        self.pool = RenderPool(
            render.pool,
            nice=0,
            max_renders=render.helper_max_renders,
            max_memory_mb=render.helper_max_memory_mb,
            asset_cache_mb=render.asset_cache_mb,
            warm=None,  # an editor switches products: each helper warms them all while idle
        )
        self.slots = asyncio.Semaphore(settings.max_concurrent)
        self.cache = PreviewCache(int(settings.cache_mb * 1_000_000))
        self._recent: dict[str, deque[float]] = {}

    def admit(self, user_id: str) -> None:
        """previews.per_minute renders per user: a sliding minute; 429 with the wait beyond it."""
        limit = self.rt.config.previews.per_minute
        now = time.monotonic()
        recent = self._recent.setdefault(user_id, deque())
        while recent and recent[0] <= now - 60:
            recent.popleft()
        if len(recent) >= limit:
            wait = max(1, int(recent[0] + 60 - now) + 1)
            raise Problem(
                429,
                "Too many requests",
                f"more than previews.per_minute = {limit} previews rendered in a minute; retry in {wait} s",
                headers={"Retry-After": str(wait)},
            )
        recent.append(now)
        if len(self._recent) > 10_000:
            self._recent = {u: q for u, q in self._recent.items() if q and q[-1] > now - 60}

    async def render(self, job: PreviewJob) -> bytes:
        try:
            async with asyncio.timeout(START_WAIT):
                await self.slots.acquire()
        except TimeoutError:
            raise Problem(
                429,
                "Too many requests",
                "every preview helper is busy "
                f"(previews.max_concurrent = {self.rt.config.previews.max_concurrent}); retry shortly",
                headers={"Retry-After": "1"},
            ) from None
        try:
            return await asyncio.to_thread(self.pool.preview, job, time.monotonic() + PREVIEW_TIMEOUT)
        except RenderError as exc:
            raise Problem(422, "Cannot render", str(exc)) from None
        except (RenderTimeout, RenderCrashed) as exc:
            raise Problem(
                503,
                "Service unavailable",
                f"the preview could not be drawn ({exc}); retry",
                headers={"Retry-After": "1"},
            ) from None
        finally:
            self.slots.release()


@asynccontextmanager
async def preview_pool(app: Litestar) -> AsyncIterator[None]:
    """The preview helpers live as long as the app (started on first use)."""
    previews = Previews(app.state.rt)
    app.state.previews = previews
    try:
        yield
    finally:
        await asyncio.to_thread(previews.pool.close)


def etag_of(data: schemas.DesignIn, size: int, fmt: str) -> str:
    """A hash of the normalised spec (defaults filled in; the name draws nothing), the size and format."""
    spec = msgspec.to_builtins(data)
    spec.pop("name", None)
    digest = hashlib.sha256(msgspec.json.encode([spec, size, fmt], order="sorted")).hexdigest()
    return f'"p-{digest[:32]}"'


def decode_spec(encoded: str) -> schemas.DesignIn:
    """?spec=<base64url JSON>: 400 if it is not base64url JSON, 422 (with pointers) if it is not a design."""
    try:
        raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    except (binascii.Error, ValueError):
        raise Problem(
            400,
            "Bad request",
            "spec is not base64url; encode the design's JSON with base64url",
            [field_error("query:spec", "not base64url")],
        ) from None
    try:
        return msgspec.json.decode(raw, type=schemas.DesignIn)
    except msgspec.ValidationError as exc:
        pointer, text = msgspec_problem(str(exc))
        raise Problem(422, "Validation failed", f"{pointer or 'spec'}: {text}", [field_error(pointer, text)]) from None
    except msgspec.DecodeError as exc:
        raise Problem(
            400, "Bad request", f"spec is not JSON ({exc})", [field_error("query:spec", "not JSON")]
        ) from None


class PreviewController(Controller):
    path = "/api/v1/previews"
    tags = ["previews"]

    @post(
        "/",
        status_code=200,
        media_type="image/webp",
        summary="Render a design spec now and return the image (no design is stored)",
    )
    async def post_preview(
        self,
        data: JSONBody[schemas.DesignIn],
        request: Request[Any, Any, Any],
        state: State,
        user_id: NamedDependency[str],
        fmt: Annotated[Format, QueryParameter(name="format")] = "webp",
        size: Annotated[int | None, QueryParameter(name="size", ge=MIN_SIZE)] = None,
    ) -> Response[bytes]:
        return await _answer(state.rt, state.previews, request, user_id, data, fmt, size)

    @get("/", media_type="image/webp", summary="The same, for an <img src>: ?spec=<base64url JSON of the spec>")
    async def get_preview(
        self,
        request: Request[Any, Any, Any],
        state: State,
        user_id: NamedDependency[str],
        spec: Annotated[str, QueryParameter(name="spec", max_length=SPEC_QUERY_MAX, pattern=r"^[A-Za-z0-9_=-]*$")],
        fmt: Annotated[Format, QueryParameter(name="format")] = "webp",
        size: Annotated[int | None, QueryParameter(name="size", ge=MIN_SIZE)] = None,
    ) -> Response[bytes]:
        return await _answer(state.rt, state.previews, request, user_id, decode_spec(spec), fmt, size)


async def _answer(
    rt: Runtime,
    previews: Previews,
    request: Request[Any, Any, Any],
    user_id: str,
    data: schemas.DesignIn,
    fmt: str,
    size: int | None,
) -> Response[bytes]:
    errors = check_spec(data.product, data.color, data.layers, data.name, rt.config.limits)
    if errors:
        raise _unprocessable(errors)
    canvas = max(PRODUCTS[data.product].canvas)
    if size is None:
        size = min(DEFAULT_SIZE, canvas)
    if size > canvas:
        raise Problem(
            422,
            "Validation failed",
            f"size {size} exceeds the {data.product}'s canvas ({canvas} px)",
            [field_error("query:size", f"at most {canvas} for {data.product}")],
        )
    etag = etag_of(data, size, fmt)
    headers = {"ETag": etag, "Cache-Control": "private, max-age=3600"}
    # Cached per user: a hit means this user's assets were checked already (assets never change or go).
    key = f"{user_id} {etag}"
    image = previews.cache.get(key)
    if image is None:
        errors = await check_assets(rt, user_id, data.layers)
        if errors:
            raise _unprocessable(errors)
    if request.headers.get("if-none-match") == etag:
        return Response(b"", status_code=304, headers=headers)
    if image is None:
        previews.admit(user_id)
        spec = msgspec.to_builtins(data)
        assets = await asyncio.to_thread(_asset_paths, rt, spec, user_id)
        job = PreviewJob(spec, assets, size, fmt, rt.config.render.png_compress_level)
        image = await previews.render(job)
        previews.cache.put(key, image)
    return Response(image, media_type=FORMATS[fmt], headers=headers)
