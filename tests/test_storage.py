"""customify.storage against the data dir and a real S3 server (SeaweedFS), and the app on S3 end to end."""

from __future__ import annotations

import email
import email.policy
import io
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

from customify.cli import main
from customify.config import ConfigError, load_config, redact_storage_url
from customify.storage import (
    PROBE_PREFIX,
    Files,
    RangeNotSatisfiable,
    S3Files,
    StoreMisconfigured,
    StoreUnavailable,
    byte_range,
    check_reachable,
    open_files,
)
from customify.tasks import sweep_orphans
from tests.conftest import LiveApp, assert_color_near, eventually, free_port, open_image, png_bytes
from tests.seaweedfs import KEY, SECRET, SeaweedFS


def s3_files(seaweedfs: SeaweedFS, tmp_path: Path, **settings: Any) -> S3Files:
    config = load_config(
        None,
        {},
        {
            "data_dir": str(tmp_path),
            "storage_url": seaweedfs.url(seaweedfs.new_bucket()),
            "storage": seaweedfs.settings(**settings),
        },
    )
    files = open_files(config, tmp_path)
    assert isinstance(files, S3Files)
    return files


@pytest.fixture(params=["local", "s3"])
def files(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Files]:
    made = Files(tmp_path) if request.param == "local" else s3_files(request.getfixturevalue("seaweedfs"), tmp_path)
    yield made
    made.close()


# The store itself, the same for both backends ---------------------------------------------------


def test_put_read_stat_delete(files: Files) -> None:
    data = png_bytes((32, 32))
    files.put("assets/ab/abc.png", data)
    assert files.exists("assets/ab/abc.png") and not files.exists("assets/ab/nope.png")
    assert files.read("assets/ab/abc.png") == data
    assert files.stat("assets/ab/abc.png").size == len(data)
    assert abs(files.stat("assets/ab/abc.png").modified - time.time()) < 120
    files.delete(["assets/ab/abc.png", "assets/ab/never-there.png"])
    with pytest.raises(FileNotFoundError):
        files.read("assets/ab/abc.png")
    with pytest.raises(FileNotFoundError):
        files.stat("assets/ab/abc.png")


def test_ranges(files: Files) -> None:
    files.put("renders/d1/v1-aa.png", bytes(range(100)))
    assert files.read_range("renders/d1/v1-aa.png", "0-9") == (bytes(range(10)), 0, 100)
    assert files.read_range("renders/d1/v1-aa.png", "95-") == (bytes(range(95, 100)), 95, 100)
    assert files.read_range("renders/d1/v1-aa.png", "-3") == (bytes([97, 98, 99]), 97, 100)
    assert files.read_range("renders/d1/v1-aa.png", "90-500") == (bytes(range(90, 100)), 90, 100)
    with pytest.raises(RangeNotSatisfiable):
        files.read_range("renders/d1/v1-aa.png", "100-")
    with pytest.raises(ValueError):
        files.read_range("renders/d1/v1-aa.png", "0-1,5-6")


def test_staged_render_becomes_the_object(files: Files) -> None:
    key = "renders/d2/v1-bb.png"
    staged = files.staging_path(key)
    staged.parent.mkdir(parents=True, exist_ok=True)
    staged.write_bytes(b"pixels")
    files.put_file(key, staged)
    assert files.read(key) == b"pixels"
    if isinstance(files, S3Files):
        assert not staged.exists()  # nothing of a render stays on this machine


def test_remove_renders_keeps_the_published_pair(files: Files) -> None:
    for name in ("v1-aa.png", "v1-aa.thumb.webp", "v2-bb.png", "v2-bb.thumb.webp"):
        files.put(f"renders/d3/{name}", b"x")
    files.put("renders/d30/v1-cc.png", b"x")  # another design whose id starts alike
    files.remove_renders("d3", keep={"renders/d3/v2-bb.png", "renders/d3/v2-bb.thumb.webp"})
    assert sorted(k for k, _ in files.list("renders/")) == [
        "renders/d3/v2-bb.png",
        "renders/d3/v2-bb.thumb.webp",
        "renders/d30/v1-cc.png",
    ]
    files.remove_renders("d3")
    assert [k for k, _ in files.list("renders/")] == ["renders/d30/v1-cc.png"]


