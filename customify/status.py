"""Every liveness, stall and problem rule, in one place.

Health, worker-status, `/control/stats`, the event stream's `queue` and `problem`
events, the dashboard (which reads those) and `doctor` all take their judgement
from here, in one process (`customify run`) and in a split deployment (an API
reading the worker registry), so they cannot disagree.

The rules, each a way the old system failed silently:
- progress, not heartbeats, is liveness: a busy worker thread whose task has not
  progressed (a render stage, its helper's CPU time) for `render.stall_seconds`
  is stalled; failing when no thread progresses, degraded while others do;
- work waits and no worker thread beats (dead, stopped);
- workers beat, work waits, nothing busy and nothing finished for `stall_seconds`
  (the old worker: healthy, registered, never consuming);
- a task running past `render.timeout_seconds`;
- a worker process that cannot run a task the API enqueues (an older version);
- a worker's clock off the database's by more than `DRIFT_LIMIT`;
- the database or data dir cannot be written (a probe, at most every `PROBE_INTERVAL`);
- mails that could not be sent (degraded: designs still publish);
- the worker registry cannot be read (never taken for "no workers").
A pause is an operator's decision, not a problem: health stays 200 and says so.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import msgspec
from sqlalchemy import func, insert, select, text

from customify import heartbeats
from customify.config import redact
from customify.errors import database_line
from customify.models import Lease, Mail, utcnow
from customify.observer import merge_windows
from customify.queue import TASK_NAMES
from customify.schemas import (
    ActiveTask,
    Health,
    HealthCheck,
    Problem,
    QueueCounts,
    QueueStats,
    ScheduledTask,
    StatusWord,
    WorkerOut,
    WorkerStatus,
    WorkerThread,
)

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from huey import Huey
    from sqlalchemy.engine import Engine

    from customify.config import Config
    from customify.events import EventHub
    from customify.observer import Observer
    from customify.queue import EmbeddedConsumer
    from customify.render.pool import RenderPool
    from customify.storage import Files, StoreHealth

log = logging.getLogger("customify.status")
T = TypeVar("T")

CHECK_TIMEOUT = 3.0  # seconds any one read may take before it counts as unreachable
HEARTBEAT_FRESH = 5.0  # a worker thread loops at least once a second (POLL_MAX / read_timeout)
DRIFT_LIMIT = 2.0  # seconds of clock difference worth a problem (the old system had 5 hours)
PROBE_INTERVAL = 2.0  # the write probes run at most this often, so health stays cheap
MIN_FREE_BYTES = 1 << 20  # below this the data dir counts as full
PROBE_BYTES = 4096


class StatusRuntime(Protocol):
    """What the rules read of the process (customify.runtime.Runtime is one)."""

    config: Config
    consumer: EmbeddedConsumer | None
    database_url: str
    engine: Engine
    files: Files
    heartbeat: heartbeats.HeartbeatPublisher | None
    hub: EventHub
    huey: Huey
    observer: Observer
    probes: WriteProbes
    queue_url: str
    renderers: RenderPool
    store_health: StoreHealth

    @property
    def queue_kind(self) -> str: ...

    def read(self, fn: Callable[..., T], *args: Any) -> T: ...

    def write_lock(self) -> AbstractContextManager[Any]: ...


def database_words(message: str) -> str:
    """A driver's write error in the operator's words (SQLite and Postgres say the same things many ways)."""
    low = message.lower()
    if any(s in low for s in ("readonly", "read-only", "read only", "disk i/o error")):
        return f"the database is read-only ({message})"
    if "database or disk is full" in low or "no space left" in low:
        return f"the database's disk is full ({message})"
    return message


# Inputs: what the rules judge, read once per snapshot ------------------------------


@dataclass
class Registry:
    """One read of the shared worker registry; `error` when it could not be read."""

    workers: list[dict[str, Any]]
    error: str | None = None


@dataclass
class Probes:
    """The last write probes (cached for PROBE_INTERVAL)."""

    database: str | None = None  # None: writable; else the reason in words
    data_dir: str | None = None
    free_bytes: int | None = None
    unsent_mail: int = 0
    mail_error: str | None = None
    at: float = 0.0


@dataclass
class Inputs:
    db_error: str | None = None
    db_now: datetime | None = None
    pending: int | None = None
    scheduled: int | None = None
    queue_error: str | None = None
    registry: Registry = field(default_factory=lambda: Registry([]))
    probes: Probes = field(default_factory=Probes)
    storage: tuple[bool, str] | None = None  # the file store's own probe (customify.storage.StoreHealth)


class WriteProbes:
    """Cheap proof that the database and the data dir take writes: an insert rolled back, a small file
    written and removed. Rate-limited (PROBE_INTERVAL); a caller never waits for another's probe."""

    def __init__(self, rt: StatusRuntime) -> None:
        self.rt = rt
        self._lock = threading.Lock()
        self.last = Probes()

    def get(self, force: bool = False) -> Probes:
        if not force and time.monotonic() - self.last.at < PROBE_INTERVAL:
            return self.last
        if not self._lock.acquire(blocking=force):
            return self.last
        try:
            self.last = Probes(self.database(), *self.data_dir(), *self.mail(), at=time.monotonic())
        finally:
            self._lock.release()
        return self.last

    def database(self) -> str | None:
        rt = self.rt
        now = utcnow()
        try:
            with rt.write_lock(), rt.engine.connect() as conn:
                trans = conn.begin()
                try:
                    conn.execute(
                        insert(Lease).values(
                            name=f"probe:{rt.observer.identity}"[:60], holder="probe", acquired_at=now, expires_at=now
                        )
                    )
                finally:
                    trans.rollback()
        except Exception as exc:
            return database_words(database_line(exc))
        return None

    def data_dir(self) -> tuple[str | None, int | None]:
        root = self.rt.files.root
        try:
            free = shutil.disk_usage(root).free
        except OSError as exc:
            return f"the data dir {root} cannot be read ({exc.strerror})", None
        probe = root / "renders" / f".health-probe-{os.getpid()}"
        try:
            with open(probe, "wb") as handle:
                handle.write(b"\0" * PROBE_BYTES)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                return f"the data dir is full: {free} bytes free ({root})", free
            return f"the render dir {probe.parent} is not writable ({exc.strerror})", free
        finally:
            probe.unlink(missing_ok=True)
        if free < MIN_FREE_BYTES:
            return f"the data dir is full: {free} bytes free ({root})", free
        return None, free

    def mail(self) -> tuple[int, str | None]:
        """Mails waiting after a failed send, and the last reason (SMTP down, refused...)."""

        def read(session: Any) -> tuple[int, str | None]:
            waiting = Mail.status.in_(("pending", "sending")) & Mail.error.is_not(None)
            count = int(session.scalar(select(func.count()).select_from(Mail).where(waiting)) or 0)
            last = session.scalar(select(Mail.error).where(waiting).order_by(Mail.created_at.desc()).limit(1))
            return count, last

        try:
            return self.rt.read(read)
        except Exception:
            return 0, None  # the database check says why


