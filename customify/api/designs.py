"""Designs and products: create, list, read (with ?wait=), patch, delete, re-render, previews."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

import msgspec
from litestar import Controller, Request, Response, delete, get, head, patch, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath, HeaderParameter, JSONBody, QueryParameter
from litestar.status_codes import HTTP_201_CREATED, HTTP_202_ACCEPTED, HTTP_204_NO_CONTENT
from sqlalchemy.exc import IntegrityError

from customify import records, schemas
from customify.api.auth import Viewer
from customify.api.conditional import FILE_HEADERS, none_match
from customify.api.errors import Problem, field_error
from customify.api.security import check_create_rate
from customify.config import Limits
from customify.errors import first_line
from customify.events import GAP, Event
from customify.models import Design
from customify.render.cost import estimate_megapixels
from customify.render.products import PRODUCTS
from customify.runtime import Runtime
from customify.storage import RangeNotSatisfiable, media_type

MAX_WAIT = 30.0
# A ?wait= re-reads its design when no event woke it for a while. Events of this process wake it at
# once, and while the relay listens (Postgres: customify/relay.py) so do those of every other
# process: the re-read then only covers an event the relay lost (sent while its listener was
# reconnecting, or too big to send), so every 2 s. Without the relay (several processes on one SQLite
# file, or its listener reconnecting) the re-read is how a worker in another process is seen: after
# 0.5 s, then 1 s, then every 2 s. A design that waits long waits behind a backlog, where a second
# matters less; 400 clients waiting out a burst re-read ~4 times less (bench/RESULTS.md, "The API's reads").
RECHECK_SECONDS = 0.5
RECHECK_RELAYED_SECONDS = 2.0
log = logging.getLogger("customify.api")
T = TypeVar("T")


def iso(value: Any) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def settles(event: Event, design_id: str) -> bool:
    """Whether a waiting GET re-reads its design after this event: the design reached an end or is
    gone, or a task on it ended (the row is then re-read: after a retry it still waits); or other
    processes' events may have been lost (the relay's gap)."""
    if event.kind == GAP:
        return True
    if event.data.get("design_id") != design_id:
        return False
    if event.kind == "design.status":
        return event.data.get("status") in records.TERMINAL
    return event.kind == "design.deleted" or (
        event.kind.startswith("task.") and event.kind not in ("task.enqueued", "task.started")
    )


def design_out(design: records.DesignView, base_url: str) -> schemas.Design:
    has_preview = design.preview_version is not None
    url = f"{base_url}/api/v1/designs/{design.id}"
    return schemas.Design(
        id=design.id,
        name=design.name,
        product=design.product,
        color=design.color,
        layers=msgspec.convert(design.layers, list[schemas.Layer]),
        status=design.status,  # type: ignore[arg-type]
        version=design.version,
        preview_url=f"{url}/preview.png" if has_preview else None,
        thumbnail_url=f"{url}/thumbnail" if has_preview else None,
        error=design.error if design.status in ("failed", "draft") else None,
        created_at=iso(design.created_at) or "",
        updated_at=iso(design.updated_at) or "",
        rendered_at=iso(design.rendered_at),
        render_ms=design.render_ms,
        preview_version=design.preview_version,
        attempts=design.attempts,
    )


def check_spec(
    product: str, color: str | None, layers: list[Any] | None, name: str | None, limits: Limits
) -> list[dict[str, str]]:
    """Semantic checks msgspec cannot do: known product, colour, fonts, limits."""
    errors = []
    template = PRODUCTS.get(product)
    if template is None:
        errors.append(
            field_error(
                "/product", f"unknown product {product!r}; choose one of {', '.join(PRODUCTS)} (GET /api/v1/products)"
            )
        )
    elif color is not None and color.lower()[:7] not in template.colors:
        errors.append(
            field_error("/color", f"{color} is not offered for {product}; choose one of {', '.join(template.colors)}")
        )
    if name is not None and len(name) > limits.max_name_length:
        errors.append(
            field_error("/name", f"{len(name)} characters exceed limits.max_name_length = {limits.max_name_length}")
        )
    if layers is None:
        return errors
    if len(layers) > limits.max_layers:
        errors.append(field_error("/layers", f"{len(layers)} layers exceed limits.max_layers = {limits.max_layers}"))
    for index, layer in enumerate(layers):
        if isinstance(layer, schemas.TextLayer) and len(layer.text) > limits.max_text_length:
            errors.append(
                field_error(
                    f"/layers/{index}/text",
                    f"{len(layer.text)} characters exceed limits.max_text_length = {limits.max_text_length}",
                )
            )
        if isinstance(layer, schemas.ShapeLayer) and layer.shape == "line" and (layer.x2 is None or layer.y2 is None):
            errors.append(field_error(f"/layers/{index}", "a line needs x2 and y2 (its end point)"))
        if isinstance(layer, schemas.ShapeLayer) and layer.fill is None and layer.stroke is None:
            errors.append(
                field_error(f"/layers/{index}/fill", "a shape needs a fill or a stroke colour, or it draws nothing")
            )
    return errors


async def _owned_assets(
    rt: Runtime, owner_id: str, layers: list[Any]
) -> tuple[list[dict[str, str]], dict[str, tuple[int, int]]]:
    """The image layers' assets in one read: an error per layer whose asset is not the owner's upload,
    and the (width, height) of those that are (the render cost needs them)."""
    wanted = [(i, layer.asset_id) for i, layer in enumerate(layers) if isinstance(layer, schemas.ImageLayer)]
    if not wanted:
        return [], {}
    sizes = await rt.reader(records.asset_sizes, owner_id, [a for _, a in wanted])
    errors = [
        field_error(f"/layers/{i}/asset_id", f"unknown asset {a!r}; upload it with POST /api/v1/assets")
        for i, a in wanted
        if a not in sizes
    ]
    return errors, sizes


async def check_assets(rt: Runtime, owner_id: str, layers: list[Any]) -> list[dict[str, str]]:
    errors, _ = await _owned_assets(rt, owner_id, layers)
    return errors


async def read(rt: Runtime, fn: Callable[..., T], *args: Any) -> T:
    """Run a store function (an ORM session's read) in a read transaction on a thread; the short Core
    reads of the hot paths go to `rt.reader` instead (customify/reader.py).

    One thread hop with the sync engine, not AsyncSession over aiosqlite (which hands
    every statement to its own thread and back): measured several times cheaper per
    read, see bench/api_read_path.py and bench/RESULTS.md.
    """
    return await asyncio.to_thread(rt.read, fn, *args)


async def write(rt: Runtime, fn: Callable[..., T], *args: Any) -> T:
    """Run a store function in one write transaction on a thread.

    One hop to a thread with the sync engine, so a write transaction never waits
    on the event loop between its statements while it holds SQLite's writer lock.
    """
    return await asyncio.to_thread(rt.write, fn, *args)


def _cost_errors(
    limits: Limits, product: str, layers: list[Any], sizes: dict[str, tuple[int, int]]
) -> list[dict[str, str]]:
    """The worst case a render may cost, bounded before it is queued (limits.max_render_megapixels)."""
    limit = limits.max_render_megapixels
    cost = estimate_megapixels(product, msgspec.to_builtins(layers), sizes)
    if cost <= limit:
        return []
    return [
        field_error(
            "/layers",
            f"the estimated render cost, {cost:.0f} megapixels, exceeds "
            f"limits.max_render_megapixels = {limit:g}; use fewer, smaller or unrotated layers",
        )
    ]


async def check_layers(rt: Runtime, owner_id: str, product: str, layers: list[Any]) -> list[dict[str, str]]:
    """The image layers' assets exist, then the render cost (which needs their sizes): one read."""
    errors, sizes = await _owned_assets(rt, owner_id, layers)
    return errors or _cost_errors(rt.config.limits, product, layers, sizes)


def _unprocessable(errors: list[dict[str, str]]) -> Problem:
    detail = "; ".join(f"{e['pointer']}: {e['detail']}" for e in errors)
    return Problem(422, "Validation failed", detail, errors)


def enqueue_now(rt: Runtime, design_id: str, version: int) -> None:
    """After the commit, never before: a worker may run it at once. A failure here is
    not lost: the design row stays in draft and the sweeper re-drives it, so it is logged, not raised.
    Runs on a thread."""
    try:
        rt.tasks.render(design_id, version)
    except Exception as exc:
        log.warning(
            "could not enqueue the render of %s v%s (%s); the sweeper will re-drive it",
            design_id,
            version,
            first_line(exc),
        )


async def enqueue_render(rt: Runtime, design_id: str, version: int) -> None:
    """`enqueue_now` from the event loop (a re-render, a PATCH), after their commit."""
    await asyncio.to_thread(enqueue_now, rt, design_id, version)


def create_and_enqueue(
    rt: Runtime, user_id: str, spec: dict[str, Any], idempotency_key: str | None, request_hash: str | None
) -> Design:
    """Insert the design, then enqueue its render: one thread hop for both (a POST's API time is mostly
    its hops, bench/RESULTS.md, issue 18 part 2). Raises IntegrityError for a concurrent duplicate key."""
    design = rt.write(records.create_design, user_id, spec, idempotency_key, request_hash)
    rt.crash_point("after-commit")  # reliability tests: the commit → enqueue gap
    enqueue_now(rt, design.id, design.version)
    return design


class ProductController(Controller):
    path = "/api/v1/products"
    tags = ["products"]

    @get("/", summary="Product templates")
    async def list_products(self) -> list[schemas.ProductOut]:
        return [
            schemas.ProductOut(key=p.key, name=p.name, colors=list(p.colors), canvas=p.canvas, print_area=p.print_area)
            for p in PRODUCTS.values()
        ]


class DesignController(Controller):
    path = "/api/v1/designs"
    tags = ["designs"]

    @post("/", status_code=HTTP_201_CREATED, summary="Create a design (render enqueued)")
    async def create_design(
        self,
        data: JSONBody[schemas.DesignIn],
        state: State,
        user_id: NamedDependency[str],
        viewer: NamedDependency[Viewer],
        idempotency_key: Annotated[str | None, HeaderParameter(name="Idempotency-Key", max_length=200)] = None,
    ) -> Response[schemas.Design]:
        rt: Runtime = state.rt
        errors = check_spec(data.product, data.color, data.layers, data.name, rt.config.limits)
        if errors:
            raise _unprocessable(errors)
        errors = await check_layers(rt, user_id, data.product, data.layers)
        if errors:
            raise _unprocessable(errors)
        spec = msgspec.to_builtins(data)
        request_hash = hashlib.sha256(msgspec.json.encode(spec)).hexdigest() if idempotency_key else None
        if idempotency_key:
            existing = await read(rt, records.design_by_idempotency_key, user_id, idempotency_key)
            if existing is not None:
                return self._replay(existing, request_hash, rt)
        if not viewer.operator:
            await check_create_rate(rt, user_id)
        try:
            design = await asyncio.to_thread(create_and_enqueue, rt, user_id, spec, idempotency_key, request_hash)
        except IntegrityError:
            # A concurrent request with the same key won the race: answer with its design.
            existing = await read(rt, records.design_by_idempotency_key, user_id, idempotency_key or "")
            if existing is None:
                raise
            return self._replay(existing, request_hash, rt)
        return Response(
            design_out(design, rt.config.base_url),
            status_code=HTTP_201_CREATED,
            headers={"Location": f"/api/v1/designs/{design.id}"},
        )

    @staticmethod
    def _replay(existing: Design, request_hash: str | None, rt: Runtime) -> Response[schemas.Design]:
        if existing.request_hash != request_hash:
            raise Problem(
                422,
                "Idempotency key reused",
                "this Idempotency-Key was already used with a different request body; use a new key",
            )
        return Response(
            design_out(existing, rt.config.base_url),
            status_code=HTTP_201_CREATED,
            headers={"Idempotent-Replayed": "true", "Location": f"/api/v1/designs/{existing.id}"},
        )

    @get(
        "/",
        summary="List designs, newest first (cursor pagination)",
        description="`?owner=all` (operators only, 403 otherwise): every user's designs.",
    )
    async def list_designs(
        self,
        state: State,
        viewer: NamedDependency[Viewer],
        status: Annotated[schemas.Status | None, QueryParameter(name="status")] = None,
        limit: Annotated[int, QueryParameter(name="limit", ge=1, le=200)] = 50,
        cursor: Annotated[str | None, QueryParameter(name="cursor", max_length=200)] = None,
        owner: Annotated[Literal["all"] | None, QueryParameter(name="owner")] = None,
    ) -> schemas.DesignPage:
        rt: Runtime = state.rt
        if owner == "all" and not viewer.operator:
            raise Problem(403, "Forbidden", "owner=all (every user's designs) is for operators")
        try:
            rows, next_cursor = await rt.reader(
                records.list_designs, None if owner else viewer.user_id, status, limit, cursor
            )
        except ValueError:
            raise Problem(
                400,
                "Bad request",
                "cursor is not one this API issued; start again without it",
                [field_error("query:cursor", "invalid cursor")],
            ) from None
        return schemas.DesignPage(items=[design_out(d, rt.config.base_url) for d in rows], next_cursor=next_cursor)

    @staticmethod
    async def _get(rt: Runtime, user_id: str | None, design_id: str) -> Design:
        design = await read(rt, records.get_design, user_id, design_id)
        if design is None:
            raise Problem(404, "Not found", f"no design {design_id!r}")
        return design

    @staticmethod
    async def _view(rt: Runtime, user_id: str | None, design_id: str) -> records.DesignView:
        """A design to answer a GET with: a row, read without the ORM, on the reader thread."""
        design = await rt.reader(records.design_view, user_id, design_id)
        if design is None:
            raise Problem(404, "Not found", f"no design {design_id!r}")
        return design

    @get(
        "/{design_id:str}",
        summary="One design; ?wait=SECONDS holds until published/failed",
        description="`?owner=all` (operators only): any user's design, not only the caller's.",
    )
    async def get_design(
        self,
        design_id: FromPath[str],
        state: State,
        viewer: NamedDependency[Viewer],
        wait: Annotated[float, QueryParameter(name="wait", ge=0, le=MAX_WAIT)] = 0,
        owner: Annotated[Literal["all"] | None, QueryParameter(name="owner")] = None,
    ) -> schemas.Design:
        rt: Runtime = state.rt
        user_id = None if owner else viewer.user_id  # ?owner=all: an operator reads any user's design
        if owner and not viewer.operator:
            raise Problem(403, "Forbidden", "owner=all (any user's design) is for operators")
        if not wait:
            return design_out(await self._view(rt, user_id, design_id), rt.config.base_url)
        deadline = time.monotonic() + wait
        # Subscribed before the first read (an event in between still wakes it), to its design's ends only:
        # the hub skips every other event on the publishing thread, so a waiter is woken once, not 5-7
        # times per design rendered anywhere.
        with rt.hub.subscribe(wants=lambda event: settles(event, design_id)) as events:
            design = await self._view(rt, user_id, design_id)
            recheck = RECHECK_SECONDS
            while design.status not in records.TERMINAL and (left := deadline - time.monotonic()) > 0:
                relayed = rt.relay is not None and rt.relay.listening
                try:
                    async with asyncio.timeout(min(left, RECHECK_RELAYED_SECONDS if relayed else recheck)):
                        await events.get()
                except TimeoutError:
                    recheck = min(2 * recheck, RECHECK_RELAYED_SECONDS)
                design = await self._view(rt, user_id, design_id)
        return design_out(design, rt.config.base_url)

    @patch("/{design_id:str}", summary="Change name/colour/layers: version + 1, re-render (a name alone: neither)")
    async def patch_design(
        self,
        design_id: FromPath[str],
        data: JSONBody[schemas.DesignPatch],
        state: State,
        user_id: NamedDependency[str],
    ) -> schemas.Design:
        rt: Runtime = state.rt
        design = await self._get(rt, user_id, design_id)
        changes = {k: v for k, v in msgspec.structs.asdict(data).items() if v is not msgspec.UNSET}
        if not changes:
            raise Problem(422, "Validation failed", "nothing to change; send name, color or layers")
        layers = changes.get("layers")
        errors = check_spec(design.product, changes.get("color"), layers, changes.get("name"), rt.config.limits)
        if layers is not None and not errors:
            errors = await check_layers(rt, user_id, design.product, layers)
        if errors:
            raise _unprocessable(errors)
        if layers is not None:
            changes["layers"] = msgspec.to_builtins(layers)
        updated = await write(rt, records.update_design, user_id, design_id, changes)
        if updated is None:
            raise Problem(404, "Not found", f"no design {design_id!r}")
        if set(changes) - {"name"}:  # the name is not drawn: renaming renders nothing and mails no one
            await enqueue_render(rt, updated.id, updated.version)
        return design_out(updated, rt.config.base_url)

    @delete("/{design_id:str}", status_code=HTTP_204_NO_CONTENT, summary="Delete a design and its files")
    async def delete_design(self, design_id: FromPath[str], state: State, user_id: NamedDependency[str]) -> None:
        rt: Runtime = state.rt
        design = await write(rt, records.delete_design, user_id, design_id)
        if design is None:
            raise Problem(404, "Not found", f"no design {design_id!r}")
        # The store away: the sweeper removes a deleted design's objects after its grace period.
        with contextlib.suppress(ConnectionError):
            await asyncio.to_thread(rt.files.remove_renders, design_id)
        rt.hub.publish("design.deleted", design_id=design_id, owner_id=user_id)  # the row is gone: say whose

    @post("/{design_id:str}/render", status_code=HTTP_202_ACCEPTED, summary="Render again (e.g. after failed)")
    async def rerender(self, design_id: FromPath[str], state: State, user_id: NamedDependency[str]) -> schemas.Design:
        rt: Runtime = state.rt
        design = await write(rt, records.request_render, user_id, design_id)
        if design is None:
            raise Problem(404, "Not found", f"no design {design_id!r}")
        await enqueue_render(rt, design.id, design.version)
        return design_out(design, rt.config.base_url)

    @get("/{design_id:str}/preview.png", summary="The preview PNG (404 until first published)", media_type="image/png")
    async def preview(
        self, design_id: FromPath[str], request: Request[Any, Any, Any], state: State, user_id: NamedDependency[str]
    ) -> Response[bytes]:
        design = await self._view(state.rt, user_id, design_id)
        return await _file_response(request, state.rt, design, design.preview_key)

    @head(
        "/{design_id:str}/preview.png",
        summary="The preview's headers (ETag, type, length), no body",
        media_type="image/png",
    )
    async def preview_head(
        self, design_id: FromPath[str], request: Request[Any, Any, Any], state: State, user_id: NamedDependency[str]
    ) -> Response[None]:
        design = await self._view(state.rt, user_id, design_id)
        return await _head_response(request, state.rt, design, design.preview_key)

    @head("/{design_id:str}/thumbnail", summary="The thumbnail's headers, no body", media_type="image/webp")
    async def thumbnail_head(
        self, design_id: FromPath[str], request: Request[Any, Any, Any], state: State, user_id: NamedDependency[str]
    ) -> Response[None]:
        design = await self._view(state.rt, user_id, design_id)
        return await _head_response(request, state.rt, design, design.thumbnail_key)

    @get("/{design_id:str}/thumbnail", summary="The thumbnail (WebP or JPEG)", media_type="image/webp")
    async def thumbnail(
        self, design_id: FromPath[str], request: Request[Any, Any, Any], state: State, user_id: NamedDependency[str]
    ) -> Response[bytes]:
        design = await self._view(state.rt, user_id, design_id)
        return await _file_response(request, state.rt, design, design.thumbnail_key)


def _file_headers(design: records.DesignView, key: str | None) -> tuple[str, dict[str, str]]:
    """The object to serve and its caching headers, or a 404 that says what to do."""
    if design.preview_version is None or not key:
        hint = (
            "it failed: see its `error`, fix the spec and PATCH it, or POST …/render to try again"
            if design.status == "failed"
            else "wait with GET /api/v1/designs/{id}?wait=10"
        )
        raise Problem(404, "Not found", f"design {design.id} has no preview yet (status {design.status}); {hint}")
    # The key names the version and the claim: a new render is a new key, so a new ETag.
    etag = f'"{design.id[:8]}-{key.rsplit("/", 1)[-1]}"'
    return key, {"ETag": etag, "Cache-Control": "private, max-age=0, must-revalidate", **FILE_HEADERS}


_REPLACED = "the preview is being replaced; retry in a moment"


async def _stored(fn: Callable[..., T], *args: Any) -> T:
    """A read of the store: a missing object is a 404 (replaced meanwhile), a store away a 503."""
    try:
        return await asyncio.to_thread(fn, *args)
    except FileNotFoundError:
        raise Problem(404, "Not found", _REPLACED) from None
    except ConnectionError:
        raise Problem(503, "Storage unavailable", "the object store does not answer; retry in a moment") from None


async def _head_response(
    request: Request[Any, Any, Any], rt: Runtime, design: records.DesignView, key: str | None
) -> Response[None]:
    """HEAD: the GET's headers, no body (link checkers, caches and CDNs ask this way)."""
    key, headers = _file_headers(design, key)
    if none_match(request.headers.get("if-none-match"), headers["ETag"]):
        return Response(b"", status_code=304, headers=headers)  # type: ignore[arg-type]
    size = (await _stored(rt.files.stat, key)).size
    # b"": Litestar cannot render None as an image type; the server sends no body for HEAD anyway.
    return Response(
        b"",  # type: ignore[arg-type]
        media_type=media_type(key),
        headers={**headers, "Content-Length": str(size)},
    )


async def _file_response(
    request: Request[Any, Any, Any], rt: Runtime, design: records.DesignView, key: str | None
) -> Response[bytes]:
    key, headers = _file_headers(design, key)
    etag = headers["ETag"]
    if none_match(request.headers.get("if-none-match"), etag):  # RFC 9110: weak comparison, lists, *
        return Response(b"", status_code=304, headers=headers)
    settings = rt.config.storage
    if settings.serve == "redirect" and (url := rt.files.presign(key, settings.presign_seconds)):
        return Response(b"", status_code=302, headers={"Location": url, "Cache-Control": "private, no-store"})
    wanted = request.headers.get("range", "")
    if wanted.startswith("bytes=") and request.headers.get("if-range", etag) == etag:
        try:
            data, first, size = await _stored(rt.files.read_range, key, wanted[6:])
        except RangeNotSatisfiable as exc:
            raise Problem(
                416,
                "Range not satisfiable",
                f"ask within the preview's bytes ({wanted!r} is not)",
                headers={**FILE_HEADERS, **({"Content-Range": f"bytes */{exc.size}"} if exc.size >= 0 else {})},
            ) from None
        except ValueError:
            data = None  # not one byte range: the whole object, as RFC 9110 allows
        if data is not None:
            return Response(
                data,
                status_code=206,
                media_type=media_type(key),
                headers={**headers, "Content-Range": f"bytes {first}-{first + len(data) - 1}/{size}"},
            )
    content = await _stored(rt.files.read, key)
    return Response(content, media_type=media_type(key), headers=headers)
