"""Pure rendering: a design spec and its product in, images out. No database, no queue."""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from PIL import Image

from customify.render.layers import LayerError, draw_layer
from customify.render.products import PRODUCTS, Product, product_base

__all__ = ["PRODUCTS", "RenderError", "Rendered", "encode", "render_design"]


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
    for index, layer in enumerate(spec.get("layers", [])):
        if check is not None:
            check(f"layer {index}")
        try:
            draw_layer(area, layer, assets)
        except RenderError:
            raise
        except KeyError as exc:
            raise RenderError(f"layer {index}: image asset {exc.args[0]} is missing; upload it again "
                              "and update the layer's asset_id") from None
        except LayerError as exc:
            raise RenderError(f"layer {index}: {exc}") from None
    # The print area clips every layer: pasting an area-sized image cannot spill over.
    canvas.paste(area, product.print_area[:2], area)
    return canvas


def encode(image: Image.Image, product: Product, png_level: int, thumb_size: int, thumb_format: str) -> Rendered:
    """PNG preview + thumbnail bytes (encoder settings chosen in bench/render_bench.py)."""
    out = io.BytesIO()
    image.save(out, "PNG", compress_level=png_level)
    thumb = image.copy()
    thumb.thumbnail((thumb_size, thumb_size), Image.Resampling.BILINEAR, reducing_gap=2.0)
    tout = io.BytesIO()
    if thumb_format == "webp":
        thumb.save(tout, "WEBP", quality=82, method=2)
    else:
        thumb.save(tout, "JPEG", quality=85)
    return Rendered(out.getvalue(), tout.getvalue(), thumb_format, image.size)

