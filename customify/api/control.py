"""Operator actions on the queue and the consumer: what the dashboard's keys do, for scripts too.

Retry, re-render and delete of a design live with the designs
(`POST /api/v1/designs/{id}/render`, `DELETE /api/v1/designs/{id}`). The
design row stays the truth: revoking or purging a render task only removes
the hint; the sweeper re-drives a draft whose task is gone.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

from litestar import Controller, get, post, put
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.status_codes import HTTP_200_OK

from customify import schemas, status
from customify.api.auth import operator_only
from customify.api.errors import Problem
from customify.queue import RENDER, EmbeddedConsumer
from customify.runtime import Runtime

MAX_THREADS = schemas.MAX_THREADS  # the bound of PUT /control/workers (the web form reads it)


def _consumer(rt: Runtime) -> EmbeddedConsumer:
    consumer = rt.consumer
    if consumer is None:
        raise Problem(
            409,
            "No consumer",
            "this process runs no consumer (customify api); act on a `customify run` or `customify worker` process",
        )
    if consumer.stop_flag.is_set():
        raise Problem(409, "Consumer stopped", "the consumer of this process is stopped; restart the process")
    return consumer


def _pending(rt: Runtime, limit: int | None) -> list[schemas.PendingTask]:
    now = time.time()
    out = []
    for task in rt.huey.pending(limit):
        name = type(task).__name__
        enqueued = rt.observer.enqueued_at(task.id)
        out.append(
            schemas.PendingTask(
                task_id=task.id,
                task=name,
                design_id=str(task.args[0]) if name == RENDER and task.args else None,
                priority=task.priority,
                # Huey skips a revoked task when a worker reaches it; until then it is still queued.
                revoked=bool(rt.huey.is_revoked(task, peek=True)),
                waiting_s=round(now - enqueued.timestamp(), 3) if enqueued else None,
            )
        )
    return out


def set_paused(rt: Runtime, paused: bool) -> None:
    _consumer(rt).pause(paused)
    rt.hub.publish("control", action="pause" if paused else "resume", paused=paused)


def resize_workers(rt: Runtime, threads: int) -> int:
    """Set the number of worker threads live; the previous number. Runs on a thread."""
    previous = _consumer(rt).resize(threads)
    rt.hub.publish("control", action="workers", threads=threads, previous=previous)
    return previous


def revoke_pending(rt: Runtime, task_id: str) -> schemas.Revoked:
    """Revoke one pending task (a Problem 404 when none has this id); runs on a thread."""
    match = next((t for t in _pending(rt, None) if t.task_id == task_id), None)
    if match is None:
        raise Problem(404, "Not found", f"no pending task {task_id!r} (running or finished tasks cannot be revoked)")
    rt.huey.revoke_by_id(task_id, None, True)
    rt.hub.publish("control", action="revoke", task_id=task_id, task=match.task, design_id=match.design_id)
    return schemas.Revoked(revoked=task_id, task=match.task, design_id=match.design_id)


def purge_pending(rt: Runtime) -> int:
    """Empty the pending queue; how many tasks went. Runs on a thread."""
    count = int(rt.huey.pending_count())
    rt.huey.storage.flush_queue()
    rt.observer.forget_pending()
    rt.hub.publish("control", action="purge", purged=count)
    return count


class ControlController(Controller):
    guards = [operator_only]
    path = "/api/v1/control"
    tags = ["control"]

    @post(
        "/pause",
        status_code=HTTP_200_OK,
        summary="Pause consuming: running tasks finish, no new task starts",
        description="Worker threads keep beating; health stays 200 and says `consuming is paused` "
        "until resumed (a pause is not a failure).",
    )
    async def pause(self, state: State, user_id: NamedDependency[str]) -> schemas.Paused:
        set_paused(state.rt, True)
        return schemas.Paused(paused=True)

    @post("/resume", status_code=HTTP_200_OK, summary="Resume consuming after a pause")
    async def resume(self, state: State, user_id: NamedDependency[str]) -> schemas.Paused:
        set_paused(state.rt, False)
        return schemas.Paused(paused=False)

    @put(
        "/workers",
        summary="Set the number of worker threads live",
        description="More threads start at once; removed threads finish their current task, then exit.",
    )
    async def set_workers(
        self, data: JSONBody[schemas.WorkersIn], state: State, user_id: NamedDependency[str]
    ) -> schemas.WorkersOut:
        rt: Runtime = state.rt
        previous = await asyncio.to_thread(resize_workers, rt, data.threads)
        return schemas.WorkersOut(threads=data.threads, previous=previous)

    @get("/pending", summary="Pending tasks, in the order workers take them")
    async def pending(
        self,
        state: State,
        user_id: NamedDependency[str],
        limit: Annotated[int, QueryParameter(name="limit", ge=1, le=1000)] = 100,
    ) -> list[schemas.PendingTask]:
        rt: Runtime = state.rt
        return await asyncio.to_thread(_pending, rt, limit)

    @post(
        "/pending/{task_id:str}/revoke",
        status_code=HTTP_200_OK,
        summary="Revoke a pending task",
        description="The task is skipped when a worker reaches it. A revoked render leaves its design "
        "in `draft`; the sweeper re-drives it unless the design is deleted first. "
        "404 when no pending task has this id.",
    )
    async def revoke(self, task_id: FromPath[str], state: State, user_id: NamedDependency[str]) -> schemas.Revoked:
        return await asyncio.to_thread(revoke_pending, state.rt, task_id)

    @post(
        "/purge",
        status_code=HTTP_200_OK,
        summary="Purge the pending queue; returns how many tasks went",
        description="Scheduled (delayed, retrying) tasks stay. Purged renders leave their designs in "
        "`draft`; the sweeper re-drives them (render.sweep_interval).",
    )
    async def purge(self, state: State, user_id: NamedDependency[str]) -> schemas.Purged:
        return schemas.Purged(purged=await asyncio.to_thread(purge_pending, state.rt))

    @get("/workers/{name:str}/stack", summary="The live Python stack of a worker thread (stuck in what?)")
    async def stack(self, name: FromPath[str], state: State, user_id: NamedDependency[str]) -> schemas.ThreadStack:
        rt: Runtime = state.rt
        thread = next((t for t in rt.observer.threads_snapshot() if t["name"] == name), None)
        stack = rt.observer.stack_of(name) if thread is not None else None
        _consumer(rt)  # 409 in a `customify api` process, as pause and threads: its workers are elsewhere
        if thread is None or stack is None:
            raise Problem(404, "Not found", f"no live worker thread {name!r} in this process")
        return schemas.ThreadStack(
            worker=name,
            state=thread["state"],
            task=thread["task"],
            task_id=thread["task_id"],
            design_id=thread["design_id"],
            busy_for_s=thread["busy_for_s"],
            stack=[line.rstrip("\n") for line in stack],
        )

    @get("/stats", summary="The queue stats the event stream pushes each second: counts, p50/p95/p99, threads")
    async def stats(self, state: State, user_id: NamedDependency[str]) -> schemas.QueueStats:
        rt: Runtime = state.rt
        return status.queue_stats(rt, await status.snapshot(rt))
