"""One configured URL → both engines, in one tested place; migrations and the schema head."""

from __future__ import annotations

from pathlib import Path

import pytest

from customify import db
from customify.config import ConfigError


@pytest.mark.parametrize(("url", "sync", "async_"), [
    ("sqlite:///x.db", "sqlite:///x.db", "sqlite+aiosqlite:///x.db"),
    ("sqlite+aiosqlite:////abs/x.db", "sqlite:////abs/x.db", "sqlite+aiosqlite:////abs/x.db"),
    ("postgresql://u:p@h:5432/d", "postgresql+psycopg://u:p@h:5432/d", "postgresql+psycopg://u:p@h:5432/d"),
    ("postgres://u@h/d", "postgresql+psycopg://u@h/d", "postgresql+psycopg://u@h/d"),
    ("postgresql+asyncpg://u:p@h/d", "postgresql+psycopg://u:p@h/d", "postgresql+psycopg://u:p@h/d"),
    ("postgresql+psycopg2://u:p@h/d", "postgresql+psycopg://u:p@h/d", "postgresql+psycopg://u:p@h/d"),
])
def test_driver_urls_from_one_url(url: str, sync: str, async_: str) -> None:
    assert db.driver_urls(url) == (sync, async_)


@pytest.mark.parametrize("url", ["mysql://u@h/d", "not a url", "oracle://x"])
def test_unsupported_urls_name_the_key(url: str) -> None:
    with pytest.raises(ConfigError, match="database_url"):
        db.driver_urls(url)


def test_schema_head_constant_matches_alembic(tmp_path: Path) -> None:
    engine = db.make_sync_engine(f"sqlite:///{tmp_path / 'x.db'}")
    assert db.current_revision(engine) is None
    db.upgrade(engine)
    current, head = db.schema_status(engine)
    assert current == head == db.SCHEMA_HEAD == db.current_revision(engine)
    engine.dispose()
