"""The Huey instance for the configured backend, and the consumer embedded in our process.

- SQLite (default): a file in the data dir. Huey's SQLite storage polls an
  empty queue with backoff; in-process enqueues ring a doorbell that wakes an
  idle worker at once, and polling (capped at `POLL_MAX`) only catches
  enqueues made by other processes.
- postgresql://…: huey's PostgresHuey (blocking dequeue through LISTEN/NOTIFY).
- redis://…: huey's PriorityRedisHuey (blocking BZPOPMIN on a sorted set, priorities honoured).

Postgres and Redis connections get connect and socket timeouts, so an
unreachable server is an error within seconds, never a hang; the consumer's
worker threads back off and retry while a server is down. Several worker
processes may share a queue: the periodic scheduler of each only enqueues
periodic tasks while `may_schedule()` says so (the scheduler lease in
`customify.heartbeats`), so exactly one process does.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from huey import Huey, SqliteHuey
from huey.consumer import Consumer, Scheduler, Worker, WorkerRecycle
from huey.storage import SqliteStorage
from sqlalchemy.engine import make_url

from customify.config import ConfigError, redact
from customify.errors import first_line

log = logging.getLogger("customify.queue")

POLL_INITIAL = 0.05
POLL_MAX = 1.0
CONNECT_TIMEOUT = 2  # seconds to reach Postgres or Redis (libpq's minimum): start-up fails within 5 s
SOCKET_TIMEOUT = 5  # Redis replies; above READ_TIMEOUT, which blocking reads wait server-side
READ_TIMEOUT = 1  # a blocking dequeue returns after this long with nothing, so workers beat
# libpq TCP keepalives: a Postgres that vanished without a reset is noticed in ~20 s.
PG_KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 3, "keepalives_count": 3}
# The names the tasks are registered under (customify.tasks): stable strings, so a task queued by one
# version runs on the next, and the observer, the rules and the API name them without importing the tasks.
RENDER = "render_design_preview"
SEND_EMAIL = "send_email"
DEBUG = "debug_task"
PRUNE = "prune_history"
DELIVER_WEBHOOK = "deliver_webhook"
TASK_NAMES = (RENDER, SEND_EMAIL, DEBUG, DELIVER_WEBHOOK)


class _WalNormalStorage(SqliteStorage):  # type: ignore[misc]
    """Huey's SQLite storage with `synchronous=NORMAL` (as the app database): in WAL mode a
    commit survives the process being killed, and only a power cut may lose the last ones,
    whose designs the sweeper re-drives from the database. Huey's default (FULL) fsyncs every
    enqueue and dequeue, several times slower (how much: bench/RESULTS.md, Core)."""

    def _create_connection(self) -> Any:
        conn = super()._create_connection()
        conn.execute("pragma synchronous=1")
        return conn


class Doorbell:
    """Wakes idle worker threads when this process enqueues (a counting semaphore)."""

    def __init__(self) -> None:
        self._sem = threading.Semaphore(0)

    def ring(self, times: int = 1) -> None:
        self._sem.release(times)

    def wait(self, timeout: float) -> bool:
        return self._sem.acquire(timeout=timeout)


class _Ringing:
    """Mixin for a Huey class: ring the doorbell after the task is stored, not before."""

    doorbell: Doorbell

    def enqueue(self, task: Any) -> Any:
        result = super().enqueue(task)  # type: ignore[misc]
        self.doorbell.ring()
        return result


def queue_kind(url: str) -> str:
    scheme = urlsplit(url).scheme.split("+")[0]
    if scheme in ("sqlite",):
        return "sqlite"
    if scheme in ("postgresql", "postgres"):
        return "postgres"
    if scheme in ("redis", "rediss"):
        return "redis"
    raise ConfigError(
        f"key 'queue_url': unsupported scheme {scheme!r} in {redact(url)!r}; "
        "use sqlite:///path, postgresql://… or redis://…"
    )


def sqlite_path(url: str) -> str:
    """The file of a sqlite:// queue URL by SQLAlchemy's rule, the same as database_url's:
    sqlite:///x.db is x.db in the working directory, sqlite:////abs/x.db is /abs/x.db."""
    path = make_url(url).database
    if not path or path == ":memory:":
        raise ConfigError(f"key 'queue_url': {redact(url)!r} names no file; use sqlite:///path/to/queue.db")
    return path