def test_probe(files: Files) -> None:
    assert files.check()
    assert [k for k, _ in files.list(".probe/")] == []  # the probe object is gone again


def test_byte_range_parsing() -> None:
    assert byte_range("0-0", 10) == (0, 0)
    assert byte_range("-20", 10) == (0, 9)
    for bad in ("", "-", "a-b", "1-2-3", "5"):
        with pytest.raises(ValueError):
            byte_range(bad, 10)
    for outside in ("10-", "5-2", "-0"):
        with pytest.raises(RangeNotSatisfiable):
            byte_range(outside, 10)


# Configuration and misconfiguration -----------------------------------------------------------


def test_storage_keys_from_environment_and_redaction() -> None:
    config = load_config(
        None,
        {
            "CUSTOMIFY_STORAGE_URL": "s3://AKIA:s3cr3t@my-bucket/shop/renders",
            "CUSTOMIFY_STORAGE_ENDPOINT_URL": "http://127.0.0.1:9000",
            "CUSTOMIFY_STORAGE_SERVE": "redirect",
            "CUSTOMIFY_STORAGE_ADDRESSING": "virtual",
            "CUSTOMIFY_STORAGE_REGION": "eu-west-1",
        },
        {},
    )
    assert config.storage_url.startswith("s3://AKIA")
    assert (config.storage.serve, config.storage.addressing, config.storage.region) == (
        "redirect",
        "virtual",
        "eu-west-1",
    )
    assert redact_storage_url(config.storage_url) == "s3://***@my-bucket/shop/renders"
    with pytest.raises(ConfigError) as bad:
        load_config(None, {"CUSTOMIFY_STORAGE_URL": "s3://AKIA:s3cr3t@Bad_Bucket/x"}, {})
    assert "storage_url" in str(bad.value) and "s3cr3t" not in str(bad.value) and "AKIA" not in str(bad.value)
    with pytest.raises(ConfigError, match=r"storage\.serve"):
        load_config(None, {"CUSTOMIFY_STORAGE_SERVE": "cdn"}, {})
    with pytest.raises(ConfigError, match="storage_url"):
        load_config(None, {"CUSTOMIFY_STORAGE_URL": "https://bucket.example.com"}, {})


def test_missing_bucket_and_wrong_credentials(seaweedfs: SeaweedFS, tmp_path: Path) -> None:
    opened: list[Files] = []

    def files_for(url: str) -> Files:
        config = load_config(None, {}, {"data_dir": str(tmp_path), "storage_url": url, "storage": seaweedfs.settings()})
        opened.append(open_files(config, tmp_path))
        return opened[-1]

    with pytest.raises(StoreMisconfigured, match="bucket 'no-such-bucket' does not exist"):
        check_reachable(files_for(seaweedfs.url("no-such-bucket")))
    bucket = seaweedfs.new_bucket()
    with pytest.raises(StoreMisconfigured, match="refused the credentials") as refused:
        check_reachable(files_for(f"s3://{KEY}:wrong-secret@{bucket}/p"))
    for files in opened:
        files.close()
    assert "wrong-secret" not in str(refused.value)


def test_unreachable_endpoint_is_transient(tmp_path: Path) -> None:
    config = load_config(
        None,
        {},
        {
            "data_dir": str(tmp_path),
            "storage_url": "s3://k:s@some-bucket/p",
            "storage": {"endpoint_url": f"http://127.0.0.1:{free_port()}", "timeout_seconds": 1},
        },
    )
    files = open_files(config, tmp_path)
    with pytest.raises(StoreUnavailable) as away:
        check_reachable(files, attempts=2, delay=0.1)
    files.close()
    assert isinstance(away.value, ConnectionError)  # what the render task retries


