"""The operators' page: pause/resume, worker threads, pending tasks (revoke), purge, a thread's live stack.

The actions are the `/api/v1/control` endpoints' own functions, behind a form
and the CSRF token; a customer gets a 403 page.
"""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import Controller, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.response import Redirect, Template

from customify.api.auth import Viewer
from customify.api.control import (
    MAX_THREADS,
    _pending,
    purge_pending,
    resize_workers,
    revoke_pending,
    set_paused,
)
from customify.api.errors import Problem
from customify.runtime import Runtime
from customify.web.auth import AnyRequest, Form
from customify.web.pages import base_context, overview_stats


def _back(request: AnyRequest, flash: str) -> Response[Any]:
    return Redirect(f"/operators?done={flash}", status_code=303)


class OperatorController(Controller):
    path = "/operators"
    include_in_schema = False

    @get("/")
    async def page(self, request: AnyRequest, state: State, operator: NamedDependency[Viewer]) -> Template:
        rt: Runtime = state.rt
        stats = await overview_stats(rt)
        pending = await asyncio.to_thread(_pending, rt, 50)
        done = request.query_params.get("done", "")
        context = base_context(
            rt,
            operator,
            page="operators",
            stats=stats,
            pending=pending,
            has_consumer=rt.consumer is not None,
            max_threads=MAX_THREADS,
            done={
                "pause": "Consuming is paused.",
                "resume": "Consuming resumed.",
                "workers": "Worker threads changed.",
                "revoke": "Task revoked.",
                "purge": "Pending queue purged.",
                "purge-refused": "Nothing purged: type purge to confirm.",
            }.get(done, ""),
        )
        return Template("operators.html", context=context)

    @post("/pause", status_code=303)
    async def pause(self, request: AnyRequest, state: State, operator: NamedDependency[Viewer]) -> Any:
        set_paused(state.rt, True)
        return _back(request, "pause")

    @post("/resume", status_code=303)
    async def resume(self, request: AnyRequest, state: State, operator: NamedDependency[Viewer]) -> Any:
        set_paused(state.rt, False)
        return _back(request, "resume")

    @post("/workers", status_code=303)
    async def workers(self, request: AnyRequest, state: State, operator: NamedDependency[Viewer], data: Form) -> Any:
        rt: Runtime = state.rt
        raw = (data.get("threads") or "").strip()
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_THREADS:
            raise Problem(422, "Validation failed", f"threads: a whole number from 1 to {MAX_THREADS}")
        await asyncio.to_thread(resize_workers, rt, int(raw))
        return _back(request, "workers")

    @post("/pending/{task_id:str}/revoke", status_code=303)
    async def revoke(
        self, request: AnyRequest, task_id: FromPath[str], state: State, operator: NamedDependency[Viewer]
    ) -> Any:
        await asyncio.to_thread(revoke_pending, state.rt, task_id)
        return _back(request, "revoke")

    @post("/purge", status_code=303)
    async def purge(self, request: AnyRequest, state: State, operator: NamedDependency[Viewer], data: Form) -> Any:
        if (data.get("confirm") or "").strip() != "purge":  # typed, as in the TUI
            return _back(request, "purge-refused")
        await asyncio.to_thread(purge_pending, state.rt)
        return _back(request, "purge")

    @get("/workers/{name:str}/stack")
    async def stack(
        self, request: AnyRequest, name: FromPath[str], state: State, operator: NamedDependency[Viewer]
    ) -> Template:
        rt: Runtime = state.rt
        thread = next((t for t in rt.observer.threads_snapshot() if t["name"] == name), None)
        stack = rt.observer.stack_of(name) if thread is not None else None
        context = base_context(
            rt,
            operator,
            page="operators",
            name=name,
            thread=thread,
            stack=[line.rstrip("\n") for line in stack] if stack else None,
        )
        fragment = request.headers.get("hx-target") == "stack"  # the page's refresh each second
        return Template(
            "_stack.html" if fragment else "stack.html",
            context=context,
            status_code=200 if stack is not None or fragment else 404,
        )
