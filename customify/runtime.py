"""Everything one Customify process holds: config, engines, queue, tasks, observer, files.

The API (`create_app`) and the worker command both build one; tests build
several in one process, so nothing here is global.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from customify import db, records
from customify.config import Config, ConfigError, ensure_data_dir, redact
from customify.errors import database_line, first_line
from customify.events import EventHub
from customify.heartbeats import HeartbeatPublisher
from customify.history import HistoryWriter
from customify.metrics import WorkerMetrics
from customify.observer import Observer
from customify.queue import EmbeddedConsumer, make_huey, queue_kind
from customify.queue import ping as queue_ping
from customify.queue import unreachable as queue_unreachable
from customify.reader import Reader
from customify.relay import Relay
from customify.render.pool import RenderPool
from customify.status import WriteProbes, database_words, problem_logger
from customify.storage import Files, StoreHealth, check_reachable, open_files, unreachable_line
from customify.tasks import products_in_use, register_tasks, sweep_stale_designs

log = logging.getLogger("customify")
T = TypeVar("T")


class Runtime:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.files: Files = open_files(config, ensure_data_dir(config))
        self.store_health = StoreHealth(self.files)
        self.database_url = config.effective_database_url
        self.queue_url = config.effective_queue_url
        self.engine = db.make_sync_engine(self.database_url)
        self._write_lock: AbstractContextManager[Any] = (
            threading.RLock() if db.is_sqlite(self.database_url) else nullcontext()
        )
        self.sessions = db.session_factory(self.engine)
        # The API's hot reads: `await rt.reader(fn, *args)`; GETs of designs that come together: one query.
        self.reader = Reader(self.engine, together={records.design_view: records.design_views})
        self.huey = make_huey(self.queue_url, config.queue_name)
        self.hub = EventHub()
        # Other processes' events, on Postgres (the one part every split deployment shares);
        # on SQLite a ?wait= sees another process's work by re-reading the row.
        self.relay: Relay | None = None if db.is_sqlite(self.database_url) else Relay(self.hub, self.engine)
        self.observer = Observer(self.hub)
        self.observer.attach(self.huey)
        self.metrics = WorkerMetrics(self.observer.enqueued_at)  # Prometheus counters, sent in the heartbeat
        self.metrics.attach(self.huey)
        self.tasks = register_tasks(self.huey, self)
        self.history = HistoryWriter(self.transaction)
        self.renderers = RenderPool(
            config.render.pool,
            config.render.worker_nice,
            max_renders=config.render.helper_max_renders,
            max_memory_mb=config.render.helper_max_memory_mb,
            asset_cache_mb=config.render.asset_cache_mb,
            stall_seconds=config.render.stall_seconds,
            on_progress=self.observer.progress,
        )
        self.probes = WriteProbes(self)
        self.consumer: EmbeddedConsumer | None = None
        self.heartbeat: HeartbeatPublisher | None = None  # the shared worker registry, when consuming
        self.prepared = False
        # The dashboard of `customify run` is an HTTP client of this process: this key, held in
        # memory only, makes it the operator even where every request needs a key (non-loopback).
        self.local_key = "cfy_local_" + secrets.token_urlsafe(24)
        self._sweeper: threading.Thread | None = None
        self._sweeper_stop = threading.Event()
        # Test hook for the reliability suite: CUSTOMIFY_CRASH_AT=after-claim kills the process there.
        self._crash_at = os.environ.get("CUSTOMIFY_CRASH_AT", "")

    # Database -----------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A write transaction. On SQLite, writers of this process queue on one lock first:
        waiting inside SQLite's busy handler sleeps up to 100 ms a try, which under load
        turns concurrent creates into seconds of latency (bench/RESULTS.md, "Figures quoted in the code")."""
        with self._write_lock, self.sessions() as session, session.begin():
            yield session

    def write_lock(self) -> AbstractContextManager[Any]:
        """This process's SQLite writer lock (a no-op elsewhere), for writes made outside transaction()."""
        return self._write_lock

    def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a store function in a read-only transaction (deferred BEGIN: no writer lock)."""
        with self.sessions() as session:
            session.connection(execution_options=db.READ)
            return fn(session, *args)

    def write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a store function in one write transaction (from a worker thread or `asyncio.to_thread`)."""
        with self.transaction() as session:
            return fn(session, *args)

    def prepare_database(self, migrate: bool | None = None) -> None:
        """Check the database is reachable and its schema current.

        SQLite is migrated automatically; Postgres only when asked
        (`customify db upgrade`), since a team shares it.
        """
        try:
            db.ping(self.engine)
        except Exception as exc:
            if "read-only" in database_words(database_line(exc)):
                raise ConfigError(
                    f"database {redact(self.database_url)} "
                    f"{database_words(database_line(exc))}; make it "
                    "writable (file permissions, disk space, default_transaction_read_only)"
                ) from None
            raise ConfigError(
                f"database {redact(self.database_url)} is unreachable "
                f"({database_line(exc)}); "
                "start it or fix database_url / CUSTOMIFY_DATABASE_URL"
            ) from None
        if migrate is None:
            migrate = db.is_sqlite(self.database_url)
        if migrate and db.current_revision(self.engine) == db.SCHEMA_HEAD:
            pass  # current: no need to import Alembic
        elif migrate:
            try:
                db.upgrade(self.engine)
            except Exception as exc:
                raise ConfigError(
                    f"database {redact(self.database_url)} could not be migrated: {database_words(database_line(exc))}"
                ) from None
        else:
            current, head = db.schema_status(self.engine)
            if current != head:
                raise ConfigError(
                    f"database schema is at {current or 'nothing (empty)'}, this version needs {head}; "
                    "run `customify db upgrade`"
                )
        refused = self.probes.database()
        if refused is not None:
            raise ConfigError(
                f"database {redact(self.database_url)} does not take writes: {refused}; "
                "make it writable (file permissions, disk space, default_transaction_read_only)"
            )
        self.prepared = True

    def check_queue(self) -> None:
        try:
            queue_ping(self.huey)
        except Exception as exc:
            raise ConfigError(queue_unreachable(self.queue_url, exc)) from None

    def check_storage(self) -> None:
        """At start-up: the object store answers a probe, after a short bounded retry."""
        try:
            check_reachable(self.files)
        except Exception as exc:
            raise ConfigError(unreachable_line(self.files, exc)) from None

    @property
    def queue_kind(self) -> str:
        return queue_kind(self.queue_url)

    # Consumer -----------------------------------------------------------------

    def start_relay(self, listen: bool) -> None:
        """On Postgres: send this process's events to the deployment's other processes (customify.relay);
        with `listen` (a process that serves HTTP) also republish theirs here."""
        if self.relay is not None:
            self.relay.start(listen)

    def start_consumer(self, workers: int | None = None, periodic: bool = True, single_process: bool = False) -> None:
        """Start worker threads, the scheduler and the sweeper (and the relay's sender).

        `single_process`: nothing else can hold a render claim (SQLite, one
        process), so claims left by a killed predecessor are re-driven at once.
        """
        self.heartbeat = HeartbeatPublisher(self, watch=problem_logger(self))
        self.start_relay(listen=False)  # a worker-only process reads no events: it only sends them
        self.start_render_helpers(workers)
        # With helper processes the threads only keep books: a niced thread holding the GIL would
        # make the event loop wait for a CPU the kernel gives it last.
        nice = self.config.render.worker_nice if self.renderers.mode == "thread" else 0
        self.consumer = EmbeddedConsumer(
            self.huey,
            workers or self.config.workers,
            on_beat=self.observer.beat,
            nice=nice,
            periodic=periodic,
            may_schedule=self.heartbeat.holds_scheduler,
        )
        self.observer.consumer = self.consumer
        self.history.start()
        self.consumer.start()
        self.heartbeat.start()
        if self.config.render.sweep_interval <= 0:
            log.warning("the sweeper is off (render.sweep_interval = 0): designs whose task is lost stay stuck")
            return
        try:
            sweep_stale_designs(self, reclaim_all=single_process)
        except Exception:
            log.exception("start-up sweep failed; the sweeper will try again")
        self._sweeper_stop.clear()
        self._sweeper = threading.Thread(target=self._sweep_loop, name="sweeper", daemon=True)
        self._sweeper.start()

    def start_render_helpers(self, workers: int | None = None) -> None:
        """Start the render helpers in the background (one per worker thread); they warm the products
        recent designs used. `customify run` calls it before it imports the web stack, so the helpers
        are warm when the first design comes; start_consumer calls it again (it only tops up)."""
        helpers = (workers or self.config.workers) if self.config.render.start_helpers else 0
        self.renderers.open(helpers, warm=lambda: products_in_use(self))

    def _sweep_loop(self) -> None:
        while not self._sweeper_stop.wait(self.config.render.sweep_interval):
            try:
                sweep_stale_designs(self)
            except Exception as exc:
                log.warning("sweep failed (%s); retrying in %ss", first_line(exc), self.config.render.sweep_interval)

    def stop_consumer(self, graceful: bool = True) -> None:
        self._sweeper_stop.set()
        # The stopped consumer stays attached: health then reports its dead threads (503).
        if self.consumer is not None and not self.consumer.stop_flag.is_set():
            self.consumer.stop(graceful=graceful)
        self.history.stop()
        self.renderers.close()
        if self.heartbeat is not None:
            self.heartbeat.stop()
            self.heartbeat = None

    def close(self) -> None:
        self.stop_consumer()
        if self.relay is not None:
            self.relay.stop()  # after the consumer: the last tasks' events are sent
        self.reader.close()
        self.engine.dispose()
        self.files.close()
        with contextlib.suppress(Exception):  # pragma: no cover
            self.huey.storage.close()

    def crash_point(self, name: str) -> None:
        if self._crash_at == name:
            os._exit(137)

    def describe(self) -> str:
        return (
            f"database {redact(self.database_url)}, queue {redact(self.queue_url)} "
            f"(name {self.config.queue_name!r}), {self.files.describe()}"
        )
