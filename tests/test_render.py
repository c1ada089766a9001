"""The renderer, called directly: pixel probes at known places, compared with a tolerance.

On a failed probe the rendered image is saved next to the test's tmp_path (as
Pillow's own tests do) and the message names the file, so it can be looked at.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import msgspec
import pytest
from PIL import Image, ImageChops

from customify.render import RenderError, encode, render_design, thumbnail
from customify.render.fonts import FONTS, WEIGHTS, load_font
from customify.render.layers import ANCHORS
from customify.render.png import encode_png
from customify.render.products import BACKGROUND, PRODUCTS, lighting
from customify.render.spec import Anchor, FontFamily, ProductKey, TextLayer, Weight, full_match, parse_color
from tests.conftest import serve

WHITE, RED, BLUE, GREEN = (255, 255, 255), (220, 20, 30), (30, 58, 138), (0, 160, 60)


def spec(product: str = "poster", color: str = "#ffffff", *layers: dict[str, Any]) -> dict[str, Any]:
    return {"name": "t", "product": product, "color": color, "layers": list(layers)}


def to_canvas(product: str, fx: float, fy: float) -> tuple[int, int]:
    """A point given in fractions of the print area → canvas pixels."""
    left, top, right, bottom = PRODUCTS[product].print_area
    return round(left + fx * (right - left)), round(top + fy * (bottom - top))


class Probe:
    """Pixel assertions that save the image on failure."""

    def __init__(self, image: Image.Image, out: Path, name: str) -> None:
        self.image, self.out, self.name = image.convert("RGB"), out, name

    def fail(self, message: str) -> None:
        path = self.out / f"{self.name}.png"
        self.image.save(path)
        pytest.fail(f"{message}; the image is saved at {path}")

    def near(self, xy: tuple[int, int], expected: tuple[int, ...], tolerance: int = 12) -> None:
        actual = self.image.getpixel(xy)
        assert isinstance(actual, tuple)
        diff = max(abs(a - e) for a, e in zip(actual, expected[:3], strict=True))
        if diff > tolerance:
            self.fail(f"pixel {xy} is {actual}, not within {tolerance} of {expected[:3]}")

    def not_near(self, xy: tuple[int, int], other: tuple[int, ...], tolerance: int = 40) -> None:
        actual = self.image.getpixel(xy)
        assert isinstance(actual, tuple)
        if max(abs(a - e) for a, e in zip(actual, other[:3], strict=True)) <= tolerance:
            self.fail(f"pixel {xy} is {actual}, too close to {other[:3]}")

    def count(self, box: tuple[int, int, int, int], color: tuple[int, ...], tolerance: int = 40) -> int:
        pixels = self.image.crop(box).get_flattened_data()
        return sum(1 for px in pixels if max(abs(a - e) for a, e in zip(px, color[:3], strict=True)) <= tolerance)  # type: ignore[arg-type]


@pytest.fixture
def probe(tmp_path: Path, request: pytest.FixtureRequest) -> Any:
    def make(image: Image.Image) -> Probe:
        return Probe(image, tmp_path, request.node.name.replace("/", "_"))

    return make


def solid(color: tuple[int, ...], size: tuple[int, int] = (100, 100), mode: str = "RGBA") -> Image.Image:
    return Image.new(mode, size, color)


def quadrants(size: int = 200) -> Image.Image:
    """Red top-left, green top-right, blue bottom-left, transparent bottom-right."""
    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    half = size // 2
    img.paste((*RED, 255), (0, 0, half, half))
    img.paste((*GREEN, 255), (half, 0, size, half))
    img.paste((*BLUE, 255), (0, half, half, size))
    return img


# Products -------------------------------------------------------------------------


@pytest.mark.parametrize("key", list(PRODUCTS))
def test_every_product_in_every_colour_is_tinted_where_the_product_is(key: str, probe: Any) -> None:
    product = PRODUCTS[key]
    assert max(product.canvas) >= 1200
    for color in product.colors:
        image = render_design(spec(key, color), {})
        assert image.size == product.canvas and image.mode == "RGB"
        p = probe(image)
        rgb = parse_color(color)[:3]
        # The centre of the print area is the product in its colour (shading darkens a little).
        cx, cy = to_canvas(key, 0.5, 0.5)
        actual = p.image.getpixel((cx, cy))
        assert isinstance(actual, tuple)
        if not all(0.72 * c - 6 <= a <= c + 30 for a, c in zip(actual, rgb, strict=True)):
            p.fail(f"{key} in {color}: print-area centre is {actual}, not a shade of {rgb}")
        p.near((3, 3), BACKGROUND, tolerance=2)  # the corner is the backdrop


def test_product_is_shaded_not_flat(probe: Any) -> None:
    """Recognizable at a glance: the silhouette has light and shadow, and a visible edge on white."""
    image = render_design(spec("tshirt", "#ffffff"), {})
    mask = lighting("tshirt").mask
    inside = [
        v for v, m in zip(image.convert("L").get_flattened_data(), mask.get_flattened_data(), strict=True) if m == 255
    ]
    assert max(inside) - min(inside) > 60, "a flat silhouette: no shading"
    # Along the left edge of the body, a darker outline separates white fabric from the backdrop.
    row = [image.convert("L").getpixel((x, 700)) for x in range(220, 280)]
    assert min(row) < 200  # type: ignore[operator]


def test_tshirt_body_has_no_stray_corner_triangle(probe: Any) -> None:
    """The old rotated gradient left a darker wedge at the bottom left of the body."""
    image = render_design(spec("tshirt", "#ffffff"), {})
    p = probe(image)
    a, b = p.image.getpixel((270, 1020)), p.image.getpixel((930, 1020))  # bottom corners of the body
    assert isinstance(a, tuple) and isinstance(b, tuple)
    if abs(sum(a) - sum(b)) > 3 * 25:
        p.fail(f"bottom corners differ too much: {a} vs {b}")


def test_products_render_the_same_every_time() -> None:
    first = render_design(spec("hoodie", "#b91c1c"), {})
    from customify.render.products import _lighting, _product_base

    _lighting.cache_clear()
    _product_base.cache_clear()
    second = render_design(spec("hoodie", "#b91c1c"), {})
    assert ImageChops.difference(first, second).getbbox() is None


# Text -----------------------------------------------------------------------------


def test_text_colour_where_the_spec_puts_it_and_nowhere_else(probe: Any) -> None:
    layer = {"type": "text", "text": "HELLO", "weight": "bold", "size": 0.1, "color": "#dc141e", "x": 0.5, "y": 0.3}
    image = render_design(spec("tshirt", "#ffffff", layer), {})
    p = probe(image)
    cx, cy = to_canvas("tshirt", 0.5, 0.3)
    assert p.count((cx - 120, cy - 40, cx + 120, cy + 40), RED) > 1500
    # Only inside the text's box: nothing red anywhere else on the canvas.
    everywhere = p.count((0, 0, 1200, 1200), RED)
    assert everywhere == p.count((cx - 200, cy - 60, cx + 200, cy + 60), RED)


def test_text_clipped_at_the_print_area_edge(probe: Any) -> None:
    # Big text anchored at the right edge: half of it would spill over.
    layer = {
        "type": "text",
        "text": "OVERFLOW",
        "weight": "bold",
        "size": 0.15,
        "color": "#dc141e",
        "x": 1.0,
        "y": 0.5,
        "anchor": "center",
    }
    image = render_design(spec("poster", "#ffffff", layer), {})
    p = probe(image)
    _, top, right, bottom = PRODUCTS["poster"].print_area
    cy = (top + bottom) // 2
    assert p.count((right - 150, cy - 80, right, cy + 80), RED) > 1000
    if p.count((right, 0, 1200, 1600), RED):
        p.fail("text drawn outside the print area's right edge")


def test_text_alpha_blends(probe: Any) -> None:
    layer = {"type": "text", "text": "█", "size": 0.3, "color": "#00000080", "x": 0.5, "y": 0.5}
    image = render_design(spec("poster", "#ffffff", layer), {})
    p = probe(image)
    base = render_design(spec("poster", "#ffffff"), {}).getpixel(to_canvas("poster", 0.5, 0.5))
    assert isinstance(base, tuple)
    p.near(to_canvas("poster", 0.5, 0.5), tuple(round(c * (1 - 128 / 255)) for c in base), tolerance=4)


def test_text_anchor_and_alignment(probe: Any) -> None:
    def ink(layer: dict[str, Any]) -> tuple[int, int, int, int]:
        image = render_design(spec("poster", "#ffffff", {"type": "text", "color": "#000000", **layer}), {})
        base = render_design(spec("poster", "#ffffff"), {})
        box = ImageChops.difference(image, base).point(lambda v: 255 if v > 60 else 0).getbbox()
        assert box is not None
        return box

    left, top, right, bottom = PRODUCTS["poster"].print_area
    box = ink({"text": "Hi", "x": 0.0, "y": 0.0, "anchor": "top_left", "size": 0.1})
    assert left <= box[0] < left + 30 and top <= box[1] < top + 40
    box = ink({"text": "Hi", "x": 1.0, "y": 1.0, "anchor": "bottom_right", "size": 0.1})
    assert right - 30 < box[2] <= right and bottom - 60 < box[3] <= bottom
    # Multi-line, left-aligned: both lines start at the same x; right-aligned: both end at the same x.
    text = "a long first line\nshort"
    lines_left = [
        ink({"text": line, "x": 0.1, "y": 0.5, "anchor": "left", "size": 0.05})[0] for line in text.split("\n")
    ]
    assert abs(lines_left[0] - lines_left[1]) <= 3
    block = ink({"text": text, "x": 0.9, "y": 0.5, "anchor": "right", "align": "right", "size": 0.05})
    short = ink({"text": "short", "x": 0.9, "y": 0.5, "anchor": "right", "size": 0.05})
    assert abs(block[2] - short[2]) <= 4


def test_text_wraps_to_width(probe: Any) -> None:
    text = "wrap this sentence into several lines please"
    image = render_design(
        spec(
            "poster",
            "#ffffff",
            {"type": "text", "text": text, "size": 0.05, "width": 0.3, "color": "#000000", "x": 0.5, "y": 0.5},
        ),
        {},
    )
    base = render_design(spec("poster", "#ffffff"), {})
    box = ImageChops.difference(image, base).getbbox()
    assert box is not None
    w = PRODUCTS["poster"].print_size[0]
    assert box[2] - box[0] <= 0.3 * w + 2  # never wider than the wrap width
    assert box[3] - box[1] > 3 * 0.05 * PRODUCTS["poster"].print_size[1]  # several lines


def test_text_rotation_moves_pixels(probe: Any) -> None:
    """A tall bar of text rotated 90° clockwise lies horizontally."""
    bar = {
        "type": "text",
        "text": "IIIIIIIIIIIIIIII",
        "weight": "bold",
        "size": 0.05,
        "color": "#000000",
        "x": 0.5,
        "y": 0.5,
    }
    base = render_design(spec("poster", "#ffffff"), {})

    def extent(layer: dict[str, Any]) -> tuple[int, int]:
        box = ImageChops.difference(render_design(spec("poster", "#ffffff", layer), {}), base).getbbox()
        assert box is not None
        return box[2] - box[0], box[3] - box[1]

    w0, h0 = extent(bar)
    w90, h90 = extent({**bar, "rotation": 90})
    assert w0 > 2 * h0 and h90 > 2 * w90
    assert abs(w0 - h90) < 0.1 * w0


def test_every_shipped_font_loads_and_renders() -> None:
    assert len(FONTS) >= 4
    for family, weights in FONTS.items():
        assert set(weights) == set(WEIGHTS)
        for weight in WEIGHTS:
            assert load_font(family, weight, 40).getlength("Customify") > 50


def test_unshipped_font_is_a_render_error() -> None:
    with pytest.raises(RenderError, match=r"layer 0: Invalid enum value '/etc/passwd' - at `\$.font`"):
        render_design(spec("poster", "#ffffff", {"type": "text", "text": "x", "font": "/etc/passwd"}), {})


def test_registries_hold_the_spec_names() -> None:
    """The spec's Literal types (what the API and its OpenAPI document allow) name what the renderer ships."""
    assert set(PRODUCTS) == set(get_args(ProductKey))
    assert set(FONTS) == set(get_args(FontFamily))
    assert set(WEIGHTS) == set(get_args(Weight))
    assert set(ANCHORS) == set(get_args(Anchor))


