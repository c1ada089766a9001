"""A fast, lossless PNG writer for previews.

Pillow's PNG encoder tries every filter on every row and keeps the best; on a
1200 px preview that search costs more than the compression itself (see
bench/RESULTS.md). Previews are flat colour and smooth shading, where one
filter for every row does as well: "Up" (each byte minus the byte above) is
computed for the whole image in one C call (`ImageChops.subtract_modulo`
against the image shifted down a row), then zlib from the standard library
compresses it. The output is a plain 8-bit RGB or RGBA PNG any decoder reads.

Rows outside the print area are the same in every render of one product and
colour. Given `static` (the band of rows that changes, and a cache key), the
rows above and below it are compressed once, as independent deflate
segments (each starts with an unfiltered row and a fresh history), and only
the band is compressed per render.
"""

from __future__ import annotations

import struct
import threading
import zlib
from collections import OrderedDict
from dataclasses import dataclass

from PIL import Image, ImageChops

SIGNATURE = b"\x89PNG\r\n\x1a\n"
COLOR_TYPES = {"RGB": 2, "RGBA": 6}
ADLER_BASE = 65521
ZLIB_HEADER = b"\x78\x01"  # deflate, 32 KiB window; the level bits are only a hint to readers


@dataclass(frozen=True)
class Static:
    """Rows [top, bottom) differ per render; the others are the same for every image with this key."""

    key: object
    top: int
    bottom: int


@dataclass(frozen=True)
class _Segment:
    deflated: bytes  # raw deflate, ending on a byte boundary (full flush) or final
    adler: int  # adler32 of its uncompressed scanlines
    length: int  # bytes of uncompressed scanlines


_cache: OrderedDict[tuple[object, ...], tuple[_Segment | None, _Segment | None]] = OrderedDict()
_cache_lock = threading.Lock()
CACHE_SIZE = 32


def encode_png(
    image: Image.Image, level: int = 1, strategy: int = zlib.Z_DEFAULT_STRATEGY, static: Static | None = None
) -> bytes:
    """PNG bytes of an RGB or RGBA image: the Up filter on every row, zlib at `level` (0-9)."""
    if image.mode not in COLOR_TYPES:
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    width, height = image.size
    segments: list[_Segment | None]
    if static is None or not 0 <= static.top < static.bottom <= height:
        segments = [_segment(image, level, strategy, final=True)]
    else:
        key = (static.key, static.top, static.bottom, image.size, image.mode, level, strategy)
        with _cache_lock:
            cached = _cache.get(key)
            if cached is not None:
                _cache.move_to_end(key)
        if cached is None:
            above = _segment(image.crop((0, 0, width, static.top)), level, strategy, final=False)
            below = _segment(image.crop((0, static.bottom, width, height)), level, strategy, final=True)
            cached = (above, below)
            with _cache_lock:
                _cache[key] = cached
                while len(_cache) > CACHE_SIZE:
                    _cache.popitem(last=False)
        above, below = cached
        band = _segment(image.crop((0, static.top, width, static.bottom)), level, strategy, final=below is None)
        segments = [above, band, below]
    adler, deflated = 1, []
    for segment in segments:
        if segment is None:
            continue
        adler = adler32_combine(adler, segment.adler, segment.length)
        deflated.append(segment.deflated)
    idat = b"".join([ZLIB_HEADER, *deflated, struct.pack(">I", adler)])
    header = struct.pack(">IIBBBBB", width, height, 8, COLOR_TYPES[image.mode], 0, 0, 0)
    return SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _segment(part: Image.Image, level: int, strategy: int, final: bool) -> _Segment | None:
    """Filtered scanlines of `part` (first row unfiltered, the rest Up), deflated on their own."""
    width, height = part.size
    if height == 0:
        return None
    stride = width * len(part.getbands())
    # Each row minus the row above; offset() wraps the last row to the top, so row 0 is
    # replaced by its raw bytes with filter type 0: the segment depends on nothing before it.
    filtered = ImageChops.subtract_modulo(part, ImageChops.offset(part, 0, 1)).tobytes()
    first = part.crop((0, 0, width, 1)).tobytes()
    rows = b"".join(
        [b"\x00", first, *(b"\x02" + filtered[i : i + stride] for i in range(stride, len(filtered), stride))]
    )
    compressor = zlib.compressobj(level, zlib.DEFLATED, -15, 9, strategy)
    deflated = compressor.compress(rows) + compressor.flush(zlib.Z_FINISH if final else zlib.Z_FULL_FLUSH)
    return _Segment(deflated, zlib.adler32(rows), len(rows))


def adler32_combine(adler1: int, adler2: int, length2: int) -> int:
    """adler32 of A + B from adler32(A), adler32(B) and len(B) (zlib's adler32_combine)."""
    rem = length2 % ADLER_BASE
    sum1 = adler1 & 0xFFFF
    sum2 = (rem * sum1) % ADLER_BASE
    sum1 += (adler2 & 0xFFFF) + ADLER_BASE - 1
    sum2 += ((adler1 >> 16) & 0xFFFF) + ((adler2 >> 16) & 0xFFFF) + ADLER_BASE - rem
    sum1 %= ADLER_BASE
    sum2 %= ADLER_BASE
    return sum1 | (sum2 << 16)


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))
