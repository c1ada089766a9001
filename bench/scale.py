"""Cost as the data grows (issue 18, part 3): the same requests against 10k, 100k and 1M designs.

`fill` generates each database in bulk (not through the API): designs of one user spread over a
year (96% published, 4% failed, the typical design's layers), task history in proportion (a render
and a mail run per design), the mail outbox (one sent row per published design) and the worker
registry (one stale row per 1,000 designs: worker processes that were killed and are not yet
forgotten, plus the live ones). SQLite files go under --dir; Postgres databases are named
perf_scale_<size> (dropped by `drop`).

`measure` starts `customify run` on each (SQLite as shipped; Postgres with the queue in SQLite)
and measures, p50/p99 over --reps requests each: the list's first page and a deep cursor page
(90% down), ?status= filters (failed: 4% of rows; draft: none), one design by id, health,
/control/stats, worker-status; in process: one sweeper pass (its three queries) and one prune
pass (history and heartbeats, with the shipped retention); the start-up (spawn -> health 200,
which includes the migrations check and the start-up sweep) and `customify doctor`; the database
size per design; EXPLAIN (QUERY PLAN) of the sweeper's and the list's queries.

`pending` measures the queue with 100k tasks pending (SQLite queue as shipped, and Redis):
enqueue and dequeue cost per task against an empty queue, and GET /control/pending.

    .venv/bin/python bench/scale.py fill --sizes 10000,100000,1000000
    .venv/bin/python bench/scale.py measure --sizes 10000,100000,1000000 --reps 30
    .venv/bin/python bench/scale.py pending --tasks 100000
    .venv/bin/python bench/scale.py drop
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))
from _common import RunProcess, banner, loadavg, out, pct, typical_spec  # noqa: E402

from customify import db, records  # noqa: E402
from customify.config import load_config  # noqa: E402
from customify.models import DEV_USER_EMAIL, DEV_USER_ID  # noqa: E402

PG = "postgresql://postgres@127.0.0.1:5432"
DEFAULT_DIR = Path("/tmp/cfy-scale")
OWNER = DEV_USER_ID
LAYERS = json.dumps(typical_spec("3f8a2c0e-8a71-4a77-9d32-5c8b6b8f1e01", 7)["layers"])


def pg_url(size: int) -> str:
    return f"{PG}/perf_scale_{size}"


def sqlite_path(root: Path, size: int) -> Path:
    return root / f"sqlite-{size}" / "customify.db"


# Fill -------------------------------------------------------------------------------------------


def _ts(dt: datetime, sqlite: bool) -> Any:
    return dt.strftime("%Y-%m-%d %H:%M:%S.%f") if sqlite else dt


def rows(size: int, sqlite: bool) -> Iterator[tuple[str, tuple[Any, ...]]]:
    """(table, row) in dependency order; timestamps spread over the year before now."""
    now = datetime.now(UTC) - timedelta(minutes=5)
    step = timedelta(days=365) / size
    rnd = random.Random(size)
    for i in range(size):
        created = now - step * (size - i)
        did = str(uuid.UUID(int=rnd.getrandbits(128), version=4))
        failed = rnd.random() < 0.04
        rendered = created + timedelta(milliseconds=40)
        status = "failed" if failed else "published"
        preview = None if failed else f"renders/{did}/v1-abcdef12.png"
        yield (
            "designs",
            (
                did,
                OWNER,
                f"design {i}",
                "tshirt",
                "#1e3a8a",
                LAYERS,
                status,
                1,
                "gave up after 3 attempts; last error: layer 2: the image was deleted" if failed else None,
                None if failed else 1,
                preview,
                None if failed else preview.replace(".png", ".webp"),
                None if failed else 23.5,
                _ts(created, sqlite),
                _ts(rendered, sqlite),
                None if failed else _ts(rendered, sqlite),
                None,
                None,
                None,
                None,
                None,
                1,
                _ts(created, sqlite),
            ),
        )
        tid = uuid.uuid4().hex
        yield (
            "task_runs",
            (
                tid,
                "render_design_preview",
                did,
                "failed" if failed else "succeeded",
                1,
                "host:123/Worker-1",
                _ts(created, sqlite),
                _ts(created, sqlite),
                _ts(rendered, sqlite),
                None,
            ),
        )
        if not failed:
            mid = str(uuid.uuid4())
            yield (
                "task_runs",
                (
                    uuid.uuid4().hex,
                    "send_email",
                    None,
                    "succeeded",
                    1,
                    "host:123/Worker-2",
                    _ts(rendered, sqlite),
                    _ts(rendered, sqlite),
                    _ts(rendered, sqlite),
                    None,
                ),
            )
            yield (
                "mail_outbox",
                (
                    mid,
                    did,
                    1,
                    DEV_USER_EMAIL,
                    "sent",
                    1,
                    _ts(rendered, sqlite),
                    _ts(rendered, sqlite),
                    None,
                    _ts(rendered, sqlite),
                ),
            )
    for w in range(size // 1000):
        beat = now - timedelta(seconds=30 + w)  # killed workers, not yet forgotten
        yield (
            "worker_heartbeats",
            (
                f"old-host-{w}:{1000 + w}",
                f"old-host-{w}",
                1000 + w,
                _ts(beat, sqlite),
                _ts(beat, sqlite),
                json.dumps({"threads": [], "concurrency": 2}),
            ),
        )


COLUMNS = {
    "designs": (
        "id, owner_id, name, product, color, layers, status, version, error, preview_version, preview_key, "
        "thumbnail_key, render_ms, created_at, updated_at, rendered_at, idempotency_key, request_hash, "
        "claim_token, claimed_by, claimed_at, attempts, enqueued_at"
    ),
    "task_runs": "task_id, task_name, design_id, state, attempt, worker, enqueued_at, started_at, finished_at, error",
    "mail_outbox": "id, design_id, version, recipient, status, attempts, claimed_at, sent_at, error, created_at",
    "worker_heartbeats": "id, hostname, pid, started_at, beat_at, report",
}


def migrate(url: str) -> None:
    engine = db.make_sync_engine(url)
    db.upgrade(engine)
    with engine.begin() as conn:
        from sqlalchemy.orm import Session

        with Session(conn) as session:
            records.ensure_dev_user(session)
            session.commit()
    engine.dispose()


def fill_sqlite(path: Path, size: int) -> float:
    if path.parent.exists():
        for f in path.parent.iterdir():
            if f.is_file():
                f.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    migrate(f"sqlite:///{path}")
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("pragma synchronous=off")
    conn.execute("begin")
    batches: dict[str, list[tuple[Any, ...]]] = {t: [] for t in COLUMNS}

    def flush(table: str) -> None:
        cols = COLUMNS[table]
        marks = ", ".join("?" * len(cols.split(",")))
        conn.executemany(f"insert into {table} ({cols}) values ({marks})", batches[table])
        batches[table].clear()

    for table, row in rows(size, True):
        batches[table].append(row)
        if len(batches[table]) >= 5000:
            flush(table)
    for table in COLUMNS:
        if batches[table]:
            flush(table)
    conn.execute("commit")
    conn.execute("analyze")
    conn.close()
    return time.perf_counter() - t0


def fill_postgres(size: int) -> float:
    t0 = time.perf_counter()
    name = f"perf_scale_{size}"
    with psycopg.connect(f"{PG}/test", autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')
        conn.execute(f'create database "{name}"')
    migrate(pg_url(size))
    with psycopg.connect(pg_url(size)) as conn:
        # One COPY at a time per connection: buffer per table, then stream each.
        buffers: dict[str, list[tuple[Any, ...]]] = {t: [] for t in COLUMNS}
        for table, row in rows(size, False):
            buffers[table].append(row)
        for table, cols in COLUMNS.items():
            with conn.cursor().copy(f"copy {table} ({cols}) from stdin") as copy:
                for row in buffers[table]:
                    copy.write_row(row)
            buffers[table].clear()
        conn.commit()
    with psycopg.connect(pg_url(size), autocommit=True) as conn:
        conn.execute("vacuum analyze")
    return time.perf_counter() - t0


# Measure -------------------------------------------------------------------------------------------


def timed(fn: Callable[[], Any], reps: int) -> list[float]:
    fn()  # warm
    found = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        found.append((time.perf_counter() - t0) * 1000)
    return found


def fmt(values: list[float]) -> str:
    return f"p50 {pct(values, 50):8.2f} ms  p99 {pct(values, 99):8.2f} ms"


def sweeper_pass(engine: Any) -> None:
    """The sweeper's three queries when there is nothing to re-drive (rolled back)."""
    with db.session_factory(engine)() as session, session.begin():
        records.designs_to_redrive(session, 60.0, 60.0)
        records.reset_stale_sends(session, 60.0)
        records.mails_to_redrive(session, 60.0)
        session.rollback()