def test_spec_module_is_light() -> None:
    """The dashboard loads the spec through customify.schemas: no Pillow, nothing of the renderer."""
    code = (
        "import sys, customify.schemas; "
        "print(sorted(m for m in sys.modules if m.startswith(('PIL', 'customify.render.'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['customify.render.spec']"


@pytest.mark.parametrize("color", ["#1e3a8a\n", "#1e3a8a\r", "1e3a8a", "#1e3a8", "#1e3a8a0", " #1e3a8a"])
def test_colour_patterns_match_the_whole_string(color: str) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"type": "text", "text": "x", "color": color}, TextLayer)
    assert re.search(full_match(r"#[0-9a-f]{6}"), color) is None


# Images -----------------------------------------------------------------------------


def test_image_layer_colours_at_their_placed_position(probe: Any) -> None:
    layer = {"type": "image", "asset_id": "q", "x": 0.5, "y": 0.5, "width": 0.5}
    image = render_design(spec("poster", "#ffffff", layer), {"q": quadrants()})
    p = probe(image)
    # The image is 0.5 of the print area wide, square (aspect kept), centred.
    pw = PRODUCTS["poster"].print_size[0]
    half = 0.5 * pw / 2
    cx, cy = to_canvas("poster", 0.5, 0.5)
    q = round(half / 2)
    p.near((cx - q, cy - q), RED)
    p.near((cx + q, cy - q), GREEN)
    p.near((cx - q, cy + q), BLUE)
    p.near((cx + q, cy + q), (255, 255, 255), tolerance=15)  # transparency kept: the paper shows
    # Aspect kept: the image spans `half` above and below the centre, not more.
    p.not_near((cx - q, cy - round(half) - 6), RED)
    p.near((cx - q, cy - round(half) + 6), RED)


