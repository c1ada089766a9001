"""System endpoints: health, worker-status, debug-task round trip, task history.

Health and worker-status only present what customify.status judges (one
snapshot: database, queue, registry, write probes, this process's threads), so
they cannot disagree with each other, the event stream or the dashboard.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

from huey.exceptions import ResultTimeout
from litestar import Controller, Request, Response, get, head, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import QueryParameter

from customify import records, schemas, status
from customify.api.auth import Viewer, operator_only, resolve_viewer
from customify.api.designs import iso
from customify.api.errors import Problem
from customify.runtime import Runtime


async def _is_operator(request: Request[Any, Any, Any]) -> bool:
    """Health details are the operator's: anonymous callers where keys are needed (off loopback), and
    customers, get the status and the names of the checks only."""
    try:
        return (await resolve_viewer(request)).operator
    except Problem:
        return False


def _unanswered(rt: Runtime) -> str:
    """Why a debug task went unanswered, as far as this process can tell."""
    local = status.local_worker(rt)
    if local is not None and local.paused:
        return "this process's consumer is paused by an operator (POST /api/v1/control/resume)"
    busy = [t for t in local.threads if t.state == "busy"] if local is not None else []
    if local is not None and busy and len(busy) == len(local.threads):
        return (
            f"all {len(busy)} worker thread(s) of this process are busy (the debug task goes first when "
            "one frees; GET /api/v1/system/worker-status shows them)"
        )
    return "is a consumer running? (customify worker, or customify run)"


class SystemController(Controller):
    path = "/api/v1/system"
    tags = ["system"]

    @get(
        "/health",
        summary="200 (ok or degraded) or 503 (failing), naming each check and problem in words",
        description="`status` is `ok`, `degraded` (200: something is wrong but work continues, e.g. one frozen "
        "render helper, mail not sent) or `failing` (503). An operator (loopback dev user or an "
        "operator's key) gets each check's detail and the problems; anyone else the status and "
        "the check names only.",
    )
    async def health(self, state: State, request: Request[Any, Any, Any]) -> Response[schemas.Health]:
        snap = await status.snapshot(state.rt)
        body = status.health(snap, details=await _is_operator(request))
        return Response(body, status_code=503 if snap.status == "failing" else 200)

    @head(
        "/health",
        summary="The health status code (200 or 503) without a body, for monitors that ask so",
        media_type="application/json",
    )
    async def health_head(self, state: State) -> Response[None]:
        snap = await status.snapshot(state.rt)
        # b"": Litestar cannot render None for a typed response; the server sends no body for HEAD anyway.
        return Response(b"", status_code=503 if snap.status == "failing" else 200)  # type: ignore[arg-type]

    @get(
        "/worker-status",
        summary="Workers, registered/active/scheduled tasks, queue sizes, broker, drift",
        guards=[operator_only],
        description="For operators (see `customify users create --operator`). "
        "503 problem+json when the queue cannot be read.",
    )
    async def worker_status(self, state: State) -> schemas.WorkerStatus:
        rt: Runtime = state.rt
        snap = await status.snapshot(rt)
        if snap.inputs.queue_error is not None:
            raise Problem(503, "Service unavailable", f"queue unreachable: {snap.inputs.queue_error}")
        return await asyncio.to_thread(status.worker_status, rt, snap)

    @post(
        "/debug-task",
        summary="Enqueue the debug task and wait for it (504 after 5 s)",
        status_code=200,
        guards=[operator_only],
        description="For operators. A round trip through the queue and a worker.",
    )
    async def debug_task(self, state: State) -> schemas.DebugTaskOut:
        rt: Runtime = state.rt
        started = time.perf_counter()
        result = await asyncio.to_thread(rt.tasks.debug)
        try:
            value = await asyncio.to_thread(result.get, blocking=True, timeout=5, backoff=1.0, max_delay=0.01)
        except ResultTimeout:  # an unanswered task expires unrun (tasks.DEBUG_EXPIRES)
            raise Problem(
                504, "Gateway timeout", f"no worker answered the debug task within 5 s; {_unanswered(rt)}"
            ) from None
        return schemas.DebugTaskOut(
            task_id=result.id, result=value, roundtrip_ms=round((time.perf_counter() - started) * 1000, 2)
        )

    @get(
        "/tasks",
        summary="Recent task history",
        description="An operator sees every task; a customer the tasks of their own designs.",
    )
    async def tasks(
        self,
        state: State,
        viewer: NamedDependency[Viewer],
        limit: Annotated[int, QueryParameter(name="limit", ge=1, le=500)] = 50,
        design_id: Annotated[str | None, QueryParameter(name="design_id", max_length=36)] = None,
    ) -> list[schemas.TaskRunOut]:
        rt: Runtime = state.rt
        await asyncio.to_thread(rt.history.flush)  # what this process's workers have not written yet
        owner = None if viewer.operator else viewer.user_id
        rows = await asyncio.to_thread(rt.read, records.recent_tasks, limit, design_id, owner)
        out = []
        for r in rows:
            wait = (r.started_at - r.enqueued_at).total_seconds() * 1000 if r.enqueued_at else None
            run = (r.finished_at - r.started_at).total_seconds() * 1000 if r.finished_at else None
            out.append(
                schemas.TaskRunOut(
                    task_id=r.task_id,
                    task=r.task_name,
                    design_id=r.design_id,
                    state=r.state,
                    attempt=r.attempt,
                    worker=r.worker,
                    enqueued_at=iso(r.enqueued_at),
                    started_at=iso(r.started_at) or "",
                    finished_at=iso(r.finished_at),
                    wait_ms=None if wait is None else round(wait, 2),
                    run_ms=None if run is None else round(run, 2),
                    error=r.error,
                )
            )
        return out