def _db_clock(session: Any) -> Any:
    if session.get_bind().dialect.name == "postgresql":
        return session.scalar(text("select clock_timestamp()"))
    return session.scalar(text("select strftime('%Y-%m-%d %H:%M:%f', 'now')"))


def _as_utc(value: Any) -> datetime | None:
    if value is None:
        return None
    when: datetime = datetime.fromisoformat(value) if isinstance(value, str) else value
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def read_database(rt: StatusRuntime) -> tuple[str | None, datetime | None]:
    try:
        return None, _as_utc(rt.read(_db_clock))
    except Exception as exc:
        return f"unreachable: {database_line(exc)}", None


def read_queue(rt: StatusRuntime) -> tuple[int | None, int | None, str | None]:
    try:
        return int(rt.huey.pending_count()), int(rt.huey.scheduled_count()), None
    except Exception as exc:
        return None, None, database_line(exc)


def read_registry(rt: StatusRuntime) -> Registry:
    """The one read of the worker registry, with its one failure handling."""
    try:
        return Registry(rt.read(heartbeats.deployment))
    except Exception as exc:
        return Registry([], database_line(exc))


def gather_sync(rt: StatusRuntime, probes: bool = True) -> Inputs:
    """Everything the rules judge, read in this thread (doctor, the heartbeat thread, tests)."""
    db_error, db_now = read_database(rt)
    pending, scheduled, queue_error = read_queue(rt)
    return Inputs(
        db_error,
        db_now,
        pending,
        scheduled,
        queue_error,
        read_registry(rt),
        rt.probes.get() if probes else Probes(),
        rt.store_health.check() if probes else None,
    )