def test_image_rotation_moves_quadrants(probe: Any) -> None:
    layer = {"type": "image", "asset_id": "q", "x": 0.5, "y": 0.5, "width": 0.5, "rotation": 90}
    image = render_design(spec("poster", "#ffffff", layer), {"q": quadrants()})
    p = probe(image)
    pw = PRODUCTS["poster"].print_size[0]
    q = round(0.5 * pw / 4)
    cx, cy = to_canvas("poster", 0.5, 0.5)
    # 90° clockwise: red goes from the top left to the top right, blue from the bottom left to the top left.
    p.near((cx + q, cy - q), RED)
    p.near((cx - q, cy - q), BLUE)
    p.near((cx + q, cy + q), GREEN)


def test_image_opacity_blends_to_the_expected_value(probe: Any) -> None:
    layer = {"type": "image", "asset_id": "r", "x": 0.5, "y": 0.5, "width": 0.4, "opacity": 0.5}
    image = render_design(spec("poster", "#ffffff", layer), {"r": solid((200, 0, 0, 255))})
    base = render_design(spec("poster", "#ffffff"), {})
    xy = to_canvas("poster", 0.5, 0.5)
    under = base.getpixel(xy)
    assert isinstance(under, tuple)
    expected = tuple(round(0.5 * s + 0.5 * u) for s, u in zip((200, 0, 0), under, strict=True))
    probe(image).near(xy, expected, tolerance=3)


