"""The engine from one configured URL, SQLite pragmas, and migrations.

This is the one place that turns a database URL into a driver URL; the old
system's hand-made async→sync rewrite was one of its bugs. Workers and the API
use the same sync engine: the API's hot reads go to its reader thread
(customify/reader.py), the rest in one thread hop each (`asyncio.to_thread`);
both measured faster than an async engine (bench/api_read_path.py,
bench/reader_hop.py, bench/RESULTS.md), so there is none.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Dialect, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

from customify.config import ConfigError, create_private_file, redact

_POSTGRES_DRIVERS = {
    "postgresql",
    "postgres",
    "postgresql+psycopg",
    "postgresql+psycopg2",
    "postgresql+asyncpg",
    "postgresql+pg8000",
    "postgresql+psycopg2cffi",
}
_SQLITE_DRIVERS = {"sqlite", "sqlite+pysqlite", "sqlite+aiosqlite"}


def driver_url(url: str) -> str:
    """The driver URL for one configured database URL.

    sqlite:///x.db (or sqlite+aiosqlite:///x.db) → sqlite:///x.db;
    any postgres spelling → postgresql+psycopg://….
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(
            f"key 'database_url': {redact(url)!r} is not a database URL; "
            "use sqlite:///path/to.db or postgresql://user@host/db"
        ) from None
    scheme = parsed.drivername
    if scheme in _SQLITE_DRIVERS:
        return parsed.set(drivername="sqlite").render_as_string(hide_password=False)
    if scheme in _POSTGRES_DRIVERS:
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    raise ConfigError(
        f"key 'database_url': unsupported scheme {scheme!r}; use sqlite:///path/to.db or postgresql://user@host/db"
    )


def is_sqlite(url: str) -> bool:
    return make_url(url).drivername.startswith("sqlite")


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _sqlite_begin(conn: Any) -> None:
    # Writers take the lock up front (BEGIN IMMEDIATE): a deferred transaction
    # that upgrades to a writer after another commit fails at once with
    # "database is locked" instead of waiting. Readers stay deferred so a
    # long-poll never holds the write lock: transactions are immediate unless
    # opened with READ (Runtime.read).
    immediate = conn.get_execution_options().get("sqlite_immediate", True)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


READ = {"sqlite_immediate": False}

# An unreachable Postgres is an error within seconds at start-up (libpq's connect_timeout
# covers the TCP connect and the start-up handshake), and TCP keepalives notice a server that
# vanished without a reset (~20 s) instead of a query waiting forever.
PG_CONNECT_ARGS = {
    "connect_timeout": 2,
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 3,
    "keepalives_count": 3,
}


def _sqlite_file(url: str) -> None:
    path = make_url(url).database
    if path and path != ":memory:":
        create_private_file(Path(path))  # 0600: the app's data is this user's alone


def make_sync_engine(url: str) -> Engine:
    sync_url = driver_url(url)
    if is_sqlite(sync_url):
        _sqlite_file(sync_url)
        engine = create_engine(sync_url, connect_args={"timeout": 10, "isolation_level": None})
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    engine = create_engine(sync_url, pool_use_lifo=True, pool_size=10, max_overflow=10, connect_args=PG_CONNECT_ARGS)
    event.listen(engine, "checkin", _idle_from_now)
    event.listen(engine, "checkout", _ping_if_idle(engine.dialect))
    return engine


# A pooled Postgres connection is pinged before use only when it sat idle this long. SQLAlchemy's
# pool_pre_ping pings on every checkout: a round trip each time, two of a render's twelve (claim and
# publish), ~5% of split's burst throughput (bench/RESULTS.md, "Side by side, latest", what changed).
# A connection used within the last second whose server went away since (a backend terminated, a
# Postgres that restarted in under a second) fails its one statement instead: a 503 with Retry-After,
# or a task retried; the pool then replaces every connection older than the failure. The pool hands
# out the most recently used connection first (LIFO), so a busy pool does not cycle through idle ones.
PING_AFTER_IDLE = 1.0


def _idle_from_now(_dbapi_conn: Any, record: Any) -> None:
    record.info["idle_since"] = time.monotonic()


def _ping_if_idle(dialect: Dialect) -> Callable[[Any, Any, Any], None]:
    def on_checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.pop("idle_since", None)
        if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE:
            return  # a new connection, or one in use a moment ago
        try:
            dialect.do_ping(dbapi_conn)
        except Exception as exc:  # whatever failed: the pool discards it and connects again
            raise DisconnectionError(f"a connection idle {time.monotonic() - idle_since:.1f} s is gone") from exc

    return on_checkout


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def _alembic_config(engine: Engine) -> Any:
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine) -> None:
    """Apply all migrations (Alembic `upgrade head`)."""
    from alembic import command

    command.upgrade(_alembic_config(engine), "head")


def schema_status(engine: Engine) -> tuple[str | None, str]:
    """(current revision, head revision) of the database."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(_alembic_config(engine))
    head = script.get_current_head() or ""
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    return current, head


# The newest migration. Start-up compares the database with it in one SELECT and
# imports Alembic only when they differ (importing it is a visible part of start-up:
# bench/RESULTS.md, "Figures quoted in the code");
# tests/test_db.py checks it against Alembic's own head.
SCHEMA_HEAD = "0009"


def current_revision(engine: Engine) -> str | None:
    """The schema revision recorded in the database (None before the first migration)."""
    from sqlalchemy import inspect

    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(text("select version_num from alembic_version")).scalar()


def ping(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("select 1"))
