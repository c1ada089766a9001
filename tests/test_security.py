"""Hostile pages and hostile input: the request guard (Host, Origin, Content-Type) and crafted-input 4xx."""

from __future__ import annotations

import base64
import errno
import io
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from customify import storage
from customify.config import Config, redact
from tests.conftest import LiveApp, png_bytes, serve
from tests.test_api import GOOD as GOOD_DESIGN
from tests.test_api import problem

ATTACKER = "http://attacker.example"
SLOW = pytest.mark.slow


@pytest.fixture
def api(make_live: Callable[..., LiveApp]) -> LiveApp:
    return make_live(consumer=False)


@pytest.fixture(scope="module")
def refusing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApp]:
    """`api` shared by this module's tests that only send what the app refuses, or only read: nothing
    they do changes what another of them sees (those that check nothing was written see every refusal)."""
    with serve(tmp_path_factory.mktemp("refusing"), consumer=False) as app:
        yield app


def port_of(app: LiveApp) -> str:
    return str(app.sock.getsockname()[1])


def direct(app: LiveApp) -> httpx.Client:
    """A client to the socket itself (the app's own client uses public_url)."""
    return httpx.Client(base_url=f"http://127.0.0.1:{port_of(app)}", timeout=20)


@pytest.mark.parametrize("path", ["/api/v1/system/worker-status", "/api/v1/designs", "/api/v1/products"])
def test_dev_mode_refuses_a_rebinding_host(refusing: LiveApp, path: str) -> None:
    body = problem(refusing.client.get(path, headers={"Host": f"attacker.example:{port_of(refusing)}"}), 421)
    assert "attacker.example" in body["detail"]


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "[::1]", "LOCALHOST.", "127.0.0.1:1"])
def test_dev_mode_serves_loopback_hosts_on_any_port(refusing: LiveApp, host: str) -> None:
    port = f":{port_of(refusing)}" if ":" not in host.strip("[]") or host.startswith("[") else ""
    assert refusing.client.get("/api/v1/designs", headers={"Host": f"{host}{port}"}).status_code == 200


def test_public_url_host_is_served(make_live: Callable[..., LiveApp]) -> None:
    app = make_live(consumer=False, public_url="https://shop.example.com")
    with direct(app) as client:
        assert client.get("/api/v1/products", headers={"Host": "shop.example.com"}).status_code == 200
        problem(client.get("/api/v1/products", headers={"Host": "other.example.com"}), 421)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/v1/designs", GOOD_DESIGN),
        ("POST", "/api/v1/control/pause", None),
        ("POST", "/api/v1/control/purge", None),
        ("POST", "/api/v1/system/debug-task", None),
        ("DELETE", "/api/v1/designs/00000000-0000-4000-8000-000000000001", None),
    ],
)
@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": ATTACKER},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Origin": "http://localhost:3000"},  # another local dev server is another origin
    ],
)
def test_cross_site_writes_are_403(
    refusing: LiveApp, method: str, path: str, body: Any, headers: dict[str, str]
) -> None:
    response = refusing.client.request(method, path, json=body, headers=headers)
    assert "cross-site" in problem(response, 403)["detail"]
    assert refusing.client.get("/api/v1/designs").json()["items"] == []


def test_a_simple_text_plain_post_is_415_not_a_design(api: LiveApp) -> None:
    """What an HTML form (enctype=text/plain) or fetch() without preflight sends."""
    import msgspec

    raw = msgspec.json.encode(GOOD_DESIGN)
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        body = problem(api.client.post("/api/v1/designs", content=raw, headers={"Content-Type": content_type}), 415)
        assert "application/json" in body["detail"]
    problem(api.client.post("/api/v1/designs", content=raw), 415)  # no Content-Type at all
    assert api.client.get("/api/v1/designs").json()["items"] == []
    ok = api.client.post("/api/v1/designs", content=raw, headers={"Content-Type": "application/json; charset=utf-8"})
    assert ok.status_code == 201, ok.text


def test_an_upload_must_be_multipart(refusing: LiveApp) -> None:
    problem(refusing.client.post("/api/v1/assets", content=b"\x89PNG...", headers={"Content-Type": "image/png"}), 415)


def test_same_origin_and_scripted_writes_pass(api: LiveApp) -> None:
    same = {"Origin": api.base_url, "Sec-Fetch-Site": "same-origin"}
    assert api.client.post("/api/v1/designs", json=GOOD_DESIGN, headers=same).status_code == 201
    assert api.client.post("/api/v1/designs", json=GOOD_DESIGN).status_code == 201  # curl, scripts, the TUI
    # Reads are never refused for their Origin (CORS decides what a page may read).
    assert api.client.get("/api/v1/designs", headers={"Origin": ATTACKER}).status_code == 200


