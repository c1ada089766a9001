"""Uploads: PNG, JPEG or WebP, decided by decoding; size and pixel limits before decoding costs memory."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import io
import logging
from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State, UploadFile
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromPath
from litestar.status_codes import HTTP_201_CREATED
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from customify import records, schemas
from customify.api.conditional import file_response, not_modified
from customify.api.designs import read, write
from customify.api.errors import Problem, field_error
from customify.config import Limits
from customify.runtime import Runtime
from customify.storage import asset_key

log = logging.getLogger("customify.api")
FORMATS = ("PNG", "JPEG", "WEBP")
ASSET_CACHE = "private, max-age=86400"
MEDIA = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}


def decode_upload(raw: bytes, limits: Limits) -> tuple[bytes, str, int, int]:
    """Check and normalise an upload → (bytes to store, format, width, height); raises Problem.

    The header is read first and the pixel limit checked before any pixel is
    decoded (a decompression bomb costs no memory); then the whole image is
    decoded, so a truncated or corrupt file is refused here and not in a worker.
    """
    if len(raw) > limits.max_upload_bytes:
        raise Problem(
            413,
            "Payload too large",
            f"{len(raw)} bytes exceed limits.max_upload_bytes = {limits.max_upload_bytes}",
            [field_error("/file", "too large")],
        )
    if not raw:
        raise Problem(422, "Validation failed", "the file is empty", [field_error("/file", "empty file")])
    try:
        img = Image.open(io.BytesIO(raw), formats=FORMATS)
        width, height = img.size
        if width * height > limits.max_upload_pixels:
            raise _too_many_pixels(f"{width}×{height} = {width * height} pixels", limits)
        frames = int(getattr(img, "n_frames", 1))
        if frames > 1:
            raise Problem(
                422,
                "Validation failed",
                f"animated images are not supported ({frames} frames); upload a still PNG, JPEG or WebP",
                [field_error("/file", "animated image")],
            )
        fmt = str(img.format)
        img.load()
    except Problem:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # Pillow's own guard (the warning is an error where warnings are errors, as in the tests).
        raise _too_many_pixels("the image declares more pixels than Pillow allows", limits) from None
    except UnidentifiedImageError:
        raise Problem(
            415,
            "Unsupported media type",
            "not a PNG, JPEG or WebP image (checked by decoding, not by name or declared type)",
            [field_error("/file", "unsupported format")],
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise Problem(
            422,
            "Validation failed",
            f"the image could not be decoded ({exc}); it may be truncated or corrupt: export it again",
            [field_error("/file", "corrupt or truncated image")],
        ) from None
    # Store what renders use as is; anything else (EXIF-rotated, CMYK, 16-bit) as a plain PNG, so the
    # renderer never guesses an orientation or a colour model.
    orientation = img.getexif().get(ExifTags.Base.Orientation, 1)
    if orientation in range(2, 9) or img.mode not in RENDERABLE_MODES:
        normal = _normalise(img)
        out = io.BytesIO()
        normal.save(out, "PNG", compress_level=3)
        return out.getvalue(), "PNG", normal.width, normal.height
    return reencode(img, fmt), fmt, width, height


def reencode(img: Image.Image, fmt: str) -> bytes:
    """The decoded pixels, encoded again: never the uploaded bytes, which may carry EXIF and GPS
    metadata (a privacy leak) or anything appended after the image (HTML served back as-is)."""
    out = io.BytesIO()
    icc = img.info.get("icc_profile")  # colour, not identity: kept
    if fmt == "JPEG":
        img.save(out, "JPEG", quality="keep", subsampling="keep", icc_profile=icc)  # its own tables
    elif fmt == "WEBP":
        img.save(out, "WEBP", quality=95, icc_profile=icc)
    else:
        img.save(out, "PNG", compress_level=3, icc_profile=icc)
    return out.getvalue()


RENDERABLE_MODES = ("RGB", "RGBA", "L", "LA", "P", "1")


def _too_many_pixels(what: str, limits: Limits) -> Problem:
    return Problem(
        413,
        "Payload too large",
        f"{what} exceed limits.max_upload_pixels = {limits.max_upload_pixels}; upload a smaller image",
        [field_error("/file", "too many pixels")],
    )


def _normalise(img: Image.Image) -> Image.Image:
    """Upright (EXIF orientation applied) and in RGB, RGBA or L."""
    upright = ImageOps.exif_transpose(img)
    if upright.mode in ("I;16", "I;16B", "I;16L", "I"):
        return upright.convert("I").point(lambda v: v * (1 / 256)).convert("L")  # 16-bit grey → 8-bit
    if upright.mode in RENDERABLE_MODES:
        return upright
    has_alpha = "A" in upright.getbands() or "transparency" in upright.info
    return upright.convert("RGBA" if has_alpha else "RGB")  # CMYK, YCbCr, LAB …


def asset_out(asset: Any, base_url: str) -> schemas.AssetOut:
    return schemas.AssetOut(
        id=asset.id,
        sha256=asset.sha256,
        format=asset.format.lower(),
        width=asset.width,
        height=asset.height,
        bytes=asset.bytes,
        url=f"{base_url}/api/v1/assets/{asset.id}",
    )


async def save_upload(rt: Runtime, user_id: str, raw: bytes, filename: str | None) -> Any:
    """Check and store an upload (by its SHA-256), record the asset: the API's upload and the web's create form."""
    stored, fmt, width, height = await asyncio.to_thread(decode_upload, raw, rt.config.limits)
    sha = hashlib.sha256(raw).hexdigest()
    key = asset_key(sha, fmt)
    try:
        if not await asyncio.to_thread(rt.files.exists, key):
            await asyncio.to_thread(rt.files.put, key, stored)
    except ConnectionError:
        raise Problem(503, "Storage unavailable", "the object store does not answer; retry in a moment") from None
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        log.warning("upload refused: no space left on the disk holding %s", rt.files.assets)
        raise Problem(
            507,
            "Insufficient storage",
            f"the disk holding {rt.files.assets} is full "
            "(no space left); free space there or move data_dir, then upload again",
        ) from None
    return await write(rt, records.create_asset, user_id, sha, fmt, width, height, len(stored), filename)


class AssetController(Controller):
    path = "/api/v1/assets"
    tags = ["assets"]

    @post("/", status_code=HTTP_201_CREATED, summary="Upload an image (multipart field `file`)")
    async def upload(
        self,
        data: Annotated[dict[str, Any], Body(media_type=RequestEncodingType.MULTI_PART)],
        state: State,
        user_id: NamedDependency[str],
    ) -> Response[schemas.AssetOut]:
        rt: Runtime = state.rt
        upload = data.get("file")
        if not isinstance(upload, UploadFile):
            raise Problem(
                422,
                "Validation failed",
                "send the image as multipart/form-data field `file`",
                [field_error("/file", "missing")],
            )
        asset = await save_upload(rt, user_id, await upload.read(), upload.filename)
        return Response(asset_out(asset, rt.config.base_url), status_code=HTTP_201_CREATED)

    @get("/{asset_id:str}", summary="The uploaded image", media_type="image/png")
    async def download(
        self, asset_id: FromPath[str], request: Request[Any, Any, Any], state: State, user_id: NamedDependency[str]
    ) -> Response[bytes]:
        rt: Runtime = state.rt
        asset = await read(rt, records.get_asset, user_id, asset_id)
        if asset is None:
            raise Problem(404, "Not found", f"no asset {asset_id!r}")
        etag = f'"{asset.sha256[:16]}"'  # content-addressed: the same bytes for ever
        unchanged = not_modified(request, etag, ASSET_CACHE)
        if unchanged is not None:
            return unchanged
        try:
            content = await asyncio.to_thread(rt.files.read, asset_key(asset.sha256, asset.format))
        except FileNotFoundError:
            raise Problem(404, "Not found", f"asset {asset_id} has no file any more") from None
        except ConnectionError:
            raise Problem(503, "Storage unavailable", "the object store does not answer; retry in a moment") from None
        return file_response(
            request, content, MEDIA.get(asset.format.upper(), "application/octet-stream"), etag, ASSET_CACHE
        )
