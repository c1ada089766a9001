"""The API's database read path: AsyncSession over aiosqlite vs the sync Session in one thread hop.

Per read of one design (records.get_design), SQLite in WAL mode: wall time per read
awaited one at a time, reads/s with 16 concurrent readers, and CPU per read
(process time), the two paths alternated in rounds in the same run. The async
engine is built here, not imported: the product keeps only the faster path.

    .venv/bin/pip install aiosqlite  # the product no longer depends on it
    cd bench && ../.venv/bin/python api_read_path.py [--reads 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from _common import banner, med, out
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from customify import db, records
from customify.config import load_config
from customify.models import DEV_USER_ID
from customify.runtime import Runtime


async def measure(read: Callable[[], Awaitable[object]], reads: int, concurrency: int) -> tuple[float, float]:
    """(wall ms per read, CPU ms per read) over `reads` reads, `concurrency` at a time."""
    per_worker = reads // concurrency

    async def worker() -> None:
        for _ in range(per_worker):
            assert await read() is not None

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    done = per_worker * concurrency
    return (time.perf_counter() - wall) * 1000 / done, (time.process_time() - cpu) * 1000 / done


async def main(reads: int, rounds: int) -> None:
    banner("API read path: AsyncSession+aiosqlite vs sync Session via asyncio.to_thread")
    with tempfile.TemporaryDirectory() as tmp:
        config = load_config(None, {}, {"data_dir": str(Path(tmp) / "data")})
        rt = Runtime(config)
        rt.prepare_database()
        spec = {
            "name": "bench",
            "product": "tshirt",
            "color": "#ffffff",
            "layers": [{"type": "text", "text": "HELLO", "size": 0.1}],
        }
        with rt.transaction() as session:
            records.ensure_dev_user(session)
            design_id = records.create_design(session, DEV_USER_ID, spec).id
        async_url = db.driver_url(rt.database_url).replace("sqlite://", "sqlite+aiosqlite://", 1)
        engine = create_async_engine(async_url, connect_args={"timeout": 10, "isolation_level": None})
        event.listen(engine.sync_engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN"))

        async def via_async() -> object:
            async with AsyncSession(engine, expire_on_commit=False) as session:
                return await session.run_sync(records.get_design, DEV_USER_ID, design_id)

        async def via_thread() -> object:
            return await asyncio.to_thread(rt.read, records.get_design, DEV_USER_ID, design_id)

        paths = {"async (aiosqlite)": via_async, "sync + to_thread": via_thread}
        results: dict[str, dict[str, list[float]]] = {name: {"seq": [], "cpu": [], "conc": []} for name in paths}
        for fn in paths.values():  # warm both: connections, statement caches
            await measure(fn, 200, 1)
        for _ in range(rounds):
            for name, fn in paths.items():
                wall, cpu = await measure(fn, reads, 1)
                conc_wall, _ = await measure(fn, reads, 16)
                results[name]["seq"].append(wall)
                results[name]["cpu"].append(cpu)
                results[name]["conc"].append(1000 / conc_wall)
        for name, r in results.items():
            out(
                f"{name:18} one at a time {med(r['seq']):.3f} ms/read, CPU {med(r['cpu']):.3f} ms/read; "
                f"16 concurrent {med(r['conc']):.0f} reads/s  (medians of {rounds} rounds × {reads} reads)"
            )
        a, s = results["async (aiosqlite)"], results["sync + to_thread"]
        out(
            f"ratio async/sync: wall {med(a['seq']) / med(s['seq']):.2f}×, CPU {med(a['cpu']) / med(s['cpu']):.2f}×, "
            f"throughput {med(a['conc']) / med(s['conc']):.2f}×"
        )
        await engine.dispose()
        rt.engine.dispose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.reads, args.rounds))