def test_image_modes_render(probe: Any) -> None:
    """Palette, greyscale and RGB assets are drawn as well as RGBA ones."""
    for mode, color in (("P", 5), ("L", 90), ("RGB", (10, 120, 200)), ("LA", (90, 255))):
        layer = {"type": "image", "asset_id": "a", "x": 0.5, "y": 0.5, "width": 0.3}
        render_design(spec("mug", "#ffffff", layer), {"a": Image.new(mode, (50, 80), color)})


# Shapes -----------------------------------------------------------------------------


def test_rectangle_fill_and_stroke(probe: Any) -> None:
    layer = {
        "type": "shape",
        "shape": "rectangle",
        "x": 0.5,
        "y": 0.5,
        "width": 0.5,
        "height": 0.4,
        "fill": "#00a03c",
        "stroke": "#000000",
        "stroke_width": 0.02,
    }
    image = render_design(spec("poster", "#ffffff", layer), {})
    p = probe(image)
    w, h = PRODUCTS["poster"].print_size
    cx, cy = to_canvas("poster", 0.5, 0.5)
    stroke_px = 0.02 * min(w, h)
    p.near((cx, cy), GREEN)
    p.near((cx, round(cy - 0.2 * h + stroke_px / 2)), (0, 0, 0))  # on the top edge: stroke
    p.near((cx, round(cy - 0.2 * h - 6)), (255, 255, 255), tolerance=15)  # above it: paper


def test_ellipse_leaves_its_box_corners_empty(probe: Any) -> None:
    layer = {"type": "shape", "shape": "ellipse", "x": 0.5, "y": 0.5, "width": 0.6, "height": 0.3, "fill": "#dc141e"}
    image = render_design(spec("poster", "#ffffff", layer), {})
    p = probe(image)
    p.near(to_canvas("poster", 0.5, 0.5), RED)
    p.near(to_canvas("poster", 0.22, 0.37), (255, 255, 255), tolerance=15)  # box corner, outside the ellipse
    p.near(to_canvas("poster", 0.79, 0.5), RED)  # just inside the right end


