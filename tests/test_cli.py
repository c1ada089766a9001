"""`customify` as a user runs it: a real subprocess, real signals."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from customify.cli import main
from tests.conftest import free_port, png_bytes

SLOW = pytest.mark.slow


def customify(*args: str) -> list[str]:
    return [sys.executable, "-m", "customify", *args]


def start(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    proc = subprocess.Popen(
        customify("run", "--data-dir", str(tmp_path / "data"), "--port", str(port), *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the one ready line
    assert line, proc.stderr.read() if proc.stderr else ""
    return proc, line


# SIGTERM (what deployments send) in the fast loop; the same run and stop on SIGINT and SIGHUP is slow.
@pytest.mark.parametrize(
    "sig",
    [
        pytest.param(signal.SIGINT, marks=pytest.mark.slow),
        signal.SIGTERM,
        pytest.param(signal.SIGHUP, marks=pytest.mark.slow),
    ],
)
def test_run_comes_up_healthy_and_stops_cleanly(tmp_path: Path, sig: signal.Signals) -> None:
    proc, line = start(tmp_path)
    try:
        match = re.search(r"on (http://127\.0\.0\.1:\d+)", line)
        assert match, line
        assert "2 worker threads (renders in helper processes)" in line
        assert "database sqlite" in line and "queue sqlite" in line
        base = match.group(1)
        health = httpx.get(f"{base}/api/v1/system/health", timeout=10)
        assert health.status_code == 200, health.text
        created = httpx.post(
            f"{base}/api/v1/designs",
            timeout=10,
            json={
                "name": "cli",
                "product": "poster",
                "color": "#ffffff",
                "layers": [{"type": "text", "text": "Hi", "color": "#111827"}],
            },
        )
        assert created.status_code == 201
        done = httpx.get(f"{base}/api/v1/designs/{created.json()['id']}", params={"wait": 10}, timeout=15)
        assert done.json()["status"] == "published"
    finally:
        started = time.monotonic()
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=15)
    assert time.monotonic() - started < 10
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "Traceback" not in out
    assert "customify: stopping: running renders finish" in err  # says what it does with the signal
    # A clean stop leaves the worker registry; the log file says start and stop.
    with sqlite3.connect(tmp_path / "data" / "customify.db") as db:
        assert db.execute("select count(*) from worker_heartbeats").fetchone() == (0,)
    log = (tmp_path / "data" / "customify.log").read_text()
    assert "started: customify run" in log and f"stopping ({sig.name})" in log and "stopped: customify run" in log


@pytest.mark.slow  # a crash, then a second start
def test_sigkill_is_pid_checked_by_the_next_start_not_left_stale(tmp_path: Path) -> None:
    proc, _ = start(tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=15)
    with sqlite3.connect(tmp_path / "data" / "customify.db") as db:
        [(row_pid,)] = db.execute("select pid from worker_heartbeats").fetchall()
    assert row_pid == proc.pid
    again, line = start(tmp_path)
    try:
        base = re.search(r"on (http://[\d.:]+)", line).group(1)  # type: ignore[union-attr]
        status = httpx.get(f"{base}/api/v1/system/worker-status", timeout=10).json()
        assert [w["pid"] for w in status["workers"].values()] == [again.pid], status["workers"]
    finally:
        again.send_signal(signal.SIGTERM)
        again.communicate(timeout=15)
    log = (tmp_path / "data" / "customify.log").read_text()
    assert f"{proc.pid} is no longer running (pid checked): removed from the registry" in log


def test_log_file_json_lines_and_no_http_client_lines(tmp_path: Path) -> None:
    proc, line = start(tmp_path, "--config", str(_toml(tmp_path, 'log_format = "json"\nlog_file = "logs/ops.jsonl"')))
    base = re.search(r"on (http://[\d.:]+)", line).group(1)  # type: ignore[union-attr]
    for _ in range(3):
        httpx.get(f"{base}/api/v1/system/health", timeout=10)
    # A design whose image is gone from disk cannot render: its failure is in the log, with its id.
    asset = httpx.post(f"{base}/api/v1/assets", files={"file": ("a.png", png_bytes(), "image/png")}, timeout=10).json()
    for path in (tmp_path / "data" / "assets").rglob(f"{asset['sha256']}*"):
        path.unlink()
    broken = httpx.post(
        f"{base}/api/v1/designs",
        timeout=10,
        json={
            "name": "broken",
            "product": "mug",
            "color": "#ffffff",
            "layers": [{"type": "image", "asset_id": asset["id"]}],
        },
    ).json()
    done = httpx.get(f"{base}/api/v1/designs/{broken['id']}", params={"wait": 15}, timeout=20).json()
    assert done["status"] == "failed"
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=15)
    records = [json.loads(x) for x in (tmp_path / "data" / "logs" / "ops.jsonl").read_text().splitlines()]
    assert records and all({"at", "level", "logger", "message", "pid"} <= set(r) for r in records)
    messages = [r["message"] for r in records]
    assert any(m.startswith("started: customify run") for m in messages)
    assert any(m.startswith("stopped: customify run") for m in messages)
    assert not any("HTTP Request" in m or "/api/v1/" in m for m in messages)
    failure = [r for r in records if r.get("design_id") == broken["id"]]
    assert failure and failure[0]["level"] == "warning" and "failed" in failure[0]["message"], records


def test_start_on_a_read_only_database_is_refused_in_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    subprocess.run(customify("db", "upgrade", "--data-dir", str(data)), check=True, capture_output=True, timeout=60)
    db_file = data / "customify.db"
    if subprocess.run(["chattr", "+i", str(db_file)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here (needs root and an ext4/xfs file system)")
    try:
        result = subprocess.run(
            customify("run", "--no-tui", "--data-dir", str(data), "--port", "0"),
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        subprocess.run(["chattr", "-i", str(db_file)], check=True)
    assert result.returncode != 0
    lines = [x for x in result.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "the database is read-only" in lines[0], result.stderr
    assert "Traceback" not in result.stderr and "ready" not in result.stdout


def _toml(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "customify.toml"
    path.write_text(body + "\n")
    return path


@SLOW  # two starts of a `customify` process (the fast loop starts it once, above)
def test_restart_keeps_data(tmp_path: Path) -> None:
    proc, line = start(tmp_path)
    base = re.search(r"on (http://[\d.:]+)", line).group(1)  # type: ignore[union-attr]
    design = httpx.post(
        f"{base}/api/v1/designs", timeout=10, json={"name": "keep", "product": "mug", "color": "#ffffff", "layers": []}
    ).json()
    httpx.get(f"{base}/api/v1/designs/{design['id']}", params={"wait": 10}, timeout=15)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=15)
    proc, line = start(tmp_path)
    try:
        base = re.search(r"on (http://[\d.:]+)", line).group(1)  # type: ignore[union-attr]
        again = httpx.get(f"{base}/api/v1/designs/{design['id']}", timeout=10).json()
        assert again["status"] == "published"
        assert (
            httpx.get(again["preview_url"].replace(again["preview_url"].split("/api")[0], base), timeout=10).status_code
            == 200
        )
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=15)


@pytest.mark.parametrize(
    ("args", "env", "words"),
    [
        (["--config", "/nonexistent.toml"], {}, "does not exist"),
        (["--port", "99999"], {}, "key 'port'"),
        # Each a start-up of its own (a second of imports): the first two in the fast loop.
        pytest.param([], {"CUSTOMIFY_DATABASE_URL": "mysql://u:topsecret@h/db"}, "unsupported scheme", marks=SLOW),
        pytest.param([], {"CUSTOMIFY_QUEUE_URL": "amqp://guest@h//"}, "key 'queue_url'", marks=SLOW),
        pytest.param(
            [], {"CUSTOMIFY_DATABASE_URL": "postgresql://u:topsecret@127.0.0.1:1/db"}, "unreachable", marks=SLOW
        ),
        pytest.param(["--data-dir", "/proc/customify"], {}, "not writable", marks=SLOW),
    ],
)
def test_bad_setup_is_one_clear_line(tmp_path: Path, args: list[str], env: dict[str, str], words: str) -> None:
    full_env = {**os.environ, **env}
    base = ["--data-dir", str(tmp_path / "d")] if "--data-dir" not in args else []
    started = time.monotonic()
    result = subprocess.run(
        customify("run", "--port", "0", *base, *args), capture_output=True, text=True, env=full_env, timeout=30
    )
    assert time.monotonic() - started < 10
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.startswith("customify:")]
    assert len(lines) == 1, result.stderr
    assert words in lines[0]
    assert "Traceback" not in result.stderr
    assert "topsecret" not in result.stderr + result.stdout


def test_port_in_use(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = subprocess.run(
            customify("run", "--data-dir", str(tmp_path / "d"), "--port", str(port)),
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


def test_users_create_prints_a_working_key(tmp_path: Path) -> None:
    """The console script once; its further runs in this process (Click's runner, the same code)."""
    data = str(tmp_path / "data")
    result = subprocess.run(
        customify("users", "create", "erin@example.com", "--data-dir", data), capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    key = re.search(r"api key: (\S+)", result.stdout).group(1)  # type: ignore[union-attr]
    assert "operator" not in result.stdout
    ops = CliRunner().invoke(main, ["users", "create", "ops@example.com", "--operator", "--data-dir", data])
    assert ops.exit_code == 0 and "— operator" in ops.stdout, ops.stdout + ops.stderr
    ops_key = re.search(r"api key: (\S+)", ops.stdout).group(1)  # type: ignore[union-attr]
    port = free_port()
    proc = subprocess.Popen(
        customify("api", "--data-dir", data, "--port", str(port), "--host", "127.0.0.1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and "no workers (API only)" in proc.stdout.readline()
        ok = httpx.get(f"http://127.0.0.1:{port}/api/v1/designs", headers={"Authorization": f"Bearer {key}"})
        assert ok.status_code == 200
        status = "/api/v1/system/worker-status"
        assert (
            httpx.get(f"http://127.0.0.1:{port}{status}", headers={"Authorization": f"Bearer {key}"}).status_code == 403
        )
        assert (
            httpx.get(f"http://127.0.0.1:{port}{status}", headers={"Authorization": f"Bearer {ops_key}"}).status_code
            == 200
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=15)
    bad = CliRunner().invoke(main, ["users", "create", "not-an-email", "--data-dir", data])
    assert bad.exit_code == 2 and "not an email" in bad.stderr


def test_run_open_opens_the_web_dashboard_when_ready(tmp_path: Path) -> None:
    opened = tmp_path / "opened"
    browser = tmp_path / "browser.sh"
    browser.write_text(f'#!/bin/sh\necho "$1" > {opened}\n')
    browser.chmod(0o755)
    port = free_port()
    proc = subprocess.Popen(
        customify("run", "--no-tui", "--open", "--data-dir", str(tmp_path / "data"), "--port", str(port)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "BROWSER": f"{browser} %s"},
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline()
        deadline = time.monotonic() + 15
        while not (opened.exists() and opened.read_text().strip()):
            assert time.monotonic() < deadline, "no browser was opened"
            time.sleep(0.05)
        url = opened.read_text().strip()
        assert url == f"http://127.0.0.1:{port}/"
        page = httpx.get(url, headers={"Accept": "text/html"})
        assert page.status_code == 200 and "Overview" in page.text
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
