"""The `customify` command: a thin click layer over the library."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, NoReturn

import click
import msgspec

from customify.config import Config, ConfigError, is_loopback, is_wildcard, load_config, redact_storage_url
from customify.errors import first_line

if TYPE_CHECKING:
    from customify.runtime import Runtime

log = logging.getLogger("customify")
FILE_ONLY = {"console": False}  # the terminal already got its own line (the ready line, "stopping: …")


def _setup_logging(config: Config, stderr: bool = True) -> None:
    """stderr (unless the dashboard owns the terminal) and the log file in the data dir (customify.logs)."""
    from customify.logs import setup

    setup(config, stderr=stderr)


def _fail(message: str, code: int = 2) -> NoReturn:
    click.echo(f"customify: {message}", err=True)
    sys.exit(code)


def _load(**flags: Any) -> Config:
    config_path = flags.pop("config", None)
    try:
        return load_config(config_path, os.environ, flags)
    except ConfigError as exc:
        _fail(str(exc))


def _runtime(config: Config, *, serving: bool = False, migrate: bool | None = None) -> Runtime:
    """A Runtime whose database is reachable and current (migrated when asked, SQLite always);
    for a server also its queue and object store, checked first so a bad one fails fast.
    A configuration error ends the command with one line."""
    from customify.runtime import Runtime

    try:
        rt = Runtime(config)
        if serving:
            rt.check_queue()  # before migrating SQLite: an unreachable queue fails fast
            rt.check_storage()
        rt.prepare_database(migrate)
    except ConfigError as exc:
        if serving:
            log.error("not started: %s", exc, extra=FILE_ONLY)
        _fail(str(exc))
    return rt


def server_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(
        [
            click.option("--host", default=None, help="Address to bind (default 127.0.0.1)."),
            click.option("--port", type=int, default=None, help="TCP port (default 8000; 0 = any free port)."),
            click.option("--data-dir", "data_dir", default=None, help="Databases, renders, uploads, outbox."),
            click.option("--config", "config", default=None, help="TOML configuration file."),
            click.option("--workers", type=int, default=None, help="Render worker threads (default 2)."),
        ]
    ):
        fn = option(fn)
    return fn


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.pass_context
def main(ctx: click.Context) -> None:
    """Customify: designs API, render workers and dashboard in one process.

    With no command, `customify` is `customify run`.
    """
    if ctx.invoked_subcommand is None:
        ctx.invoke(run)


def _workers(config: Config) -> str:
    where = "renders in helper processes" if config.render.pool == "process" else "renders in the threads"
    return f"{config.workers} worker thread{'s' if config.workers != 1 else ''} ({where})"


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit it: without it, a keep-alive client waits ~40 ms per
    # response (Nagle holds the body until the header segment is ACKed, and ACKs are delayed).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        _fail(f"cannot listen on {host}:{port} ({exc.strerror}); pass --port with a free port or stop what uses it")
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _server_class() -> type[Any]:
    import uvicorn

    class Server(uvicorn.Server):
        """The first SIGINT/SIGTERM/SIGHUP stops gracefully (running renders finish) and exits 0;
        a second one stops at once. uvicorn would re-raise the signal after shutdown. SIGHUP (the
        terminal closed) is a clean stop too: uvicorn alone would leave it to the default (death)."""

        on_exit: Callable[[], None] | None = None
        finishing = "running renders finish"  # what a graceful stop waits for ("open requests" in `api`)

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():
                with super().capture_signals():
                    yield
                return
            previous = signal.signal(signal.SIGHUP, self.handle_exit)
            try:
                with super().capture_signals():
                    yield
            finally:
                signal.signal(signal.SIGHUP, previous)

        def handle_exit(self, sig: int, frame: Any) -> None:
            if self.should_exit:
                click.echo("customify: stopping now", err=True)
                log.warning("stopping now (a second %s)", signal.Signals(sig).name, extra=FILE_ONLY)
                os._exit(130)
            self.should_exit = True
            log.info("stopping (%s): %s", signal.Signals(sig).name, self.finishing, extra=FILE_ONLY)
            click.echo(f"customify: stopping: {self.finishing} (signal again to stop now)", err=True)
            if self.on_exit is not None:  # end event streams, which would hold the shutdown
                threading.Thread(target=self.on_exit, daemon=True).start()

    return Server


def _serve(config: Config, consumer: bool, what: str, tui: bool = False, open_browser: bool = False) -> None:
    _setup_logging(config, stderr=not tui)  # the dashboard owns the terminal: the log file only
    if is_wildcard(config.host) and not config.public_url:
        _fail(
            f"key 'public_url': bound to {config.host or 'every address'} without public_url, links in responses "
            f"and mails would point at http://{config.host or '0.0.0.0'}:…, which no client can open; set "
            "public_url (CUSTOMIFY_PUBLIC_URL) to the address clients use, e.g. https://shop.example.com"
        )
    sock = _bind(config.host, config.port)
    port = sock.getsockname()[1]
    config = msgspec.structs.replace(config, port=port)
    if not is_loopback(config.host) and config.dev_mode == "auto":
        log.info("bound to %s: every request needs an API key (customify users create EMAIL)", config.host)
    rt = _runtime(config, serving=True)
    if consumer:  # the render helpers start and warm while the web stack is imported
        rt.start_render_helpers()
    # The web stack is imported only after the checks: an unreachable server fails in < 5 s.
    from customify.api import create_app
    from customify.api.connections import server_config

    server_class = _server_class()
    started = time.monotonic()

    def ready() -> None:
        _settle_heap()
        workers = _workers(config) if consumer else "no workers (API only)"
        log.info(
            "started: customify %s on %s (pid %s) — %s, %s",
            what,
            config.base_url,
            os.getpid(),
            rt.describe(),
            workers,
            extra=FILE_ONLY,
        )
        if open_browser:  # the web dashboard, once the server answers (a thread: a browser may take a while)
            import webbrowser

            url = (
                _loopback_url(config)
                if is_loopback(config.host) or config.host in ("0.0.0.0", "::")
                else config.base_url
            )
            threading.Thread(target=webbrowser.open, args=(url + "/",), daemon=True).start()
        if tui:
            return
        click.echo(
            f"Customify {what} on {config.base_url} — {rt.describe()}, {workers} "
            f"(ready in {time.monotonic() - started:.2f}s)",
            err=False,
        )
        sys.stdout.flush()

    app = create_app(config, consumer=consumer, runtime=rt, on_ready=ready)
    server = server_class(
        server_config(
            app, config.limits, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=10
        )
    )
    server.on_exit = rt.hub.close
    if not consumer:
        server.finishing = "open requests finish"
    try:
        if tui:
            _serve_with_dashboard(server, sock, config, rt)
        else:
            server.run(sockets=[sock])
    finally:
        rt.close()
        log.info("stopped: customify %s (pid %s)", what, os.getpid(), extra=FILE_ONLY)
    if not server.started:
        sys.exit(1)


def _settle_heap() -> None:
    """Once started: the objects made so far (modules, the app and its routes, the ORM's mappers, the
    schemas) are most of the heap and live as long as the process. Out of the cyclic collector's reach
    (`gc.freeze`), a full collection no longer walks them: under load one held the API's event loop
    90-137 ms, every few seconds, and made its p99 (bench/RESULTS.md, "Garbage collection"). Without a
    collection first: that would hold the loop as long, once, just before the ready line."""
    gc.freeze()


def _loopback_url(config: Config) -> str:
    host = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(
        config.host, f"[{config.host}]" if ":" in config.host else config.host
    )
    return f"http://{host}:{config.port}"


def _serve_with_dashboard(server: Any, sock: socket.socket, config: Config, rt: Any) -> None:
    """The server in a thread, the dashboard in the main thread; quitting it stops the server gracefully."""
    from tui.launch import launch  # the one import of tui in customify (tests/test_boundaries.py)

    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="server", daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            return
        time.sleep(0.01)
    # Straight to this process over loopback (public_url may name a proxy), as its operator.
    launch(_loopback_url(config), key=rt.local_key)
    click.echo("customify: stopping (running renders finish)…")
    server.should_exit = True
    rt.hub.close()
    thread.join(30)


@main.command()
@server_options
@click.option("--no-tui", is_flag=True, help="Run headless even on a terminal.")
@click.option("--open", "open_browser", is_flag=True, help="Open the web dashboard in the browser once ready.")
def run(no_tui: bool = False, open_browser: bool = False, **flags: Any) -> None:
    """API + render workers + scheduler in one process (the default); the dashboard too on a terminal."""
    config = _load(**flags)
    _serve(
        config,
        consumer=True,
        what="run",
        tui=not no_tui and sys.stdout.isatty() and sys.stdin.isatty(),
        open_browser=open_browser,
    )


@main.command("tui")
@click.option(
    "--url",
    default="http://127.0.0.1:8000",
    show_default=True,
    envvar="CUSTOMIFY_URL",
    help="Base URL of a running Customify (customify run / api).",
)
@click.option("--key", default=None, envvar="CUSTOMIFY_API_KEY", help="API key (needed off loopback).")
def tui_command(url: str, key: str | None) -> None:
    """The dashboard, attached to any running instance over HTTP."""
    from tui.launch import launch

    launch(url, key)


@main.command()
@server_options
def api(**flags: Any) -> None:
    """The HTTP API only; workers run elsewhere (customify worker)."""
    config = _load(**flags)
    _serve(config, consumer=False, what="api")


@main.command()
@server_options
def worker(**flags: Any) -> None:
    """Render workers and the scheduler only, no HTTP server."""
    started = time.monotonic()
    flags.pop("host", None)
    flags.pop("port", None)
    config = _load(**flags)
    _setup_logging(config)
    rt = _runtime(config, serving=True)
    stop = threading.Event()
    signals_seen = []

    def on_signal(signum: int, _frame: Any) -> None:
        signals_seen.append(signum)
        if len(signals_seen) > 1:
            os._exit(130)  # a second signal stops at once
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # SIGHUP: the terminal closed
        signal.signal(signum, on_signal)
    rt.start_consumer()
    _settle_heap()
    ready = f"(ready in {time.monotonic() - started:.2f}s)"
    click.echo(f"Customify worker {rt.observer.identity} — {rt.describe()}, {_workers(config)} {ready}")
    log.info(
        "started: customify worker %s — %s, %s", rt.observer.identity, rt.describe(), _workers(config), extra=FILE_ONLY
    )
    sys.stdout.flush()
    stop.wait()
    click.echo("customify: stopping: running tasks finish (signal again to stop now)")
    log.info("stopping (%s): running tasks finish", signal.Signals(signals_seen[0]).name, extra=FILE_ONLY)
    rt.close()
    log.info("stopped: customify worker %s", rt.observer.identity, extra=FILE_ONLY)


@main.command()
@click.option("--config", "config", default=None, help="TOML configuration file.")
@click.option("--data-dir", "data_dir", default=None, help="Databases, renders, uploads, outbox.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--timeout", type=float, default=5.0, show_default=True, help="Seconds each check may take.")
def doctor(config: str | None, data_dir: str | None, as_json: bool, timeout: float) -> None:
    """Diagnose a setup: config, database, queue, task names, backlog, a live round trip, clocks, disk."""
    import json

    from customify.doctor import as_json as checks_json
    from customify.doctor import format_checks, run_checks

    logging.basicConfig(level=logging.ERROR)
    checks = run_checks(config, os.environ, {"data_dir": data_dir}, timeout=timeout)
    click.echo(json.dumps(checks_json(checks), indent=2) if as_json else format_checks(checks))
    sys.stdout.flush()
    # A hung driver thread must not keep the process alive: every check already answered or timed out.
    os._exit(0 if all(c.ok for c in checks) else 1)


@main.command("render-samples")
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--config", "config", default=None, help="TOML configuration file (render.* settings).")
def render_samples(out_dir: str, **flags: Any) -> None:
    """Render one example design per product into OUT_DIR, with an index.html contact sheet."""
    from pathlib import Path

    from customify.samples import render_samples as render

    config = _load(**flags)
    index = render(Path(out_dir), config.render)
    click.echo(f"wrote {index}")


@main.group()
def users() -> None:
    """Manage users and API keys."""


def _admin_runtime(flags: dict[str, Any]) -> Runtime:
    """A Runtime on the configured database (migrated), for the user and key commands."""
    config = _load(**flags)
    return _runtime(config)


def _show_key(key: str) -> None:
    click.echo(f"api key: {key}")
    click.echo("(shown once; send it as `Authorization: Bearer <key>`)", err=True)


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value is not None else "never"


@users.command("create")
@click.argument("email")
@click.option(
    "--operator/--no-operator",
    "operator",
    default=None,
    help="Grant (or withdraw) the operator role: the whole queue, worker status, every event, "
    "queue control. Default: customers see only their own designs.",
)
@click.option("--name", "key_name", default=None, help="A name for the new key (where it is used).")
@click.option("--config", "config", default=None)
@click.option("--data-dir", "data_dir", default=None)
def users_create(email: str, operator: bool | None, key_name: str | None, **flags: Any) -> None:
    """Create a user and print their API key once; for an existing user, --operator/--no-operator
    changes the role (no new key), otherwise a new key is added."""
    from customify import records

    if "@" not in email:
        _fail(f"{email!r} is not an email address")
    rt = _admin_runtime(flags)
    with rt.transaction() as session:
        changed = records.set_operator(session, email, operator) if operator is not None and key_name is None else None
        if changed is not None:
            user_id, is_operator, key = changed.id, changed.operator, None
        else:
            user, key = records.create_user(session, email, operator, key_name)
            user_id, is_operator = user.id, user.operator
    rt.close()
    click.echo(f"user {email} ({user_id}) — {'operator' if is_operator else 'customer'}")
    if key is None:
        click.echo("role changed; their keys are unchanged (a new key: customify keys create EMAIL)")
    else:
        _show_key(key)


@users.command("list")
@click.option("--config", "config", default=None)
@click.option("--data-dir", "data_dir", default=None)
def users_list(**flags: Any) -> None:
    """Every user, their role and their keys (prefix, name, created, last used); never a key itself."""
    from customify import records
    from customify.models import DEV_USER_ID

    rt = _admin_runtime(flags)
    with rt.transaction() as session:
        rows = [
            (u.email, u.id, u.operator, [(k.prefix, k.name, k.created_at, k.last_used_at) for k in keys])
            for u, keys in records.list_users(session)
        ]
    rt.close()
    for email, user_id, operator, keys in rows:
        # The dev user acts as an operator on loopback without a key; off loopback it cannot be used.
        role = "operator on loopback (dev user)" if user_id == DEV_USER_ID else ("operator" if operator else "customer")
        click.echo(f"{email}  {role}  {user_id}  {len(keys)} key(s)")
        for prefix, name, created, used in keys:
            click.echo(f"    {prefix}…  {name or '-':<20}  created {_when(created)}  last used {_when(used)}")


@main.group()
def keys() -> None:
    """API keys: several per user, each with a name; revoke one without touching the others."""


@keys.command("create")
@click.argument("email")
@click.option("--name", "key_name", default=None, help="A name for the key (where it is used).")
@click.option("--config", "config", default=None)
@click.option("--data-dir", "data_dir", default=None)
def keys_create(email: str, key_name: str | None, **flags: Any) -> None:
    """Issue another key to an existing user and print it once (rotate: create, deploy, revoke the old)."""
    from customify import records

    rt = _admin_runtime(flags)
    with rt.transaction() as session:
        user = records.user_by_email(session, email)
        key = records.issue_key(session, user.id, key_name) if user is not None else None
    rt.close()
    if key is None:
        _fail(f"no user {email!r}; create it with `customify users create {email}`")
    click.echo(f"user {email}: new key{f' {key_name!r}' if key_name else ''}")
    _show_key(str(key))


@keys.command("revoke")
@click.argument("prefix")
@click.option("--config", "config", default=None)
@click.option("--data-dir", "data_dir", default=None)
def keys_revoke(prefix: str, **flags: Any) -> None:
    """Revoke the key starting with PREFIX (as `customify users list` shows it); at once, in every process."""
    from customify import records

    prefix = prefix.strip().rstrip("…")
    if len(prefix) < 6:
        _fail(f"{prefix!r} is too short to name one key; give its prefix as `customify users list` shows it")
    rt = _admin_runtime(flags)
    with rt.transaction() as session:
        found = [(k.id, k.prefix, k.name, email) for k, email in records.keys_with_prefix(session, prefix)]
        if len(found) == 1:
            records.revoke_key(session, found[0][0])
    rt.close()
    if not found:
        _fail(
            f"no key starts with {prefix!r} (a revoked key is deleted, so it is not found either); "
            "see `customify users list`"
        )
    if len(found) > 1:
        _fail(f"{len(found)} keys start with {prefix!r} ({', '.join(f[1] for f in found)}); give more of it")
    _, shown, name, email = found[0]
    click.echo(f"revoked {shown}…{f' ({name})' if name else ''} of {email}: its next request is a 401")


@main.group("db")
def db_group() -> None:
    """Database migrations."""


@db_group.command("upgrade")
@click.option("--config", "config", default=None)
@click.option("--data-dir", "data_dir", default=None)
def db_upgrade(**flags: Any) -> None:
    """Apply all migrations."""
    config = _load(**flags)
    rt = _runtime(config, migrate=True)
    from customify.db import schema_status

    current, _ = schema_status(rt.engine)
    rt.close()
    click.echo(f"database at revision {current}")


@db_group.command("current")
@click.option("--config", "config", default=None)
@click.option("--data-dir", "data_dir", default=None)
def db_current(**flags: Any) -> None:
    """Show the schema revision and whether it is current."""
    from customify.db import ping, schema_status
    from customify.runtime import Runtime

    config = _load(**flags)
    rt = Runtime(config)
    try:
        ping(rt.engine)
        current, head = schema_status(rt.engine)
    except Exception as exc:
        _fail(f"database unreachable: {first_line(exc)}")
    finally:
        rt.close()
    state = "current" if current == head else f"behind (head is {head}); run `customify db upgrade`"
    click.echo(f"revision {current or 'none'}: {state}")
    if current != head:
        sys.exit(1)


@main.group("storage")
def storage_group() -> None:
    """Renders and uploads: move them to an object store."""


@storage_group.command("migrate")
@click.option(
    "--to",
    "to",
    required=True,
    metavar="URL",
    help="s3://BUCKET/PREFIX (or s3://KEY:SECRET@BUCKET/PREFIX); endpoint, region and addressing from "
    "the storage.* keys, as for storage_url.",
)
@click.option("--config", "config", default=None)
@click.option("--data-dir", "data_dir", default=None)
def storage_migrate(to: str, **flags: Any) -> None:
    """Copy every referenced render and upload to URL, verified; then print the storage_url line to set.

    Idempotent and resumable: an object already there with the same bytes is skipped. The database keeps
    storage keys, the same in the data dir and in a bucket, so no row changes: the switch is the
    storage_url of the next start, once every copy is verified."""
    from sqlalchemy import select

    from customify import db
    from customify.models import Asset, Design
    from customify.storage import (
        StoreMisconfigured,
        asset_key,
        check_reachable,
        copy_verified,
        open_files,
        unreachable_line,
    )

    config = _load(**flags)
    try:
        target_config = msgspec.structs.replace(config, storage_url=to)
        from customify.config import validate

        validate(target_config)
    except ConfigError as exc:
        _fail(str(exc).replace("key 'storage_url'", "--to"))
    if not to.startswith("s3://"):
        _fail("--to: give the bucket to copy to, s3://BUCKET/PREFIX")
    source = open_files(config, config.data_path)
    target = open_files(target_config, config.data_path)
    try:
        check_reachable(target)
    except Exception as exc:
        _fail(
            str(exc).replace("key 'storage_url'", "--to")
            if isinstance(exc, StoreMisconfigured)
            else unreachable_line(target, exc)
        )
    engine = db.make_sync_engine(config.effective_database_url)
    try:
        with engine.connect() as conn:
            renders = conn.execute(
                select(Design.preview_key, Design.thumbnail_key).where(Design.preview_key.is_not(None))
            ).all()
            assets = conn.execute(select(Asset.sha256, Asset.format).distinct()).all()
    except Exception as exc:
        _fail(
            f"database {config.effective_database_url.split('@')[-1]} unreadable "
            f"({first_line(exc)}); run `customify db upgrade` or fix database_url"
        )
    finally:
        engine.dispose()
    keys = sorted({key for row in renders for key in row if key} | {asset_key(sha, fmt) for sha, fmt in assets})
    copied = skipped = 0
    missing: list[str] = []
    with click.progressbar(keys, label=f"copying {len(keys)} objects", file=sys.stderr) as bar:
        for key in bar:
            try:
                if copy_verified(source, target, key):
                    copied += 1
                else:
                    skipped += 1
            except FileNotFoundError:
                missing.append(key)  # replaced or deleted meanwhile, or lost before: nothing to copy
            except (OSError, StoreMisconfigured) as exc:
                _fail(
                    f"copying {key} failed ({first_line(exc)}); nothing was switched: run the "
                    "same command again to resume"
                )
    click.echo(
        f"{copied} copied, {skipped} already there, {len(missing)} missing in the data dir; "
        "every copy verified (read back)"
    )
    for key in missing[:10]:
        click.echo(f"  missing: {key}", err=True)
    click.echo("Restart every api and worker process with:")
    click.echo(
        f'  storage_url = "{redact_storage_url(to)}"'
        + ("   # with your KEY:SECRET, or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY" if "@" in to else "")
    )
    click.echo(f"  (or CUSTOMIFY_STORAGE_URL={redact_storage_url(to)})")