async def _threaded(fn: Callable[..., T], *args: Any, fallback: T) -> T:
    try:
        return await asyncio.wait_for(asyncio.to_thread(fn, *args), CHECK_TIMEOUT)
    except TimeoutError:
        return fallback


async def gather(rt: StatusRuntime, probes: bool = True) -> Inputs:
    """The same reads from the event loop: each in a thread, at once, each within CHECK_TIMEOUT."""
    late = f"no answer within {CHECK_TIMEOUT:g} s"
    database: tuple[str | None, datetime | None] = (f"unreachable: {late}", None)
    queue: tuple[int | None, int | None, str | None] = (None, None, late)
    database, queue, registry, probed, storage = await asyncio.gather(
        _threaded(read_database, rt, fallback=database),
        _threaded(read_queue, rt, fallback=queue),
        _threaded(read_registry, rt, fallback=Registry([], late)),
        _threaded(rt.probes.get, fallback=rt.probes.last) if probes else _none_probes(),
        _threaded(rt.store_health.check, fallback=(False, f"unreachable: {late}")) if probes else _no_storage(),
    )
    return Inputs(database[0], database[1], queue[0], queue[1], queue[2], registry, probed, storage)


async def _no_storage() -> tuple[bool, str] | None:
    return None


async def _none_probes() -> Probes:
    return Probes()


# The rules ----------------------------------------------------------------------


@dataclass
class Snapshot:
    """One judgement of the whole system: what health, worker-status and the stats present."""

    status: StatusWord
    checks: dict[str, HealthCheck]
    problems: list[Problem]
    inputs: Inputs
    local: WorkerOut | None  # this process's consumer, when it runs one
    others: list[WorkerOut]  # every other registered worker process

    @property
    def workers(self) -> list[WorkerOut]:
        return ([self.local] if self.local is not None else []) + self.others


def thread_rules(
    threads: Iterable[WorkerThread],
    stall: float,
    timeout: float,
    process: str | None = None,
) -> tuple[list[Problem], int]:
    """Problems of one process's worker threads (`process`: another worker process's id, None for this
    one), and how many are live (beating, or busy and progressing). Severity is left "failing";
    `judge` lowers it when other threads still work."""
    where = f"worker {process}/" if process else ""
    problems: list[Problem] = []
    live = 0
    for t in threads:
        if t.state == "dead":
            continue
        if t.state == "busy":
            idle = t.no_progress_s
            if idle is not None and idle > stall:
                helper = f" (render helper pid {t.helper_pid})" if t.helper_pid else ""
                design = f" on design {t.design_id}" if t.design_id else ""
                problems.append(
                    Problem(
                        "consumer",
                        "failing",
                        f"no progress: {where}{t.name} has made no progress for {int(idle)} s running {t.task}"
                        f"{design}{helper}",
                        "a frozen render helper is killed and replaced, and its render retried; if this stays, "
                        f"look at the thread's stack (GET /api/v1/control/workers/{t.name}/stack)",
                        process=process,
                        thread=t.name,
                        design_id=t.design_id,
                        pid=t.helper_pid,
                        seconds=round(idle, 1),
                    )
                )
            else:
                live += 1
            if t.busy_for_s is not None and t.busy_for_s > timeout:
                problems.append(
                    Problem(
                        "consumer",
                        "failing",
                        f"{where}{t.name} has run {t.task} for {int(t.busy_for_s)} s, past the {timeout:g} s render "
                        "timeout",
                        "see the thread's stack (GET /api/v1/control/workers/NAME/stack)",
                        process=process,
                        thread=t.name,
                        design_id=t.design_id,
                        seconds=round(t.busy_for_s, 1),
                    )
                )
        elif t.heartbeat_age_s is not None and t.heartbeat_age_s < HEARTBEAT_FRESH:
            live += 1
    return problems, live


def _threads(raw: Iterable[Any]) -> list[WorkerThread]:
    return [msgspec.convert(t, WorkerThread) for t in raw if isinstance(t, dict)]


