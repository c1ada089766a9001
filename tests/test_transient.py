"""Driver connection errors of Postgres and Redis are transient (retried, one warning line); queue_url's
SQLite path follows SQLAlchemy's rule, like database_url's."""

from __future__ import annotations

import logging
from pathlib import Path

import psycopg
import pytest
import redis
import redis.exceptions
from redis.backoff import NoBackoff
from redis.retry import Retry

from customify import db
from customify.config import ConfigError
from customify.queue import make_huey, sqlite_path
from customify.tasks import QuietExpectedFailures, is_transient


def real_driver_errors() -> list[BaseException]:
    """Errors raised by the real drivers against a port nothing listens on."""
    errors: list[BaseException] = []
    try:
        psycopg.connect("postgresql://postgres@127.0.0.1:1/x", connect_timeout=2)
    except psycopg.OperationalError as exc:
        errors.append(exc)
    try:
        # Without redis-py's default retries (three, with back-off: 3 s of waiting for the same error).
        redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=2, retry=Retry(NoBackoff(), 0)).ping()
    except redis.exceptions.ConnectionError as exc:
        errors.append(exc)
    return errors


def test_postgres_and_redis_connection_errors_are_transient() -> None:
    errors = real_driver_errors()
    assert len(errors) == 2
    for exc in errors:
        assert is_transient(exc), type(exc)
    assert is_transient(redis.exceptions.TimeoutError("slow")) and is_transient(psycopg.InterfaceError("closed"))
    assert not is_transient(psycopg.errors.UndefinedTable("no table")) and not is_transient(ValueError("bug"))


def test_a_driver_error_in_a_task_is_one_warning_line() -> None:
    for exc in real_driver_errors():
        try:
            raise exc
        except type(exc):
            record = logging.LogRecord(
                "huey", logging.ERROR, __file__, 1, "Unhandled exception in task %s.", ("t1",), exc_info=True
            )
            record.exc_info = (type(exc), exc, exc.__traceback__)
        assert QuietExpectedFailures().filter(record)
        assert record.levelno == logging.WARNING and record.exc_info is None
        assert "\n" not in record.getMessage() and "retried" in record.getMessage()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///queue.db", "queue.db"),
        ("sqlite:///sub/queue.db", "sub/queue.db"),
        ("sqlite:////abs/queue.db", "/abs/queue.db"),
    ],
)
def test_queue_sqlite_path_follows_sqlalchemy(url: str, expected: str) -> None:
    assert sqlite_path(url) == expected
    assert sqlite_path(url) == (db.driver_url(url).split("sqlite:///", 1)[1])


def test_relative_queue_url_lands_in_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    make_huey("sqlite:///rel/queue.db", "t")  # its storage creates the file
    assert (tmp_path / "rel" / "queue.db").exists()
    with pytest.raises(ConfigError, match="queue_url"):
        sqlite_path("sqlite://")
