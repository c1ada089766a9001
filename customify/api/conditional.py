"""Serving a stored file the way HTTP clients expect (RFC 9110): conditional requests, byte ranges,
and headers that keep a browser from treating an image as anything else."""

from __future__ import annotations

import re
from typing import Any

from litestar import Request, Response

from customify.api.errors import Problem

# On every file response: no content sniffing (an upload with HTML appended stays an image), and
# if a browser opens one as a document anyway, it runs nothing and loads nothing.
FILE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; sandbox",
    "Accept-Ranges": "bytes",
}
_RANGE = re.compile(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", re.ASCII)


def _opaque(tag: str) -> str:
    """The opaque part of an entity tag: weak comparison ignores the W/ prefix."""
    tag = tag.strip()
    return tag[2:] if tag.startswith("W/") else tag


def none_match(header: str | None, etag: str) -> bool:
    """If-None-Match holds a tag matching `etag` (weak comparison, RFC 9110 13.1.2): `*`, a list, W/ tags."""
    if header is None:
        return False
    if header.strip() == "*":
        return True
    return any(_opaque(tag) == _opaque(etag) for tag in header.split(",") if tag.strip())


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The one byte range asked for, as (first, last) inclusive; None to send the whole file.

    A syntax this server does not support (several ranges, another unit) is ignored, as RFC 9110
    allows; a well-formed range that lies outside the file is a 416.
    """
    if header is None:
        return None
    match = _RANGE.fullmatch(header)
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # the last N bytes
        length = int(last)
        if length == 0:
            raise _unsatisfiable(size)
        return max(0, size - length), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if last and int(last) < start:
        return None  # invalid: ignored
    if start >= size:
        raise _unsatisfiable(size)
    return start, end


def _unsatisfiable(size: int) -> Problem:
    return Problem(
        416,
        "Range not satisfiable",
        f"the file has {size} bytes; ask for a range inside it",
        headers={"Content-Range": f"bytes */{size}", **FILE_HEADERS},
    )


def not_modified(request: Request[Any, Any, Any], etag: str, cache_control: str) -> Response[bytes] | None:
    """The 304 for a request whose If-None-Match holds `etag` (checked before the file is read)."""
    if none_match(request.headers.get("if-none-match"), etag):
        return Response(b"", status_code=304, headers={"ETag": etag, "Cache-Control": cache_control, **FILE_HEADERS})
    return None


def file_response(
    request: Request[Any, Any, Any], content: bytes, media_type: str, etag: str, cache_control: str
) -> Response[bytes]:
    """200, 206 (one range), 304 (If-None-Match) or 416, with the file headers; HEAD gets the same headers."""
    headers = {"ETag": etag, "Cache-Control": cache_control, **FILE_HEADERS}
    unchanged = not_modified(request, etag, cache_control)
    if unchanged is not None:
        return unchanged
    size = len(content)
    if_range = request.headers.get("if-range")
    wanted = byte_range(request.headers.get("range"), size) if if_range in (None, etag) else None
    if wanted is not None:
        first, last = wanted
        return Response(
            content[first : last + 1],
            status_code=206,
            media_type=media_type,
            headers={**headers, "Content-Range": f"bytes {first}-{last}/{size}"},
        )
    return Response(content, media_type=media_type, headers=headers)