def local_worker(rt: StatusRuntime) -> WorkerOut | None:
    """This process's consumer as the registry would show it (fresher: no beat in between)."""
    consumer, obs = rt.consumer, rt.observer
    if consumer is None:
        return None
    threads = _threads(obs.threads_snapshot())
    beat = rt.heartbeat
    return WorkerOut(
        id=obs.identity,
        hostname=obs.hostname,
        pid=obs.pid,
        started_at=_iso(datetime.fromtimestamp(obs.started_at, UTC)),
        uptime_s=round(time.time() - obs.started_at, 1),
        stale=False,
        scheduler=beat is not None and beat.holds_scheduler(),
        heartbeat_age_s=min((t.heartbeat_age_s for t in threads if t.heartbeat_age_s is not None), default=None),
        concurrency=consumer.workers,
        paused=bool(consumer.paused),
        stopped=consumer.stop_flag.is_set(),
        pool=rt.renderers.describe(),
        threads=threads,
        registered_tasks=registered(rt),
        clock_drift_s=beat.clock_drift_s if beat is not None else None,
        clock_drift_age_s=beat.drift_age() if beat is not None else None,
    )


def registry_worker(row: dict[str, Any]) -> WorkerOut:
    started = row.get("started_at")
    return msgspec.convert(
        dict(
            row,
            started_at=_iso(started) if isinstance(started, datetime) else started,
            threads=[t for t in row.get("threads", []) if isinstance(t, dict)],
        ),
        WorkerOut,
        strict=False,
    )


def registered(rt: StatusRuntime) -> list[str]:
    return sorted(name.rsplit(".", 1)[-1] for name in rt.huey._registry._registry)