def without_0008(url: str, deep_cursor: str, reps: int) -> dict[str, list[float]]:
    """The queries 0008 and the cursor range serve, timed in process with and without them: the
    indexes dropped inside a transaction that is rolled back, the deep page as it was queried before."""
    from sqlalchemy import and_, or_, select, text

    from customify.models import Design, utcnow

    created, design_id = records.decode_cursor(deep_cursor)
    old_startup = (
        select(Design.id, Design.version, Design.attempts, Design.error, Design.claim_token)
        .where(
            or_(
                and_(Design.status == "draft", or_(Design.enqueued_at.is_(None), Design.enqueued_at <= utcnow())),
                Design.status == "rendering",
            )
        )
        .order_by(Design.created_at)
        .limit(500)
    )
    old_deep = (
        select(Design)
        .where(
            Design.owner_id == OWNER,
            or_(Design.created_at < created, and_(Design.created_at == created, Design.id < design_id)),
        )
        .order_by(Design.created_at.desc(), Design.id.desc())
        .limit(51)
    )
    engine = db.make_sync_engine(url)
    found: dict[str, list[float]] = {}
    try:
        with db.session_factory(engine)() as session, session.begin():
            checks: dict[str, Callable[[], Any]] = {
                "?status=failed": lambda: records.list_designs(session, OWNER, "failed", 50, None),
                "?status=draft": lambda: records.list_designs(session, OWNER, "draft", 50, None),
                "deep page": lambda: records.list_designs(session, OWNER, None, 50, deep_cursor),
                "mails_to_redrive": lambda: records.mails_to_redrive(session, 60.0),
                "start-up sweep": lambda: records.designs_to_redrive(session, 60.0, 0.0, reclaim_all=True),
            }
            for label, fn in checks.items():
                found[f"{label} (0008)"] = timed(fn, reps)
            session.execute(text("drop index ix_designs_owner_status_created"))
            session.execute(text("drop index ix_mail_outbox_status_claimed"))
            checks["deep page"] = lambda: list(session.scalars(old_deep))
            checks["start-up sweep"] = lambda: list(session.execute(old_startup))
            for label, fn in checks.items():
                found[f"{label} (before)"] = timed(fn, reps)
            session.rollback()
    finally:
        engine.dispose()
    return found