def test_rounded_rectangle_rounds_its_corners(probe: Any) -> None:
    layer = {
        "type": "shape",
        "shape": "rounded_rectangle",
        "x": 0.5,
        "y": 0.5,
        "width": 0.5,
        "height": 0.5,
        "radius": 0.3,
        "fill": "#dc141e",
    }
    image = render_design(spec("poster", "#ffffff", layer), {})
    p = probe(image)
    p.near(to_canvas("poster", 0.255, 0.255), (255, 255, 255), tolerance=15)
    p.near(to_canvas("poster", 0.5, 0.26), RED)
    p.near(to_canvas("poster", 0.26, 0.5), RED)


def test_line_goes_from_start_to_end(probe: Any) -> None:
    layer = {
        "type": "shape",
        "shape": "line",
        "x": 0.1,
        "y": 0.1,
        "x2": 0.9,
        "y2": 0.9,
        "stroke": "#000000",
        "stroke_width": 0.01,
    }
    image = render_design(spec("poster", "#ffffff", layer), {})
    p = probe(image)
    for f in (0.2, 0.5, 0.8):
        p.near(to_canvas("poster", f, f), (0, 0, 0), tolerance=30)
    p.near(to_canvas("poster", 0.8, 0.2), (255, 255, 255), tolerance=15)


def test_shape_rotation_and_clipping(probe: Any) -> None:
    bar = {"type": "shape", "shape": "rectangle", "x": 0.5, "y": 0.5, "width": 0.8, "height": 0.05, "fill": "#000000"}
    image = render_design(spec("poster", "#ffffff", {**bar, "rotation": 90}), {})
    p = probe(image)
    w, _ = PRODUCTS["poster"].print_size
    cx, cy = to_canvas("poster", 0.5, 0.5)
    p.near((cx, cy - round(0.3 * w)), (0, 0, 0))  # rotated: now vertical
    p.near((cx - round(0.3 * w), cy), (255, 255, 255), tolerance=15)
    # A bar twice as wide as the print area is cut exactly at its edges.
    wide = {**bar, "width": 1.0, "x": 0.8, "anchor": "left"}
    image = render_design(spec("poster", "#ffffff", wide), {})
    p = probe(image)
    right = PRODUCTS["poster"].print_area[2]
    p.near((right - 2, cy), (0, 0, 0))
    p.near((right + 3, cy), (255, 255, 255), tolerance=20)


def test_anchor_top_left_at_origin(probe: Any) -> None:
    layer = {
        "type": "shape",
        "shape": "rectangle",
        "x": 0.0,
        "y": 0.0,
        "width": 0.1,
        "height": 0.1,
        "anchor": "top_left",
        "fill": "#000000",
    }
    image = render_design(spec("poster", "#ffffff", layer), {})
    p = probe(image)
    left, top, _, _ = PRODUCTS["poster"].print_area
    p.near((left + 2, top + 2), (0, 0, 0))
    p.near((left - 3, top + 80), (255, 255, 255), tolerance=20)  # outside the print area: paper


def test_layers_draw_in_order(probe: Any) -> None:
    red = {"type": "shape", "shape": "rectangle", "x": 0.5, "y": 0.5, "width": 0.4, "height": 0.4, "fill": "#dc141e"}
    blue = {**red, "fill": "#1e3a8a", "width": 0.2, "height": 0.2}
    p = probe(render_design(spec("poster", "#ffffff", red, blue), {}))
    p.near(to_canvas("poster", 0.5, 0.5), BLUE)
    p.near(to_canvas("poster", 0.35, 0.5), RED)


# Specs that cannot render -------------------------------------------------------------


