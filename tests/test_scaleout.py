"""Scale-out on the real servers: 2 `customify api` + 2 `customify worker` processes on
Postgres + Redis sharing one data dir; 300 designs posted across both APIs.

- every design is published exactly once (one claim each, one preview + thumbnail on disk,
  one mail), and worker-status from either API lists both workers;
- a worker killed with SIGKILL mid-load: the rest still publish (the sweeper re-drives its
  renders once their lease expires), and both APIs name it stale.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, func, select, text

from customify import db
from customify.models import Design, Mail
from tests.conftest import eventually, free_port
from tests.test_postgres import REDIS_URL, pg_database, redis_queue_name
from tests.test_postgres import pytestmark as needs_servers

pytestmark = [needs_servers, pytest.mark.slow]  # four processes and 300 designs per test

DESIGNS = 300


@dataclass
class Deployment:
    """API and worker subprocesses of one deployment (one config file, one data dir)."""

    config: Path
    root: Path
    database_url: str
    apis: list[str] = field(default_factory=list)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: list[Any] = field(default_factory=list)

    def _spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CUSTOMIFY_") and k != "DATABASE_URL"}
        log = (self.root / f"{name}.log").open("wb")
        self.logs.append(log)
        proc = subprocess.Popen(
            [sys.executable, "-m", "customify", *args, "--config", str(self.config)],
            cwd=self.root,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.procs[name] = proc
        return proc

    def start_worker(self, name: str, threads: int = 2) -> None:
        self._spawn(name, "worker", "--workers", str(threads))

    def start_api(self, name: str) -> str:
        port = free_port()
        self._spawn(name, "api", "--port", str(port))
        url = f"http://127.0.0.1:{port}"
        self.apis.append(url)
        return url

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")

    def wait_healthy(self, workers: int, timeout: float = 30) -> None:
        """Every API answers and lists `workers` live worker processes."""

        def listed(url: str) -> bool:
            dead = {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}
            assert not dead, f"exited: {dead}\n" + "\n".join(self.log(n) for n in dead)
            try:
                status = httpx.get(f"{url}/api/v1/system/worker-status", timeout=5).json()
                return len([w for w in status["workers"].values() if not w["stale"]]) >= workers
            except (httpx.HTTPError, KeyError, ValueError):
                return False

        for url in self.apis:
            eventually(
                lambda url=url: listed(url),
                seconds=timeout,
                interval=0.2,
                describe=lambda url=url: f"{url} never listed {workers} workers",
            )

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for log in self.logs:
            log.close()


def deployment_config(root: Path, database_url: str, queue_name: str, render: str = "") -> Path:
    """The customify.toml of a deployment on Postgres + Redis (its own database and queue name)."""
    config = root / "customify.toml"
    config.write_text(
        f'data_dir = "{root / "data"}"\n'
        f'database_url = "{database_url}"\n'
        f'queue_url = "{REDIS_URL}"\n'
        f'queue_name = "{queue_name}"\n'
        f"[render]\nworker_nice = 0\n{render}"
    )
    return config


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    with pg_database() as url, redis_queue_name() as name:
        # A killed worker's renders come back within seconds.
        config = deployment_config(tmp_path, url, name, "lease_seconds = 4.0\nsweep_interval = 1.0\n")
        dep = Deployment(config, tmp_path, url)
        try:
            yield dep
        finally:
            dep.stop()


async def _post(apis: list[str], count: int) -> list[str]:
    clients = [httpx.AsyncClient(base_url=u, timeout=60, limits=httpx.Limits(max_connections=10)) for u in apis]
    semaphore = asyncio.Semaphore(16)

    async def one(i: int) -> str:
        async with semaphore:
            response = await clients[i % len(clients)].post(
                "/api/v1/designs",
                json={
                    "name": f"scale {i}",
                    "product": "mug",
                    "color": "#ffffff",
                    "layers": [{"type": "text", "text": f"#{i}", "size": 0.2, "color": "#1d4ed8"}],
                },
            )
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    try:
        return await asyncio.gather(*(one(i) for i in range(count)))
    finally:
        for client in clients:
            await client.aclose()


def _counts(database_url: str) -> dict[str, int]:
    engine = create_engine(db.driver_url(database_url))
    try:
        with engine.connect() as conn:
            return {s: n for s, n in conn.execute(select(Design.status, func.count()).group_by(Design.status))}
    finally:
        engine.dispose()


def _wait_all_published(dep: Deployment, ids: list[str], timeout: float) -> dict[str, int]:
    counts: dict[str, int] = {}

    def published() -> bool:
        counts.clear()
        counts.update(_counts(dep.database_url))
        return counts.get("published", 0) == len(ids)

    eventually(published, seconds=timeout, interval=0.5, describe=lambda: counts)
    return counts


def _merged_stats(api: str) -> dict[str, Any] | None:
    """The API's queue stats once it counts every render of the run (None until then)."""
    stats: dict[str, Any] = httpx.get(f"{api}/api/v1/control/stats", timeout=10).json()
    renders = stats["windows"]["1h"].get("render_design_preview", {})
    return stats if renders.get("done", 0) >= DESIGNS else None


