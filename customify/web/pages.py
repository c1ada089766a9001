"""The pages: overview, designs gallery, one design, create. Server-rendered; htmx and the event stream keep them live.

Every figure comes from the code the API serves it with (the queue stats of
`api.events`, the store's functions); the pages only present it.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated, Any

import msgspec
from litestar import Controller, Response, get, post
from litestar.datastructures import State, UploadFile
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromPath, QueryParameter
from litestar.response import Redirect, Template

from customify import records, schemas, status
from customify.api.assets import save_upload
from customify.api.auth import Viewer
from customify.api.designs import (
    _file_response,
    check_layers,
    check_spec,
    create_and_enqueue,
    enqueue_render,
    read,
    write,
)
from customify.api.errors import Problem
from customify.api.security import check_create_rate
from customify.models import Design
from customify.render.fonts import FONTS
from customify.render.products import PRODUCTS
from customify.runtime import Runtime
from customify.web.auth import AnyRequest

PAGE_SIZE = 24
STATUSES = ("draft", "rendering", "published", "failed")


def base_context(rt: Runtime, viewer: Viewer, **extra: Any) -> dict[str, Any]:
    """What every page's frame shows: who, the pause banner, where the event stream resumes."""
    consumer = rt.consumer
    return {
        "viewer": viewer,
        "last_event_id": rt.hub.last_id(),
        "paused": bool(viewer.operator and consumer is not None and getattr(consumer, "paused", False)),
        "statuses": STATUSES,
        **extra,
    }


def card(design: records.DesignView, owner_email: str | None = None) -> dict[str, Any]:
    return {
        "id": design.id,
        "name": design.name,
        "product": design.product,
        "color": design.color,
        "status": design.status,
        "version": design.version,
        "preview_version": design.preview_version,
        "error": design.error,
        "created_at": design.created_at,
        "owner": owner_email,
        "product_name": PRODUCTS[design.product].name if design.product in PRODUCTS else design.product,
    }


async def overview_stats(rt: Runtime) -> dict[str, Any]:
    """What GET /api/v1/control/stats and the `queue` event carry: customify/status.py's one judgement."""
    stats: dict[str, Any] = msgspec.to_builtins(status.queue_stats(rt, await status.snapshot(rt)))
    return stats


