"""Nothing lost: real processes, real SIGKILLs, a real SMTP server on loopback."""

from __future__ import annotations

import contextlib
import email
import email.policy
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller

from customify import tasks as tasks_module
from tests.conftest import LiveApp, eventually, free_port, hold_renders, open_image, png_bytes

# ---------------------------------------------------------------------------
# A real SMTP server that counts what it receives


class Inbox:
    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.lock:
            self.messages.append(message)  # type: ignore[arg-type]
        return "250 OK"

    def ids(self) -> Counter[str]:
        with self.lock:
            return Counter(str(m["Message-ID"]) for m in self.messages)

    def design_ids(self) -> dict[str, set[str]]:
        """design id → Message-IDs received for it (from the preview link in the body)."""
        out: dict[str, set[str]] = {}
        with self.lock:
            for m in self.messages:
                body = m.get_body(preferencelist=("plain",))
                text = body.get_content() if body is not None else ""
                found = re.search(r"/api/v1/designs/([0-9a-f-]{36})/preview\.png", text)
                if found:
                    out.setdefault(found.group(1), set()).add(str(m["Message-ID"]))
        return out


@pytest.fixture
def smtp() -> Any:
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield inbox, controller.port
    controller.stop()


# ---------------------------------------------------------------------------
# customify run as a subprocess, killed and restarted


class Process:
    def __init__(
        self,
        data_dir: Path,
        port: int,
        smtp_port: int | None,
        config: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.data_dir, self.port, self.smtp_port, self.config = data_dir, port, smtp_port, config
        self.env = env or {}
        self.proc: subprocess.Popen[str] | None = None
        self.base = f"http://127.0.0.1:{port}"

    def start(self, **extra_env: str) -> None:
        env = {**os.environ, **self.env, **extra_env}
        if self.smtp_port:
            env["CUSTOMIFY_SMTP_URL"] = f"smtp://127.0.0.1:{self.smtp_port}"
        args = [sys.executable, "-m", "customify", "run", "--data-dir", str(self.data_dir), "--port", str(self.port)]
        if self.config:
            args += ["--config", str(self.config)]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert "ready in" in line, f"did not start: {line!r}"

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        code = self.proc.wait(timeout)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return code

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.wait(10)
        elif self.proc is not None:
            self.wait(1)


def post_until_accepted(base: str, body: dict[str, Any], key: str, deadline: float) -> str:
    """A client that retries with the same Idempotency-Key until the server answers."""
    while time.monotonic() < deadline:
        try:
            response = httpx.post(f"{base}/api/v1/designs", json=body, headers={"Idempotency-Key": key}, timeout=10)
        except httpx.TransportError:
            time.sleep(0.1)
            continue
        if response.status_code == 201:
            return str(response.json()["id"])
        if response.status_code >= 500:
            time.sleep(0.1)
            continue
        raise AssertionError(response.text)
    raise AssertionError(f"{key} never accepted")


def all_designs(base: str) -> dict[str, dict[str, Any]]:
    designs: dict[str, dict[str, Any]] = {}
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 200}
        if cursor:
            params["cursor"] = cursor
        page = httpx.get(f"{base}/api/v1/designs", params=params, timeout=10).json()
        designs.update({d["id"]: d for d in page["items"]})
        cursor = page["next_cursor"]
        if not cursor:
            return designs


def settle(base: str, expected: int, timeout: float) -> dict[str, dict[str, Any]]:
    """Wait until `expected` designs exist and none is draft or rendering; return them by id."""
    seen: dict[str, dict[str, Any]] = {}

    def settled() -> dict[str, dict[str, Any]] | None:
        seen.clear()
        seen.update(all_designs(base))
        done = len(seen) >= expected and all(d["status"] in ("published", "failed") for d in seen.values())
        return dict(seen) if done else None

    return eventually(
        settled,
        seconds=timeout,
        interval=0.5,  # type: ignore[no-any-return]
        describe=lambda: f"{dict(Counter(d['status'] for d in seen.values()))} of {len(seen)}",
    )


