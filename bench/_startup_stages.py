"""Child of core_startup.py: where `customify run`'s start-up time goes, stage by stage.

Replays cli._serve with timestamps: staged imports, Runtime(), prepare_database(),
create_app(), uvicorn until started, first 200 from health. Prints one line of
`stage=seconds` (increments, in order). Usage: python _startup_stages.py DATA_DIR
"""

from __future__ import annotations

import sys
import time

T0 = time.perf_counter()
marks: list[tuple[str, float]] = []


def mark(name: str) -> None:
    marks.append((name, time.perf_counter()))


# Variant "lean" (a recommendation, not the shipped code): keep huey's optional
# psycopg/redis imports out of an all-SQLite process, and skip alembic when the
# schema is already at head (plain SELECT of alembic_version).
LEAN = len(sys.argv) > 2 and sys.argv[2] == "lean"
if LEAN:
    sys.modules["psycopg"] = None  # type: ignore[assignment]
    sys.modules["redis"] = None  # type: ignore[assignment]

import click  # noqa: E402,F401

import customify.cli  # noqa: E402

mark("import_cli_click")
import sqlalchemy.ext.asyncio  # noqa: E402
import sqlalchemy.orm  # noqa: E402,F401

mark("import_sqlalchemy")
import huey  # noqa: E402,F401

mark("import_huey(+psycopg,redis)")
import litestar  # noqa: E402,F401

mark("import_litestar")
import customify.api  # noqa: E402
import customify.runtime  # noqa: E402,F401

mark("import_customify_rest")
import uvicorn  # noqa: E402

mark("import_uvicorn")


def main() -> None:
    import socket
    import threading

    import httpx
    import msgspec

    from customify.api import create_app
    from customify.config import load_config
    from customify.runtime import Runtime

    mark("import_httpx")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    config = load_config(None, {}, {"data_dir": sys.argv[1], "port": 0, "host": "127.0.0.1"})
    config = msgspec.structs.replace(config, port=sock.getsockname()[1])
    rt = Runtime(config)
    mark("Runtime()")
    if LEAN:
        from pathlib import Path

        from sqlalchemy import text

        import customify.db as cdb

        heads = [
            line.split("=", 1)[1].strip().strip("\"'")
            for f in (Path(cdb.__file__).parent / "migrations" / "versions").glob("*.py")
            for line in f.read_text().splitlines()
            if line.startswith("revision")
        ]
        slow_upgrade = cdb.upgrade

        def fast_upgrade(engine):  # type: ignore[no-untyped-def]
            try:
                with engine.connect() as conn:
                    current = conn.execute(text("select version_num from alembic_version")).scalar()
            except Exception:
                current = None
            if len(heads) == 1 and current == heads[0]:
                return
            slow_upgrade(engine)

        cdb.upgrade = fast_upgrade
    rt.prepare_database()
    mark("prepare_database(alembic)")
    rt.check_queue()
    app = create_app(config, consumer=True, runtime=rt)
    mark("create_app")
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started and thread.is_alive():
        time.sleep(0.002)
    mark("uvicorn+lifespan")
    with httpx.Client(base_url=config.base_url) as client:
        while client.get("/api/v1/system/health").status_code != 200:
            time.sleep(0.002)
    mark("first_health_200")
    prev = T0
    parts = []
    for name, at in marks:
        parts.append(f"{name}={at - prev:.4f}")
        prev = at
    parts.append(f"total={prev - T0:.4f}")
    print(" ".join(parts), flush=True)
    server.should_exit = True
    thread.join(10)
    rt.close()


main()
