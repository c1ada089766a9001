"""The stack Customify replaces, for bench/peer.py: FastAPI + Celery 5 + Redis broker + Postgres results.

The old system's settings: prefork pool (concurrency = Customify's worker threads), `acks_late`,
prefetch 1, `max_tasks_per_child` 1000, results in Postgres (Celery's database backend). The
design row lives in Postgres; the render task claims it, draws the same design with Customify's
renderer (`customify.render.pool.run_job`: draw, encode, write the preview and thumbnail), publishes
the row and queues the mail in one transaction, and enqueues the mail task, which writes an .eml
file as Customify does without SMTP. Clients poll `GET /designs/{id}` (the old API has no long-poll).

Configured by environment (set by bench/peer.py): PEER_DSN (postgresql://…), PEER_BROKER
(redis://…), PEER_DATA (a directory), PEER_ASSETS (JSON: asset id -> file), PEER_QUEUE (queue name).

    uvicorn _peer_app:api                                  # the API
    celery -A _peer_app worker --pool prefork -c 2 ...     # the workers
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

from celery import Celery
from fastapi import FastAPI, HTTPException
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, ConnectionPool
from pydantic import BaseModel

DSN = os.environ.get("PEER_DSN", "postgresql://postgres@127.0.0.1:5432/test")
BROKER = os.environ.get("PEER_BROKER", "redis://127.0.0.1:6379/0")
DATA = Path(os.environ.get("PEER_DATA", "/tmp/peer-data"))
ASSETS: dict[str, str] = json.loads(os.environ.get("PEER_ASSETS", "{}"))
QUEUE = os.environ.get("PEER_QUEUE", "peer")

SCHEMA = """
create table if not exists designs (
    id uuid primary key, owner text not null, name text not null, product text not null, color text not null,
    layers jsonb not null, status text not null default 'draft', version int not null default 1,
    preview_path text, thumbnail_path text, render_ms double precision, error text,
    claim_token uuid, claimed_at timestamptz, attempts int not null default 0,
    created_at timestamptz not null default clock_timestamp(), updated_at timestamptz not null default clock_timestamp(),
    rendered_at timestamptz);
create index if not exists ix_designs_owner_created on designs (owner, created_at, id);
create table if not exists mail_outbox (
    id uuid primary key, design_id uuid not null, version int not null, recipient text not null,
    status text not null default 'pending', attempts int not null default 0,
    created_at timestamptz not null default clock_timestamp(), sent_at timestamptz,
    unique (design_id, version));