@pytest.mark.parametrize(
    ("layer", "assets", "match"),
    [
        ({"type": "image", "asset_id": "gone", "width": 0.5}, {}, "no longer exists; upload the image again"),
        ({"type": "text", "text": "WWW", "size": 0.5, "width": 0.05}, {}, "larger than its wrap width"),
        ({"type": "text", "text": "W" * 400, "size": 1.0}, {}, "does not fit"),
        ({"type": "text", "text": "far away", "x": 1.0, "y": 1.0, "anchor": "top_left"}, {}, "entirely outside"),
        (
            {
                "type": "shape",
                "shape": "rectangle",
                "width": 0.1,
                "height": 0.1,
                "x": 1.0,
                "y": 0.5,
                "anchor": "left",
                "fill": "#000000",
            },
            {},
            "entirely outside",
        ),
        ({"type": "hologram"}, {}, "hologram"),
        ({"type": "shape", "shape": "ellipse", "width": 2.0}, {}, "width"),
    ],
)
def test_unrenderable_specs_raise_render_error_naming_the_layer(
    layer: dict[str, Any], assets: dict[str, Any], match: str
) -> None:
    ok = {"type": "text", "text": "fine"}
    with pytest.raises(RenderError, match=match) as info:
        render_design(spec("tshirt", "#ffffff", ok, layer), assets)
    assert str(info.value).startswith("layer 1: ")
    assert "Traceback" not in str(info.value)


def test_unknown_product_is_a_render_error() -> None:
    with pytest.raises(RenderError, match="unknown product"):
        render_design(spec("spaceship"), {})


# Outputs ------------------------------------------------------------------------------


@pytest.mark.parametrize("key", list(PRODUCTS))
def test_outputs_preview_png_and_300px_webp_thumbnail(key: str) -> None:
    product = PRODUCTS[key]
    image = render_design(spec(key, product.colors[0], {"type": "text", "text": "Hi"}), {})
    rendered = encode(image, product, 1, 300, "webp")
    preview = Image.open(io.BytesIO(rendered.preview))
    preview.load()
    assert preview.format == "PNG" and preview.size == product.canvas
    assert ImageChops.difference(preview.convert("RGB"), image).getbbox() is None  # lossless
    thumb = Image.open(io.BytesIO(rendered.thumbnail))
    assert thumb.format == "WEBP" and max(thumb.size) == 300
    assert abs(thumb.width / thumb.height - image.width / image.height) < 0.02
    jpeg = Image.open(io.BytesIO(encode(image, product, 1, 300, "jpeg").thumbnail))
    assert jpeg.format == "JPEG" and max(jpeg.size) == 300


def test_thumbnail_keeps_colours() -> None:
    image = Image.new("RGB", (1200, 1600), (30, 58, 138))
    small = thumbnail(image, 300)
    assert small.size == (225, 300)
    assert small.getpixel((100, 100)) == (30, 58, 138)


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
@pytest.mark.parametrize("level", [0, 1, 9])
def test_png_writer_is_lossless(mode: str, level: int) -> None:
    image = quadrants(64).convert(mode)
    image.paste(Image.linear_gradient("L").resize((64, 20)).convert(mode), (0, 22))
    for strategy in (zlib.Z_DEFAULT_STRATEGY, zlib.Z_RLE):
        back = Image.open(io.BytesIO(encode_png(image, level, strategy)))
        back.load()
        assert back.mode == mode and back.size == image.size
        assert ImageChops.difference(back, image).getbbox() is None


def test_glazed_mug_lights_the_print(probe: Any) -> None:
    """A design on the mug takes its cylinder light: darker towards the sides, still its own colour."""
    layer = {"type": "shape", "shape": "rectangle", "x": 0.5, "y": 0.5, "width": 1.0, "height": 0.2, "fill": "#dc141e"}
    p = probe(render_design(spec("mug", "#ffffff", layer), {}))
    centre, side = p.image.getpixel(to_canvas("mug", 0.6, 0.5)), p.image.getpixel(to_canvas("mug", 0.01, 0.5))
    assert isinstance(centre, tuple) and isinstance(side, tuple)
    assert centre[0] > 150 and centre[0] > 2 * centre[1]  # red
    assert side[0] < centre[0]


# The layer fields the renderer relies on are validated by the API (422 naming the field) ---------


