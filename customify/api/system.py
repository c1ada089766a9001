"""System endpoints: health, worker-status, debug-task round trip, task history.

All of them read the one Observer picture (plus the queue and database for
real), so they cannot disagree with each other or with the dashboard.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Annotated, Any

from litestar import Controller, Response, get, head, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import QueryParameter
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from customify import heartbeats, schemas, store
from customify.api.auth import Viewer, operator_only
from customify.api.designs import iso
from customify.api.errors import Problem
from customify.config import redact
from customify.runtime import Runtime

CHECK_TIMEOUT = 3.0
HEARTBEAT_FRESH = 5.0  # a worker thread loops at least once a second (POLL_MAX / read_timeout)


async def _timed(fn: Any, *args: Any) -> Any:
    return await asyncio.wait_for(asyncio.to_thread(fn, *args), CHECK_TIMEOUT)


def consumer_picture(rt: Runtime, pending: int | None) -> tuple[dict[str, Any], list[str]]:
    """The consumer check and its problems in words, from the observer (no database query).

    The rules, each a way the old system failed silently:
    - work waits and no worker thread is alive with a fresh heartbeat;
    - workers beat but none has finished anything for `render.stall_seconds` while work
      waits (the old worker: healthy, registered, never consuming);
    - a worker thread has run one task past `render.timeout_seconds`.
    A pause is an operator's decision, not a problem: it is reported, health stays 200.
    """
    consumer = rt.consumer
    problems: list[str] = []
    if consumer is None:
        return {"ok": True, "detail": "this process runs no consumer (customify api)"}, problems
    stall = rt.config.render.stall_seconds
    threads = rt.observer.threads_snapshot()
    alive = [t for t in threads if t["state"] != "dead"]
    # A thread inside a task does not loop, so it does not beat: busy and alive counts as live
    # (the timeout rule below catches one that is stuck).
    fresh = [t for t in alive if t["state"] == "busy"
             or (t["heartbeat_age_s"] is not None and t["heartbeat_age_s"] < HEARTBEAT_FRESH)]
    if consumer.stop_flag.is_set():
        problems.append("the consumer is stopped")
    paused = bool(getattr(consumer, "paused", False))
    if not fresh:
        problems.append(f"no live worker thread (0 of {consumer.workers} beating)"
                        + (f" while {pending} task(s) wait" if pending else ""))
    elif pending and not paused and not any(t["state"] == "busy" for t in alive):
        uptime = time.time() - rt.observer.started_at
        ages = [t["progress_age_s"] for t in alive if t["progress_age_s"] is not None]
        idle_for = min(ages) if ages else uptime
        if idle_for > stall:
            problems.append(f"{pending} task(s) wait but no worker has finished anything for {int(idle_for)} s "
                            f"although {len(fresh)} worker thread(s) beat: the consumer is not consuming")
    timeout = rt.config.render.timeout_seconds
    for t in alive:
        if t["busy_for_s"] and t["busy_for_s"] > timeout:
            problems.append(f"{t['name']} has run {t['task']} for {int(t['busy_for_s'])} s, past the "
                            f"{timeout:g} s render timeout")
    detail = "; ".join(problems) if problems else f"{len(fresh)} worker thread(s) live"
    if paused:  # an operator's decision, not a failure: health stays 200 so a load balancer keeps the API
        detail = f"consuming is paused by an operator ({pending or 0} task(s) wait); {detail}"
    return {"ok": not problems, "paused": paused, "workers": len(alive), "fresh": len(fresh),
            "detail": detail}, problems


class SystemController(Controller):
    path = "/api/v1/system"
    tags = ["system"]

    @get("/health", summary="200 when database, queue and consumer work; 503 naming the failing check")
    async def health(self, state: State, session: NamedDependency[AsyncSession]) -> Response[dict[str, Any]]:
        ok, checks = await _health(state.rt, session)
        return Response({"status": "ok" if ok else "failing", "checks": checks}, status_code=200 if ok else 503)

    @head("/health", summary="The health status code (200 or 503) without a body, for monitors that ask so",
          media_type="application/json")
    async def health_head(self, state: State, session: NamedDependency[AsyncSession]) -> Response[None]:
        ok, _ = await _health(state.rt, session)
        # b"": Litestar cannot render None for a typed response; the server sends no body for HEAD anyway.
        return Response(b"", status_code=200 if ok else 503)  # type: ignore[arg-type]

    @get("/worker-status", summary="Workers, registered/active/scheduled tasks, queue sizes, broker, drift",
         guards=[operator_only], description="For operators (see `customify users create --operator`).")
    async def worker_status(self, state: State, session: NamedDependency[AsyncSession]) -> dict[str, Any]:
        rt: Runtime = state.rt
        try:
            pending = await _timed(rt.huey.pending_count)
            scheduled = await _timed(rt.huey.scheduled)
        except Exception as exc:
            raise Problem(503, "Service unavailable", f"queue unreachable: {_line(exc)}") from None
        now_sql = "strftime('%Y-%m-%d %H:%M:%f', 'now')" if rt.database_url.startswith("sqlite") \
            else "clock_timestamp()"
        db_now = await session.scalar(text(f"select {now_sql}"))
        _, problems = consumer_picture(rt, pending)
        threads = rt.observer.threads_snapshot()
        # Every consumer process of the deployment, from the shared registry; this one's live.
        workers: dict[str, Any] = {f"customify@{w['id']}": dict(w, started_at=iso(w["started_at"]))
                                   for w in await session.run_sync(heartbeats.deployment)}
        local = f"customify@{rt.observer.identity}"
        if rt.consumer is not None:
            obs = rt.observer
            workers[local] = {
                "id": obs.identity, "stale": False,
                "scheduler": rt.heartbeat is not None and rt.heartbeat.holds_scheduler(),
                "hostname": obs.hostname, "pid": obs.pid,
                "started_at": iso(datetime.fromtimestamp(obs.started_at, UTC)),
                "uptime_s": round(time.time() - obs.started_at, 1),
                "concurrency": rt.consumer.workers,
                "pool": rt.renderers.describe(),
                "paused": rt.consumer.paused,
                "threads": threads,
                "heartbeat_age_s": min((t["heartbeat_age_s"] for t in threads if t["heartbeat_age_s"] is not None),
                                       default=None),
            }
        active = [{"task": t["task"], "task_id": t["task_id"], "design_id": t["design_id"], "worker": t["name"],
                   "running_s": t["busy_for_s"]} for t in threads if t["state"] == "busy"]
        others = [w for key, w in workers.items() if key != local]
        active += [{"task": t["task"], "task_id": t["task_id"], "design_id": t["design_id"],
                    "worker": f"{w['id']}/{t['name']}", "running_s": t["busy_for_s"]}
                   for w in others if not w["stale"] for t in w.get("threads", []) if t["state"] == "busy"]
        deployment = heartbeats.assess(others, pending)
        if rt.consumer is None and not deployment["ok"]:
            problems.append(deployment["detail"])
        elif deployment["stale"]:
            problems.append(f"stale worker process(es), no beat for over {heartbeats.STALE_AFTER:g} s: "
                            f"{', '.join(deployment['stale'])}")
        local_ok = rt.consumer is not None and not any("no live worker" in p for p in problems)
        return {
            "workers_available": local_ok or bool(deployment["workers"]),
            "workers": workers,
            "registered_tasks": sorted(_registered(rt)),
            "active_tasks": active,
            "scheduled_tasks": [{"task": type(t).__name__, "task_id": t.id, "eta": iso(t.eta)} for t in scheduled],
            "queue": {"pending": pending, "scheduled": len(scheduled), "in_flight": len(active)},
            "task_stats": rt.observer.task_stats(),
            "broker": redact(rt.queue_url),
            "database": redact(rt.database_url),
            "clock_drift_s": {"database": _drift(db_now)},
            "problems": problems,
        }

    @post("/debug-task", summary="Enqueue the debug task and wait for it (504 after 5 s)", status_code=200,
          guards=[operator_only], description="For operators. A round trip through the queue and a worker.")
    async def debug_task(self, state: State) -> schemas.DebugTaskOut:
        rt: Runtime = state.rt
        started = time.perf_counter()
        result = await asyncio.to_thread(rt.tasks.debug)
        try:
            value = await asyncio.to_thread(result.get, blocking=True, timeout=5, backoff=1.0, max_delay=0.01)
        except Exception as exc:
            result.revoke()
            if type(exc).__name__ == "ResultTimeout":
                raise Problem(504, "Gateway timeout", "no worker answered the debug task within 5 s; "
                              "is a consumer running? (customify worker, or customify run)") from None
            raise
        return schemas.DebugTaskOut(task_id=result.id, result=value,
                                    roundtrip_ms=round((time.perf_counter() - started) * 1000, 2))

    @get("/tasks", summary="Recent task history",
         description="An operator sees every task; a customer the tasks of their own designs.")
    async def tasks(self, state: State, viewer: NamedDependency[Viewer],
                    limit: Annotated[int, QueryParameter(name="limit", ge=1, le=500)] = 50,
                    design_id: Annotated[str | None, QueryParameter(name="design_id", max_length=36)] = None,
                    ) -> list[schemas.TaskRunOut]:
        rt: Runtime = state.rt
        await asyncio.to_thread(rt.history.flush)  # what this process's workers have not written yet
        owner = None if viewer.operator else viewer.user_id
        rows = await asyncio.to_thread(rt.read, store.recent_tasks, limit, design_id, owner)
        out = []
        for r in rows:
            wait = (r.started_at - r.enqueued_at).total_seconds() * 1000 if r.enqueued_at else None
            run = (r.finished_at - r.started_at).total_seconds() * 1000 if r.finished_at else None
            out.append(schemas.TaskRunOut(
                task_id=r.task_id, task=r.task_name, design_id=r.design_id, state=r.state, attempt=r.attempt,
                worker=r.worker, enqueued_at=iso(r.enqueued_at), started_at=iso(r.started_at) or "",
                finished_at=iso(r.finished_at), wait_ms=None if wait is None else round(wait, 2),
                run_ms=None if run is None else round(run, 2), error=r.error))
        return out


async def _health(rt: Runtime, session: AsyncSession) -> tuple[bool, dict[str, dict[str, Any]]]:
    checks: dict[str, dict[str, Any]] = {}
    try:
        await asyncio.wait_for(session.execute(text("select 1")), CHECK_TIMEOUT)
        checks["database"] = {"ok": True, "detail": redact(rt.database_url)}
    except Exception as exc:
        checks["database"] = {"ok": False, "detail": f"unreachable: {_line(exc)}"}
    pending = None
    try:
        pending = await _timed(rt.huey.pending_count)
        checks["queue"] = {"ok": True, "detail": f"{rt.queue_kind}, {pending} pending", "pending": pending}
    except Exception as exc:
        checks["queue"] = {"ok": False, "detail": f"unreachable: {_line(exc)}"}
    if rt.consumer is not None:
        checks["consumer"], _ = consumer_picture(rt, pending)
    else:  # an API-only process: the deployment's worker processes, from the shared registry
        checks["consumer"] = await _deployment_check(session, pending)
    ok, detail = await asyncio.to_thread(rt.store_health.check)
    checks["storage"] = {"ok": ok, "detail": detail}
    return all(c["ok"] for c in checks.values()), checks


def _registered(rt: Runtime) -> list[str]:
    return [name.rsplit(".", 1)[-1] for name in rt.huey._registry._registry]


def _drift(db_now: Any) -> float | None:
    if db_now is None:
        return None
    if isinstance(db_now, str):
        db_now = datetime.fromisoformat(db_now)
    if db_now.tzinfo is None:
        db_now = db_now.replace(tzinfo=UTC)
    return round(float((datetime.now(UTC) - db_now).total_seconds()), 3)


def _line(exc: BaseException) -> str:
    text_ = str(exc).strip()
    return text_.splitlines()[0] if text_ else type(exc).__name__


async def _deployment_check(session: AsyncSession, pending: int | None) -> dict[str, Any]:
    """The consumer check of an API-only process: live worker processes in the shared registry."""
    try:
        workers = await asyncio.wait_for(session.run_sync(heartbeats.deployment), CHECK_TIMEOUT)
    except Exception as exc:
        return {"ok": False, "detail": f"worker registry unreadable: {_line(exc)}"}
    return heartbeats.assess(workers, pending)