@pytest.mark.skipif("cors_origins" not in Config.__struct_fields__, reason="cors_origins arrives with CORS")
def test_an_origin_listed_in_cors_origins_may_write(make_live: Callable[..., LiveApp]) -> None:
    app = make_live(consumer=False, cors_origins=["https://app.example.com"])
    allowed = {"Origin": "https://app.example.com", "Sec-Fetch-Site": "cross-site"}
    assert app.client.post("/api/v1/designs", json=GOOD_DESIGN, headers=allowed).status_code == 201
    problem(app.client.post("/api/v1/designs", json=GOOD_DESIGN, headers={"Origin": ATTACKER}), 403)


def test_off_loopback_any_host_is_served_but_the_origin_rule_holds(make_live: Callable[..., LiveApp]) -> None:
    app = make_live(consumer=False, host="127.0.0.1", dev_mode="off")
    key = app.rt.local_key
    auth = {"Authorization": f"Bearer {key}"}
    assert app.client.get("/api/v1/products", headers={"Host": "api.example.com", **auth}).status_code == 200
    problem(app.client.post("/api/v1/designs", json=GOOD_DESIGN, headers={"Origin": ATTACKER, **auth}), 403)


# Crafted input: 4xx problem+json, one log line, no traceback -----------------------------------


def no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR], caplog.text


@pytest.mark.parametrize("when", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "not a time"])
def test_a_cursor_out_of_range_is_400(refusing: LiveApp, caplog: pytest.LogCaptureFixture, when: str) -> None:
    cursor = base64.urlsafe_b64encode(f"{when}|00000000-0000-4000-8000-000000000001".encode()).decode()
    body = problem(refusing.client.get("/api/v1/designs", params={"cursor": cursor.rstrip("=")}), 400)
    assert "cursor" in body["detail"]
    no_traceback(caplog)


@pytest.mark.parametrize(
    ("method", "path", "raw"),
    [
        ("POST", "/api/v1/designs", b'{"name":"x","product":"tshirt","layers":' + b"[" * 1000 + b"]" * 1000 + b"}"),
        ("POST", "/api/v1/designs", b"[" * 5000 + b"]" * 5000),
        ("PUT", "/api/v1/control/workers", b'{"a":' * 1000 + b"1" + b"}" * 1000),
    ],
)
def test_json_nested_a_thousand_deep_is_400(
    refusing: LiveApp, caplog: pytest.LogCaptureFixture, method: str, path: str, raw: bytes
) -> None:
    response = refusing.client.request(method, path, content=raw, headers={"Content-Type": "application/json"})
    assert "nested too deeply" in problem(response, 400)["detail"]
    no_traceback(caplog)
    assert len([r for r in caplog.records if r.name.startswith("customify")]) <= 1


def test_a_multipart_file_without_filename_is_400(refusing: LiveApp, caplog: pytest.LogCaptureFixture) -> None:
    raw = (
        b'--xx\r\nContent-Disposition: form-data; name="file"\r\nContent-Type: image/png\r\n\r\n'
        + png_bytes()
        + b"\r\n--xx--\r\n"
    )
    response = refusing.client.post(
        "/api/v1/assets", content=raw, headers={"Content-Type": "multipart/form-data; boundary=xx"}
    )
    assert "filename" in problem(response, 400)["detail"]
    no_traceback(caplog)


@pytest.fixture
def full_assets_disk(make_config: Callable[..., Config], monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The data dir's assets folder on a real 64 KiB tmpfs (root), else writes that fail with ENOSPC."""
    assets = make_config().data_path / "assets"
    assets.mkdir(parents=True, exist_ok=True)
    mounted = (
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(assets)], capture_output=True).returncode
        == 0
    )
    if not mounted:  # not root: a full disk cannot be made, so the write says what a full disk says

        def full(path: Path, data: bytes) -> Path:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

        monkeypatch.setattr(storage.Files, "put", lambda self, key, data: full(self.path(key), data))
    try:
        yield assets
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(assets)], check=False)