def make_huey(url: str, name: str = "customify") -> Huey:
    """A Huey for a queue URL; `name` separates deployments (or tests) sharing one server.

    Raises ConfigError naming the queue when it cannot be reached (PostgresHuey
    creates its tables here; Redis connects lazily, see `check_queue`).
    """
    kind = queue_kind(url)
    huey: Huey
    if kind == "sqlite":
        path = sqlite_path(url)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        cls: type[Huey] = type("RingingSqliteHuey", (_Ringing, SqliteHuey), {})
        huey = cls(name, filename=path, timeout=10, storage_class=_WalNormalStorage)
        # Only SQLite polls: blocking backends wake on the server's signal, and a doorbell
        # nobody waits on would pile up permits that later cancel the error backoff.
        huey.doorbell = Doorbell()
    elif kind == "postgres":
        try:
            from huey import PostgresHuey
        except ImportError:  # pragma: no cover - psycopg missing
            raise ConfigError(
                "key 'queue_url': postgresql:// needs psycopg 3; pip install 'customify[postgres]'"
            ) from None
        parts = urlsplit(url)
        dsn = urlunsplit(parts._replace(scheme="postgresql"))
        try:
            huey = PostgresHuey(
                name, dsn=dsn, read_timeout=READ_TIMEOUT, connect_timeout=CONNECT_TIMEOUT, **PG_KEEPALIVES
            )
        except Exception as exc:  # the constructor creates huey's tables
            raise ConfigError(unreachable(url, exc)) from None
    else:
        try:
            from huey import PriorityRedisHuey
            from redis import ConnectionPool
        except ImportError:  # pragma: no cover
            raise ConfigError(
                "key 'queue_url': redis:// needs the redis package; pip install 'customify[postgres]'"
            ) from None
        pool = ConnectionPool.from_url(
            url,
            socket_connect_timeout=CONNECT_TIMEOUT,
            socket_timeout=SOCKET_TIMEOUT,
            socket_keepalive=True,
            health_check_interval=30,
        )
        huey = PriorityRedisHuey(name, connection_pool=pool, read_timeout=READ_TIMEOUT)
    return huey


def ping(huey: Huey) -> None:
    """Prove the queue answers, within CONNECT_TIMEOUT (a Redis that accepts TCP but never
    replies would otherwise take SOCKET_TIMEOUT); raises whatever the client raises."""
    pool = getattr(huey.storage, "pool", None)
    if pool is None:
        huey.pending_count()
        return
    from redis import ConnectionPool, Redis

    kwargs = dict(pool.connection_kwargs, socket_timeout=CONNECT_TIMEOUT)
    with Redis(connection_pool=ConnectionPool(connection_class=pool.connection_class, **kwargs)) as client:
        client.ping()


def unreachable(url: str, exc: BaseException) -> str:
    """One line naming the queue, the error and the fix."""
    return f"queue {redact(url)} is unreachable ({first_line(exc)}); start it or fix queue_url / CUSTOMIFY_QUEUE_URL"


class _QueueErrorLog:
    """Huey's worker logs a traceback each time a dequeue fails (every second while a server
    is down); say it once per outage instead, in one line, and keep the rest for debugging."""

    QUIET_FOR = 30.0

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._last = 0.0

    def exception(self, msg: str, *args: Any, **kwargs: Any) -> None:
        if not msg.startswith("Error reading from queue"):
            self._logger.exception(msg, *args, **kwargs)
            return
        now = time.monotonic()
        if now - self._last > self.QUIET_FOR:
            exc = sys.exc_info()[1]
            first = first_line(exc) if exc is not None else repr(exc)
            log.warning("cannot read the queue (%s); retrying with backoff", first)
        self._last = now

    def __getattr__(self, name: str) -> Any:
        return getattr(self._logger, name)


class PeriodicGate(Scheduler):  # type: ignore[misc]
    """Huey's scheduler, enqueueing periodic tasks only while `may_schedule()` is true.

    Every consumer process still moves its due delayed tasks (retries, ETAs) to
    the queue: that read is atomic on all three backends. Only the periodic
    enqueue would run once per process, hence the gate.
    """

    may_schedule: Callable[[], bool] = staticmethod(lambda: True)

    def enqueue_periodic_tasks(self, now: Any) -> None:
        if self.may_schedule():
            super().enqueue_periodic_tasks(now)
        else:
            self._logger.debug("periodic tasks: another process holds the scheduler lease")


class EmbeddedWorker(Worker):  # type: ignore[misc]
    """A Huey worker thread that beats, sleeps on the doorbell, and runs at lower CPU priority."""

    def create_logger(self) -> Any:
        return _QueueErrorLog(super().create_logger())

    def shutdown(self) -> None:
        super().shutdown()
        # PostgresHuey leaves each worker thread's LISTEN connection to the garbage collector
        # (storage.close() only closes the calling thread's): close ours as the thread ends.
        local = getattr(self.huey.storage, "_listen_local", None)
        conn = getattr(local, "conn", None)
        if conn is not None:
            try:
                conn.close()
            finally:
                local.conn = None  # type: ignore[union-attr]

    def __init__(
        self,
        *args: Any,
        doorbell: Doorbell,
        on_beat: Callable[[], None],
        nice: int,
        is_paused: Callable[[], bool] = lambda: False,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.doorbell = doorbell
        self.on_beat = on_beat
        self.nice = nice
        self.is_paused = is_paused
        self.retired = False  # set by EmbeddedConsumer.resize: finish the current task, then exit

    def initialize(self) -> None:
        if self.nice:
            # Linux niceness is per thread: renders yield the CPU to the API's event loop.
            try:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.nice)
            except (OSError, AttributeError):
                log.debug("could not lower the render threads' priority")
        super().initialize()

    def loop(self, now: Any = None) -> None:
        self.on_beat()
        if self.retired:
            raise WorkerRecycle()  # huey's own quiet way out of the worker loop
        if self.is_paused():
            self.stop_flag.wait(0.25)  # keep beating, take nothing
            return
        super().loop(now)

    def sleep(self) -> None:
        if self.delay > self.max_delay:  # type: ignore[has-type]
            self.delay = self.max_delay
        if self.doorbell.wait(self.delay):
            self.delay = self.default_delay
        else:
            self.delay *= self.backoff