def prune_pass(url: str) -> dict[str, Any]:
    """One pass of the periodic prune with the shipped retention; returns what it deleted and the time."""
    retention = load_config(None, {}, {}).retention
    engine = db.make_sync_engine(url)
    sessions = db.session_factory(engine)
    try:
        t0 = time.perf_counter()
        deleted: dict[str, int] = {}
        while True:
            with sessions() as session, session.begin():
                batch = records.prune_batch(session, retention)
            for key, n in batch.items():
                deleted[key] = deleted.get(key, 0) + n
            if max(batch.values()) < records.PRUNE_BATCH:
                break
        return {"ms": round((time.perf_counter() - t0) * 1000, 1), **deleted}
    finally:
        engine.dispose()


def explain(url: str) -> list[str]:
    """The plans of the sweeper's and the list's queries, as the database runs them."""
    from sqlalchemy import and_, or_, select

    from customify.models import Design, Mail
    from customify.models import utcnow as now_

    now = now_()
    engine = db.make_sync_engine(url)
    sqlite = db.is_sqlite(url)
    draft = and_(
        Design.status == "draft", or_(Design.enqueued_at.is_(None), Design.enqueued_at <= now - timedelta(seconds=60))
    )
    sweep = (
        select(Design.id, Design.version, Design.attempts, Design.error, Design.claim_token)
        .where(
            Design.status.in_(("draft", "rendering")),
            or_(draft, and_(Design.status == "rendering", Design.claimed_at < now - timedelta(seconds=60))),
        )
        .order_by(Design.created_at)
        .limit(500)
    )
    startup_sweep = (
        select(Design.id, Design.version, Design.attempts, Design.error, Design.claim_token)
        .where(Design.status.in_(("draft", "rendering")), or_(draft, Design.status == "rendering"))
        .order_by(Design.created_at)
        .limit(500)
    )
    mails = (
        select(Mail.id)
        .where(
            Mail.status == "pending",
            or_(and_(Mail.claimed_at.is_(None), Mail.created_at <= now), Mail.claimed_at <= now),
        )
        .limit(200)
    )
    stale_sends = select(Mail.id).where(Mail.status == "sending", Mail.claimed_at <= now)
    page = select(Design).where(Design.owner_id == OWNER).order_by(Design.created_at.desc(), Design.id.desc()).limit(51)
    deep = (
        select(Design)
        .where(
            Design.owner_id == OWNER,
            Design.created_at <= now - timedelta(days=300),
            or_(
                Design.created_at < now - timedelta(days=300),
                and_(Design.created_at == now - timedelta(days=300), Design.id < "8"),
            ),
        )
        .order_by(Design.created_at.desc(), Design.id.desc())
        .limit(51)
    )
    by_status = (
        select(Design)
        .where(Design.owner_id == OWNER, Design.status == "draft")
        .order_by(Design.created_at.desc(), Design.id.desc())
        .limit(51)
    )
    lines = []
    with engine.connect() as conn:
        for label, stmt in (
            ("sweeper: designs_to_redrive", sweep),
            ("start-up sweep: designs_to_redrive(reclaim_all)", startup_sweep),
            ("sweeper: mails_to_redrive", mails),
            ("sweeper: reset_stale_sends (its WHERE)", stale_sends),
            ("list: first page", page),
            ("list: deep cursor page", deep),
            ("list: ?status=draft", by_status),
        ):
            sql = str(stmt.compile(engine, compile_kwargs={"literal_binds": True}))
            if sqlite:
                plan = [" | ".join(str(c) for c in r[1:]) for r in conn.exec_driver_sql(f"explain query plan {sql}")]
            else:
                plan = [r[0] for r in conn.exec_driver_sql(f"explain (analyze, costs off, timing off) {sql}")]
            lines.append(f"-- {label}")
            lines += [f"   {p}" for p in plan]
    engine.dispose()
    return lines


