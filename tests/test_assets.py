"""Uploads through the real app: accepted by decoding, refused with a 4xx problem+json, stored by content."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.conftest import LiveApp, open_image, png_bytes, serve

PROBLEM = "application/problem+json"


def upload(app: LiveApp, data: bytes, name: str = "logo.png", content_type: str = "image/png") -> httpx.Response:
    return app.client.post("/api/v1/assets", files={"file": (name, data, content_type)})


def problem(response: httpx.Response, status: int, *words: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["title"] and body["detail"]
    for word in words:
        assert word in body["detail"], body["detail"]
    return body


def encoded(image: Image.Image, fmt: str, **params: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def noise(size: tuple[int, int]) -> Image.Image:
    return Image.effect_noise(size, 80).convert("RGB")


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width × height and carries almost no data: a decompression bomb's header."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApp]:
    """One app for this module's tests that upload and read back their own file, or are refused: none
    looks at another's uploads (those that count files or delete them have an app of their own)."""
    with serve(tmp_path_factory.mktemp("shared")) as app:
        yield app


# Accepted ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "mode"), [("PNG", "RGBA"), ("JPEG", "RGB"), ("WEBP", "RGBA"), ("PNG", "P"), ("PNG", "L")]
)
def test_png_jpeg_webp_accepted_and_served(shared: LiveApp, fmt: str, mode: str) -> None:
    data = encoded(Image.new(mode, (40, 30)), fmt)
    response = upload(shared, data, name="anything.bin", content_type="application/octet-stream")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["format"] == fmt.lower() and (body["width"], body["height"]) == (40, 30)
    served = shared.client.get(body["url"])
    assert served.status_code == 200  # the pixels, re-encoded (never the uploaded bytes: tests/test_security.py)
    assert open_image(served.content).convert("RGBA").tobytes() == open_image(data).convert("RGBA").tobytes()
    assert served.headers["content-type"] == f"image/{fmt.lower()}"
    assert served.headers["etag"] and "max-age" in served.headers["cache-control"]


def test_same_upload_twice_is_one_file(live: LiveApp) -> None:
    data = encoded(noise((64, 64)), "PNG")
    first, second = upload(live, data).json(), upload(live, data, name="again.png").json()
    assert first["sha256"] == second["sha256"]
    files = [p for p in live.rt.files.assets.rglob("*") if p.is_file()]
    assert [p.name for p in files] == [f"{first['sha256']}.png"]
    other = upload(live, encoded(noise((64, 64)), "PNG")).json()
    assert other["sha256"] != first["sha256"]
    assert len([p for p in live.rt.files.assets.rglob("*") if p.is_file()]) == 2


def test_exif_orientation_is_applied(shared: LiveApp) -> None:
    # Stored landscape, red on the left, with EXIF orientation 6: "rotate 90° clockwise to view".
    image = Image.new("RGB", (60, 30), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 30, 30))
    exif = Image.Exif()
    exif[0x0112] = 6
    body = upload(shared, encoded(image, "JPEG", exif=exif, quality=95), "photo.jpg", "image/jpeg").json()
    assert (body["width"], body["height"]) == (30, 60)
    upright = open_image(shared.client.get(body["url"]).content).convert("RGB")
    assert upright.size == (30, 60)
    top, bottom = upright.getpixel((15, 10)), upright.getpixel((15, 50))
    assert isinstance(top, tuple) and isinstance(bottom, tuple)
    assert top[0] > 200 and top[2] < 60  # red is on top once upright
    assert bottom[2] > 200 and bottom[0] < 60


def test_cmyk_jpeg_is_stored_as_rgb(shared: LiveApp) -> None:
    body = upload(shared, encoded(Image.new("CMYK", (20, 20), (0, 255, 255, 0)), "JPEG"), "c.jpg", "image/jpeg")
    assert body.status_code == 201, body.text
    stored = open_image(shared.client.get(body.json()["url"]).content)
    assert stored.mode == "RGB"
    pixel = stored.getpixel((10, 10))
    assert isinstance(pixel, tuple) and pixel[0] > 200 and pixel[1] < 60  # cyan 0, magenta+yellow: red


def test_sixteen_bit_png_is_stored_as_8_bit_grey(shared: LiveApp) -> None:
    body = upload(shared, encoded(Image.new("I;16", (16, 16), 40000), "PNG"))
    assert body.status_code == 201, body.text
    stored = open_image(shared.client.get(body.json()["url"]).content)
    assert stored.mode == "L" and stored.getpixel((3, 3)) == 40000 // 256


# Refused -----------------------------------------------------------------------------


