"""The shared worker registry and the scheduler lease, both in the app database.

Every consumer process (`customify worker`, `customify run`) rewrites one row
of `worker_heartbeats` every `HEARTBEAT_INTERVAL` seconds with its observer's
report (threads busy or idle with their task, heartbeat and progress ages,
task timings, the task names it can run, its clock drift). Any API process reads the union, so worker-status and health
describe the whole deployment, on any machine, and name a worker whose beat
is older than `STALE_AFTER` (killed, hung or cut off from the database). A
process that starts removes the rows of dead processes on its own host (pid
checked), so a SIGKILL is not left to go stale; a clean stop removes its own.
The rules that judge these reports live in customify.status.

The same beat renews the `scheduler` lease: a conditional update that only
the holder, or anyone once it has expired, can make. Only the holder's
scheduler enqueues periodic tasks (`EmbeddedConsumer(may_schedule=...)`), so
exactly one process does however many run; when it dies, another takes over
within `LEASE_SECONDS`. Ages and expiries are measured on the database's
clock, so clock drift between machines cannot make two holders.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, cast

from sqlalchemy import case, delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from customify.errors import first_line
from customify.models import Lease, WorkerHeartbeat, utcnow
from customify.observer import summarize

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from huey import Huey

    from customify.config import Config
    from customify.metrics import WorkerMetrics
    from customify.observer import Observer
    from customify.queue import EmbeddedConsumer
    from customify.render.pool import RenderPool

log = logging.getLogger("customify.heartbeats")

HEARTBEAT_INTERVAL = 2.0
STALE_AFTER = 10.0  # five missed beats
FORGET_AFTER = 600.0  # a stale row is deleted after this long (by any live publisher)
LEASE_SECONDS = 20.0
SCHEDULER = "scheduler"
THREAD_FRESH = 5.0  # a worker thread loops at least once a second; busy threads do not loop


def db_now(session: Session) -> datetime:
    """The database's clock on Postgres (shared by every machine); this machine's on SQLite."""
    if session.get_bind().dialect.name == "postgresql":
        return cast(datetime, session.scalar(select(func.clock_timestamp())))
    return utcnow()


def _insert(session: Session) -> Any:
    return pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert


# Writing (the publisher, in consumer processes) ---------------------------------


def publish(
    session: Session,
    identity: str,
    hostname: str,
    pid: int,
    started_at: datetime,
    report: dict[str, Any],
    forget_after: float = FORGET_AFTER,
) -> datetime:
    """Upsert this process's row; forget rows stale for `forget_after` seconds. Returns the database time."""
    now = db_now(session)
    stmt = _insert(session)(WorkerHeartbeat).values(
        id=identity, hostname=hostname, pid=pid, started_at=started_at, beat_at=now, report=report
    )
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=[WorkerHeartbeat.id],
            set_={"beat_at": now, "report": report, "pid": pid, "started_at": started_at},
        )
    )
    session.execute(
        delete(WorkerHeartbeat)
        .where(WorkerHeartbeat.beat_at < now - timedelta(seconds=forget_after))
        .execution_options(synchronize_session=False)
    )
    return now


def remove(session: Session, identity: str) -> None:
    """A clean stop: the process leaves the registry and gives up its leases."""
    session.execute(
        delete(WorkerHeartbeat).where(WorkerHeartbeat.id == identity).execution_options(synchronize_session=False)
    )
    session.execute(delete(Lease).where(Lease.holder == identity).execution_options(synchronize_session=False))