def db_size(url: str, size: int, root: Path) -> float:
    if db.is_sqlite(url):
        path = sqlite_path(root, size)
        return sum(p.stat().st_size for p in path.parent.glob("customify.db*"))
    with psycopg.connect(url) as conn:
        return float(conn.execute("select pg_database_size(current_database())").fetchone()[0])  # type: ignore[index]


def measure_one(backend: str, size: int, root: Path, reps: int, starts: int) -> dict[str, Any]:
    url = f"sqlite:///{sqlite_path(root, size)}" if backend == "sqlite" else pg_url(size)
    data = root / f"data-{backend}-{size}"
    data.mkdir(exist_ok=True)
    cfg = [f'database_url = "{url}"']
    config_text = "\n".join(cfg) + "\n"
    result: dict[str, Any] = {"backend": backend, "size": size, "loadavg": loadavg()}
    # Start-up: spawn -> health 200 (migrations check + the start-up sweep), then stop.
    boot = []
    for _ in range(starts):
        with RunProcess(data, config_text=config_text) as proc:
            boot.append(proc.wait_healthy(60) * 1000)
    result["startup"] = boot
    with RunProcess(data, config_text=config_text) as proc:
        proc.wait_healthy(60)
        engine = db.make_sync_engine(url)
        with engine.connect() as conn:
            ids = [
                r[0]
                for r in conn.exec_driver_sql("select id, created_at from designs order by created_at desc").fetchmany(
                    size
                )
            ]
            deep_id = ids[int(len(ids) * 0.9)]
            created = conn.exec_driver_sql(f"select created_at from designs where id = '{deep_id}'").scalar()
        engine.dispose()
        created_dt = created if isinstance(created, datetime) else datetime.fromisoformat(str(created))
        if created_dt.tzinfo is None:
            created_dt = created_dt.replace(tzinfo=UTC)
        from customify.models import Design

        cursor = records.encode_cursor(Design(id=deep_id, created_at=created_dt))
        rnd = random.Random(1)
        with httpx.Client(base_url=proc.base_url, timeout=60) as client:

            def get(path: str, **params: Any) -> Callable[[], Any]:
                def call() -> None:
                    response = client.get(path, params=params)
                    assert response.status_code == 200, (path, response.status_code, response.text[:200])

                return call

            figures = {
                "list first page": get("/api/v1/designs", limit=50),
                "list deep page (90%)": get("/api/v1/designs", limit=50, cursor=cursor),
                "list ?status=failed": get("/api/v1/designs", limit=50, status="failed"),
                "list ?status=draft (none)": get("/api/v1/designs", limit=50, status="draft"),
                "get by id": lambda: get(f"/api/v1/designs/{rnd.choice(ids)}")(),
                "health": get("/api/v1/system/health"),
                "control/stats": get("/api/v1/control/stats"),
                "worker-status": get("/api/v1/system/worker-status"),
                "task history page": get("/api/v1/system/tasks", limit=50),
            }
            # The dashboard's first screen: what tui/client.py asks for before it draws.
            screen = [
                get("/api/v1/system/health"),
                get("/api/v1/system/worker-status"),
                get("/api/v1/designs", limit=100),
                get("/api/v1/control/pending", limit=1000),
                get("/api/v1/control/stats"),
            ]
            figures["dashboard first screen"] = lambda: [fn() for fn in screen]
            for label, fn in figures.items():
                result[label] = timed(fn, reps)
        engine = db.make_sync_engine(url)
        result["sweeper pass"] = timed(lambda: sweeper_pass(engine), reps)
        engine.dispose()
        t0 = time.perf_counter()
        doctor = subprocess.run(
            [str(Path(sys.executable).parent / "customify"), "doctor", "--data-dir", str(data), "--timeout", "60"],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=str(root),
            env={
                **{k: v for k, v in os.environ.items() if not k.startswith("CUSTOMIFY_")},
                "CUSTOMIFY_DATABASE_URL": url,
            },
        )
        result["doctor"] = [(time.perf_counter() - t0) * 1000]
        result["doctor_rc"] = doctor.returncode
    result["in_process"] = without_0008(url, cursor, reps)
    result["bytes_per_design"] = db_size(url, size, root) / size
    result["explain"] = explain(url)
    return result


