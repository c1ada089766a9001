"""The reader thread (customify/reader.py): reads queued while it works are served together, each caller
gets its own answer or its own error, and a failed read does not spoil the others' transaction."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, event, text
from sqlalchemy.exc import DBAPIError

from customify import db
from customify.reader import Reader
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


def test_reads_waiting_are_served_together_each_with_its_own_answer(engine: Engine) -> None:
    reader = Reader(engine)
    transactions: list[object] = []
    event.listen(engine, "begin", lambda conn: transactions.append(conn))
    entered, release = threading.Event(), threading.Event()

    def held(conn: Connection) -> int:
        entered.set()
        release.wait(10)
        return value(conn, -1)

    async def scenario() -> list[Any]:
        first = asyncio.ensure_future(reader(held))
        await asyncio.to_thread(entered.wait, 10)  # the reader is busy: what follows queues
        rest = [asyncio.ensure_future(reader(broken if i % 7 == 3 else value, i)) for i in range(40)]
        await asyncio.sleep(0.05)
        release.set()
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
    # the held read's transaction, then the 40 queued ones in one batch: one new transaction after each of
    # the 6 failures, so 8 in all (one per read would be 41)
    assert len(transactions) == 8, len(transactions)


def test_a_cancelled_read_leaves_the_others_their_answers(engine: Engine) -> None:
    reader = Reader(engine)
    entered, release = threading.Event(), threading.Event()

    def held(conn: Connection) -> int:
        entered.set()
        release.wait(10)
        return value(conn, -1)

    async def scenario() -> list[Any]:
        first = asyncio.ensure_future(reader(held))
        await asyncio.to_thread(entered.wait, 10)
        gone = asyncio.ensure_future(reader(value, 1))
        kept = asyncio.ensure_future(reader(value, 2))
        await asyncio.sleep(0.01)
        gone.cancel()  # its client went away
        release.set()
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
