"""The API's hot reads on one thread of their own, answered in batches: one design for a GET, its
preview or thumbnail, a `?wait=`'s re-reads, a page of the design list, the assets of a new design,
the owner of a design for a customer's event stream, an API key's user.

`asyncio.to_thread` cost such a GET more CPU than the read it carried: each call woke one of the
event loop's executor threads, handed the GIL over and back and resolved its future alone, and under
concurrent GETs those threads queued on the GIL. Here the reads waiting when the reader wakes are
served together on the connection it holds while busy (on SQLite in one read-only transaction, on
Postgres in autocommit: one round trip a read), and the loop is woken once per batch (the figures:
bench/RESULTS.md, "The API's reads"). The reads are Core (a `Connection`, no ORM session) and short
(a list page is at most 200 rows, by an index); anything that writes, or may wait on something
else, keeps its own `asyncio.to_thread`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError

from customify import db

T = TypeVar("T")
log = logging.getLogger("customify.reader")

BATCH = 64  # reads at most in one batch (one SQLite transaction); the rest wait for the next
IDLE_SECONDS = 1.0  # the reader gives its connection back after this long without a read
Many = Callable[[Connection, list[Any]], list[Any]]


@dataclass(slots=True)
class _Read:
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    value: Any = None
    error: BaseException | None = None


class Reader:
    """`await reader(fn, *args)` runs `fn(connection, *args)` on the reader thread (started on first use).

    `together` maps a read function to its many-at-once form, `many(connection, [args, …])`, which
    returns the values in the same order: one query for the reads of it that came in one batch.
    """

    def __init__(
        self, engine: Engine, name: str = "reader", together: Mapping[Callable[..., Any], Many] | None = None
    ) -> None:
        self.engine = engine
        self.name = name
        self.together = dict(together or {})
        self._reads: deque[_Read] = deque()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._conn: Connection | None = None  # held while busy: only the reader thread touches it

    async def __call__(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        read = _Read(loop, loop.create_future(), fn, args)
        with self._lock:
            closed = self._closed
            if not closed:
                self._reads.append(read)
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                    self._thread.start()
        if closed:  # the process is stopping: a request still in flight is served on its own
            return await asyncio.to_thread(self._one, fn, args)
        self._wake.set()
        return await read.future  # type: ignore[no-any-return]

    def close(self) -> None:
        """Serve what is queued, then stop the thread."""
        with self._lock:
            self._closed = True
            thread = self._thread
        self._wake.set()
        if thread is not None:
            thread.join(10)

    def _one(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        with self.engine.connect() as conn:
            conn.execution_options(**db.READ)
            return fn(conn, *args)

    def _run(self) -> None:
        while True:
            if not self._wake.wait(IDLE_SECONDS):
                self._release()  # idle: the pool has its connection back
                self._wake.wait()
            self._wake.clear()
            while self._reads:
                batch = [self._reads.popleft() for _ in range(min(BATCH, len(self._reads)))]
                try:
                    self._serve(batch)
                except Exception as exc:  # pragma: no cover - _serve answers each read; never leave one waiting
                    log.exception("reader: a batch failed")
                    for read in batch:
                        read.error = read.error or exc
                _answer(batch)
            if self._closed and not self._reads:
                self._release()
                return

    def _connection(self) -> Connection:
        """The connection the reader holds while it is busy. On Postgres it reads in autocommit (each
        read one round trip, no BEGIN, no ROLLBACK, no pre-ping per checkout); on SQLite each batch is one
        read-only transaction (deferred BEGIN: no writer lock), ended after the batch."""
        if self._conn is None:
            conn = self.engine.connect()
            if self.engine.dialect.name == "sqlite":
                conn.execution_options(**db.READ)
            else:
                conn.execution_options(isolation_level="AUTOCOMMIT")
            self._conn = conn
        return self._conn

    def _release(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(Exception):  # a connection that broke: the pool discards it
                conn.close()

    def _serve(self, batch: list[_Read]) -> None:
        """Each read gets its value or its error. After a database error the connection goes back to the
        pool and the next read checks out another; a read whose held connection had gone stale (the
        database restarted) is tried once more on a fresh one. Several reads of one function that
        has a many-at-once form (`together`) are answered by one call of it."""
        alone = []
        groups: dict[Callable[..., Any], list[_Read]] = {}
        for read in batch:
            if read.fn in self.together:
                groups.setdefault(read.fn, []).append(read)
            else:
                alone.append(read)
        for fn, reads in groups.items():
            if len(reads) == 1:
                alone += reads
                continue
            try:
                answered = list(zip(reads, self.together[fn](self._connection(), [r.args for r in reads]), strict=True))
            except Exception:  # answered one by one below: each gets its own value or error
                self._release()
                alone += reads
                continue
            for read, value in answered:
                read.value = value
        for read in alone:
            for attempt in (1, 2):
                try:
                    read.value = read.fn(self._connection(), *read.args)
                except DBAPIError as exc:
                    self._release()
                    if attempt == 1 and exc.connection_invalidated:
                        continue
                    read.error = exc
                except Exception as exc:  # the read's own error (a bad cursor, say), or no connection
                    read.error = exc
                break
        if self._conn is not None:
            try:
                self._conn.rollback()  # SQLite: the batch's read transaction ends (no snapshot kept)
            except Exception:
                self._release()


def _answer(batch: list[_Read]) -> None:
    """Hand the results to their event loops: one wake-up per loop per batch."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Read]] = {}
    for read in batch:
        by_loop.setdefault(read.loop, []).append(read)
    for loop, reads in by_loop.items():
        with contextlib.suppress(RuntimeError):  # that loop has closed: nobody waits for these any more
            loop.call_soon_threadsafe(_settle, reads)


def _settle(reads: list[_Read]) -> None:
    for read in reads:
        if read.future.done():  # its request was cancelled (the client went away)
            continue
        if read.error is not None:
            read.future.set_exception(read.error)
        else:
            read.future.set_result(read.value)