def acquire_lease(session: Session, name: str, holder: str, seconds: float) -> bool:
    """Take or renew the lease `name` for `seconds`; False while another holder's is unexpired."""
    now = db_now(session)
    expires = now + timedelta(seconds=seconds)
    result = session.execute(
        update(Lease)
        .where(Lease.name == name, or_(Lease.holder == holder, Lease.expires_at < now))
        .values(
            holder=holder, expires_at=expires, acquired_at=case((Lease.holder == holder, Lease.acquired_at), else_=now)
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount == 1:  # type: ignore[attr-defined]
        return True
    inserted = session.scalar(
        _insert(session)(Lease)
        .values(name=name, holder=holder, acquired_at=now, expires_at=expires)
        .on_conflict_do_nothing(index_elements=[Lease.name])
        .returning(Lease.name)
    )
    return inserted is not None


# Reading (any API process) ----------------------------------------------------


def deployment(session: Session) -> list[dict[str, Any]]:
    """Every registered consumer process, oldest first, with its beat age and `stale` flag."""
    now = db_now(session)
    holder = session.scalar(select(Lease.holder).where(Lease.name == SCHEDULER, Lease.expires_at >= now))
    rows = session.scalars(select(WorkerHeartbeat).order_by(WorkerHeartbeat.started_at, WorkerHeartbeat.id))
    out = []
    for row in rows:
        age = (now - row.beat_at).total_seconds()
        report = dict(row.report or {})
        out.append(
            {
                **report,
                "id": row.id,
                "hostname": row.hostname,
                "pid": row.pid,
                "started_at": row.started_at,
                "uptime_s": round((now - row.started_at).total_seconds(), 1),
                "heartbeat_age_s": round(age, 3),
                "stale": age > STALE_AFTER,
                "scheduler": row.id == holder,
            }
        )
    return out


def forget_dead_on_this_host(session: Session, hostname: str, own_pid: int) -> list[str]:
    """Rows of this host whose process is gone (killed with SIGKILL, out of memory): removed at once,
    not left to go stale and be forgotten 10 minutes later. Returns their ids."""
    gone = []
    for row in session.scalars(select(WorkerHeartbeat).where(WorkerHeartbeat.hostname == hostname)):
        if row.pid == own_pid or _alive(row.pid):
            continue
        gone.append(row.id)
    if gone:
        session.execute(
            delete(WorkerHeartbeat).where(WorkerHeartbeat.id.in_(gone)).execution_options(synchronize_session=False)
        )
        session.execute(delete(Lease).where(Lease.holder.in_(gone)).execution_options(synchronize_session=False))
    return gone


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process with that pid
    return True


# The publisher thread -----------------------------------------------------------


class HeartbeatRuntime(Protocol):
    """What the publisher reads of its process (customify.runtime.Runtime is one)."""

    config: Config
    consumer: EmbeddedConsumer | None
    huey: Huey
    metrics: WorkerMetrics
    observer: Observer
    renderers: RenderPool

    @property
    def queue_kind(self) -> str: ...

    def transaction(self) -> AbstractContextManager[Session]: ...


class HeartbeatPublisher:
    """Publishes this consumer process's report and holds the scheduler lease when it can; after each beat
    it calls `watch` (the runtime passes customify.status.problem_logger: problems into the log)."""

    def __init__(
        self,
        rt: HeartbeatRuntime,
        interval: float = HEARTBEAT_INTERVAL,
        lease_seconds: float = LEASE_SECONDS,
        watch: Callable[[], None] | None = None,
    ) -> None:
        self.rt = rt
        self.interval = interval
        self.lease_seconds = lease_seconds
        self.identity = rt.observer.identity
        self.started_at = datetime.fromtimestamp(rt.observer.started_at, UTC)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lease_until = 0.0  # monotonic; earlier than the database's expiry, never later
        self.clock_drift_s: float | None = None
        self._drift_at: float | None = None  # monotonic time of the measurement
        self._failing = False
        self.watch = watch

    def drift_age(self) -> float | None:
        """Seconds since the clock drift was measured (every beat)."""
        return None if self._drift_at is None else round(time.monotonic() - self._drift_at, 1)

    def holds_scheduler(self) -> bool:
        return time.monotonic() < self._lease_until

    def report(self) -> dict[str, Any]:
        consumer = self.rt.consumer
        histograms = self.rt.observer.histograms()
        return {
            "concurrency": consumer.workers if consumer is not None else 0,
            "pool": self.rt.renderers.describe(),
            "paused": bool(getattr(consumer, "paused", False)),
            "stopped": consumer is None or consumer.stop_flag.is_set(),
            "threads": self.rt.observer.threads_snapshot(),
            "task_stats": {name: summarize([h]) for name, h in histograms["1m"].items()},
            "histograms": histograms,  # an API-only process merges these
            "throughput": self.rt.observer.throughput(60),
            "queue": self.rt.queue_kind,
            "registered_tasks": sorted(name.rsplit(".", 1)[-1] for name in self.rt.huey._registry._registry),
            "clock_drift_s": self.clock_drift_s,
            "clock_drift_age_s": self.drift_age(),
            "metrics": self.rt.metrics.snapshot(self.rt.renderers.counts),  # an API exports them (/metrics)
        }

    def beat(self) -> None:
        """One beat: the report and the lease, in one short transaction."""
        sent = time.monotonic()
        report = self.report()
        with self.rt.transaction() as session:
            now = publish(
                session,
                self.identity,
                self.rt.observer.hostname,
                self.rt.observer.pid,
                self.started_at,
                report,
                self.rt.config.retention.worker_forget_seconds,
            )
            held = acquire_lease(session, SCHEDULER, self.identity, self.lease_seconds)
        # The observer's clock is this process's (tests skew it); the database's is the reference.
        self.clock_drift_s = round(self.rt.observer.clock() - now.timestamp(), 3)
        self._drift_at = time.monotonic()
        # Believe the lease for less than the database grants it, counted from before asking.
        self._lease_until = sent + self.lease_seconds - 2 * self.interval if held else 0.0

    def start(self) -> None:
        try:
            with self.rt.transaction() as session:
                gone = forget_dead_on_this_host(session, self.rt.observer.hostname, self.rt.observer.pid)
            for identity in gone:
                log.info("worker %s is no longer running (pid checked): removed from the registry", identity)
        except Exception as exc:
            log.warning("could not check this host's registered workers (%s)", first_line(exc))
        self._beat_logged()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._thread.start()

    def _beat_logged(self) -> None:
        try:
            self.beat()
        except Exception as exc:
            self._lease_until = 0.0
            if not self._failing:
                log.warning("cannot publish this worker's heartbeat (%s); retrying", first_line(exc))
            self._failing = True
        else:
            if self._failing:
                log.info("heartbeat published again")
            self._failing = False

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._beat_logged()
            self._watch()

    def _watch(self) -> None:
        """Call the watch, which logs problems as they appear and clear (the operator's record, whoever watches)."""
        consumer = self.rt.consumer
        if self.watch is None:
            return
        if self._stop.is_set() or consumer is None or consumer.stop_flag.is_set():
            return  # stopping: not a problem to report
        try:
            self.watch()
        except Exception as exc:  # pragma: no cover - never stop beating for a report
            log.debug("problem watch failed: %s", exc)

    def stop(self) -> None:
        """Stop beating and leave the registry (a killed process is left to go stale)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self._lease_until = 0.0
        try:
            with self.rt.transaction() as session:
                remove(session, self.identity)
        except Exception as exc:
            log.warning("could not remove this worker from the registry (%s); it will show as stale", first_line(exc))
