"""Configuration: load order, one clear line per mistake, redaction, and docs that list every key."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from customify.config import ConfigError, describe_fields, load_config, redact

ROOT = Path(__file__).resolve().parent.parent


def test_defaults() -> None:
    config = load_config(None, {}, {})
    assert (config.host, config.port, config.data_dir, config.workers) == ("127.0.0.1", 8000, ".customify", 2)
    assert config.effective_database_url.startswith("sqlite:///") and config.effective_database_url.endswith(
        ".customify/customify.db"
    )
    assert config.dev_user_allowed


def test_load_order_file_env_flags(tmp_path: Path) -> None:
    file = tmp_path / "c.toml"
    file.write_text('port = 9000\nworkers = 3\nhost = "127.0.0.2"\n[limits]\nmax_layers = 5\n')
    env = {"CUSTOMIFY_PORT": "9100", "CUSTOMIFY_WORKERS": "4"}
    config = load_config(file, env, {"workers": 6})
    assert config.port == 9100  # env over file
    assert config.workers == 6  # flag over env
    assert config.host == "127.0.0.2"  # file over default
    assert config.limits.max_layers == 5
    assert config.limits.max_text_length == 500  # untouched defaults in a section stay


def test_config_file_from_env_and_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "other.toml").write_text("port = 9200\n")
    assert load_config(None, {"CUSTOMIFY_CONFIG": str(tmp_path / "other.toml")}, {}).port == 9200
    monkeypatch.chdir(tmp_path)
    (tmp_path / "customify.toml").write_text("port = 9300\n")
    assert load_config(None, {}, {}).port == 9300


def test_customify_database_url_wins_over_database_url() -> None:
    env = {"DATABASE_URL": "postgresql://a@h/one", "CUSTOMIFY_DATABASE_URL": "postgresql://a@h/two"}
    assert load_config(None, env, {}).database_url.endswith("/two")
    assert load_config(None, {"DATABASE_URL": "postgresql://a@h/one"}, {}).database_url.endswith("/one")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("colour = 'red'\n", ["unknown key 'colour'"]),
        ("[limits]\nmax_layerz = 3\n", ["unknown key 'limits.max_layerz'"]),
        ("[render]\ntimeout = 3\n", ["unknown key 'render.timeout'", "timeout_seconds"]),
        ("port = 'eighty'\n", ["key 'port'", "int"]),
        ("port = 70000\n", ["key 'port'"]),
        ("workers = 0\n", ["key 'workers'"]),
        ("database_url = 'not a url'\n", ["key 'database_url'"]),
        ("queue_url = 'nope'\n", ["key 'queue_url'"]),
        ("smtp_url = 'http://mail'\n", ["key 'smtp_url'"]),
        ("limits = 3\n", ["'limits' must be a table"]),
        ("[render]\nstall_seconds = 0\n", ["key 'render.stall_seconds'", "more than 0"]),
        ("[render]\nstall_seconds = 300\n", ["key 'render.stall_seconds'", "less than render.timeout_seconds (240)"]),
        ("[render]\ntimeout_seconds = 10\n", ["key 'render.stall_seconds'", "(10)"]),
        ("log_format = 'xml'\n", ["key 'log_format'", "json"]),
        ("port = \n", ["not valid TOML"]),
    ],
)
def test_mistakes_are_one_clear_line(tmp_path: Path, text: str, words: list[str]) -> None:
    file = tmp_path / "bad.toml"
    file.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(file, {}, {})
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message


@pytest.mark.parametrize(
    "env,flags,words",
    [
        ({"CUSTOMIFY_PORT": "abc"}, {}, ["key 'port'", "CUSTOMIFY_PORT='abc'"]),
        ({"CUSTOMIFY_WORKERS": "0"}, {}, ["key 'workers'", "CUSTOMIFY_WORKERS='0'", "use 1-64"]),
        ({}, {"port": 70000}, ["key 'port'", "--port 70000", "1-65535"]),
    ],
)
def test_a_bad_value_names_where_it_came_from(env: dict[str, str], flags: dict[str, object], words: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, env, flags)
    for word in words:
        assert word in str(info.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", {}, {})


def test_redaction() -> None:
    assert redact("postgresql://customify:s3cret@db:5432/shop") == "postgresql://customify:***@db:5432/shop"
    assert redact("redis://:pw@cache:6379/0") == "redis://:***@cache:6379/0"
    assert redact("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"
    with pytest.raises(ConfigError) as info:
        load_config(None, {"CUSTOMIFY_DATABASE_URL": "s3cret-password-no-scheme"}, {})
    assert "s3cret" in str(info.value) or "not a URL" in str(info.value)


@pytest.mark.parametrize(
    "env,flags",
    [({}, {"smtp_url": "http://user:hunter2@mail:25"}), ({"CUSTOMIFY_SMTP_URL": "http://user:hunter2@mail:25"}, {})],
)
def test_password_never_in_bad_url_error(env: dict[str, str], flags: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, env, flags)
    assert "hunter2" not in str(info.value) and "smtp_url" in str(info.value)


def test_non_loopback_requires_keys() -> None:
    assert not load_config(None, {}, {"host": "0.0.0.0"}).dev_user_allowed
    assert not load_config(None, {}, {"dev_mode": "off"}).dev_user_allowed
    assert load_config(None, {}, {"host": "::1"}).dev_user_allowed


def test_customify_toml_documents_every_key_with_its_default() -> None:
    documented = tomllib.loads((ROOT / "customify.toml").read_text())
    flat = {}
    for key, value in documented.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    keys = [k for k, _ in describe_fields()]
    assert sorted(flat) == sorted(keys)
    defaults = load_config(None, {}, {})
    for key, value in flat.items():
        section, _, name = key.rpartition(".")
        actual = getattr(getattr(defaults, section) if section else defaults, name)
        assert actual == value, f"customify.toml says {key} = {value!r}, the default is {actual!r}"
    assert load_config(ROOT / "customify.toml", {}, {}) == defaults


def test_readme_config_table_lists_every_key() -> None:
    readme = (ROOT / "README.md").read_text()
    rows = set(re.findall(r"^\| `([a-z_.]+)` \|", readme, flags=re.M))
    for key, doc in describe_fields():
        assert key in rows, f"README's configuration table misses {key}"
        assert doc, f"config key {key} has no docstring"
