"""A design spec drawn onto its product, and the preview and thumbnail encoded."""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
from PIL import Image

from customify.render.layers import LayerError, draw_layer
from customify.render.png import Static, encode_png
from customify.render.products import PRODUCTS, Product, light_print, product_base
from customify.render.spec import Layer

BASE_INFO = "customify.base"  # Image.info key: (product key, colour) of the base the image was drawn on
WEBP_METHOD = 2  # libwebp effort 0-6: 2 measured near 4's size at a third of its time


class RenderError(Exception):
    """The spec cannot be rendered; the message tells a person what to change."""


@dataclass(frozen=True)
class Rendered:
    preview: bytes  # PNG at the product's canvas size
    thumbnail: bytes  # WebP or JPEG, `thumbnail_size` on the long side
    thumbnail_format: str
    size: tuple[int, int]


def render_design(
    spec: Mapping[str, Any],
    assets: Mapping[str, Image.Image],
    check: Callable[[str], None] | None = None,
) -> Image.Image:
    """Draw the design onto its product: RGB at canvas size.

    `assets` maps asset ids to decoded images; `check(stage)` is called between
    stages so a caller can stop a render that overran its time.
    """
    product = PRODUCTS.get(spec["product"])
    if product is None:
        raise RenderError(f"unknown product {spec['product']!r}; choose one of {', '.join(PRODUCTS)}")
    canvas = product_base(product.key, spec["color"]).copy()
    area = Image.new("RGBA", product.print_size, (0, 0, 0, 0))
    draw_layers(area, spec.get("layers", []), assets, check)
    if product.print_lit:
        area = light_print(product, area)
    # The print area clips every layer: pasting an area-sized image cannot spill over.
    canvas.paste(area, product.print_area[:2], area)
    # Rows above and below the print area are the product's base image: encode() reuses their PNG bytes.
    canvas.info[BASE_INFO] = (product.key, spec["color"])
    return canvas


def draw_layers(
    area: Image.Image, layers: Any, assets: Mapping[str, Image.Image], check: Callable[[str], None] | None = None
) -> None:
    """Draw the layers in order into the print area (any size: coordinates are fractions of it)."""
    for index, layer in enumerate(layers):
        if check is not None:
            check(f"layer {index}")
        try:
            # Rows hold the spec as JSON: typed once here with the renderer's own spec, whose defaults
            # fill what an older row leaves out. A struct (from a typed caller) is drawn as is.
            typed = layer if isinstance(layer, Layer) else msgspec.convert(layer, Layer)
        except msgspec.ValidationError as exc:
            raise RenderError(f"layer {index}: {exc}; check it against GET /schema") from None
        try:
            draw_layer(area, typed, assets)
        except LayerError as exc:
            raise RenderError(f"layer {index}: {exc}") from None
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:  # RuntimeError: raqm cannot lay the text out
            # A spec that slipped past validation (an older row, a hand-written spec): the same
            # input fails the same way again, so fail the design now instead of retrying.
            raise RenderError(
                f"layer {index} cannot be drawn ({type(exc).__name__}: {exc}); check its fields against GET /schema"
            ) from None


def encode(image: Image.Image, product: Product, png_level: int, thumb_size: int, thumb_format: str) -> Rendered:
    """PNG preview + thumbnail bytes (encoder settings chosen by measurement: bench/render_bench.py)."""
    return Rendered(
        preview_png(image, product, png_level),
        encode_thumbnail(image, thumb_size, thumb_format),
        thumb_format,
        image.size,
    )


def preview_png(image: Image.Image, product: Product, level: int) -> bytes:
    """The preview PNG; rows outside the print area reuse their cached bytes when the image was
    drawn by render_design on this product's base."""
    base = image.info.get(BASE_INFO)
    static = None
    if base is not None and base[0] == product.key and image.size == product.canvas:
        static = Static(base, product.print_area[1], product.print_area[3])
    return encode_png(image, level, static=static)


def thumbnail(image: Image.Image, size: int) -> Image.Image:
    """`size` px on the long side: a box reduction by a whole factor (cheap, exact), then Lanczos."""
    factor = max(1, max(image.size) // size)
    small = image.reduce(factor) if factor > 1 else image.copy()
    small.thumbnail((size, size), Image.Resampling.LANCZOS, reducing_gap=None)
    return small


def encode_thumbnail(image: Image.Image, size: int, fmt: str) -> bytes:
    out = io.BytesIO()
    small = thumbnail(image, size)
    if fmt == "webp":
        small.save(out, "WEBP", quality=82, method=WEBP_METHOD)
    else:
        small.convert("RGB").save(out, "JPEG", quality=85)
    return out.getvalue()