def judge(rt: StatusRuntime, inputs: Inputs) -> Snapshot:
    """Apply every rule to one set of inputs."""
    settings = rt.config.render
    stall, timeout = settings.stall_seconds, settings.timeout_seconds
    pending = inputs.pending
    problems: list[Problem] = []
    checks: dict[str, HealthCheck] = {}

    # Database, queue, disk.
    if inputs.db_error:
        checks["database"] = HealthCheck(False, inputs.db_error)
        problems.append(
            Problem(
                "database", "failing", f"the database is {inputs.db_error}", "start the database or fix database_url"
            )
        )
    elif inputs.probes.database:
        checks["database"] = HealthCheck(False, inputs.probes.database)
        problems.append(
            Problem(
                "database",
                "failing",
                inputs.probes.database,
                "make the database writable (file permissions, disk space, "
                "default_transaction_read_only, a replica in recovery)",
            )
        )
    else:
        checks["database"] = HealthCheck(True, redact(rt.database_url))
    if inputs.queue_error is not None:
        checks["queue"] = HealthCheck(False, f"unreachable: {inputs.queue_error}")
        problems.append(
            Problem(
                "queue",
                "failing",
                f"queue unreachable: {inputs.queue_error}",
                "start the queue server or fix queue_url",
            )
        )
    else:
        checks["queue"] = HealthCheck(True, f"{rt.queue_kind}, {pending} pending", pending=pending)
    if inputs.probes.data_dir:
        checks["disk"] = HealthCheck(False, inputs.probes.data_dir)
        problems.append(
            Problem(
                "disk",
                "failing",
                inputs.probes.data_dir,
                "free disk space in the data dir (renders and uploads need room)",
            )
        )
    elif inputs.probes.at:
        free = inputs.probes.free_bytes
        checks["disk"] = HealthCheck(True, f"data dir writable, {(free or 0) / 1e9:.1f} GB free")

    if inputs.storage is not None:
        ok, detail = inputs.storage
        checks["storage"] = HealthCheck(ok, detail)
        if not ok:
            problems.append(
                Problem(
                    "storage",
                    "failing",
                    f"the file store is unreachable: {detail}",
                    "start the object store or fix storage_url",
                )
            )

    # Workers: this process's consumer, and every other one in the registry.
    local = local_worker(rt)
    rows = inputs.registry.workers
    others = [registry_worker(w) for w in rows if local is None or w.get("id") != local.id]
    live_threads = 0
    consumer_problems: list[Problem] = []
    registry_problem: Problem | None = None
    if inputs.registry.error is not None and inputs.db_error is None:
        registry_problem = Problem(
            "registry",
            "failing" if local is None else "degraded",
            f"the worker registry is unreadable: {inputs.registry.error}",
            "see the database check",
        )
        problems.append(registry_problem)
    for worker in ([local] if local is not None else []) + [w for w in others if not w.stale and not w.stopped]:
        found, live = thread_rules(worker.threads, stall, timeout, None if worker is local else worker.id)
        consumer_problems += found
        live_threads += live
        missing = [n for n in TASK_NAMES if worker.registered_tasks and n not in worker.registered_tasks]
        if missing:
            problems.append(
                Problem(
                    "tasks",
                    "failing",
                    f"worker process {worker.id} cannot run {', '.join(missing)}: the task is not registered there",
                    "run the same Customify version in every process (upgrade or restart that worker)",
                    process=worker.id,
                )
            )
        drift = worker.clock_drift_s
        if drift is not None and abs(drift) > DRIFT_LIMIT:
            problems.append(
                Problem(
                    "clock",
                    "degraded",
                    f"worker process {worker.id}'s clock is {drift:+.1f} s off the database's "
                    f"(measured {worker.clock_drift_age_s or 0:.0f} s ago)",
                    "synchronise clocks (NTP/chrony)",
                    process=worker.id,
                    seconds=drift,
                )
            )

    if local is not None:
        check, found = _local_consumer(rt, local, pending, stall)
        consumer_problems += found
    else:
        check, found = _deployment(others, pending, registry_problem is not None)
        consumer_problems += found
    if live_threads:  # stalls and timeouts while other threads still work: degraded, not down
        consumer_problems = [
            msgspec.structs.replace(p, severity="degraded")
            if p.detail.startswith("no progress") or "render timeout" in p.detail
            else p
            for p in consumer_problems
        ]
    problems += consumer_problems
    failing = [p for p in consumer_problems if p.severity == "failing"]
    if failing:
        check = msgspec.structs.replace(
            check,
            ok=False,
            detail="; ".join(p.detail for p in failing) + (f"; {check.detail}" if check.detail and check.ok else ""),
        )
    elif consumer_problems:
        check = msgspec.structs.replace(
            check, detail="; ".join([*(p.detail for p in consumer_problems), *([check.detail] if check.detail else [])])
        )
    checks["consumer"] = check

    unsent = inputs.probes.unsent_mail
    if unsent:
        problems.append(
            Problem(
                "mail",
                "degraded",
                f"{unsent} mail(s) not sent yet: {inputs.probes.mail_error or 'send failed'}",
                "start the SMTP server or fix smtp_url; mails are retried",
            )
        )
        checks["mail"] = HealthCheck(True, f"{unsent} mail(s) waiting to be retried")

    status: StatusWord = (
        "failing"
        if any(p.severity == "failing" for p in problems) or not all(c.ok for c in checks.values())
        else ("degraded" if problems else "ok")
    )
    return Snapshot(status, checks, problems, inputs, local, others)


def _local_consumer(
    rt: StatusRuntime,
    local: WorkerOut,
    pending: int | None,
    stall: float,
) -> tuple[HealthCheck, list[Problem]]:
    problems: list[Problem] = []
    alive = [t for t in local.threads if t.state != "dead"]
    fresh = [
        t for t in alive if t.state == "busy" or (t.heartbeat_age_s is not None and t.heartbeat_age_s < HEARTBEAT_FRESH)
    ]
    if local.stopped:
        problems.append(Problem("consumer", "failing", "the consumer is stopped", "restart the process"))
    if not fresh:
        problems.append(
            Problem(
                "consumer",
                "failing",
                f"no live worker thread (0 of {local.concurrency} beating)"
                + (f" while {pending} task(s) wait" if pending else ""),
                "restart the process",
            )
        )
    elif pending and not local.paused and not any(t.state == "busy" for t in alive):
        uptime = time.time() - rt.observer.started_at
        ages = [t.progress_age_s for t in alive if t.progress_age_s is not None]
        idle_for = min(ages) if ages else uptime
        if idle_for > stall:
            problems.append(
                Problem(
                    "consumer",
                    "failing",
                    f"{pending} task(s) wait but no worker has finished anything for {int(idle_for)} s "
                    f"although {len(fresh)} worker thread(s) beat: the consumer is not consuming",
                    "see the worker threads' stacks (GET /api/v1/control/workers/NAME/stack)",
                    seconds=round(idle_for, 1),
                )
            )
    detail = f"{len(fresh)} worker thread(s) live"
    if local.paused:  # an operator's decision, not a failure: health stays 200 so a load balancer keeps the API
        detail = f"consuming is paused by an operator ({pending or 0} task(s) wait); {detail}"
    return HealthCheck(True, detail, paused=local.paused, workers=len(alive), fresh=len(fresh)), problems