def _status(api: str) -> dict[str, Any]:
    response = httpx.get(f"{api}/api/v1/system/worker-status", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def test_two_apis_two_workers_publish_300_exactly_once(deployment: Deployment) -> None:
    dep = deployment
    dep.start_worker("worker-1")
    dep.start_worker("worker-2")
    dep.start_api("api-1")
    dep.start_api("api-2")
    dep.wait_healthy(workers=2)

    ids = asyncio.run(_post(dep.apis, DESIGNS))
    assert len(set(ids)) == DESIGNS
    counts = _wait_all_published(dep, ids, timeout=150)
    assert counts == {"published": DESIGNS}, counts

    # Exactly once: one claim per design, one preview + one thumbnail on disk, one mail each.
    engine = create_engine(db.driver_url(dep.database_url))
    with engine.connect() as conn:
        attempts = conn.execute(select(Design.attempts, func.count()).group_by(Design.attempts)).all()
        mails = conn.scalar(select(func.count(func.distinct(Mail.design_id))))
        mail_rows = conn.scalar(select(func.count()).select_from(Mail))
        claimed_by = {
            r[0].rsplit("/", 1)[0]
            for r in conn.execute(
                text("select distinct worker from task_runs where task_name = 'render_design_preview'")
            )
            if r[0]
        }
        twice = conn.execute(
            text(
                "select t.design_id, t.worker, t.state, t.attempt, t.error, t.started_at, t.finished_at "
                "from task_runs t "
                "join designs d on d.id = t.design_id where d.attempts > 1 order by t.design_id, t.started_at"
            )
        ).all()
    engine.dispose()
    # One publication per design: mark_published writes the design's one outbox row (unique per
    # version) and leaves exactly one preview and one thumbnail; a losing render deletes its files.
    # (A render may still be *attempted* twice: the sweeper re-drives drafts queued longer than
    # its re-drive delay, and can reset a claim taken between its listing and its reset.)
    assert sum(n for a, n in attempts) == DESIGNS, twice
    assert mails == mail_rows == DESIGNS
    renders = dep.root / "data" / "renders"
    files = {d.name: sorted(p.suffix for p in d.iterdir()) for d in renders.iterdir()}
    assert len(files) == DESIGNS and all(f == [".png", ".webp"] for f in files.values())
    # Both worker processes took part (the task history names process and thread).
    assert len(claimed_by) == 2, claimed_by

    # Either API lists both workers, live, with exactly one periodic scheduler between them.
    pids = {dep.procs["worker-1"].pid, dep.procs["worker-2"].pid}
    for api in dep.apis:
        status = _status(api)
        assert status["workers_available"] is True
        workers = list(status["workers"].values())
        assert {w["pid"] for w in workers} == pids
        assert all(not w["stale"] and w["concurrency"] == 2 and len(w["threads"]) == 2 for w in workers)
        assert sum(w["scheduler"] for w in workers) == 1
        health = httpx.get(f"{api}/api/v1/system/health", timeout=10)
        assert health.status_code == 200 and health.json()["checks"]["consumer"]["workers"] == 2
        # The dashboard's queue stats from an API-only process: its workers' threads and their
        # timings merged from the registry (the worker processes beat every 2 s).
        stats = eventually(lambda url=api: _merged_stats(url), seconds=15.0, interval=0.2)
        assert len(stats["threads"]) == 4 and stats["consumer"] is True and stats["concurrency"] == 4
        assert stats["windows"]["1h"]["render_design_preview"]["run_p50_ms"] > 0


def test_sigkill_one_worker_mid_load_the_rest_still_publish(deployment: Deployment) -> None:
    dep = deployment
    dep.start_worker("worker-1")
    dep.start_worker("worker-2")
    dep.start_api("api-1")
    dep.start_api("api-2")
    dep.wait_healthy(workers=2)

    ids = asyncio.run(_post(dep.apis, DESIGNS))
    eventually(
        lambda: _counts(dep.database_url).get("published", 0) >= DESIGNS // 5,
        seconds=60,
        interval=0.1,
        describe=lambda: _counts(dep.database_url),
    )
    victim = dep.procs["worker-1"]
    victim.send_signal(signal.SIGKILL)
    victim.wait(5)

    counts = _wait_all_published(dep, ids, timeout=180)
    assert counts == {"published": DESIGNS}, counts

    # Both APIs name the killed worker stale; health stays 200 while the other one consumes.
    for api in dep.apis:
        workers = eventually(
            lambda api=api: (
                (w := {w["pid"]: w for w in _status(api)["workers"].values()}).get(victim.pid, {}).get("stale") and w
            ),
            seconds=20,
            interval=0.5,
            describe=lambda api=api: _status(api)["workers"],
        )
        assert workers[dep.procs["worker-2"].pid]["stale"] is False
        health = httpx.get(f"{api}/api/v1/system/health", timeout=10).json()
        assert health["status"] == "ok", health
        assert f":{victim.pid}" in health["checks"]["consumer"]["detail"]  # named as stale
