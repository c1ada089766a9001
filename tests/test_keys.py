"""API key lifecycle (several named keys per user, last use, revocation at once everywhere) and private files."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from customify import records
from customify.cli import main
from customify.models import DEV_USER_EMAIL
from tests.conftest import LiveApp


def cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """A `customify` command, run in this process by Click's test runner: the same code as the
    console script without a second of interpreter start-up each (`cli_process` where it must be
    another process)."""
    done = CliRunner().invoke(main, [*args, "--data-dir", str(data_dir)], env={"NO_COLOR": "1"})
    if done.exception is not None and not isinstance(done.exception, SystemExit):
        raise done.exception
    return subprocess.CompletedProcess(args, done.exit_code, done.stdout, done.stderr)


def cli_process(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "customify", *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "NO_COLOR": "1"},
    )


def key_of(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stderr
    [line] = [x for x in done.stdout.splitlines() if x.startswith("api key: ")]
    return line.removeprefix("api key: ")


def test_several_named_keys_listed_used_and_revoked_at_once(live: LiveApp) -> None:
    data = live.rt.config.data_path
    laptop = key_of(cli(data, "users", "create", "alice@example.com", "--name", "laptop"))
    ci = key_of(cli(data, "keys", "create", "alice@example.com", "--name", "ci"))
    assert laptop != ci
    for key in (laptop, ci):
        assert live.client.get("/api/v1/designs", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    listed = cli(data, "users", "list")
    assert listed.returncode == 0, listed.stderr
    assert "alice@example.com  customer" in listed.stdout and "2 key(s)" in listed.stdout
    assert "laptop" in listed.stdout and "ci" in listed.stdout and "last used never" not in listed.stdout
    assert laptop not in listed.stdout and ci not in listed.stdout  # never the keys themselves

    revoked = cli_process(data, "keys", "revoke", laptop[:12])  # the API process is another process
    assert revoked.returncode == 0 and "laptop" in revoked.stdout, revoked.stderr
    gone = live.client.get("/api/v1/designs", headers={"Authorization": f"Bearer {laptop}"})
    assert gone.status_code == 401 and "revoked" in gone.json()["detail"]
    assert live.client.get("/api/v1/designs", headers={"Authorization": f"Bearer {ci}"}).status_code == 200
    assert "1 key(s)" in cli(data, "users", "list").stdout


def test_last_used_at_is_recorded(live: LiveApp) -> None:
    with live.rt.transaction() as session:
        _, key = records.create_user(session, "bob@example.com", key_name="script")
    assert live.client.get("/api/v1/designs", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    with live.rt.transaction() as session:
        [(_, [used])] = [(u, k) for u, k in records.list_users(session) if u.email == "bob@example.com"]
        assert used.name == "script" and used.last_used_at is not None


def test_revoke_refuses_an_unknown_or_ambiguous_prefix(tmp_path: Path) -> None:
    key_of(cli(tmp_path, "users", "create", "a@example.com"))
    key_of(cli(tmp_path, "users", "create", "b@example.com"))
    unknown = cli(tmp_path, "keys", "revoke", "cfy_nothing_like_it")
    assert unknown.returncode == 2 and "no key starts with" in unknown.stderr
    ambiguous = cli(tmp_path, "keys", "revoke", "cfy_")
    assert ambiguous.returncode == 2 and len(ambiguous.stderr.strip().splitlines()) == 1
    missing = cli(tmp_path, "keys", "create", "nobody@example.com")
    assert missing.returncode == 2 and "users create" in missing.stderr


def test_data_dir_and_databases_are_private(live: LiveApp) -> None:
    root = live.rt.config.data_path
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    for sub in ("renders", "assets", "outbox"):
        assert stat.S_IMODE((root / sub).stat().st_mode) == 0o700, sub
    live.design()
    for name in ("customify.db", "queue.db"):
        assert stat.S_IMODE((root / name).stat().st_mode) == 0o600, name
    for wal in root.glob("*.db-wal"):
        assert stat.S_IMODE(wal.stat().st_mode) & 0o077 == 0, wal


def test_a_role_change_issues_no_key_and_the_dev_user_is_listed_as_what_it_is(live: LiveApp) -> None:
    data = live.rt.config.data_path
    first = key_of(cli(data, "users", "create", "carol@example.com"))
    promoted = cli(data, "users", "create", "carol@example.com", "--operator")
    assert promoted.returncode == 0 and "— operator" in promoted.stdout, promoted.stderr
    assert "api key:" not in promoted.stdout and "keys are unchanged" in promoted.stdout
    demoted = cli(data, "users", "create", "carol@example.com", "--no-operator")
    assert "— customer" in demoted.stdout and "api key:" not in demoted.stdout
    again = key_of(cli(data, "users", "create", "carol@example.com"))  # no role flag: another key, as documented
    assert again != first
    live.client.get("/api/v1/designs")  # the dev user exists once loopback has been served
    listed = cli(data, "users", "list").stdout
    assert "carol@example.com  customer" in listed and "2 key(s)" in listed
    assert f"{DEV_USER_EMAIL}  operator on loopback (dev user)" in listed
