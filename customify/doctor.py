"""`customify doctor`: the old system's whole manual debugging plan, as one command.

Each check answers within its timeout (it runs in a daemon thread), says what
it found in one line and, when it fails, the fix. Exit 0 when all pass.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text

from customify.config import Config, ConfigError, ensure_data_dir, load_config, redact
from customify.errors import first_line

CHECK_TIMEOUT = 5.0
DRIFT_LIMIT = 2.0  # seconds of clock difference worth failing for (the old system had 5 hours)


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


class _Timeout(Exception):
    pass


def _within(seconds: float, fn: Callable[[], Any]) -> Any:
    """Run fn in a daemon thread; raise _Timeout if it has not answered in time (never hang)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise _Timeout(f"no answer within {seconds:g} s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def _now(env: Mapping[str, str]) -> datetime:
    # CUSTOMIFY_CLOCK_SKEW shifts this host's clock for the drift check (tests inject skew with it).
    skew = float(env.get("CUSTOMIFY_CLOCK_SKEW", "0") or 0)
    return datetime.fromtimestamp(time.time() + skew, UTC)


def run_checks(
    config_path: str | None, env: Mapping[str, str], flags: Mapping[str, Any], timeout: float = CHECK_TIMEOUT
) -> list[Check]:
    checks: list[Check] = []
    try:
        config = load_config(config_path, env, flags)
    except ConfigError as exc:
        return [Check("configuration", False, str(exc), "fix the key named above (customify.toml documents each)")]
    checks.append(
        Check(
            "configuration",
            True,
            f"database {redact(config.effective_database_url)}, "
            f"queue {redact(config.effective_queue_url)}, data dir {config.data_path}",
        )
    )
    checks.append(_data_dir(config))
    checks.append(_renderer(config, timeout))
    checks.append(_storage(config, env, timeout))
    if config.smtp_url:
        checks.append(_smtp(config.smtp_url, timeout))
    sqlite_inside = [
        url
        for url in (config.effective_database_url, config.effective_queue_url)
        if url.startswith("sqlite") and str(config.data_path) in url
    ]
    if not config.data_path.exists() and sqlite_inside:
        checks.append(
            Check(
                "database", False, "skipped: its SQLite file would be in the missing data dir", "see the data dir check"
            )
        )
        return checks
    engine_check, engine = _database(config, timeout)
    checks.append(engine_check)
    queue_check, huey = _queue(config, timeout)
    checks.append(queue_check)
    if engine is None or huey is None:
        checks.append(
            Check("consumer", False, "skipped: the database or queue is unreachable", "fix the checks above first")
        )
        return checks
    from customify.runtime import Runtime

    rt = Runtime(config)
    try:
        checks.append(_registered(rt))
        checks.append(
            _backlog(rt, timeout)
            if engine_check.ok
            else Check("backlog", False, "skipped: the database schema is not current", "see the database check")
        )
        problems = _problems(rt, timeout)  # before the round trip: its own debug task is not a backlog
        checks.append(_round_trip(rt, timeout))
        checks.append(_drift(rt, env, timeout))
        checks.append(problems)
    finally:
        with contextlib.suppress(Exception):
            rt.engine.dispose()
    return checks


def _data_dir(config: Config) -> Check:
    if not config.data_path.exists():  # a diagnosis changes nothing: do not create it
        return Check(
            "data dir",
            False,
            f"{config.data_path} does not exist: no Customify has run with it",
            "pass the --data-dir (or CUSTOMIFY_DATA_DIR) of the instance to diagnose; "
            "`customify run` creates a new one",
        )
    try:
        root = ensure_data_dir(config)
    except ConfigError as exc:
        return Check("data dir", False, str(exc), "pass --data-dir or CUSTOMIFY_DATA_DIR with a writable directory")
    free = shutil.disk_usage(root).free
    ok = free > 200 * 1024 * 1024
    return Check(
        "data dir",
        ok,
        f"{root} writable, {free / 1e9:.1f} GB free",
        "" if ok else "free disk space: renders and uploads need room",
    )


def _renderer(config: Config, timeout: float) -> Check:
    """Draw a small design where this configuration draws: a render helper process, or this process."""
    from customify.render.pool import RenderJob, RenderPool

    pool = RenderPool(config.render.pool, config.render.worker_nice)
    where = "a render helper process" if pool.mode == "process" else 'this process (render.pool = "thread")'
    spec = {"product": "tshirt", "color": "#1e3a8a", "layers": [{"type": "text", "text": "doctor", "x": 0.5, "y": 0.5}]}
    settings = config.render
    try:
        with tempfile.TemporaryDirectory(prefix="customify-doctor-") as tmp:
            job = RenderJob(
                spec,
                {},
                settings.png_compress_level,
                settings.thumbnail_size,
                settings.thumbnail_format,
                f"{tmp}/preview.png",
                f"{tmp}/thumbnail",
            )
            started = time.perf_counter()
            _within(timeout + 1, lambda: pool.render(job, time.monotonic() + timeout, lambda: None))
            ms = (time.perf_counter() - started) * 1000
    except Exception as exc:
        return Check(
            "renderer",
            False,
            f"could not draw a test design in {where}: {first_line(exc)}",
            "run `python -m customify.render.pool` with this Python to see why it does not start, "
            'or set render.pool = "thread"',
        )
    finally:
        pool.close()
    return Check("renderer", True, f"drew a test design in {where} in {ms:.0f} ms (its start included)")


def _storage(config: Config, env: Mapping[str, str], timeout: float) -> Check:
    """The object store of storage_url: bucket reachable, a probe written, read and deleted, its clock."""
    from customify.storage import StoreMisconfigured, open_files, unreachable_line

    if not config.storage_url:
        return Check("storage", True, f"renders and uploads in the data dir {config.data_path}")
    files = open_files(config, config.data_path)
    try:
        _within(timeout, files.check)
        server = _within(timeout, files.server_time)
    except StoreMisconfigured as exc:
        return Check(
            "storage",
            False,
            str(exc).removeprefix("key 'storage_url': "),
            "fix storage_url / CUSTOMIFY_STORAGE_URL (bucket, credentials) as said",
        )
    except Exception as exc:
        return Check(
            "storage",
            False,
            unreachable_line(files, exc).split(": ", 1)[-1].split("; ")[0],
            "start the store, or fix storage.endpoint_url / CUSTOMIFY_STORAGE_ENDPOINT_URL",
        )
    finally:
        with contextlib.suppress(Exception):  # a hung probe thread may still hold it: best effort
            files.close()
    detail = f"{files.describe()}: bucket reachable, probe written, read and deleted"
    if server is None:
        return Check("storage", True, detail)
    skew = (_now(env) - server).total_seconds()
    ok = abs(skew) <= 60  # S3 refuses signatures more than 15 minutes off; a minute is worth a warning
    return Check(
        "storage",
        ok,
        f"{detail}; this host {skew:+.1f} s from the store's clock",
        "" if ok else "synchronise clocks (NTP/chrony): S3 refuses requests signed 15 minutes off",
    )


def _database(config: Config, timeout: float) -> tuple[Check, Any]:
    from customify import db

    url = config.effective_database_url
    try:
        engine = db.make_sync_engine(url)
        current, head = _within(timeout, lambda: db.schema_status(engine))
    except (ConfigError, _Timeout, Exception) as exc:
        return Check(
            "database",
            False,
            f"{redact(url)} unreachable: {first_line(exc)}",
            "start the database or fix database_url / CUSTOMIFY_DATABASE_URL",
        ), None
    if current != head:
        return Check(
            "database",
            False,
            f"{redact(url)} reachable, schema at {current or 'nothing'}, needs {head}",
            "run `customify db upgrade`",
        ), engine
    return Check("database", True, f"{redact(url)} reachable, schema at {current} (current)"), engine


def _queue(config: Config, timeout: float) -> tuple[Check, Any]:
    from customify.queue import make_huey, queue_kind

    url = config.effective_queue_url
    try:
        huey = _within(timeout, lambda: make_huey(url))
        pending = _within(timeout, huey.pending_count)
    except (ConfigError, _Timeout, Exception) as exc:
        return Check(
            "queue",
            False,
            f"{redact(url)} unreachable: {first_line(exc)}",
            "start the queue server or fix queue_url / CUSTOMIFY_QUEUE_URL",
        ), None
    return Check("queue", True, f"{queue_kind(url)} {redact(url)} reachable, {pending} pending"), huey


def _registered(rt: Any) -> Check:
    from customify.queue import TASK_NAMES

    registered = {name.rsplit(".", 1)[-1] for name in rt.huey._registry._registry}
    missing = [name for name in TASK_NAMES if name not in registered]
    if missing:
        return Check(
            "task names",
            False,
            f"the API enqueues {', '.join(missing)} but no such task is registered",
            "reinstall Customify: the API and workers must run the same version",
        )
    return Check("task names", True, f"the API enqueues {', '.join(TASK_NAMES)}; all registered")


def _backlog(rt: Any, timeout: float) -> Check:
    from sqlalchemy import func, select

    from customify.models import Design

    def read() -> tuple[int, int, Any, dict[str, int]]:
        with rt.sessions() as session:
            oldest = session.scalar(select(func.min(Design.enqueued_at)).where(Design.status == "draft"))
            counts = dict(session.execute(select(Design.status, func.count()).group_by(Design.status)).all())
        return rt.huey.pending_count(), rt.huey.scheduled_count(), oldest, counts

    try:
        pending, scheduled, oldest, counts = _within(timeout, read)
    except Exception as exc:
        return Check("backlog", False, f"could not read queue lengths: {first_line(exc)}", "see the checks above")
    age = (datetime.now(UTC) - oldest.replace(tzinfo=UTC)).total_seconds() if oldest else 0.0
    detail = f"{pending} pending, {scheduled} scheduled; designs {counts or 'none'}; " + (
        f"oldest waiting draft {age:.0f} s" if oldest else "no draft waiting"
    )
    ok = age < 5 * 60
    return Check("backlog", ok, detail, "" if ok else "designs wait for minutes: is a consumer running?")


def _round_trip(rt: Any, timeout: float) -> Check:
    started = time.perf_counter()
    try:
        result = _within(timeout, rt.tasks.debug)
    except Exception as exc:
        return Check("consumer", False, f"could not enqueue the debug task: {first_line(exc)}", "see the queue check")
    try:
        value = _within(timeout + 1, lambda: result.get(blocking=True, timeout=timeout, backoff=1.0, max_delay=0.05))
    except Exception:  # the task expires unrun (tasks.DEBUG_EXPIRES): a later consumer drops it quietly
        return Check(
            "consumer",
            False,
            f"no consumer answered the debug task within {timeout:g} s",
            "start one: `customify run` (all in one) or `customify worker`, with this same queue_url and database_url",
        )
    ms = (time.perf_counter() - started) * 1000
    worker = value.get("worker") if isinstance(value, dict) else value
    return Check("consumer", True, f"debug task answered by {worker} in {ms:.0f} ms")


def _drift(rt: Any, env: Mapping[str, str], timeout: float) -> Check:
    from customify import db

    def db_now() -> datetime | None:
        if db.is_sqlite(rt.database_url):
            return None
        with rt.engine.connect() as conn:
            value = conn.execute(text("select clock_timestamp()")).scalar()
        return value  # type: ignore[no-any-return]

    here = _now(env)
    parts = []
    worst = 0.0
    try:
        server = _within(timeout, db_now)
    except Exception as exc:
        return Check("clocks", False, f"could not read the database clock: {first_line(exc)}", "see the database check")
    if server is None:
        parts.append("database on this host (SQLite)")
        # SQLite shares this host's clock: measure the skew against the system clock itself.
        system = datetime.now(UTC)
        drift = (here - system).total_seconds()
        if abs(drift) > 0.5:
            parts.append(f"this process is {drift:+.1f} s off the system clock")
            worst = max(worst, abs(drift))
    else:
        drift = (here - server.astimezone(UTC)).total_seconds()
        worst = max(worst, abs(drift))
        parts.append(f"this host {drift:+.3f} s from the database server")
    ok = worst <= DRIFT_LIMIT
    return Check(
        "clocks",
        ok,
        "; ".join(parts),
        "" if ok else "synchronise clocks (NTP/chrony): timestamps, leases and heartbeats compare across hosts",
    )


def _smtp(url: str, timeout: float) -> Check:
    """Connect and say EHLO (no mail is sent): is the server in smtp_url there and talking?"""
    import smtplib
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host, port = parts.hostname or "localhost", parts.port or (465 if parts.scheme == "smtps" else 25)
    client_cls = smtplib.SMTP_SSL if parts.scheme == "smtps" else smtplib.SMTP

    def ehlo() -> int:
        with client_cls(host, port, timeout=timeout) as client:
            code, _ = client.ehlo()
            return int(code)

    try:
        code = _within(timeout + 1, ehlo)
    except Exception as exc:
        return Check(
            "mail server",
            False,
            f"{redact(url)} does not answer: {first_line(exc)}",
            "start the SMTP server or fix smtp_url / CUSTOMIFY_SMTP_URL; mails wait and are retried",
        )
    if not 200 <= code < 300:
        return Check(
            "mail server", False, f"{redact(url)} answered EHLO with {code}", "check the SMTP server's configuration"
        )
    return Check("mail server", True, f"{redact(url)} answered EHLO ({code}); no mail sent")


def _problems(rt: Any, timeout: float) -> Check:
    """What health would say: every problem customify.status finds (stalled helpers, missing task names,
    clock drift, a read-only database, a full disk, unsent mail), each with its fix."""
    from customify import status

    try:
        snap = _within(timeout + status.CHECK_TIMEOUT, lambda: status.snapshot_sync(rt))
    except Exception as exc:
        return Check("problems", False, f"could not judge the system: {first_line(exc)}", "see the checks above")
    if not snap.problems:
        return Check("problems", True, f"health would say {snap.status}: no problem found")
    return Check(
        "problems",
        False,
        f"health would say {snap.status}: " + "; ".join(f"[{p.severity}] {p.detail}" for p in snap.problems),
        " / ".join(dict.fromkeys(p.fix for p in snap.problems if p.fix)),
    )


def format_checks(checks: list[Check]) -> str:
    lines = []
    for check in checks:
        mark = "ok  " if check.ok else "FAIL"
        lines.append(f"[{mark}] {check.name:<13} {check.detail}")
        if not check.ok and check.fix:
            lines.append(f"       {'':<13} fix: {check.fix}")
    failed = sum(1 for c in checks if not c.ok)
    lines.append("all checks passed" if not failed else f"{failed} check(s) failed")
    return "\n".join(lines)


def as_json(checks: list[Check]) -> list[dict[str, Any]]:
    return [asdict(c) for c in checks]