"""

# Celery ------------------------------------------------------------------------

celery = Celery("peer", broker=BROKER, backend="db+" + DSN.replace("postgresql://", "postgresql+psycopg://", 1))
celery.conf.update(
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    worker_max_tasks_per_child=1000,
    task_default_queue=QUEUE,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    database_create_tables_at_setup=True,
)

_pool: ConnectionPool | None = None
_pool_pid = 0


def pool() -> ConnectionPool:
    """One small pool per worker child (created after the fork)."""
    global _pool, _pool_pid
    if _pool is None or _pool_pid != os.getpid():
        _pool = ConnectionPool(DSN, min_size=1, max_size=2, open=True)
        _pool_pid = os.getpid()
    return _pool


@celery.task(name="render_design", bind=True, max_retries=3, acks_late=True)
def render_design(self: Any, design_id: str, version: int) -> dict[str, Any]:
    from customify.render.pool import RenderJob, run_job

    token = str(uuid.uuid4())
    with pool().connection() as conn:
        row = conn.execute(
            "update designs set status = 'rendering', claim_token = %s, claimed_at = now(), "
            "attempts = attempts + 1, updated_at = now() "
            "where id = %s and version = %s and status in ('draft', 'rendering') "
            "returning name, product, color, layers",
            (token, design_id, version),
        ).fetchone()
    if row is None:
        return {"skipped": True}
    name, product, color, layers = row
    spec = {"name": name, "product": product, "color": color, "layers": layers}
    out = DATA / "renders" / design_id
    out.mkdir(parents=True, exist_ok=True)
    preview, thumb = out / f"v{version}-{token[:8]}.png", out / f"v{version}-{token[:8]}.webp"
    started = time.perf_counter()
    wanted = {layer["asset_id"] for layer in layers if layer.get("type") == "image"}
    run_job(RenderJob(spec, {a: ASSETS[a] for a in wanted if a in ASSETS}, 1, 300, "webp", str(preview), str(thumb)))
    render_ms = round((time.perf_counter() - started) * 1000, 2)
    mail_id = str(uuid.uuid4())
    with pool().connection() as conn:
        published = conn.execute(
            "update designs set status = 'published', preview_path = %s, thumbnail_path = %s, render_ms = %s, "
            "rendered_at = clock_timestamp(), updated_at = clock_timestamp(), claim_token = null, "
            "claimed_at = null where id = %s and claim_token = %s returning owner",
            (str(preview), str(thumb), render_ms, design_id, token),
        ).fetchone()
        if published is None:
            return {"lost": True}
        conn.execute(
            "insert into mail_outbox (id, design_id, version, recipient) values (%s, %s, %s, %s)",
            (mail_id, design_id, version, published[0]),
        )
    send_email.delay(mail_id)
    return {"render_ms": render_ms}


@celery.task(name="send_email", bind=True, max_retries=6, acks_late=True)
def send_email(self: Any, mail_id: str) -> None:
    from customify import mail as mailer

    with pool().connection() as conn:
        row = conn.execute(
            "update mail_outbox set status = 'sending', attempts = attempts + 1 where id = %s "
            "and status = 'pending' returning recipient, design_id",
            (mail_id,),
        ).fetchone()
        if row is None:
            return
        recipient, design_id = row
        design = conn.execute("select name, thumbnail_path from designs where id = %s", (design_id,)).fetchone()
    thumbnail = Path(design[1]).read_bytes() if design and design[1] else None
    url = f"http://127.0.0.1/designs/{design_id}"
    msg = mailer.compose(
        mail_id,
        "Peer <noreply@peer.local>",
        recipient,
        design[0] if design else "?",
        url,
        f"{url}/preview.png",
        thumbnail,
        "webp",
    )
    outbox = DATA / "outbox"
    outbox.mkdir(parents=True, exist_ok=True)
    (outbox / f"{mail_id}.eml").write_bytes(msg.as_bytes())
    with pool().connection() as conn:
        conn.execute("update mail_outbox set status = 'sent', sent_at = now() where id = %s", (mail_id,))


# FastAPI -----------------------------------------------------------------------

api = FastAPI(title="peer")
_apool: AsyncConnectionPool | None = None


class DesignIn(BaseModel):
    name: str
    product: str
    color: str
    layers: list[dict[str, Any]]


COLUMNS = (
    "id, name, product, color, layers, status, version, preview_path, render_ms, created_at, updated_at, rendered_at"
)


def _out(row: Any) -> dict[str, Any]:
    (did, name, product, color, layers, status, version, preview, render_ms, created, updated, rendered) = row
    return {
        "id": str(did),
        "name": name,
        "product": product,
        "color": color,
        "layers": layers,
        "status": status,
        "version": version,
        "preview_url": f"/designs/{did}/preview.png" if preview else None,
        "render_ms": render_ms,
        "created_at": created.isoformat(),
        "updated_at": updated.isoformat(),
        "rendered_at": rendered.isoformat() if rendered else None,
    }


@api.on_event("startup")
async def _open() -> None:
    global _apool
    _apool = AsyncConnectionPool(DSN, min_size=2, max_size=10, open=False)
    await _apool.open()


@api.on_event("shutdown")
async def _close() -> None:
    if _apool is not None:
        await _apool.close()


@api.get("/health")
async def health() -> dict[str, str]:
    assert _apool is not None
    async with _apool.connection() as conn:
        await conn.execute("select 1")
    return {"status": "ok"}


@api.get("/products")
async def products() -> list[dict[str, Any]]:
    from customify.render import PRODUCTS

    return [
        {
            "key": key,
            "name": p.name,
            "colors": list(p.colors),
            "canvas": list(p.canvas),
            "print_area": list(p.print_area),
        }
        for key, p in PRODUCTS.items()
    ]


@api.post("/designs", status_code=201)
async def create_design(data: DesignIn) -> dict[str, Any]:
    assert _apool is not None
    design_id = str(uuid.uuid4())
    async with _apool.connection() as conn:
        cur = await conn.execute(
            f"insert into designs (id, owner, name, product, color, layers) values (%s, %s, %s, %s, %s, %s) "
            f"returning {COLUMNS}",
            (design_id, "dev@localhost", data.name, data.product, data.color, Jsonb(data.layers)),
        )
        row = await cur.fetchone()
    render_design.delay(design_id, 1)
    return _out(row)


@api.get("/designs/{design_id}")
async def get_design(design_id: uuid.UUID) -> dict[str, Any]:
    assert _apool is not None
    async with _apool.connection() as conn:
        cur = await conn.execute(f"select {COLUMNS} from designs where id = %s", (design_id,))
        row = await cur.fetchone()
    if row is None:
        raise HTTPException(404, "no such design")
    return _out(row)