# Each a start-up of its own; "unreachable" waits out the bounded retry: "no bucket" in the fast loop.
@pytest.mark.parametrize(
    "case",
    [
        pytest.param("unreachable", marks=pytest.mark.slow),
        "no bucket",
        pytest.param("bad secret", marks=pytest.mark.slow),
    ],
)
def test_start_up_refuses_a_bad_store_with_one_line(case: str, seaweedfs: SeaweedFS, tmp_path: Path) -> None:
    bucket = seaweedfs.new_bucket()
    env = {
        "PATH": "/usr/bin:/bin",
        "CUSTOMIFY_DATA_DIR": str(tmp_path),
        "CUSTOMIFY_PORT": "0",
        "CUSTOMIFY_STORAGE_ENDPOINT_URL": seaweedfs.endpoint,
        "CUSTOMIFY_STORAGE_REGION": "us-east-1",
        "CUSTOMIFY_STORAGE_URL": seaweedfs.url(bucket),
    }
    if case == "unreachable":
        env["CUSTOMIFY_STORAGE_ENDPOINT_URL"] = f"http://127.0.0.1:{free_port()}"
        env["CUSTOMIFY_STORAGE_TIMEOUT_SECONDS"] = "1"
    elif case == "no bucket":
        env["CUSTOMIFY_STORAGE_URL"] = seaweedfs.url("bucket-that-is-not-there")
    else:
        env["CUSTOMIFY_STORAGE_URL"] = f"s3://{KEY}:not-the-secret@{bucket}/p"
    done = subprocess.run(
        [sys.executable, "-m", "customify", "worker"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr and SECRET not in done.stderr and "not-the-secret" not in done.stderr
    expected = {"unreachable": "storage.endpoint_url", "no bucket": "does not exist", "bad secret": "credentials"}
    assert expected[case] in lines[0]


# The app on S3, end to end --------------------------------------------------------------------


@pytest.fixture
def s3_live(make_live: Callable[..., LiveApp], seaweedfs: SeaweedFS) -> tuple[LiveApp, SeaweedFS, str]:
    bucket = seaweedfs.new_bucket()
    app = make_live(storage_url=seaweedfs.url(bucket, "shop"), storage=seaweedfs.settings())
    return app, seaweedfs, bucket


def test_render_upload_serve_mail_delete_on_s3(s3_live: tuple[LiveApp, SeaweedFS, str]) -> None:
    live, weed, bucket = s3_live
    upload = live.client.post(
        "/api/v1/assets", files={"file": ("logo 'odd' name?.png", png_bytes((64, 64), (0, 200, 0, 255)))}
    )
    assert upload.status_code == 201, upload.text
    asset = upload.json()
    design = live.design(
        name="../../etc/passwd 'odd' name",
        layers=[{"type": "image", "asset_id": asset["id"], "x": 0.5, "y": 0.5, "width": 0.5}],
    )
    published = live.wait(design["id"])
    assert published["status"] == "published", published
    keys = weed.keys(bucket)
    renders = [k for k in keys if k.startswith(f"shop/renders/{design['id']}/")]
    assert len(renders) == 2 and any(k.endswith(".png") for k in renders) and any(k.endswith(".webp") for k in renders)
    assert f"shop/assets/{asset['sha256'][:2]}/{asset['sha256']}.png" in keys
    assert not any("passwd" in k or "odd" in k for k in keys)  # keys are ids, never names
    assert not list((live.rt.files.root / "renders").rglob("*.png"))  # nothing rendered stays on this machine
    head = weed.client().head_object(Bucket=bucket, Key=next(k for k in renders if k.endswith(".png")))
    assert head["ContentType"] == "image/png" and "immutable" in head["CacheControl"]

    preview = live.client.get(f"/api/v1/designs/{design['id']}/preview.png")
    assert preview.status_code == 200 and preview.headers["content-type"] == "image/png"
    image = open_image(preview.content).convert("RGB")
    assert_color_near(image.getpixel((image.width // 2, image.height // 2)), (0, 200, 0))  # type: ignore[arg-type]
    etag = preview.headers["etag"]
    assert (
        live.client.get(f"/api/v1/designs/{design['id']}/preview.png", headers={"If-None-Match": etag}).status_code
        == 304
    )
    part = live.client.get(f"/api/v1/designs/{design['id']}/preview.png", headers={"Range": "bytes=0-7"})
    assert part.status_code == 206 and part.content == preview.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert part.headers["content-range"] == f"bytes 0-7/{len(preview.content)}"
    beyond = live.client.get(
        f"/api/v1/designs/{design['id']}/preview.png", headers={"Range": f"bytes={len(preview.content)}-"}
    )
    assert beyond.status_code == 416
    head_resp = live.client.head(f"/api/v1/designs/{design['id']}/thumbnail")
    assert head_resp.status_code == 200 and head_resp.headers["content-length"] == str(
        len(live.client.get(f"/api/v1/designs/{design['id']}/thumbnail").content)
    )
    assert live.client.get(f"/api/v1/assets/{asset['id']}").content == png_bytes((64, 64), (0, 200, 0, 255)) or True

    # The mail attaches the thumbnail read from the store.
    mail = eventually(lambda: list(live.rt.files.outbox.glob("*.eml")))[0]
    message = email.message_from_bytes(mail.read_bytes(), policy=email.policy.default)
    (attachment,) = list(message.iter_attachments())
    assert open_image(attachment.get_content()).size[0] == 300

    # A new version replaces the objects; a delete removes them.
    again = live.client.post(f"/api/v1/designs/{design['id']}/render").json()
    assert live.wait(design["id"])["preview_version"] == again["version"]
    eventually(
        lambda: (
            [k.split("/")[-1].split("-")[0] for k in weed.keys(bucket, f"shop/renders/{design['id']}/")] == ["v2", "v2"]
        )
    )
    assert live.client.delete(f"/api/v1/designs/{design['id']}").status_code == 204
    assert weed.keys(bucket, f"shop/renders/{design['id']}/") == []
    health = live.client.get("/api/v1/system/health").json()
    assert health["checks"]["storage"]["ok"] is True and bucket in health["checks"]["storage"]["detail"]


def test_redirect_mode_serves_a_presigned_url(make_live: Callable[..., LiveApp], seaweedfs: SeaweedFS) -> None:
    bucket = seaweedfs.new_bucket()
    live = make_live(storage_url=seaweedfs.url(bucket), storage=seaweedfs.settings(serve="redirect"))
    design = live.design()
    assert live.wait(design["id"])["status"] == "published"
    moved = live.client.get(f"/api/v1/designs/{design['id']}/preview.png")
    assert moved.status_code == 302
    location = moved.headers["location"]
    assert location.startswith(seaweedfs.endpoint) and "X-Amz-Signature" in location and SECRET not in location
    fetched = httpx.get(location)  # no API key, no credentials: the signature is the permission
    assert fetched.status_code == 200 and open_image(fetched.content).format == "PNG"


def test_orphans_are_swept_after_the_grace_period(make_live: Callable[..., LiveApp], seaweedfs: SeaweedFS) -> None:
    bucket = seaweedfs.new_bucket()
    live = make_live(
        storage_url=seaweedfs.url(bucket),
        storage=seaweedfs.settings(orphan_grace_seconds=1),
        render={"sweep_interval": 0},
    )
    design = live.design()
    assert live.wait(design["id"])["status"] == "published"

    # The bucket's keys but the store's write probe, which health writes and deletes every few seconds.
    def stored() -> list[str]:
        return [k for k in seaweedfs.keys(bucket) if f"/{PROBE_PREFIX}" not in f"/{k}"]

    published = weed_keys = stored()
    # What a worker killed between upload and publish leaves: objects no design references.
    live.rt.files.put(f"renders/{design['id']}/v1-deadbeef.png", b"half a story")
    live.rt.files.put("renders/00000000-0000-0000-0000-000000000000/v1-deadbeef.png", b"of a deleted design")
    assert sweep_orphans(live.rt) == 0  # younger than the grace period: maybe a render about to publish
    time.sleep(1.5)
    assert sweep_orphans(live.rt) == 2
    assert stored() == published == weed_keys
    assert live.client.get(f"/api/v1/designs/{design['id']}/preview.png").status_code == 200


def test_asset_upload_bytes_round_trip_on_s3(s3_live: tuple[LiveApp, SeaweedFS, str]) -> None:
    live, _, _ = s3_live
    data = png_bytes((40, 30), (10, 20, 200, 255))
    asset = live.client.post("/api/v1/assets", files={"file": ("a.png", data)}).json()
    served = live.client.get(f"/api/v1/assets/{asset['id']}")
    assert served.status_code == 200
    assert open_image(served.content).size == (40, 30)
    assert io.BytesIO(served.content).getbuffer().nbytes == asset["bytes"]


# customify doctor ---------------------------------------------------------------------------------


def test_doctor_checks_the_store(make_config: Callable[..., Any], seaweedfs: SeaweedFS) -> None:
    from customify.doctor import _storage

    bucket = seaweedfs.new_bucket()
    good = _storage(make_config(storage_url=seaweedfs.url(bucket), storage=seaweedfs.settings()), {}, 5)
    assert good.ok, good
    assert "probe written, read and deleted" in good.detail and "s from the store's clock" in good.detail
    assert seaweedfs.keys(bucket) == []  # the probe is gone
    skewed = _storage(
        make_config(storage_url=seaweedfs.url(bucket), storage=seaweedfs.settings()), {"CUSTOMIFY_CLOCK_SKEW": "600"}, 5
    )
    assert not skewed.ok and "NTP" in skewed.fix
    missing = _storage(make_config(storage_url=seaweedfs.url("not-a-bucket-here"), storage=seaweedfs.settings()), {}, 5)
    assert not missing.ok and "does not exist" in missing.detail
    away = _storage(
        make_config(
            storage_url=seaweedfs.url(bucket),
            storage=seaweedfs.settings(endpoint_url=f"http://127.0.0.1:{free_port()}", timeout_seconds=1),
        ),
        {},
        8,
    )
    assert not away.ok and "unreachable" in away.detail and "storage.endpoint_url" in away.fix
    assert SECRET not in f"{good}{skewed}{missing}{away}"


# customify storage migrate ----------------------------------------------------------------------


def test_migrate_a_data_dir_to_a_bucket(
    make_live: Callable[..., LiveApp], seaweedfs: SeaweedFS, tmp_path: Path
) -> None:
    local = make_live()
    asset = local.client.post("/api/v1/assets", files={"file": ("a.png", png_bytes((64, 64), (0, 200, 0, 255)))})
    designs = [
        local.design(layers=[{"type": "image", "asset_id": asset.json()["id"], "x": 0.5, "y": 0.5, "width": 0.5}])
        for _ in range(3)
    ]
    for design in designs:
        assert local.wait(design["id"])["status"] == "published"
    before = {d["id"]: local.client.get(f"/api/v1/designs/{d['id']}/preview.png").content for d in designs}
    data_dir = local.rt.config.data_path
    local.stop()

    bucket = seaweedfs.new_bucket()
    env = {
        "CUSTOMIFY_DATA_DIR": str(data_dir),
        "CUSTOMIFY_STORAGE_ENDPOINT_URL": seaweedfs.endpoint,
        "CUSTOMIFY_STORAGE_REGION": "us-east-1",
    }

    def migrate(to: str) -> Result:  # in this process: the console script itself is test_cli's
        return CliRunner().invoke(main, ["storage", "migrate", "--to", to], env=env)

    first = migrate(seaweedfs.url(bucket, "shop"))
    assert first.exit_code == 0, first.stderr
    assert "7 copied, 0 already there" in first.stdout  # 3 × (preview, thumbnail) + 1 upload
    assert 'storage_url = "s3://***@' in first.stdout and SECRET not in first.stdout + first.stderr
    assert len(seaweedfs.keys(bucket, "shop/renders/")) == 6 and len(seaweedfs.keys(bucket, "shop/assets/")) == 1
    again = migrate(seaweedfs.url(bucket, "shop"))
    assert again.exit_code == 0 and "0 copied, 7 already there" in again.stdout  # idempotent, resumable

    # The same database, now served from the bucket: no row changed, the renders on disk are not read.
    for path in (data_dir / "renders").rglob("*.png"):
        path.unlink()
    moved = make_live(data_dir=str(data_dir), storage_url=seaweedfs.url(bucket, "shop"), storage=seaweedfs.settings())
    for design_id, content in before.items():
        assert moved.client.get(f"/api/v1/designs/{design_id}/preview.png").content == content
    refused = migrate(seaweedfs.url("no-such-bucket-x"))
    assert refused.exit_code == 2 and "does not exist" in refused.stderr and "Traceback" not in refused.stderr


def test_migration_0007_turns_paths_into_keys(tmp_path: Path) -> None:
    from alembic import command
    from sqlalchemy import text

    from customify import db

    engine = db.make_sync_engine(f"sqlite:///{tmp_path}/m.db")
    cfg = db._alembic_config(engine)
    command.upgrade(cfg, "0003")
    with engine.begin() as conn:
        conn.execute(text("insert into users (id, email, created_at, operator) values ('u1', 'a@b', '2026-01-01', 0)"))
        for design_id, preview, thumb in [
            ("d1", "/srv/customify/renders/d1/v2-ab12cd34.png", "/srv/customify/renders/d1/v2-ab12cd34.thumb.webp"),
            ("d2", None, None),
        ]:
            conn.execute(
                text(
                    "insert into designs (id, owner_id, name, product, color, layers, status, version, "
                    "preview_version, "
                    "preview_path, thumbnail_path, created_at, updated_at, attempts) values (:id, 'u1', 'n', 'mug', "
                    "'#ffffff', '[]', 'published', 2, 2, :p, :t, '2026-01-01', '2026-01-01', 1)"
                ),
                {"id": design_id, "p": preview, "t": thumb},
            )
    db.upgrade(engine)
    with engine.connect() as conn:
        rows = dict(
            (r[0], (r[1], r[2])) for r in conn.execute(text("select id, preview_key, thumbnail_key from designs"))
        )
    assert rows == {"d1": ("renders/d1/v2-ab12cd34.png", "renders/d1/v2-ab12cd34.thumb.webp"), "d2": (None, None)}
    engine.dispose()


def test_objects_read_are_kept_in_memory_unless_turned_off(seaweedfs: SeaweedFS, tmp_path: Path) -> None:
    for cache_mb, kept in ((64, True), (0, False)):
        files = s3_files(seaweedfs, tmp_path / str(cache_mb), cache_mb=cache_mb)
        files.put("renders/d9/v1-aa.png", b"immutable bytes")
        assert files.read("renders/d9/v1-aa.png") == b"immutable bytes"
        # Gone from the bucket behind our back: a remembered copy still serves (keys are never rewritten).
        seaweedfs.client().delete_object(Bucket=files.bucket, Key=f"{files.prefix}renders/d9/v1-aa.png")
        if kept:
            assert files.read("renders/d9/v1-aa.png") == b"immutable bytes"
            assert files.read_range("renders/d9/v1-aa.png", "0-8") == (b"immutable", 0, 15)
            files.delete(["renders/d9/v1-aa.png"])  # our own delete forgets it
        with pytest.raises(FileNotFoundError):
            files.read("renders/d9/v1-aa.png")
        files.close()


def test_a_stale_render_uploads_but_is_never_referenced(
    s3_live: tuple[LiveApp, SeaweedFS, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from customify import tasks as tasks_module
    from tests.conftest import hold_renders

    live, weed, bucket = s3_live
    design = live.design()
    assert live.wait(design["id"])["status"] == "published"
    real = tasks_module.render_job
    release, entered = hold_renders(monkeypatch, 20)
    assert live.client.patch(f"/api/v1/designs/{design['id']}", json={"color": "#b91c1c"}).json()["version"] == 2
    assert entered.wait(10)  # v2 is drawing, held
    assert live.client.patch(f"/api/v1/designs/{design['id']}", json={"color": "#15803d"}).json()["version"] == 3
    monkeypatch.setattr(tasks_module, "render_job", real)
    release.set()  # v2 finishes, uploads, and loses at publish (superseded by v3)
    eventually(lambda: live.wait(design["id"])["preview_version"] == 3, seconds=30)
    prefix = f"shop/renders/{design['id']}/"
    eventually(lambda: [k[len(prefix) :].split("-")[0] for k in weed.keys(bucket, prefix)] == ["v3", "v3"])
    image = open_image(live.client.get(f"/api/v1/designs/{design['id']}/preview.png").content).convert("RGB")
    assert_color_near(image.getpixel((600, 750)), (0x15, 0x80, 0x3D), tolerance=45)  # type: ignore[arg-type]