def _deployment(
    others: list[WorkerOut],
    pending: int | None,
    unreadable: bool,
) -> tuple[HealthCheck, list[Problem]]:
    """The consumer check of a process that runs none: the deployment's workers, from the registry."""
    if unreadable:
        return HealthCheck(False, "the worker registry is unreadable (see the registry problem)"), []
    live = [
        w for w in others if not w.stale and not w.stopped and thread_rules(w.threads, float("inf"), float("inf"))[1]
    ]
    stale = [w.id for w in others if w.stale]
    problems = []
    if not live:
        problems.append(
            Problem(
                "consumer",
                "failing",
                "no worker process has a fresh heartbeat" + (f" while {pending} task(s) wait" if pending else ""),
                "start one with `customify worker`",
            )
        )
    elif all(w.paused for w in live):
        problems.append(
            Problem(
                "consumer",
                "failing",
                "every worker process is paused",
                "resume one (POST /api/v1/control/resume on it)",
            )
        )
    threads = sum(thread_rules(w.threads, float("inf"), float("inf"))[1] for w in live)
    detail = "" if problems else f"{len(live)} worker process(es) live ({threads} threads)"
    if stale:
        detail += f"; stale (no beat for over {heartbeats.STALE_AFTER:g} s): {', '.join(stale)}"
    return HealthCheck(True, detail.lstrip("; "), workers=len(live)), problems


async def snapshot(rt: StatusRuntime, probes: bool = True) -> Snapshot:
    return judge(rt, await gather(rt, probes))


def snapshot_sync(rt: StatusRuntime, probes: bool = True) -> Snapshot:
    return judge(rt, gather_sync(rt, probes))


# Presenting: the typed answers of health, worker-status and stats ----------------


def health(snap: Snapshot, details: bool = True) -> Health:
    """Health: 503 when `status` is failing. Without `details` (an anonymous caller off loopback)
    only the status and the names of the checks with ok/failing."""
    if not details:
        return Health(snap.status, {name: HealthCheck(c.ok) for name, c in snap.checks.items()})
    return Health(snap.status, snap.checks, snap.problems)


def worker_status(rt: StatusRuntime, snap: Snapshot) -> WorkerStatus:
    workers = {f"customify@{w.id}": w for w in snap.workers}
    active = [
        ActiveTask(t.task, t.task_id, t.design_id, t.name if w is snap.local else f"{w.id}/{t.name}", t.busy_for_s)
        for w in snap.workers
        if not w.stale
        for t in w.threads
        if t.state == "busy"
    ]
    scheduled: list[ScheduledTask] = []
    try:
        scheduled = [ScheduledTask(type(t).__name__, t.id, _iso(t.eta)) for t in rt.huey.scheduled()]
    except Exception:  # the queue check already says so
        scheduled = []
    local_ok = snap.local is not None and not snap.local.stopped and any(t.state != "dead" for t in snap.local.threads)
    live_others = [w for w in snap.others if not w.stale and not w.stopped]
    db_now = snap.inputs.db_now
    return WorkerStatus(
        status=snap.status,
        workers_available=local_ok or bool(live_others),
        workers=workers,
        registered_tasks=registered(rt),
        active_tasks=active,
        scheduled_tasks=scheduled,
        queue=QueueCounts(snap.inputs.pending, snap.inputs.scheduled, len(active)),
        task_stats=rt.observer.task_stats(),
        broker=redact(rt.queue_url),
        database=redact(rt.database_url),
        clock_drift_s={"database": round((datetime.now(UTC) - db_now).total_seconds(), 3) if db_now else None},
        problems=snap.problems,
    )