FIGURES = [
    "startup",
    "list first page",
    "list deep page (90%)",
    "list ?status=failed",
    "list ?status=draft (none)",
    "get by id",
    "health",
    "control/stats",
    "worker-status",
    "task history page",
    "dashboard first screen",
    "sweeper pass",
    "doctor",
]


def report(results: list[dict[str, Any]]) -> None:
    for backend in ("sqlite", "postgres"):
        mine = sorted((r for r in results if r["backend"] == backend), key=lambda r: r["size"])
        if not mine:
            continue
        out(f"\n## {backend}: p50 (p99) in ms; last column: largest / smallest size, p50")
        out("| figure | " + " | ".join(f"{r['size']:,}" for r in mine) + " | ratio |")
        out("|---|" + "---|" * (len(mine) + 1))
        for fig in FIGURES:
            cells = [f"{pct(r[fig], 50):.2f} ({pct(r[fig], 99):.2f})" for r in mine]
            ratio = pct(mine[-1][fig], 50) / pct(mine[0][fig], 50)
            out(f"| {fig} | " + " | ".join(cells) + f" | {ratio:.2f} |")
        out("| bytes per design | " + " | ".join(f"{r['bytes_per_design']:.0f}" for r in mine) + " | |")
        out("| loadavg | " + " | ".join(r["loadavg"] for r in mine) + " | |")
        for r in mine:
            if r.get("prune"):
                out(f"| prune pass at {r['size']:,} | {r['prune']} | |")
        out("\nin process, with migration 0008 and the cursor range vs before them (same run, p50 ms):")
        for r in mine:
            found = r["in_process"]
            out(
                f"  {r['size']:>9,}: "
                + "; ".join(
                    f"{k.removesuffix(' (before)')} {pct(found[k], 50):.2f} -> "
                    f"{pct(found[k.replace('(before)', '(0008)')], 50):.2f}"
                    for k in found
                    if k.endswith("(before)")
                )
            )
        out(f"\nplans at {mine[-1]['size']:,} ({backend}):")
        for line in mine[-1]["explain"]:
            out(f"    {line}")


# Pending -------------------------------------------------------------------------------------------


