"""The reader thread (customify/reader.py): reads queued while it works are served together on the
connection it holds, each caller gets its own answer or its own error, and a failed read does not spoil
the reads after it."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, event, text
from sqlalchemy.exc import DBAPIError

from customify import db, records
from customify import reader as reader_module
from customify.config import load_config
from customify.reader import Reader
from customify.runtime import Runtime
from tests.conftest import eventually
from tests.test_postgres import PG_ADMIN


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    url = (
        f"sqlite:///{tmp_path / 'r.db'}"
        if request.param == "sqlite"
        else PG_ADMIN.replace("postgresql://", "postgresql+psycopg://", 1)
    )
    engine = db.make_sync_engine(url)
    yield engine
    engine.dispose()


def value(conn: Connection, i: int) -> int:
    return int(conn.execute(text("select :i"), {"i": i}).scalar_one())


def broken(conn: Connection, i: int) -> int:
    conn.execute(text("select * from no_such_table"))
    return i


class Held:
    """A read that keeps the reader busy until released: what is asked meanwhile queues behind it."""

    def __init__(self) -> None:
        self.entered, self.release = threading.Event(), threading.Event()

    def __call__(self, conn: Connection) -> int:
        self.entered.set()
        self.release.wait(10)
        return value(conn, -1)

    async def start(self, reader: Reader) -> asyncio.Future[int]:
        first = asyncio.ensure_future(reader(self))
        await asyncio.to_thread(self.entered.wait, 10)
        return first


def test_reads_waiting_are_served_together_each_with_its_own_answer(engine: Engine) -> None:
    reader = Reader(engine)
    checkouts: list[object] = []
    event.listen(engine, "checkout", lambda *args: checkouts.append(args))
    held = Held()

    async def scenario() -> list[Any]:
        first = await held.start(reader)
        rest = [asyncio.ensure_future(reader(broken if i % 7 == 3 else value, i)) for i in range(40)]
        await asyncio.sleep(0.05)
        held.release.set()
        return await asyncio.gather(first, *rest, return_exceptions=True)

    try:
        answers = asyncio.run(scenario())
    finally:
        reader.close()
    assert answers[0] == -1
    for i, answer in enumerate(answers[1:]):
        if i % 7 == 3:
            assert isinstance(answer, DBAPIError) and "no_such_table" in str(answer), answer
        else:
            assert answer == i  # after a failed read (on Postgres: an aborted transaction) the next still works
    # One connection for the held read and the 40 queued ones, given back after each of the 6 failures:
    # 7 checkouts in all (one per read would be 41).
    assert len(checkouts) == 7, len(checkouts)


def test_a_cancelled_read_leaves_the_others_their_answers(engine: Engine) -> None:
    reader = Reader(engine)
    held = Held()

    async def scenario() -> list[Any]:
        first = await held.start(reader)
        gone = asyncio.ensure_future(reader(value, 1))
        kept = asyncio.ensure_future(reader(value, 2))
        await asyncio.sleep(0.01)
        gone.cancel()  # its client went away
        held.release.set()
        return [await first, await kept, gone.cancelled()]

    try:
        assert asyncio.run(scenario()) == [-1, 2, True]
    finally:
        reader.close()


def test_reads_after_close_are_still_answered(engine: Engine) -> None:
    reader = Reader(engine)

    async def one(i: int) -> int:
        return await reader(value, i)

    assert asyncio.run(one(1)) == 1
    reader.close()
    assert asyncio.run(one(2)) == 2  # a request in flight while the process stops


def test_a_held_connection_gone_stale_is_replaced_without_an_error(tmp_path: Path) -> None:
    engine = db.make_sync_engine(PG_ADMIN)
    reader = Reader(engine)

    def backend(conn: Connection) -> int:
        return int(conn.execute(text("select pg_backend_pid()")).scalar_one())

    async def read() -> int:
        return await reader(backend)

    try:
        held = asyncio.run(read())
        with engine.connect() as other:  # the database ends that session (as a restart would)
            other.execute(text("select pg_terminate_backend(:pid)"), {"pid": held})
        assert asyncio.run(read()) != held  # answered on a fresh connection
    finally:
        reader.close()
        engine.dispose()


def test_an_idle_reader_gives_its_connection_back(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reader_module, "IDLE_SECONDS", 0.1)
    reader = Reader(engine)
    pool: Any = engine.pool

    async def read() -> int:
        return await reader(value, 1)

    try:
        assert asyncio.run(read()) == 1
        eventually(lambda: pool.checkedout() == 0, seconds=5)
        assert asyncio.run(read()) == 1  # and takes one again when asked
    finally:
        reader.close()


def test_reads_of_one_function_in_a_batch_are_answered_by_its_many_at_once_form(engine: Engine) -> None:
    calls: list[int] = []

    def values(conn: Connection, reads: list[tuple[int]]) -> list[int]:
        calls.append(len(reads))
        if any(i < 0 for (i,) in reads):
            raise ValueError("a bad batch")  # its reads are then answered one by one
        found = conn.execute(text(" union all ".join(f"select {i}" for (i,) in reads))).scalars().all()
        return [int(i) for i in found]

    reader = Reader(engine, together={value: values})

    async def batch(numbers: list[int]) -> list[Any]:
        held = Held()
        first = await held.start(reader)
        rest = [asyncio.ensure_future(reader(value, i)) for i in numbers]
        await asyncio.sleep(0.02)
        held.release.set()
        return await asyncio.gather(first, *rest)

    try:
        assert asyncio.run(batch(list(range(10)))) == [-1, *range(10)]
        assert calls == [10]
        assert asyncio.run(batch([1, -2, 3])) == [-1, 1, -2, 3]
        assert calls == [10, 3]
        assert asyncio.run(reader_one(reader, 5)) == 5  # a read alone is served by the function itself
        assert calls == [10, 3]
    finally:
        reader.close()


async def reader_one(reader: Reader, i: int) -> int:
    return await reader(value, i)


def test_gets_of_designs_that_come_together_are_one_query(tmp_path: Path) -> None:
    rt = Runtime(load_config(None, {}, {"data_dir": str(tmp_path / "d")}))
    rt.prepare_database()
    spec = {"name": "A", "product": "mug", "color": "#ffffff", "layers": []}
    with rt.transaction() as session:
        alice, _ = records.create_user(session, "alice@example.com")
        bob, _ = records.create_user(session, "bob@example.com")
        mine = records.create_design(session, alice.id, spec).id
        theirs = records.create_design(session, bob.id, spec).id
    statements: list[str] = []
    event.listen(rt.engine, "before_cursor_execute", lambda _c, _cur, sql, *rest: statements.append(sql))
    asked = [(alice.id, mine), (bob.id, mine), (None, mine), (bob.id, theirs), (alice.id, "not-an-id")]
    asked += [(alice.id, str(uuid.uuid4())), (alice.id, mine)]

    async def scenario() -> list[Any]:
        held = Held()
        first = await held.start(rt.reader)
        rest = [asyncio.ensure_future(rt.reader(records.design_view, *ask)) for ask in asked]
        await asyncio.sleep(0.02)
        held.release.set()
        return (await asyncio.gather(first, *rest))[1:]

    try:
        found = asyncio.run(scenario())
        assert [row.id if row is not None else None for row in found] == [mine, None, mine, theirs, None, None, mine]
        assert len([sql for sql in statements if "FROM designs" in sql]) == 1, statements
    finally:
        rt.close()
