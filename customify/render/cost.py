"""What a render will cost, estimated from the spec before it is queued (in megapixels processed).

A design is refused at create when its estimate passes `limits.max_render_megapixels`, instead of
holding a worker for over a minute (rotated long text layers; bench/RESULTS.md, "Figures quoted in the code"). The
estimate counts the pixels each layer makes and moves: a text block's glyph area, an image's
source and placed pixels, a shape's supersampled box; a rotation resamples its layer again.
It over-states rather than under-states; bench/RESULTS.md relates it to seconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from customify.render.layers import MAX_TEXT_SCALE
from customify.render.products import PRODUCTS

GLYPH_WIDTH = 0.6  # average advance of a character, in ems (DejaVu Sans is ~0.55-0.65)
LINE_HEIGHT = 1.2
ROTATION_FACTOR = 3.0  # a rotated layer is made, expanded (up to 2× its area), resampled bicubic, placed
SOURCE_WEIGHT = 0.25  # per pixel of an uploaded image (decoded once, scaled)
SHAPE_WEIGHT = 4.0  # a shape is drawn supersampled (SS² pixels per pixel), cheaply per pixel


def layer_megapixels(
    layer: Mapping[str, Any], print_size: tuple[int, int], asset_sizes: Mapping[str, tuple[int, int]]
) -> float:
    """The estimated pixels one layer costs, in millions."""
    w, h = print_size
    rotated = bool(float(layer.get("rotation", 0) or 0) % 360)
    kind = layer.get("type")
    if kind == "text":
        size_px = float(layer.get("size", 0.1) or 0.1) * h
        block = len(str(layer.get("text", ""))) * GLYPH_WIDTH * size_px * LINE_HEIGHT * size_px
        pixels = min(block, MAX_TEXT_SCALE**2 * w * h)
    elif kind == "image":
        source_w, source_h = asset_sizes.get(str(layer.get("asset_id")), (w, h))
        placed_w = float(layer.get("width", 0.5) or 0.5) * w
        placed = placed_w * placed_w * source_h / max(1, source_w)
        # Decoded once and cached; scaling reads each source pixel once: cheap per pixel.
        return (SOURCE_WEIGHT * source_w * source_h + placed * (ROTATION_FACTOR if rotated else 1.0)) / 1e6
    elif kind == "shape":
        if layer.get("shape") == "line":
            pixels = w * h * SHAPE_WEIGHT * 0.1
        else:
            pixels = float(layer.get("width", 0.2) or 0.2) * w * float(layer.get("height", 0.2) or 0.2) * h
            pixels *= SHAPE_WEIGHT
    else:
        pixels = float(w * h)
    return pixels * (ROTATION_FACTOR if rotated else 1.0) / 1e6


def estimate_megapixels(
    product: str, layers: list[Mapping[str, Any]], asset_sizes: Mapping[str, tuple[int, int]] | None = None
) -> float:
    """The estimated cost of a whole render, in megapixels (the product's own drawing included)."""
    template = PRODUCTS.get(product)
    if template is None:
        return 0.0
    base = template.canvas[0] * template.canvas[1] * 4 / 1e6  # silhouette, shading, encode
    return base + sum(layer_megapixels(layer, template.print_size, asset_sizes or {}) for layer in layers)