def pending_bench(root: Path, tasks: int, queue: str) -> None:
    """Enqueue/dequeue cost per task with an empty queue and with `tasks` pending; GET /control/pending."""
    from customify.runtime import Runtime

    data = root / f"pending-{queue}"
    data.mkdir(parents=True, exist_ok=True)
    name = f"perf_scale_{uuid.uuid4().hex[:8]}"
    keys = {"queue_name": name}
    if queue == "redis":
        keys["queue_url"] = "redis://127.0.0.1:6379/0"
    config_text = "".join(f'{k} = "{v}"\n' for k, v in keys.items())
    config = load_config(None, {}, {"data_dir": str(data), **keys})
    rt = Runtime(config)
    rt.prepare_database()
    try:
        with RunProcess(data, config_text=config_text) as proc:
            proc.wait_healthy(60)
            httpx.post(f"{proc.base_url}/api/v1/control/pause", timeout=10).raise_for_status()

            def enqueue_cost(n: int) -> float:
                t0 = time.perf_counter()
                for _ in range(n):
                    rt.tasks.debug()
                return (time.perf_counter() - t0) * 1000 / n

            def dequeue_cost(n: int) -> float:
                t0 = time.perf_counter()
                for _ in range(n):
                    rt.huey.dequeue()
                return (time.perf_counter() - t0) * 1000 / n

            def pending_ms() -> list[float]:
                with httpx.Client(base_url=proc.base_url, timeout=60) as client:
                    return timed(
                        lambda: client.get("/api/v1/control/pending", params={"limit": 100}).raise_for_status(), 10
                    )

            empty_enq = enqueue_cost(1000)
            empty_pending = pending_ms()
            empty_deq = dequeue_cost(1000)
            t0 = time.perf_counter()
            batch = 5000
            for _ in range(tasks // batch):
                enqueue_cost(batch)
            fill_s = time.perf_counter() - t0
            full_enq = enqueue_cost(1000)
            full_pending = pending_ms()
            full_deq = dequeue_cost(1000)
            t0 = time.perf_counter()
            health = httpx.get(f"{proc.base_url}/api/v1/system/health", timeout=60)
            health_ms = (time.perf_counter() - t0) * 1000
            out(
                f"{queue}: enqueue {empty_enq:.3f} -> {full_enq:.3f} ms/task, dequeue {empty_deq:.3f} -> "
                f"{full_deq:.3f} ms/task (1k -> {tasks:,} pending); GET /control/pending?limit=100 "
                f"{fmt(empty_pending)} -> {fmt(full_pending)}; health with {tasks:,} pending {health_ms:.1f} ms "
                f"({health.json()['checks']['queue']['detail']}); filled in {fill_s:.1f} s; loadavg {loadavg()}"
            )
            rt.huey.flush()
    finally:
        rt.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("fill", "measure", "pending", "drop"))
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--prune", action="store_true", help="after measuring, run one prune pass (deletes rows)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    banner(f"scale: {args.action}")
    sizes = [int(s) for s in args.sizes.split(",")]
    backends = args.backends.split(",")
    args.dir.mkdir(parents=True, exist_ok=True)
    if args.action == "fill":
        for size in sizes:
            for backend in backends:
                took = fill_sqlite(sqlite_path(args.dir, size), size) if backend == "sqlite" else fill_postgres(size)
                out(f"filled {backend} with {size:,} designs in {took:.1f} s (loadavg {loadavg()})")
    elif args.action == "measure":
        results = []
        for size in sizes:
            for backend in backends:
                r = measure_one(backend, size, args.dir, args.reps, args.starts)
                if args.prune:
                    url = f"sqlite:///{sqlite_path(args.dir, size)}" if backend == "sqlite" else pg_url(size)
                    r["prune"] = prune_pass(url)
                out(
                    f"{backend} {size:,}: "
                    + ", ".join(f"{k} {statistics.median(r[k]):.2f}" for k in FIGURES)
                    + f" ms; loadavg {r['loadavg']}"
                )
                results.append(r)
        report(results)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1, default=str))
    elif args.action == "pending":
        for queue in backends:
            pending_bench(args.dir, args.tasks, "redis" if queue == "postgres" else queue)
    else:
        with psycopg.connect(f"{PG}/test", autocommit=True) as conn:
            for size in sizes:
                conn.execute(f'drop database if exists "perf_scale_{size}" with (force)')


if __name__ == "__main__":
    main()
