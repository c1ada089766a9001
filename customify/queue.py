"""The Huey instance for the configured backend, and the consumer embedded in our process.

- SQLite (default): a file in the data dir. Huey's SQLite storage polls an
  empty queue with backoff; in-process enqueues ring a doorbell that wakes an
  idle worker at once, and polling (capped at `POLL_MAX`) only catches
  enqueues made by other processes.
- postgresql://…: huey's PostgresHuey (blocking dequeue through LISTEN/NOTIFY).
- redis://…: huey's PriorityRedisHuey (blocking BRPOP, priorities honoured).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from huey import Huey, SqliteHuey
from huey.consumer import Consumer, Worker, WorkerRecycle

from customify.config import ConfigError, redact

log = logging.getLogger("customify.queue")

POLL_INITIAL = 0.05
POLL_MAX = 1.0
RENDER_PRIORITY = 10  # renders before mail, as the old high_priority queue intended
MAIL_PRIORITY = 0


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
    raise ConfigError(f"key 'queue_url': unsupported scheme {scheme!r} in {redact(url)!r}; "
                      "use sqlite:///path, postgresql://… or redis://…")


def make_huey(url: str, name: str = "customify") -> Huey:
    """A Huey for a queue URL, with the doorbell attached."""
    kind = queue_kind(url)
    doorbell = Doorbell()
    huey: Huey
    if kind == "sqlite":
        path = urlsplit(url).path
        path = path[1:] if path.startswith("//") else path  # sqlite:////abs → /abs
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        cls: type[Huey] = type("RingingSqliteHuey", (_Ringing, SqliteHuey), {})
        huey = cls(name, filename=path, timeout=10)
    elif kind == "postgres":
        try:
            from huey import PostgresHuey
        except ImportError:  # pragma: no cover - psycopg missing
            raise ConfigError("key 'queue_url': postgresql:// needs psycopg 3; "
                              "pip install 'customify[postgres]'") from None
        parts = urlsplit(url)
        dsn = urlunsplit(parts._replace(scheme="postgresql"))
        cls = type("RingingPostgresHuey", (_Ringing, PostgresHuey), {})
        huey = cls(name, dsn=dsn, read_timeout=1)
    else:
        try:
            from huey import PriorityRedisHuey
        except ImportError:  # pragma: no cover
            raise ConfigError("key 'queue_url': redis:// needs the redis package; "
                              "pip install 'customify[postgres]'") from None
        cls = type("RingingRedisHuey", (_Ringing, PriorityRedisHuey), {})
        huey = cls(name, url=url, read_timeout=1)
    huey.doorbell = doorbell  # type: ignore[attr-defined]
    return huey


def pending_count(huey: Huey) -> int:
    return int(huey.pending_count())


def scheduled_count(huey: Huey) -> int:
    return int(huey.scheduled_count())


class EmbeddedWorker(Worker):  # type: ignore[misc]
    """A Huey worker thread that beats, sleeps on the doorbell, and runs at lower CPU priority."""

    def __init__(self, *args: Any, doorbell: Doorbell, on_beat: Callable[[], None], nice: int,
                 is_paused: Callable[[], bool] = lambda: False, **kwargs: Any) -> None:
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
        if self.delay > self.max_delay:
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

    def __init__(self, huey: Huey, workers: int, on_beat: Callable[[], None], nice: int = 0,
                 periodic: bool = True, shutdown_timeout: float = 10.0) -> None:
        self.doorbell: Doorbell = huey.doorbell  # type: ignore[attr-defined]
        self.on_beat = on_beat
        self.nice = nice
        super().__init__(huey, workers=workers, periodic=periodic, initial_delay=POLL_INITIAL,
                         backoff=1.5, max_delay=POLL_MAX, worker_type="thread",
                         check_worker_health=True, health_check_interval=2,
                         shutdown_timeout=shutdown_timeout)
        self._supervisor: threading.Thread | None = None
        self._resize_lock = threading.Lock()
        self.paused = False

    def _create_worker(self) -> EmbeddedWorker:
        return EmbeddedWorker(huey=self.huey, stop_flag=self.stop_flag, default_delay=self.default_delay,
                              max_delay=self.max_delay, backoff=self.backoff, max_tasks=self.max_tasks,
                              doorbell=self.doorbell, on_beat=self.on_beat, nice=self.nice,
                              is_paused=lambda: self.paused)

    def _set_signal_handlers(self) -> None:
        pass

    def start(self) -> None:
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