class EmbeddedConsumer(Consumer):  # type: ignore[misc]
    """Huey's consumer, started and stopped by our lifespan; the server owns signals.

    Consumer.start() installs INT/TERM/HUP handlers, which would take Ctrl-C and
    SIGTERM away from uvicorn (and fails off the main thread), so that is a
    no-op here; dead worker threads are replaced by our own supervisor loop,
    because only Consumer.run() would do it otherwise.
    """

    worker_class = EmbeddedWorker

    def __init__(
        self,
        huey: Huey,
        workers: int,
        on_beat: Callable[[], None],
        nice: int = 0,
        periodic: bool = True,
        shutdown_timeout: float = 10.0,
        may_schedule: Callable[[], bool] | None = None,
    ) -> None:
        self.doorbell: Doorbell = getattr(huey, "doorbell", None) or Doorbell()
        self.on_beat = on_beat
        self.nice = nice
        self.may_schedule = may_schedule
        self.scheduler_impl: PeriodicGate | None = None
        super().__init__(
            huey,
            workers=workers,
            periodic=periodic,
            initial_delay=POLL_INITIAL,
            backoff=1.5,
            max_delay=POLL_MAX,
            worker_type="thread",
            check_worker_health=True,
            health_check_interval=2,
            shutdown_timeout=shutdown_timeout,
        )
        self._supervisor: threading.Thread | None = None
        self._resize_lock = threading.Lock()
        self.paused = False
        self.started_at = time.monotonic()

    def _create_worker(self) -> EmbeddedWorker:
        return EmbeddedWorker(
            huey=self.huey,
            stop_flag=self.stop_flag,
            default_delay=self.default_delay,
            max_delay=self.max_delay,
            backoff=self.backoff,
            max_tasks=self.max_tasks,
            doorbell=self.doorbell,
            on_beat=self.on_beat,
            nice=self.nice,
            is_paused=lambda: self.paused,
        )

    def _create_scheduler(self) -> PeriodicGate:
        scheduler = PeriodicGate(
            huey=self.huey, stop_flag=self.stop_flag, interval=self.scheduler_interval, periodic=self.periodic
        )
        if self.may_schedule is not None:
            scheduler.may_schedule = self.may_schedule
        self.scheduler_impl = scheduler
        return scheduler

    def _set_signal_handlers(self) -> None:
        pass

    def start(self) -> None:
        self.started_at = time.monotonic()
        super().start()
        self._supervisor = threading.Thread(target=self._supervise, name="consumer-supervisor", daemon=True)
        self._supervisor.start()

    def _supervise(self) -> None:
        while not self.stop_flag.wait(self._health_check_interval):
            try:
                self.check_worker_health()
            except Exception:  # pragma: no cover - keep supervising
                log.exception("worker health check failed")

    def stop(self, graceful: bool = False) -> None:
        self.stop_flag.set()
        self.doorbell.ring(len(self.worker_threads) + 1)
        super().stop(graceful=graceful)

    def pause(self, paused: bool = True) -> None:
        """Stop (or resume) taking tasks; running tasks finish, threads keep beating."""
        self.paused = paused
        if not paused:
            self.doorbell.ring(len(self.worker_threads))

    def resize(self, workers: int) -> int:
        """Change the number of worker threads live; returns the previous number.
        Removed threads finish their current task first."""
        with self._resize_lock:
            previous = len(self.worker_threads)
            while len(self.worker_threads) < workers:
                worker = self._create_worker()
                thread = self._create_process(worker, f"Worker-{len(self.worker_threads) + 1}")
                thread.start()
                self.worker_threads.append((worker, thread))
            while len(self.worker_threads) > workers:
                worker, _ = self.worker_threads.pop()
                worker.retired = True
            self.workers = workers
        self.doorbell.ring(previous + 1)
        return previous

    def check_worker_health(self) -> bool:
        with self._resize_lock:
            return bool(super().check_worker_health())

    def alive_workers(self) -> int:
        return sum(1 for _, t in self.worker_threads if t.is_alive())

    def thread_names(self) -> list[str]:
        return [t.name for _, t in self.worker_threads]