def chaos(
    tmp_path: Path, smtp_port: int, designs: int, invalid: int, kills: int, sweeper: bool
) -> tuple[Process, dict[str, dict[str, Any]] | AssertionError, set[str]]:
    config = tmp_path / "customify.toml"
    # Orphans are re-driven first after a restart, so the next kill often hits them again:
    # allow more attempts than kills, so that only the invalid designs fail.
    config.write_text("[render]\nmax_attempts = 10\nsweep_interval = %s\n" % ("1.0" if sweeper else "0"))
    proc = Process(tmp_path / "data", free_port(), smtp_port, config)
    proc.start()
    try:
        return _chaos_run(tmp_path, proc, designs, invalid, kills, sweeper)
    except BaseException:
        proc.stop()  # a failed run leaves no server behind for the next test
        raise


def _chaos_run(
    tmp_path: Path, proc: Process, designs: int, invalid: int, kills: int, sweeper: bool
) -> tuple[Process, dict[str, dict[str, Any]] | AssertionError, set[str]]:
    # An asset that is deleted from disk after upload: designs using it cannot render.
    asset = httpx.post(
        f"{proc.base}/api/v1/assets", files={"file": ("logo.png", png_bytes(), "image/png")}, timeout=10
    ).json()
    for path in (tmp_path / "data" / "assets").rglob(f"{asset['sha256']}*"):
        path.unlink()
    bad_ids: set[str] = set()
    bodies = []
    for i in range(designs):
        layers: list[dict[str, Any]] = [{"type": "text", "text": f"#{i}", "size": 0.2, "color": "#111827"}]
        if i % (designs // invalid) == 0 and len([b for b in bodies if b[2]]) < invalid:
            layers.append({"type": "image", "asset_id": asset["id"], "width": 0.3})
            bodies.append(
                ({"name": f"chaos {i}", "product": "mug", "color": "#ffffff", "layers": layers}, f"chaos-{i}", True)
            )
        else:
            bodies.append(
                ({"name": f"chaos {i}", "product": "mug", "color": "#ffffff", "layers": layers}, f"chaos-{i}", False)
            )
    accepted: dict[str, str] = {}
    deadline = time.monotonic() + 120

    def client(chunk: list[tuple[dict[str, Any], str, bool]]) -> None:
        for body, key, bad in chunk:
            design_id = post_until_accepted(proc.base, body, key, deadline)
            accepted[key] = design_id
            if bad:
                bad_ids.add(design_id)

    threads = [threading.Thread(target=client, args=(bodies[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    rng = random.Random(7)
    for _ in range(kills):
        time.sleep(rng.uniform(0.4, 1.5))
        proc.kill()
        time.sleep(rng.uniform(0.0, 0.3))
        proc.start()
    for t in threads:
        t.join(150)
    assert len(accepted) == designs
    try:
        result: dict[str, dict[str, Any]] | AssertionError = settle(proc.base, designs, 60 if sweeper else 15)
    except AssertionError as exc:
        result = exc
    return proc, result, bad_ids


@pytest.mark.slow
def test_chaos_sigkill_loses_nothing(tmp_path: Path, smtp: Any) -> None:
    inbox, smtp_port = smtp
    proc, result, bad_ids = chaos(tmp_path, smtp_port, designs=200, invalid=10, kills=5, sweeper=True)
    try:
        assert isinstance(result, dict), str(result)
        statuses = Counter(d["status"] for d in result.values())
        assert statuses == {"published": 190, "failed": 10}, statuses
        failed = {d["id"] for d in result.values() if d["status"] == "failed"}
        assert failed == bad_ids
        for design_id in failed:
            error = result[design_id]["error"]
            assert "asset" in error and "Traceback" not in error, error
        # Every preview a valid image (a sample of them, all thumbnails' sizes via HEAD-less GET).
        for design in list(result.values())[::10]:
            if design["status"] == "published":
                image = open_image(
                    httpx.get(f"{proc.base}/api/v1/designs/{design['id']}/preview.png", timeout=10).content
                )
                assert image.size == (1200, 1200)
        # Exactly one mail per published design, by Message-ID.
        eventually(
            lambda: len(inbox.design_ids()) >= 190,
            seconds=30,
            interval=0.2,
            describe=lambda: f"{len(inbox.design_ids())} designs mailed",
        )
        per_design = inbox.design_ids()
        published = {d for d, v in result.items() if v["status"] == "published"}
        assert set(per_design) == published
        assert all(len(ids) == 1 for ids in per_design.values()), {d: i for d, i in per_design.items() if len(i) > 1}
    finally:
        proc.stop()


@pytest.mark.slow
def test_chaos_without_sweeper_leaves_designs_stuck(tmp_path: Path, smtp: Any) -> None:
    """The harness can fail: with the sweeper off, SIGKILLs mid-render leave designs in rendering."""
    _, smtp_port = smtp
    proc, result, _ = chaos(tmp_path, smtp_port, designs=100, invalid=5, kills=3, sweeper=False)
    try:
        assert isinstance(result, AssertionError), "every design settled although the sweeper was off"
        assert "rendering" in str(result) or "draft" in str(result)
    finally:
        proc.stop()


@pytest.mark.slow
@pytest.mark.parametrize("point", ["after-commit", "after-claim", "before-publish", "after-publish", "after-send"])
def test_named_crash_points_reach_the_same_end(tmp_path: Path, smtp: Any, point: str) -> None:
    inbox, smtp_port = smtp
    proc = Process(tmp_path / "data", free_port(), smtp_port)
    proc.start(CUSTOMIFY_CRASH_AT=point)
    body = {
        "name": "crash",
        "product": "tote",
        "color": "#f5f0e1",
        "layers": [{"type": "text", "text": point, "size": 0.08, "color": "#111827"}],
    }
    with contextlib.suppress(httpx.TransportError):  # after-commit dies before answering
        httpx.post(f"{proc.base}/api/v1/designs", json=body, headers={"Idempotency-Key": "k1"}, timeout=10)
    assert proc.wait(15) == 137, f"the process did not crash at {point}"
    proc.start()
    try:
        design_id = post_until_accepted(proc.base, body, "k1", time.monotonic() + 20)
        done = httpx.get(f"{proc.base}/api/v1/designs/{design_id}", params={"wait": 15}, timeout=20).json()
        assert done["status"] == "published", done
        assert done["version"] == 1
        image = open_image(httpx.get(f"{proc.base}/api/v1/designs/{design_id}/preview.png", timeout=10).content)
        assert image.size == (1200, 1200)
        eventually(lambda: design_id in inbox.design_ids(), seconds=15, describe=inbox.ids)
        assert len(inbox.design_ids().get(design_id, set())) == 1, inbox.ids()
        listing = httpx.get(f"{proc.base}/api/v1/designs", timeout=10).json()["items"]
        assert len(listing) == 1
    finally:
        proc.stop()


# ---------------------------------------------------------------------------
# In-process: worker threads stay alive, stall detection, timeouts


def test_attempts_are_capped_with_the_last_error(live: LiveApp) -> None:
    from datetime import timedelta

    from customify.models import Design, utcnow

    live.rt.stop_consumer()  # nothing renders it behind our back
    design = live.design()
    with live.rt.transaction() as session:
        row = session.get(Design, design["id"])
        assert row is not None
        row.status, row.attempts, row.error = "rendering", 3, "OperationalError: disk I/O error"
        row.claim_token, row.claimed_at = "gone", utcnow() - timedelta(hours=1)
    tasks_module.sweep_stale_designs(live.rt)
    failed = live.client.get(f"/api/v1/designs/{design['id']}").json()
    assert failed["status"] == "failed"
    assert failed["error"] == "gave up after 3 attempts; last error: OperationalError: disk I/O error"


def test_dead_worker_thread_is_replaced(live: LiveApp) -> None:
    died: list[threading.Thread] = []

    @live.rt.huey.task(name="exit_thread")
    def exit_thread() -> None:
        died.append(threading.current_thread())
        raise SystemExit("a task that kills its thread")

    consumer = live.rt.consumer
    assert consumer is not None
    exit_thread()
    exit_thread()

    def replaced() -> bool:  # both threads that ran it are dead, and two live ones work in their place
        current = {thread for _, thread in consumer.worker_threads}
        return (
            len(died) == 2
            and not any(t.is_alive() for t in died)
            and not current & set(died)
            and consumer.alive_workers() == 2
        )

    eventually(replaced, describe=lambda: ([t.name for t in died], consumer.thread_names(), consumer.alive_workers()))
    assert live.client.post("/api/v1/system/debug-task").status_code == 200
    assert live.wait(live.design()["id"])["status"] == "published"


def health(app: LiveApp) -> tuple[int, str]:
    response = app.client.get("/api/v1/system/health")
    return response.status_code, response.json()["checks"]["consumer"]["detail"]


def wait_health(app: LiveApp, status: int, timeout: float = 10) -> str:
    detail: str = eventually(
        lambda: (answer := health(app))[0] == status and answer[1],
        seconds=timeout,
        interval=0.1,
        describe=lambda: health(app),
    )
    return detail


def test_stall_consumer_stopped_while_work_waits(live: LiveApp) -> None:
    wait_health(live, 200)
    live.rt.stop_consumer()
    design = live.design()
    detail = wait_health(live, 503)
    assert "no live worker" in detail and "1 task(s) wait" in detail
    status = live.client.get("/api/v1/system/worker-status").json()
    assert status["workers_available"] is False and any("no live worker" in p["detail"] for p in status["problems"])
    live.rt.start_consumer()
    assert live.wait(design["id"])["status"] == "published"
    wait_health(live, 200)


def test_stall_beats_but_never_consumes(make_live: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The old system's failure: workers alive and beating, the queue growing, nothing consumed."""
    app = make_live(render={"stall_seconds": 1.0})
    real_dequeue = app.rt.huey.dequeue
    monkeypatch.setattr(app.rt.huey, "dequeue", lambda: None)
    design = app.design()
    detail = wait_health(app, 503)
    assert "not consuming" in detail and "beat" in detail
    monkeypatch.setattr(app.rt.huey, "dequeue", real_dequeue)
    assert app.wait(design["id"])["status"] == "published"
    wait_health(app, 200)


def test_stall_task_past_its_timeout_then_fails_the_design(make_live: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    app = make_live(workers=1, render={"timeout_seconds": 1.0, "stall_seconds": 0.5})
    release = threading.Event()
    real = tasks_module.render_job

    def stuck(*args: Any, **kwargs: Any) -> Any:
        release.wait(20)
        return real(*args, **kwargs)

    monkeypatch.setattr(tasks_module, "render_job", stuck)
    design = app.design()
    detail = eventually(lambda: "past the 1 s render timeout" in health(app)[1] and health(app)[1])
    assert health(app)[0] == 503 and "no progress" in detail  # one thread, wedged: nothing works
    release.set()
    done = app.wait(design["id"])
    assert done["status"] == "failed" and "render.timeout_seconds" in done["error"]
    wait_health(app, 200)


# ---------------------------------------------------------------------------
# Database and mail trouble


@pytest.mark.slow
def test_sqlite_write_lock_held_by_another_process(live: LiveApp) -> None:
    db_file = live.rt.config.data_path / "customify.db"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sqlite3, sys, time\n"
                f"c = sqlite3.connect({str(db_file)!r}, isolation_level=None)\n"
                "c.execute('begin immediate'); print('locked', flush=True); time.sleep(12); c.execute('rollback')\n"
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    holder.stdout.close()
    started = time.monotonic()
    response = live.client.post(
        "/api/v1/designs", json={"name": "x", "product": "mug", "color": "#ffffff", "layers": []}
    )
    if response.status_code == 503:  # waited out the busy timeout while the lock was held
        assert response.headers["content-type"].startswith("application/problem+json")
        assert "retry" in response.json()["detail"]
    else:  # the lock was released while waiting: the create went through
        assert response.status_code == 201 and time.monotonic() - started > 5
    holder.wait(20)
    created = live.design()
    assert live.wait(created["id"], 20)["status"] == "published"


@pytest.mark.slow
def test_smtp_down_then_up_mail_arrives_once(make_live: Any) -> None:
    port = free_port()
    app = make_live(smtp_url=f"smtp://127.0.0.1:{port}")
    design = app.design()
    assert app.wait(design["id"])["status"] == "published"  # publishing does not wait for mail

    def sends() -> list[dict[str, Any]]:
        runs = app.client.get("/api/v1/system/tasks", params={"limit": 50}).json()
        return [r for r in runs if r["task"] == "send_email"]

    # SMTP is down: the first send fails and is retried with backoff.
    eventually(lambda: any(r["state"] == "retrying" for r in sends()), seconds=20, describe=sends)
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        eventually(lambda: any(r["state"] == "sent" for r in sends()), seconds=40, interval=0.2, describe=sends)
        assert list(inbox.design_ids()) == [design["id"]]
        assert sum(inbox.ids().values()) == 1
    finally:
        controller.stop()


# ---------------------------------------------------------------------------
# customify doctor


def doctor(data_dir: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, float]:
    """What `customify doctor` prints and its exit code, computed in this process by the functions the
    command calls (the command itself, which ends with os._exit, runs as a process in `doctor_process`)."""
    from customify.doctor import as_json, format_checks, run_checks

    started = time.monotonic()
    timeout = float(args[args.index("--timeout") + 1]) if "--timeout" in args else 5.0
    checks = run_checks(None, {**os.environ, **(env or {})}, {"data_dir": str(data_dir)}, timeout=timeout)
    out = json.dumps(as_json(checks), indent=2) if "--json" in args else format_checks(checks)
    return 0 if all(c.ok for c in checks) else 1, out, time.monotonic() - started


def doctor_process(data_dir: Path, *args: str) -> tuple[int, str, float]:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "customify", "doctor", "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.returncode, result.stdout + result.stderr, time.monotonic() - started


def test_doctor_healthy_setup(live: LiveApp) -> None:
    code, out, _ = doctor(live.rt.config.data_path)
    assert code == 0, out
    assert "all checks passed" in out and "debug task answered by Worker-" in out
    assert "drew a test design in a render helper process" in out


def test_doctor_says_when_the_render_helper_cannot_start(make_config: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from customify import doctor as doctor_module
    from customify.render import pool

    monkeypatch.setattr(pool.sys, "executable", "/bin/false")  # an interpreter that exits at once
    check = doctor_module._renderer(make_config(), 5)
    assert not check.ok and check.name == "renderer"
    assert "could not draw a test design in a render helper process" in check.detail
    assert "the render process died (exit code 1" in check.detail and "python -m customify.render.pool" in check.fix
    assert doctor_module._renderer(make_config(render={"pool": "thread"}), 5).ok  # drawn here instead


def test_doctor_json(live: LiveApp) -> None:
    code, out, _ = doctor(live.rt.config.data_path, "--json")
    checks = json.loads(out)
    assert code == 0 and {c["name"] for c in checks} >= {
        "configuration",
        "database",
        "queue",
        "task names",
        "backlog",
        "consumer",
        "clocks",
        "data dir",
        "renderer",
    }


@pytest.mark.slow  # waits out the doctor's timeout for a consumer that is not there
def test_doctor_no_consumer(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "customify", "db", "upgrade", "--data-dir", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    code, out, took = doctor_process(tmp_path, "--timeout", "2")
    assert code == 1 and "no consumer answered" in out and "customify worker" in out
    assert took < 20


def test_doctor_on_a_missing_data_dir_says_so_and_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "typo"
    code, out, _ = doctor(missing)
    assert code == 1 and f"[FAIL] data dir      {missing} does not exist" in out, out
    assert not missing.exists()


def test_doctor_wrong_database_url(tmp_path: Path) -> None:
    code, out, took = doctor(tmp_path, env={"CUSTOMIFY_DATABASE_URL": "postgresql://u:hunter2@127.0.0.1:1/nope"})
    assert code == 1 and "[FAIL] database" in out and "CUSTOMIFY_DATABASE_URL" in out
    assert "hunter2" not in out and took < 20


def test_doctor_clock_skew(live: LiveApp) -> None:
    code, out, _ = doctor(live.rt.config.data_path, env={"CUSTOMIFY_CLOCK_SKEW": "30"})
    assert code == 1 and "[FAIL] clocks" in out and "+30" in out


def test_sqlite_db_is_a_real_file(live: LiveApp) -> None:
    # The data dir holds real SQLite files in WAL mode (no database mocks anywhere).
    with sqlite3.connect(live.rt.config.data_path / "customify.db") as conn:
        assert conn.execute("pragma journal_mode").fetchone()[0] == "wal"


def test_graceful_stop_lets_the_running_render_finish(make_live: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    app = make_live()
    release, entered = hold_renders(monkeypatch, 10)
    design = app.design()
    assert entered.wait(5)
    app.server.should_exit = True  # what uvicorn does on the first SIGINT/SIGTERM
    threading.Timer(0.5, release.set).start()
    app.thread.join(15)
    assert not app.thread.is_alive()
    with sqlite3.connect(app.rt.config.data_path / "customify.db") as conn:
        status = conn.execute("select status from designs where id = ?", (design["id"],)).fetchone()[0]
    assert status == "published"