def queue_stats(rt: StatusRuntime, snap: Snapshot) -> QueueStats:
    """The payload of a `queue` event and of GET /api/v1/control/stats: counts, timings, threads, problems.
    An API-only process shows its deployment's live workers, their histograms merged."""
    stats = rt.observer.stats()
    pending = snap.inputs.pending
    local = snap.local
    if local is not None:
        threads = local.threads
        consumer, concurrency, paused = True, local.concurrency, local.paused
        stopped = local.stopped
    else:
        live = [w for w in snap.others if not w.stale]
        rows = {w["id"]: w for w in snap.inputs.registry.workers}
        threads = [msgspec.structs.replace(t, name=f"{w.pid}/{t.name}") for w in live for t in w.threads]
        reports = [rows.get(w.id, {}) for w in live]
        stats["windows"] = merge_windows([p.get("histograms") or {} for p in reports])
        done, failed = (
            [sum(v) for v in zip(*[(p.get("throughput") or {}).get(kind) or [0] * 60 for p in reports], strict=False)]
            or [0] * 60
            for kind in ("done", "failed")
        )
        # This process sees enqueues but not their completions: its oldest-pending age would only grow.
        stats.update(throughput=done, done_per_min=sum(done), failed_per_min=sum(failed), oldest_pending_age_s=None)
        consumer, concurrency = bool(live), sum(w.concurrency for w in live)
        paused, stopped = bool(live) and all(w.paused for w in live), False
    if not pending:
        stats["oldest_pending_age_s"] = None
    measured = [w for w in snap.workers if not w.stale and w.clock_drift_s is not None]
    worst = max(measured, key=lambda w: abs(w.clock_drift_s or 0.0), default=None)
    return QueueStats(
        pending=pending,
        scheduled=snap.inputs.scheduled,
        in_flight=sum(1 for t in threads if t.state == "busy"),
        windows=stats["windows"],
        throughput=stats["throughput"],
        done_per_min=stats["done_per_min"],
        failed_per_min=stats["failed_per_min"],
        oldest_pending_age_s=stats["oldest_pending_age_s"],
        threads=threads,
        consumer=consumer,
        concurrency=concurrency,
        paused=paused,
        stopped=stopped,
        problems=snap.problems,
        healthy=snap.status != "failing",
        status=snap.status,
        uptime_s=round(time.time() - rt.observer.started_at, 1),
        subscribers=rt.hub.subscriber_count(),
        clock_drift_s=worst.clock_drift_s if worst else None,
        clock_drift_age_s=worst.clock_drift_age_s if worst else None,
    )


# Watching: problems as they appear and clear, for the log and the event stream ------


class ProblemWatch:
    """Remembers the last problems; says which appeared and which cleared since."""

    def __init__(self) -> None:
        self.current: dict[str, Problem] = {}

    @staticmethod
    def key(p: Problem) -> str:
        # A stall keeps its key while its seconds grow.
        return (
            "|".join(str(x) for x in (p.check, p.process, p.thread, p.design_id, p.pid))
            if p.thread or p.process
            else f"{p.check}|{p.detail.split(':')[0]}"
        )

    def update(self, problems: list[Problem]) -> tuple[list[Problem], list[Problem]]:
        now = {self.key(p): p for p in problems}
        appeared = [p for k, p in now.items() if k not in self.current]
        cleared = [p for k, p in self.current.items() if k not in now]
        self.current = now
        return appeared, cleared

    def log(self, problems: list[Problem]) -> None:
        appeared, cleared = self.update(problems)
        for p in appeared:
            log.warning(
                "problem (%s, %s): %s",
                p.check,
                p.severity,
                p.detail,
                extra={"design_id": p.design_id} if p.design_id else None,
            )
        for p in cleared:
            log.info(
                "problem cleared (%s): %s", p.check, p.detail, extra={"design_id": p.design_id} if p.design_id else None
            )


def problem_logger(rt: StatusRuntime) -> Callable[[], None]:
    """Logs problems as they appear and clear, each time it is called (the heartbeat thread calls it after
    every beat: the operator's record in the log, whoever watches the API)."""
    watch = ProblemWatch()
    return lambda: watch.log(snapshot_sync(rt).problems)


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.isoformat().replace("+00:00", "Z")