class PageController(Controller):
    path = "/"
    include_in_schema = False

    @get("/")
    async def overview(self, state: State, viewer: NamedDependency[Viewer]) -> Template:
        rt: Runtime = state.rt
        stats = await overview_stats(rt)
        recent, _ = await read(rt, records.list_designs, viewer.user_id, None, 6, None)
        context = base_context(
            rt,
            viewer,
            page="overview",
            healthy=stats["healthy"],
            status=stats.get("status"),
            problems=stats["problems"] if viewer.operator else [],
            stats=stats if viewer.operator else None,
            pool=rt.renderers.describe() if rt.consumer is not None else None,
            recent=[card(d) for d in recent],
        )
        return Template("overview.html", context=context)

    @get("/designs")
    async def designs(
        self,
        request: AnyRequest,
        state: State,
        viewer: NamedDependency[Viewer],
        status: Annotated[str | None, QueryParameter(name="status", max_length=20)] = None,
        q: Annotated[str | None, QueryParameter(name="q", max_length=200)] = None,
        cursor: Annotated[str | None, QueryParameter(name="cursor", max_length=200)] = None,
        owner: Annotated[str | None, QueryParameter(name="owner", max_length=20)] = None,
    ) -> Template:
        rt: Runtime = state.rt
        every = owner == "all" and viewer.operator
        status = status if status in STATUSES else None  # the form's "all" is an empty value
        q = (q or "").strip() or None
        try:
            rows, next_cursor = await read(
                rt, records.list_designs, None if every else viewer.user_id, status, PAGE_SIZE, cursor, q
            )
        except ValueError:
            raise Problem(400, "Bad request", "cursor is not one this site issued; start again without it") from None
        emails = await read(rt, records.user_emails, [d.owner_id for d in rows]) if every else {}
        filters = {"status": status or "", "q": q or "", "owner": "all" if every else ""}
        context = base_context(
            rt,
            viewer,
            page="designs",
            cards=[card(d, emails.get(d.owner_id)) for d in rows],
            next_cursor=next_cursor,
            filters=filters,
            first_page=cursor is None,
        )
        # htmx asks for the next page or a new filter: the cards alone (a boosted form gets the page).
        fragment = request.headers.get("hx-target") in ("cards", "more")
        return Template("_cards.html" if fragment else "designs.html", context=context)

    @get("/designs/{design_id:str}/card")
    async def design_card(
        self,
        design_id: FromPath[str],
        state: State,
        viewer: NamedDependency[Viewer],
        status: Annotated[str | None, QueryParameter(name="status", max_length=20)] = None,
        q: Annotated[str | None, QueryParameter(name="q", max_length=200)] = None,
    ) -> Response[Any]:
        """One card, for the gallery's live updates: empty when it is gone or does not match the filter."""
        rt: Runtime = state.rt
        design = await read(rt, records.get_design, None if viewer.operator else viewer.user_id, design_id)
        if design is None or (status and design.status != status) or (q and q.lower() not in design.name.lower()):
            return Response(b"", media_type="text/html")
        return Template("_card.html", context={"c": card(design)})

    @get("/designs/{design_id:str}/thumbnail")
    async def thumbnail(
        self, request: AnyRequest, design_id: FromPath[str], state: State, viewer: NamedDependency[Viewer]
    ) -> Response[bytes]:
        """The API's thumbnail, for the pages (an operator's gallery shows every user's)."""
        design = await _owned(state.rt, viewer, design_id)
        return await _file_response(request, state.rt, design, design.thumbnail_key)

    @get("/designs/{design_id:str}/preview.png")
    async def preview(
        self, request: AnyRequest, design_id: FromPath[str], state: State, viewer: NamedDependency[Viewer]
    ) -> Response[bytes]:
        design = await _owned(state.rt, viewer, design_id)
        return await _file_response(request, state.rt, design, design.preview_key)

    @get("/designs/{design_id:str}")
    async def design(
        self, request: AnyRequest, design_id: FromPath[str], state: State, viewer: NamedDependency[Viewer]
    ) -> Template:
        rt: Runtime = state.rt
        design = await read(rt, records.get_design, None if viewer.operator else viewer.user_id, design_id)
        if design is None:
            return Template(
                "error.html",
                status_code=404,
                context=base_context(
                    rt, viewer, title="No such design", message="It may have been deleted, or it is not yours."
                ),
            )
        await asyncio.to_thread(rt.history.flush)
        tasks = await asyncio.to_thread(
            rt.read, records.recent_tasks, 50, design_id, None if viewer.operator else viewer.user_id
        )
        owner = None
        if design.owner_id != viewer.user_id:
            owner = (await read(rt, records.user_emails, [design.owner_id])).get(design.owner_id)
        context = base_context(
            rt,
            viewer,
            page="designs",
            d=card(design),
            owner=owner,
            layers=design.layers,
            updated_at=design.updated_at,
            rendered_at=design.rendered_at,
            render_ms=design.render_ms,
            attempts=design.attempts,
            tasks=tasks,
        )
        fragment = request.headers.get("hx-target") == "panel"  # the page's live refresh
        return Template("_design_panel.html" if fragment else "design.html", context=context)

    @post("/designs/{design_id:str}/render", status_code=303)
    async def rerender(self, design_id: FromPath[str], state: State, viewer: NamedDependency[Viewer]) -> Response[Any]:
        rt: Runtime = state.rt
        design = await _owned(rt, viewer, design_id)
        updated = await write(rt, records.request_render, design.owner_id, design_id)
        if updated is not None:
            await enqueue_render(rt, updated.id, updated.version)
        return Redirect(f"/designs/{design_id}", status_code=303)

    @post("/designs/{design_id:str}/delete", status_code=303)
    async def delete(self, design_id: FromPath[str], state: State, viewer: NamedDependency[Viewer]) -> Response[Any]:
        rt: Runtime = state.rt
        design = await _owned(rt, viewer, design_id)
        if await write(rt, records.delete_design, design.owner_id, design_id) is not None:
            with contextlib.suppress(ConnectionError):  # the store away: the sweeper removes them later
                await asyncio.to_thread(rt.files.remove_renders, design_id)
            rt.hub.publish("design.deleted", design_id=design_id, owner_id=design.owner_id)
        return Redirect("/designs", status_code=303)

    @get("/designs/new")
    async def new_form(
        self,
        request: AnyRequest,
        state: State,
        viewer: NamedDependency[Viewer],
        product: Annotated[str, QueryParameter(name="product", max_length=40)] = "tshirt",
    ) -> Template:
        rt: Runtime = state.rt
        key = product if product in PRODUCTS else "tshirt"
        colors = PRODUCTS[key].colors  # white text shows on the first coloured one
        form = {
            "product": key,
            "name": "",
            "color": next((c for c in colors if c != "#ffffff"), colors[0]),
            "text1": "",
            "text2": "",
            "text_color": "#ffffff",
            "font": "DejaVu Sans",
        }
        return Template("new.html", context=_form_context(rt, viewer, form, [], instant_preview(request)))

    @post("/designs/new", status_code=303)
    async def create(
        self,
        request: AnyRequest,
        state: State,
        viewer: NamedDependency[Viewer],
        data: Annotated[dict[str, Any], Body(media_type=RequestEncodingType.MULTI_PART)],
    ) -> Response[Any]:
        rt: Runtime = state.rt
        form = {k: (v.strip() if isinstance(v, str) else "") for k, v in data.items() if k != "image"}
        errors, layers = [], []
        for key, y, size in (("text1", 0.25, 0.12), ("text2", 0.8, 0.07)):
            if form.get(key):
                layers.append(
                    {
                        "type": "text",
                        "text": form[key],
                        "font": form.get("font") or "DejaVu Sans",
                        "weight": "bold" if key == "text1" else "regular",
                        "size": size,
                        "color": form.get("text_color") or "#ffffff",
                        "x": 0.5,
                        "y": y,
                    }
                )
        upload = data.get("image")
        if isinstance(upload, UploadFile) and upload.filename:
            try:
                asset = await save_upload(rt, viewer.user_id, await upload.read(), upload.filename)
                layers.append({"type": "image", "asset_id": str(asset.id), "x": 0.5, "y": 0.52, "width": 0.5})
            except Problem as exc:
                errors.append(f"image: {exc.detail}")
        spec = {
            "name": form.get("name") or "",
            "product": form.get("product") or "",
            "color": form.get("color") or "",
            "layers": layers,
        }
        try:
            design_in = msgspec.convert(spec, schemas.DesignIn)
        except msgspec.ValidationError as exc:
            errors.append(_readable(str(exc)))
        else:
            errors += [
                f"{e['pointer'].strip('/') or 'design'}: {e['detail']}"
                for e in check_spec(
                    design_in.product, design_in.color, design_in.layers, design_in.name, rt.config.limits
                )
            ]
            if not errors:
                errors += [
                    e["detail"] for e in await check_layers(rt, viewer.user_id, design_in.product, design_in.layers)
                ]
            if not errors and not viewer.operator:
                try:
                    await check_create_rate(rt, viewer.user_id)  # as the API's create: limits.designs_per_minute
                except Problem as exc:
                    errors.append(exc.detail)
        if errors:
            return Template(
                "new.html", status_code=422, context=_form_context(rt, viewer, form, errors, instant_preview(request))
            )
        design = await asyncio.to_thread(
            create_and_enqueue, rt, viewer.user_id, msgspec.to_builtins(design_in), None, None
        )
        return Redirect(f"/designs/{design.id}", status_code=303)


