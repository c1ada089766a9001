"""msgspec Structs of the HTTP API. The dashboard (tui/) may import this module and nothing else.

The design spec's types (layers, colours, bounds) are the renderer's own, from customify.render.spec."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from customify.render.spec import (
    Anchor,
    Color,
    Extent,
    Fraction,
    ImageLayer,
    Layer,
    ProductKey,
    Rotation,
    ShapeLayer,
    TextLayer,
)

__all__ = [
    "Anchor",
    "Color",
    "Extent",
    "Fraction",
    "ImageLayer",
    "Layer",
    "ProductKey",
    "Rotation",
    "ShapeLayer",
    "TextLayer",
]

Status = Literal["draft", "rendering", "published", "failed"]
MAX_THREADS = 64  # worker threads one process may be resized to


class DesignIn(Struct, forbid_unknown_fields=True):
    name: Annotated[str, Meta(min_length=1)]
    product: ProductKey
    color: Color
    layers: list[Layer] = []


class DesignPatch(Struct, forbid_unknown_fields=True):
    name: Annotated[str, Meta(min_length=1)] | UnsetType = UNSET
    color: Color | UnsetType = UNSET
    layers: list[Layer] | UnsetType = UNSET


class Design(Struct):
    id: str
    name: str
    product: str
    color: str
    layers: list[Layer]
    status: Status
    version: int
    preview_url: str | None
    thumbnail_url: str | None
    error: str | None
    created_at: str
    updated_at: str
    rendered_at: str | None
    render_ms: float | None
    preview_version: int | None
    attempts: int = 0


class DesignPage(Struct):
    items: list[Design]
    next_cursor: str | None


class ProductOut(Struct):
    key: str
    name: str
    colors: list[str]
    canvas: tuple[int, int]
    print_area: tuple[int, int, int, int]


class AssetOut(Struct):
    id: str
    sha256: str
    format: str
    width: int
    height: int
    bytes: int
    url: str


class PendingTask(Struct):
    task_id: str
    task: str
    design_id: str | None
    priority: int | None
    revoked: bool
    waiting_s: float | None


class Paused(Struct):
    paused: bool


class WorkersIn(Struct, forbid_unknown_fields=True):
    threads: Annotated[int, Meta(ge=1, le=MAX_THREADS, description="worker threads wanted")]


class WorkersOut(Struct):
    threads: int
    previous: int


class Revoked(Struct):
    revoked: str
    task: str
    design_id: str | None


class Purged(Struct):
    purged: int


class ThreadStack(Struct):
    worker: str
    state: str
    task: str | None
    task_id: str | None
    design_id: str | None
    busy_for_s: float | None
    stack: list[str]


class TaskRunOut(Struct):
    task_id: str
    task: str
    design_id: str | None
    state: str
    attempt: int
    worker: str | None
    enqueued_at: str | None
    started_at: str
    finished_at: str | None
    wait_ms: float | None
    run_ms: float | None
    error: str | None


# Status (health, worker-status, queue stats, problems) -------------------------
# Owned by customify/status.py, which computes every one of them; keep them here together.

StatusWord = Literal["ok", "degraded", "failing"]
Severity = Literal["failing", "degraded"]


class Problem(Struct, omit_defaults=True):
    """One thing wrong, in words. `failing` turns health 503; `degraded` keeps 200 and says it."""

    check: str  # the health check it belongs to: consumer, database, queue, disk, mail, registry, tasks, clock
    severity: Severity
    detail: str
    fix: str = ""
    process: str | None = None  # the worker process (host:pid) it is about
    thread: str | None = None
    design_id: str | None = None
    pid: int | None = None  # the render helper process
    seconds: float | None = None  # how long without progress, or the clock drift


class HealthCheck(Struct, omit_defaults=True):
    ok: bool
    detail: str | None = None
    pending: int | None = None
    paused: bool | None = None
    workers: int | None = None
    fresh: int | None = None


class Health(Struct, omit_defaults=True):
    status: StatusWord
    checks: dict[str, HealthCheck]
    problems: list[Problem] = []


class WorkerThread(Struct):
    name: str
    state: Literal["idle", "busy", "dead"]
    task: str | None = None
    task_id: str | None = None
    design_id: str | None = None
    busy_for_s: float | None = None
    heartbeat_age_s: float | None = None
    progress_age_s: float | None = None  # since it last finished a task
    stage: str | None = None  # of its current task
    helper_pid: int | None = None  # the render helper drawing its current render
    no_progress_s: float | None = None  # since its current task last made progress


class WorkerOut(Struct):
    id: str
    hostname: str
    pid: int
    started_at: str | None
    uptime_s: float
    stale: bool
    scheduler: bool = False
    heartbeat_age_s: float | None = None
    concurrency: int = 0
    paused: bool = False
    stopped: bool = False
    pool: dict[str, object] = {}
    threads: list[WorkerThread] = []
    registered_tasks: list[str] = []
    clock_drift_s: float | None = None  # this process's clock minus the database's
    clock_drift_age_s: float | None = None  # how long ago that was measured


class ActiveTask(Struct):
    task: str | None
    task_id: str | None
    design_id: str | None
    worker: str
    running_s: float | None


class ScheduledTask(Struct):
    task: str
    task_id: str
    eta: str | None


class QueueCounts(Struct):
    pending: int | None
    scheduled: int | None
    in_flight: int


class WorkerStatus(Struct):
    status: StatusWord
    workers_available: bool
    workers: dict[str, WorkerOut]
    registered_tasks: list[str]
    active_tasks: list[ActiveTask]
    scheduled_tasks: list[ScheduledTask]
    queue: QueueCounts
    task_stats: dict[str, dict[str, float | None]]
    broker: str
    database: str
    clock_drift_s: dict[str, float | None]
    problems: list[Problem]


class QueueStats(Struct):
    """The `queue` event (once a second) and GET /api/v1/control/stats."""

    pending: int | None
    scheduled: int | None
    in_flight: int
    windows: dict[str, dict[str, dict[str, float | None]]]
    throughput: list[int]
    done_per_min: int
    failed_per_min: int
    oldest_pending_age_s: float | None
    threads: list[WorkerThread]
    consumer: bool
    concurrency: int
    paused: bool
    stopped: bool
    problems: list[Problem]
    healthy: bool
    status: StatusWord
    uptime_s: float
    subscribers: int
    clock_drift_s: float | None = None  # the worker (this process, or the worst of the deployment) vs the database
    clock_drift_age_s: float | None = None  # measured this long ago (every heartbeat)


# End of the status structs ------------------------------------------------------


class DebugTaskOut(Struct):
    task_id: str
    result: object
    roundtrip_ms: float


def encode_json(value: object) -> bytes:
    return msgspec.json.encode(value)