def test_an_upload_while_the_disk_is_full_is_507_naming_the_disk(
    make_live: Callable[..., LiveApp], full_assets_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_live(consumer=False)
    noise = Image.frombytes("RGB", (200, 200), os.urandom(200 * 200 * 3))  # ~120 KB of PNG: more than the disk
    out = io.BytesIO()
    noise.save(out, "PNG")
    response = app.client.post("/api/v1/assets", files={"file": ("big.png", out.getvalue(), "image/png")})
    body = problem(response, 507)
    assert str(full_assets_disk) in body["detail"] and "full" in body["detail"]
    no_traceback(caplog)
    small = app.client.post("/api/v1/assets", files={"file": ("small.png", png_bytes((8, 8)), "image/png")})
    assert small.status_code == 201, small.text  # what fits is still stored


# Secrets in URLs: redacted whatever the shape; a broken URL is one line naming the key ------------


@pytest.mark.parametrize(
    ("url", "secret"),
    [
        ("postgresql://postgres:s3cretpw@127.0.0.1/x", "s3cretpw"),
        ("postgresql:/postgres:s3cretpw@127.0.0.1/x", "s3cretpw"),
        ("postgresql:postgres:s3cretpw@127.0.0.1/x", "s3cretpw"),
        ("postgres:s3cretpw@127.0.0.1/x", "s3cretpw"),
        ("smtp:/u:smtpsecret@x", "smtpsecret"),
        ("smtp://u:smtp/secret@x:25", "smtp/secret"),
        ("redis://:r3dispw@h:6379/0", "r3dispw"),
        ("postgresql://u:p@ss@h/db", "p@ss"),
        ("postgresql://h/db?user=u&password=hunter2", "hunter2"),
    ],
)
def test_passwords_are_redacted_whatever_the_url_shape(url: str, secret: str) -> None:
    shown = redact(url)
    assert secret not in shown and "***" in shown, shown
    assert secret not in redact(f"cannot connect to {url} (refused)")
    assert redact("postgresql://postgres@127.0.0.1/x") == "postgresql://postgres@127.0.0.1/x"


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "customify", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )


@pytest.mark.parametrize(
    ("var", "url", "key", "secret"),
    [
        ("CUSTOMIFY_DATABASE_URL", "postgresql:/postgres:s3cretpw@127.0.0.1/x", "database_url", "s3cretpw"),
        ("CUSTOMIFY_SMTP_URL", "smtp:/u:smtpsecret@x", "smtp_url", "smtpsecret"),
        # Each a process of its own (a second of imports): the first two in the fast loop.
        pytest.param(
            "CUSTOMIFY_DATABASE_URL", "postgresql://u:s3cretpw@host:abc/db", "database_url", "s3cretpw", marks=SLOW
        ),
        pytest.param(
            "CUSTOMIFY_DATABASE_URL", "postgresql://u:s3cretpw@[::1/db", "database_url", "s3cretpw", marks=SLOW
        ),
        pytest.param("CUSTOMIFY_QUEUE_URL", "redis://:s3cretpw@h:port/0", "queue_url", "s3cretpw", marks=SLOW),
        pytest.param("CUSTOMIFY_SMTP_URL", "smtp://u:smtpsecret@mail:xx", "smtp_url", "smtpsecret", marks=SLOW),
    ],
)
def test_a_mistyped_url_is_one_line_naming_the_key(tmp_path: Path, var: str, url: str, key: str, secret: str) -> None:
    done = run_cli("db", "current", "--data-dir", str(tmp_path), env={var: url})
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"key '{key}'" in lines[0], done.stderr
    assert secret not in done.stderr + done.stdout


# Uploads are stored re-encoded: no appended payload, no EXIF/GPS ------------------------------------


def test_an_upload_is_served_re_encoded_without_what_was_appended(api: LiveApp) -> None:
    raw = png_bytes((32, 32), (10, 200, 30, 255)) + b"<html><script>alert(document.cookie)</script></html>"
    body = api.client.post("/api/v1/assets", files={"file": ("x.png", raw, "image/png")}).json()
    served = api.client.get(body["url"]).content
    assert b"<script>" not in served and b"<html>" not in served
    assert Image.open(io.BytesIO(served)).convert("RGBA").getpixel((5, 5)) == (10, 200, 30, 255)


def test_exif_and_gps_are_stripped(api: LiveApp) -> None:
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"  # Make
    exif[0x8825] = {1: "N", 2: (48.0, 51.0, 29.0), 3: "E", 4: (2.0, 17.0, 40.0)}  # GPS: Paris
    out = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 40, 40)).save(out, "JPEG", exif=exif, quality=95)
    assert b"PhoneMaker" in out.getvalue()
    body = api.client.post("/api/v1/assets", files={"file": ("me.jpg", out.getvalue(), "image/jpeg")}).json()
    served = api.client.get(body["url"]).content
    assert b"PhoneMaker" not in served and b"Exif" not in served
    image = Image.open(io.BytesIO(served))
    assert (
        not image.getexif()
        and max(abs(a - b) for a, b in zip(image.getpixel((20, 15)), (200, 40, 40), strict=True)) < 12
    )