def _readable(message: str) -> str:
    """msgspec's `Expected str of length >= 1 - at `$.name`` → `name: expected …`."""
    if " - at `$." in message:
        text, where = message.rsplit(" - at `$.", 1)
        return f"{where.rstrip('`').split('[')[0]}: {text[0].lower()}{text[1:]}"
    return message


def instant_preview(request: AnyRequest) -> bool:
    """Whether this app serves GET /api/v1/previews (an image for a spec, nothing stored)."""
    return any(route.path == "/api/v1/previews" for route in request.app.routes)


def _form_context(
    rt: Runtime, viewer: Viewer, form: dict[str, str], errors: list[str], preview: bool
) -> dict[str, Any]:
    products = [{"key": p.key, "name": p.name, "colors": list(p.colors)} for p in PRODUCTS.values()]
    return base_context(
        rt,
        viewer,
        page="new",
        form=form,
        errors=errors,
        products=products,
        fonts=list(FONTS),
        instant_preview=preview,
        colors=list(PRODUCTS[form["product"]].colors) if form.get("product") in PRODUCTS else [],
    )


async def _owned(rt: Runtime, viewer: Viewer, design_id: str) -> Design:
    """The design if the viewer may act on it (an operator on any); else a 404, as the API does."""
    design = await read(rt, records.get_design, None if viewer.operator else viewer.user_id, design_id)
    if design is None:
        raise Problem(404, "Not found", f"no design {design_id!r}")
    return design
