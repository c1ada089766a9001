"""Pure rendering: a design spec and its product in, images out. No database, no queue.

The names below load on first use, so importing `customify.render.spec` (the
spec types the API and the dashboard share) does not import Pillow.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from customify.render.compose import (
        BASE_INFO,
        WEBP_METHOD,
        Rendered,
        RenderError,
        draw_layers,
        encode,
        encode_thumbnail,
        preview_png,
        render_design,
        thumbnail,
    )
    from customify.render.products import PRODUCTS

__all__ = [
    "BASE_INFO",
    "PRODUCTS",
    "WEBP_METHOD",
    "RenderError",
    "Rendered",
    "draw_layers",
    "encode",
    "encode_thumbnail",
    "preview_png",
    "render_design",
    "thumbnail",
]


def __getattr__(name: str) -> Any:
    if name == "PRODUCTS":
        return importlib.import_module("customify.render.products").PRODUCTS
    if name in __all__:
        return getattr(importlib.import_module("customify.render.compose"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