def test_wrong_type_with_the_right_extension_is_415(shared: LiveApp) -> None:
    gif = encoded(Image.new("RGB", (10, 10)), "GIF")
    problem(upload(shared, gif, "logo.png", "image/png"), 415, "PNG, JPEG or WebP")
    bmp = encoded(Image.new("RGB", (10, 10)), "BMP")
    problem(upload(shared, bmp, "logo.jpg", "image/jpeg"), 415)
    problem(upload(shared, b"<svg xmlns='http://www.w3.org/2000/svg'/>", "logo.webp", "image/webp"), 415)
    problem(upload(shared, b"%!PS-Adobe-3.0 EPSF-3.0\n", "logo.png"), 415)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_truncated_file_is_422(shared: LiveApp, fmt: str) -> None:
    data = encoded(noise((200, 200)), fmt)
    body = problem(upload(shared, data[: len(data) // 2]), 422)
    assert body["errors"][0]["pointer"] == "/file"


def test_decompression_bomb_is_413_before_decoding(shared: LiveApp) -> None:
    # 30000 × 30000 declared, a few bytes of data: decoding would fail (422) or cost 900 MB;
    # the 413 shows the header alone decided.
    problem(upload(shared, png_header_only(30_000, 30_000)), 413, "limits.max_upload_pixels")
    # Past Pillow's own guard too (2 × MAX_IMAGE_PIXELS).
    problem(upload(shared, png_header_only(60_000, 60_000)), 413, "limits.max_upload_pixels")
    # A real, highly compressible bomb: 6000 × 6000 of one colour is a few KB.
    bomb = encoded(Image.new("1", (6000, 6000)), "PNG")
    assert len(bomb) < 50_000
    problem(upload(shared, bomb), 413, "limits.max_upload_pixels")


def test_pixel_limit_from_config(make_live: Any) -> None:
    app = make_live(limits={"max_upload_pixels": 1000})
    problem(upload(app, png_bytes((40, 40))), 413, "1600 pixels", "limits.max_upload_pixels = 1000")
    assert upload(app, png_bytes((30, 30))).status_code == 201


def test_oversize_file_is_413(make_live: Any) -> None:
    app = make_live(limits={"max_upload_bytes": 20_000})
    big = encoded(noise((200, 200)), "PNG")
    assert len(big) > 20_000
    body = problem(upload(app, big), 413, "limits.max_upload_bytes = 20000")
    assert body["errors"][0]["pointer"] == "/file"


def test_animated_images_are_refused_clearly(shared: LiveApp) -> None:
    frames = [Image.new("RGB", (20, 20), c) for c in ((255, 0, 0), (0, 0, 255))]
    for fmt in ("PNG", "WEBP"):
        data = encoded(frames[0], fmt, save_all=True, append_images=frames[1:])
        problem(upload(shared, data), 422, "animated", "2 frames")


def test_empty_or_missing_file_is_422(shared: LiveApp) -> None:
    problem(upload(shared, b""), 422, "empty")
    response = shared.client.post("/api/v1/assets", data={"other": "x"}, files={"nope": ("a.png", b"x")})
    problem(response, 422, "field `file`")


def test_unknown_asset_is_404(shared: LiveApp) -> None:
    problem(shared.client.get("/api/v1/assets/does-not-exist"), 404)


# Designs that cannot render fail with a message a person can act on -------------------


def test_design_whose_asset_file_is_gone_fails_with_an_actionable_message(live: LiveApp) -> None:
    asset = upload(live, png_bytes((50, 50))).json()
    for path in live.rt.files.assets.rglob("*.png"):
        path.unlink()
    design = live.design(layers=[{"type": "image", "asset_id": asset["id"], "width": 0.5}])
    done = live.wait(design["id"])
    assert done["status"] == "failed", done
    assert done["error"].startswith("layer 0: ") and "upload the image again" in done["error"]
    assert "Traceback" not in done["error"] and "\n" not in done["error"]


def test_design_whose_text_fits_nowhere_fails_with_an_actionable_message(live: LiveApp) -> None:
    design = live.design(layers=[{"type": "text", "text": "W" * 300, "size": 1.0}])
    done = live.wait(design["id"])
    assert done["status"] == "failed", done
    assert "does not fit" in done["error"] and "lower size" in done["error"]


def test_uploaded_image_appears_in_the_preview(live: LiveApp) -> None:
    asset = upload(live, png_bytes((100, 100), (0, 200, 0, 255))).json()
    design = live.design(
        product="poster",
        color="#ffffff",
        layers=[{"type": "image", "asset_id": asset["id"], "x": 0.5, "y": 0.5, "width": 0.4}],
    )
    done = live.wait(design["id"])
    assert done["status"] == "published", done
    preview = open_image(live.client.get(done["preview_url"]).content).convert("RGB")
    pixel = preview.getpixel((600, 800))  # the poster's print area centre
    assert isinstance(pixel, tuple) and pixel[1] > 180 and pixel[0] < 40