@pytest.fixture(scope="module")
def refusing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One app for the validation tests below: each sends one design the app refuses."""
    with serve(tmp_path_factory.mktemp("refusing")) as app:
        yield app


def _bad(layer: dict[str, Any]) -> dict[str, Any]:
    return {"name": "bad", "product": "tshirt", "color": "#ffffff", "layers": [layer]}


TEXT = {"type": "text", "text": "Hi"}
SHAPE = {"type": "shape", "shape": "rectangle", "fill": "#000000"}


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        (_bad({**TEXT, "size": 0}), "/layers/0/size"),
        (_bad({**TEXT, "size": 1.01}), "/layers/0/size"),
        (_bad({**TEXT, "x": 1.5}), "/layers/0/x"),
        (_bad({**TEXT, "y": -0.1}), "/layers/0/y"),
        (_bad({**TEXT, "width": 0}), "/layers/0/width"),
        (_bad({**TEXT, "rotation": 361}), "/layers/0/rotation"),
        (_bad({**TEXT, "color": "red"}), "/layers/0/color"),
        (_bad({**TEXT, "color": "#12345"}), "/layers/0/color"),
        (_bad({**TEXT, "anchor": "middle"}), "/layers/0/anchor"),
        (_bad({**TEXT, "align": "justify"}), "/layers/0/align"),
        (_bad({**TEXT, "font": "Comic Sans"}), "/layers/0/font"),
        (_bad({**TEXT, "font": "/usr/share/fonts/x.ttf"}), "/layers/0/font"),
        (_bad({**TEXT, "weight": "black"}), "/layers/0/weight"),
        (_bad({**TEXT, "text": ""}), "/layers/0/text"),
        (_bad({"type": "image", "asset_id": "nope"}), "/layers/0/asset_id"),
        (_bad({"type": "image", "asset_id": "nope", "opacity": 1.5}), "/layers/0/opacity"),
        (_bad({"type": "image", "asset_id": "nope", "url": "http://x/y.png"}), "/layers/0"),
        (_bad({**SHAPE, "shape": "star"}), "/layers/0/shape"),
        (_bad({**SHAPE, "stroke_width": 0.6}), "/layers/0/stroke_width"),
        (_bad({**SHAPE, "radius": 2}), "/layers/0/radius"),
        (_bad({**SHAPE, "height": 0}), "/layers/0/height"),
        (_bad({"type": "shape", "shape": "ellipse"}), "/layers/0/fill"),
        (_bad({**SHAPE, "shape": "line"}), "/layers/0"),
    ],
)
def test_layer_fields_are_validated_by_the_api(refusing: Any, body: dict[str, Any], pointer: str) -> None:
    response = refusing.client.post("/api/v1/designs", json=body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    pointers = [e["pointer"] for e in response.json().get("errors", [])]
    assert any(p.startswith(pointer) for p in pointers), response.json()


def test_design_limits_name_the_limit(make_live: Any) -> None:
    app = make_live(limits={"max_layers": 2, "max_text_length": 5, "max_name_length": 4})
    for body, limit in (
        ({**_bad(TEXT), "layers": [TEXT] * 3}, "limits.max_layers = 2"),
        (_bad({**TEXT, "text": "too long"}), "limits.max_text_length = 5"),
        ({**_bad(TEXT), "name": "a long name"}, "limits.max_name_length = 4"),
    ):
        response = app.client.post("/api/v1/designs", json=body)
        assert response.status_code == 422 and limit in response.json()["detail"], response.text
    ok = {**_bad(TEXT), "name": "ok", "layers": [TEXT] * 2}
    assert app.client.post("/api/v1/designs", json=ok).status_code == 201


def test_png_reuses_rows_outside_the_print_area_and_stays_exact() -> None:
    """Second render of a product and colour: cached bytes for the rows above and below the print
    area; the file must still decode to the image, and zlib must accept its checksum."""
    from customify.render.png import Static, adler32_combine

    product = PRODUCTS["tshirt"]
    for text in ("first", "second"):
        image = render_design(spec("tshirt", "#15803d", {"type": "text", "text": text, "size": 0.3}), {})
        data = encode(image, product, 1, 300, "webp").preview
        back = Image.open(io.BytesIO(data))
        back.load()
        assert ImageChops.difference(back.convert("RGB"), image).getbbox() is None
        idat = data[data.index(b"IDAT") + 4 : data.index(b"IEND") - 8]
        assert len(zlib.decompress(idat)) == image.height * (1 + 3 * image.width)
    for top, bottom in ((0, 1200), (0, 1), (1199, 1200), (600, 601)):
        data = encode_png(image, 1, static=Static(("edges", top, bottom), top, bottom))
        back = Image.open(io.BytesIO(data))
        back.load()
        assert ImageChops.difference(back.convert("RGB"), image).getbbox() is None
    assert adler32_combine(zlib.adler32(b"abc"), zlib.adler32(b"defg"), 4) == zlib.adler32(b"abcdefg")
