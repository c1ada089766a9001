"""One configured URL → both engines, in one tested place; migrations and the schema head;
migrations on SQLite (batch mode) and Postgres; Postgres is never migrated unasked."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import inspect, text

from customify import db
from customify.config import ConfigError, load_config
from customify.runtime import Runtime
from tests.test_postgres import PG_ADMIN, pg_database

HEAD = db.SCHEMA_HEAD


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("sqlite:///x.db", "sqlite:///x.db"),
        ("sqlite+aiosqlite:////abs/x.db", "sqlite:////abs/x.db"),
        ("postgresql://u:p@h:5432/d", "postgresql+psycopg://u:p@h:5432/d"),
        ("postgres://u@h/d", "postgresql+psycopg://u@h/d"),
        ("postgresql+asyncpg://u:p@h/d", "postgresql+psycopg://u:p@h/d"),
        ("postgresql+psycopg2://u:p@h/d", "postgresql+psycopg://u:p@h/d"),
    ],
)
def test_driver_url_from_one_url(url: str, driver: str) -> None:
    assert db.driver_url(url) == driver


@pytest.mark.parametrize("url", ["mysql://u@h/d", "not a url", "oracle://x"])
def test_unsupported_urls_name_the_key(url: str) -> None:
    with pytest.raises(ConfigError, match="database_url"):
        db.driver_url(url)


def test_schema_head_constant_matches_alembic(tmp_path: Path) -> None:
    engine = db.make_sync_engine(f"sqlite:///{tmp_path / 'x.db'}")
    assert db.current_revision(engine) is None
    db.upgrade(engine)
    current, head = db.schema_status(engine)
    assert current == head == db.SCHEMA_HEAD == db.current_revision(engine)
    engine.dispose()


def test_sqlite_migrates_up_and_down_in_batch_mode(tmp_path: Path) -> None:
    engine = db.make_sync_engine(f"sqlite:///{tmp_path}/m.db")
    from alembic import command

    cfg = db._alembic_config(engine)
    command.upgrade(cfg, "0001")
    with engine.begin() as conn:
        conn.execute(text("insert into users (id, email, created_at) values ('u1', 'a@b', '2026-01-01 00:00:00')"))
    db.upgrade(engine)
    assert db.schema_status(engine) == (HEAD, HEAD)
    tables = set(inspect(engine).get_table_names())
    assert {"worker_heartbeats", "leases", "designs"} <= tables
    assert "ix_worker_heartbeats_beat_at" in {i["name"] for i in inspect(engine).get_indexes("worker_heartbeats")}
    command.downgrade(cfg, "0001")
    assert "worker_heartbeats" not in set(inspect(engine).get_table_names())
    db.upgrade(engine)
    with engine.connect() as conn:
        assert conn.scalar(text("select email from users")) == "a@b"  # data kept throughout
    engine.dispose()


def test_start_up_migrates_an_old_sqlite_database_and_skips_alembic_only_when_current(tmp_path: Path) -> None:
    from alembic import command

    config = load_config(None, {}, {"data_dir": str(tmp_path / "data")})
    rt = Runtime(config)
    command.upgrade(db._alembic_config(rt.engine), "0008")  # a database left by an older version
    assert db.current_revision(rt.engine) == "0008"
    rt.prepare_database()
    assert db.current_revision(rt.engine) == HEAD == db.schema_status(rt.engine)[0]
    assert "report" in {c["name"] for c in inspect(rt.engine).get_columns("worker_heartbeats")}  # 0009 applied
    rt.close()
    # Current now: a fresh process starts on it without importing Alembic (one SELECT said so).
    probe = (
        "import sys; from customify.config import load_config; from customify.runtime import Runtime; "
        f"rt = Runtime(load_config(None, {{}}, {{'data_dir': {str(tmp_path / 'data')!r}}})); rt.prepare_database(); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'alembic')); rt.close()"
    )
    found = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert found.stdout.strip() == "[]", found.stderr


def _cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "customify", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )


@pytest.mark.slow
def test_postgres_is_migrated_only_when_asked(tmp_path: Path) -> None:
    with pg_database(migrate=False) as url:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CUSTOMIFY_") and k != "DATABASE_URL"}
        env.update(
            {
                "CUSTOMIFY_DATABASE_URL": url.replace("postgresql://", "postgresql+asyncpg://"),
                "CUSTOMIFY_DATA_DIR": str(tmp_path / "data"),
            }
        )
        current = _cli("db", "current", env=env, cwd=tmp_path)
        assert current.returncode == 1 and "revision none: behind" in current.stdout
        # A worker (and the API) refuse a schema that is behind, say how to fix it, and change nothing.
        refused = _cli("worker", env=env, cwd=tmp_path)
        assert refused.returncode != 0
        assert refused.stderr.strip().splitlines() == [
            f"customify: database schema is at nothing (empty), this version needs {HEAD}; run `customify db upgrade`"
        ]
        engine = db.make_sync_engine(url)
        assert inspect(engine).get_table_names() == []
        upgraded = _cli("db", "upgrade", env=env, cwd=tmp_path)
        assert upgraded.returncode == 0 and f"database at revision {HEAD}" in upgraded.stdout
        current = _cli("db", "current", env=env, cwd=tmp_path)
        assert current.returncode == 0 and f"revision {HEAD}: current" in current.stdout
        assert {"worker_heartbeats", "leases", "designs"} <= set(inspect(engine).get_table_names())
        engine.dispose()


def test_engine_from_an_asyncpg_spelled_url(tmp_path: Path) -> None:
    with pg_database() as url:
        config = load_config(
            None,
            {},
            {"data_dir": str(tmp_path / "d"), "database_url": url.replace("postgresql://", "postgresql+asyncpg://")},
        )
        rt = Runtime(config)
        rt.prepare_database()  # current schema: nothing to do, no error
        assert rt.read(lambda session: session.scalar(text("select 1"))) == 1
        rt.close()


def _backend_pid(engine: Any) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(text("select pg_backend_pid()")))


def test_a_pooled_connection_is_pinged_only_after_sitting_idle(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = db.make_sync_engine(PG_ADMIN)
    pings: list[int] = []
    do_ping = engine.dialect.do_ping

    def counted(conn: Any) -> bool:
        pings.append(1)
        return do_ping(conn)

    monkeypatch.setattr(engine.dialect, "do_ping", counted)
    try:
        first = _backend_pid(engine)
        for _ in range(5):  # in use a moment ago: no round trip before the statement
            assert _backend_pid(engine) == first
        assert pings == []
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute("select pg_terminate_backend(%s)", (first,))
        monkeypatch.setattr(db, "PING_AFTER_IDLE", 0.0)  # as if it had sat idle for the threshold
        replaced = _backend_pid(engine)  # the ping finds it gone: a new connection, no error
        assert pings == [1] and replaced != first
    finally:
        engine.dispose()
