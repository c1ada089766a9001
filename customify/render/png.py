"""A fast, lossless PNG writer for previews.

Pillow's PNG encoder tries every filter on every row and keeps the best; on a
1200 px preview that search costs more than the compression itself (see
bench/RESULTS.md). Previews are flat colour and smooth shading, where one
filter for every row does as well: "Up" (each byte minus the byte above) is
computed for the whole image in one C call (`ImageChops.subtract_modulo`
against the image shifted down a row), then zlib from the standard library
compresses it. The output is a plain 8-bit RGB or RGBA PNG any decoder reads.
"""

from __future__ import annotations

import struct
import zlib

from PIL import Image, ImageChops

SIGNATURE = b"\x89PNG\r\n\x1a\n"
COLOR_TYPES = {"RGB": 2, "RGBA": 6}
FILTER_UP = b"\x02"


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def encode_png(image: Image.Image, level: int = 1, strategy: int = zlib.Z_DEFAULT_STRATEGY) -> bytes:
    """PNG bytes of an RGB or RGBA image: the Up filter on every row, zlib at `level` (0-9)."""
    if image.mode not in COLOR_TYPES:
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    width, height = image.size
    stride = width * len(image.getbands())
    # Each row minus the row above; offset() wraps the last row to the top, so row 0 is
    # replaced by its raw bytes (the row "above" the first one is zeros).
    filtered = ImageChops.subtract_modulo(image, ImageChops.offset(image, 0, 1)).tobytes()
    first = image.crop((0, 0, width, 1)).tobytes()
    rows = b"".join([FILTER_UP, first, *(FILTER_UP + filtered[i:i + stride]
                                       for i in range(stride, len(filtered), stride))])
    header = struct.pack(">IIBBBBB", width, height, 8, COLOR_TYPES[image.mode], 0, 0, 0)
    return (SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", _deflate(rows, level, strategy))
            + _chunk(b"IEND", b""))


def _deflate(data: bytes, level: int, strategy: int) -> bytes:
    compressor = zlib.compressobj(level, zlib.DEFLATED, 15, 9, strategy)
    return compressor.compress(data) + compressor.flush()
