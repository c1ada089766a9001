"""The design spec the renderer draws: layer types, their bounds and allowed values, colours.

The renderer owns its input; the API's schemas (customify.schemas) import these
types, so the OpenAPI document, the server's validation and the renderer share
one source. This module imports neither Pillow nor anything else heavy: the
dashboard loads it through customify.schemas. The render registries (products,
fonts, anchors) are keyed by the Literal types below; tests/test_render.py
checks that each registry and its type hold the same names.
"""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta, Struct


def full_match(pattern: str) -> str:
    """A pattern that must match the whole string, in Python (msgspec) and ECMA-262 (OpenAPI clients).

    msgspec applies patterns with `re.search`, and Python's `$` also matches before
    a final newline ("#1e3a8a\\n" passed `^…$`); `(?!\\n)` closes that gap in both dialects.
    """
    return f"^(?:{pattern})$(?!\\n)"


Color = Annotated[
    str,
    Meta(
        pattern=full_match(r"#[0-9a-fA-F]{6}(?:[0-9a-fA-F]{2})?"),
        description="#rrggbb or #rrggbbaa",
        examples=["#1e3a8a"],
    ),
]
Fraction = Annotated[float, Meta(ge=0.0, le=1.0, description="fraction of the print area, 0…1")]
Extent = Annotated[float, Meta(gt=0.0, le=1.0, description="fraction of the print area, above 0, at most 1")]
Rotation = Annotated[float, Meta(ge=-360.0, le=360.0, description="degrees, clockwise")]
TextSize = Annotated[float, Meta(gt=0.0, le=1.0, description="text height as a fraction of the print area's")]
StrokeWidth = Annotated[float, Meta(ge=0.0, le=0.5, description="fraction of the print area's shorter side")]

ProductKey = Literal["tshirt", "hoodie", "mug", "poster", "tote", "phone_case"]
FontFamily = Literal["DejaVu Sans", "DejaVu Serif", "DejaVu Sans Mono", "DejaVu Sans Condensed"]
Weight = Literal["regular", "bold"]
Anchor = Literal["top_left", "top", "top_right", "left", "center", "right", "bottom_left", "bottom", "bottom_right"]
Align = Literal["left", "center", "right"]
ShapeKind = Literal["rectangle", "rounded_rectangle", "ellipse", "line"]


class TextLayer(Struct, tag_field="type", tag="text", forbid_unknown_fields=True, omit_defaults=False):
    text: Annotated[str, Meta(min_length=1)]
    font: FontFamily = "DejaVu Sans"
    weight: Weight = "regular"
    size: TextSize = 0.1
    color: Color = "#000000"
    x: Fraction = 0.5
    y: Fraction = 0.5
    anchor: Anchor = "center"
    align: Align = "center"
    rotation: Rotation = 0.0
    width: Extent | None = None


class ImageLayer(Struct, tag_field="type", tag="image", forbid_unknown_fields=True):
    asset_id: Annotated[str, Meta(min_length=1)]
    x: Fraction = 0.5
    y: Fraction = 0.5
    width: Extent = 0.5
    anchor: Anchor = "center"
    rotation: Rotation = 0.0
    opacity: Fraction = 1.0


class ShapeLayer(Struct, tag_field="type", tag="shape", forbid_unknown_fields=True):
    shape: ShapeKind
    x: Fraction = 0.5
    y: Fraction = 0.5
    width: Extent = 0.2
    height: Extent = 0.2
    x2: Fraction | None = None
    y2: Fraction | None = None
    anchor: Anchor = "center"
    rotation: Rotation = 0.0
    radius: Fraction = 0.2
    fill: Color | None = None
    stroke: Color | None = None
    stroke_width: StrokeWidth = 0.0


Layer = TextLayer | ImageLayer | ShapeLayer


def parse_color(value: str) -> tuple[int, int, int, int]:
    """#rrggbb or #rrggbbaa → RGBA tuple."""
    raw = value.lstrip("#")
    rgba = [int(raw[i : i + 2], 16) for i in range(0, len(raw), 2)]
    return (rgba[0], rgba[1], rgba[2], rgba[3] if len(rgba) == 4 else 255)
