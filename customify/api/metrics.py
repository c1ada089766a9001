"""GET /metrics for Prometheus (text format, or OpenMetrics when the scraper asks), and the HTTP figures.

Worker figures come from this process's counters when it consumes and from the
heartbeats of every other worker process, so any API exports the deployment.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from typing import Any

from litestar import Controller, Request, Response, get
from litestar.datastructures import State
from litestar.enums import ScopeType
from litestar.exceptions import HTTPException
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client.exposition import choose_encoder

from customify import heartbeats, records, status
from customify.api.auth import resolve_viewer
from customify.api.errors import Problem
from customify.metrics import HttpMetrics, Scrape, problem_rules
from customify.runtime import Runtime

PENDING_SCAN = 5000  # tasks read to split the queue by priority; beyond it they count as "unknown"


def _by_priority(tasks: list[Any], total: int, state: str, into: dict[tuple[str, str], int]) -> None:
    for task in tasks:
        key = (state, str(task.priority if task.priority is not None else 0))
        into[key] = into.get(key, 0) + 1
    if total > len(tasks):
        into[(state, "unknown")] = total - len(tasks)


def _problems(rt: Runtime, others: list[dict[str, Any]]) -> dict[str, int]:
    """The stall rules active now, as health judges them (customify.status, the rules' one source)."""
    snapshot = status.snapshot_sync(rt, probes=False)
    active = problem_rules(p.detail for p in snapshot.problems if p.check == "consumer")
    active["stale_worker_process"] = int(any(w["stale"] for w in others))
    return active


def gather(rt: Runtime) -> Scrape:
    """Everything a scrape needs from the database, the queue and this process (on a thread)."""
    scrape = Scrape(rt.config.render.timeout_seconds, rt.database_url.split(":", 1)[0], rt.queue_kind)
    scrape.designs = rt.read(records.status_counts)
    pending_total = int(rt.huey.pending_count())
    _by_priority(rt.huey.pending(PENDING_SCAN), pending_total, "pending", scrape.queue)
    scheduled = rt.huey.scheduled(PENDING_SCAN)
    _by_priority(scheduled, int(rt.huey.scheduled_count()), "scheduled", scrape.queue)
    rows = rt.read(heartbeats.deployment)
    local = rt.observer.identity
    # This process always (an API-only one counts the tasks it enqueues), live rather than its last beat.
    scrape.workers.append(
        {
            "id": local,
            "metrics": rt.metrics.snapshot(rt.renderers.counts),
            "threads": rt.observer.threads_snapshot() if rt.consumer is not None else [],
            "stale": False,
        }
    )
    others = [w for w in rows if w["id"] != local]
    scrape.workers += [
        {"id": w["id"], "metrics": w.get("metrics"), "threads": w.get("threads", []), "stale": w["stale"]}
        for w in others
    ]
    scrape.problems = _problems(rt, others)
    return scrape


async def _authorize(request: Request[Any, Any, Any], rt: Runtime) -> None:
    if rt.config.dev_user_allowed:
        return  # loopback in dev mode: open, like the rest of the API
    token = rt.config.metrics_token
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if token and scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode()):
        return
    if not (await resolve_viewer(request)).operator:
        raise Problem(
            403,
            "Forbidden",
            "/metrics needs an operator's key or the metrics_token "
            "(Prometheus: `authorization: {credentials: TOKEN}` in the scrape config)",
        )


class MetricsController(Controller):
    path = "/metrics"
    tags = ["system"]
    include_in_schema = True

    @get(
        "/",
        summary="Prometheus metrics (text format; OpenMetrics when the Accept header asks for it)",
        media_type="text/plain",
    )
    async def metrics(self, request: Request[Any, Any, Any], state: State) -> Response[bytes]:
        rt: Runtime = state.rt
        await _authorize(request, rt)
        http: HttpMetrics = state.http_metrics
        scrape = await asyncio.to_thread(gather, rt)
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        body = await asyncio.to_thread(encoder, http.registry(scrape))
        return Response(body, media_type=content_type.replace("; charset=utf-8", ""))  # Litestar adds it


class HttpMetricsMiddleware(ASGIMiddleware):
    """Counts every routed HTTP request by its route template (not its path: ids would explode the series)."""

    scopes = (ScopeType.HTTP,)

    def __init__(self, metrics: HttpMetrics) -> None:
        self.metrics = metrics

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await next_app(scope, receive, sending)
        except HTTPException as exc:
            status = exc.status_code
            raise
        finally:
            route = scope.get("path_template") or "unmatched"
            self.metrics.observe(str(scope.get("method", "GET")), route, status, time.perf_counter() - started)
