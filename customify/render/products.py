"""Product templates, drawn in code so they render the same on every machine.

Each product is a silhouette (a mask), a shading map and a few details (seams,
handles, a camera bump), tinted to the design's colour. The print area is a
box in canvas pixels; the design is composited into it and clipped to it.
The tinted base image is cached per (product, colour): it is the same for
every design of that product and colour.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from PIL import Image, ImageChops, ImageDraw, ImageFilter

BACKGROUND = (241, 243, 246)
SS = 2  # supersampling factor for smooth silhouettes

Draw = Callable[[ImageDraw.ImageDraw, ImageDraw.ImageDraw, int, int], None]


@dataclass(frozen=True)
class Product:
    key: str
    name: str
    canvas: tuple[int, int]
    print_area: tuple[int, int, int, int]  # left, top, right, bottom in canvas pixels
    colors: tuple[str, ...]
    draw: Draw

    @property
    def print_size(self) -> tuple[int, int]:
        left, top, right, bottom = self.print_area
        return right - left, bottom - top


def _pts(points: list[tuple[float, float]], w: int, h: int) -> list[tuple[float, float]]:
    return [(x * w, y * h) for x, y in points]


def _tshirt_outline(sleeve_len: float) -> list[tuple[float, float]]:
    # Right half from the neck down, mirrored for the left: a symmetric garment.
    right = [(0.60, 0.09), (0.79, 0.13), (0.96, 0.22 + sleeve_len * 0.6), (0.96 - 0.12, 0.28 + sleeve_len),
             (0.78, 0.33), (0.79, 0.95)]
    left = [(1 - x, y) for x, y in reversed(right)]
    neck = [(0.5 + 0.07 * c, 0.09 + 0.06 * s) for c, s in ((-0.7, 0.71), (0.0, 1.0), (0.7, 0.71))]
    return [(0.40, 0.09), *neck, *right, *left]


def _draw_tshirt(mask: ImageDraw.ImageDraw, detail: ImageDraw.ImageDraw, w: int, h: int) -> None:
    outline = _tshirt_outline(0.08)
    mask.polygon(_pts(outline, w, h), fill=255)
    line = max(2, w // 300)
    detail.line(_pts([(0.40, 0.09), (0.45, 0.135), (0.5, 0.15), (0.55, 0.135), (0.60, 0.09)], w, h),
                fill=150, width=line * 3)
    detail.line(_pts([(0.21, 0.33), (0.22, 0.14)], w, h), fill=215, width=line)
    detail.line(_pts([(0.79, 0.33), (0.78, 0.14)], w, h), fill=215, width=line)
    detail.line(_pts([(0.21, 0.92), (0.79, 0.92)], w, h), fill=205, width=line)


def _draw_hoodie(mask: ImageDraw.ImageDraw, detail: ImageDraw.ImageDraw, w: int, h: int) -> None:
    right = [(0.62, 0.10), (0.80, 0.16), (0.95, 0.55), (0.97, 0.84), (0.88, 0.86), (0.80, 0.52),
             (0.80, 0.95)]
    left = [(1 - x, y) for x, y in reversed(right)]
    mask.polygon(_pts([(0.38, 0.10), *right, *left], w, h), fill=255)
    mask.ellipse(_pts([(0.33, 0.02), (0.67, 0.22)], w, h), fill=255)  # hood
    line = max(2, w // 300)
    detail.ellipse(_pts([(0.39, 0.06), (0.61, 0.20)], w, h), fill=140)  # hood opening
    detail.line(_pts([(0.46, 0.19), (0.45, 0.32)], w, h), fill=235, width=line * 2)  # drawstrings
    detail.line(_pts([(0.54, 0.19), (0.55, 0.32)], w, h), fill=235, width=line * 2)
    detail.polygon(_pts([(0.33, 0.68), (0.67, 0.68), (0.72, 0.86), (0.28, 0.86)], w, h), outline=185,
                   width=line)  # pocket
    detail.line(_pts([(0.20, 0.90), (0.80, 0.90)], w, h), fill=200, width=line * 2)


def _draw_mug(mask: ImageDraw.ImageDraw, detail: ImageDraw.ImageDraw, w: int, h: int) -> None:
    mask.ellipse(_pts([(0.66, 0.32), (0.95, 0.68)], w, h), fill=255)  # handle
    mask.rectangle(_pts([(0.12, 0.20), (0.76, 0.86)], w, h), fill=255)
    mask.ellipse(_pts([(0.12, 0.81), (0.76, 0.91)], w, h), fill=255)  # rounded bottom
    mask.ellipse(_pts([(0.12, 0.15), (0.76, 0.25)], w, h), fill=255)
    mask.ellipse(_pts([(0.72, 0.40), (0.88, 0.60)], w, h), fill=0)  # handle hole
    detail.ellipse(_pts([(0.14, 0.16), (0.74, 0.24)], w, h), fill=120)  # rim opening
    detail.line(_pts([(0.12, 0.20), (0.12, 0.86)], w, h), fill=200, width=max(2, w // 200))


def _draw_poster(mask: ImageDraw.ImageDraw, detail: ImageDraw.ImageDraw, w: int, h: int) -> None:
    mask.rectangle(_pts([(0.06, 0.05), (0.94, 0.95)], w, h), fill=255)
    detail.rectangle(_pts([(0.06, 0.05), (0.94, 0.95)], w, h), outline=200, width=max(2, w // 250))


def _draw_tote(mask: ImageDraw.ImageDraw, detail: ImageDraw.ImageDraw, w: int, h: int) -> None:
    strap = max(6, w // 28)
    mask.arc(_pts([(0.28, 0.04), (0.50, 0.50)], w, h), 180, 360, fill=255, width=strap)
    mask.arc(_pts([(0.50, 0.04), (0.72, 0.50)], w, h), 180, 360, fill=255, width=strap)
    mask.polygon(_pts([(0.15, 0.27), (0.85, 0.27), (0.88, 0.95), (0.12, 0.95)], w, h), fill=255)
    line = max(2, w // 300)
    detail.line(_pts([(0.15, 0.30), (0.85, 0.30)], w, h), fill=205, width=line)
    detail.line(_pts([(0.125, 0.92), (0.875, 0.92)], w, h), fill=205, width=line)


def _draw_phone_case(mask: ImageDraw.ImageDraw, detail: ImageDraw.ImageDraw, w: int, h: int) -> None:
    mask.rounded_rectangle(_pts([(0.08, 0.03), (0.92, 0.97)], w, h), radius=int(w * 0.12), fill=255)
    detail.rounded_rectangle(_pts([(0.14, 0.05), (0.48, 0.22)], w, h), radius=int(w * 0.07), fill=170)
    for cx, cy in ((0.24, 0.10), (0.38, 0.10), (0.24, 0.17)):
        r = 0.045
        detail.ellipse(_pts([(cx - r, cy - r * w / h), (cx + r, cy + r * w / h)], w, h), fill=40)


PALETTE = ("#ffffff", "#111827", "#1e3a8a", "#b91c1c", "#15803d", "#f59e0b", "#6b7280", "#7c3aed")

PRODUCTS: dict[str, Product] = {
    p.key: p
    for p in (
        Product("tshirt", "T-shirt", (1200, 1200), (384, 300, 816, 900), PALETTE, _draw_tshirt),
        Product("hoodie", "Hoodie", (1200, 1200), (408, 370, 792, 790), PALETTE, _draw_hoodie),
        Product("mug", "Mug", (1200, 1200), (216, 330, 864, 1000), ("#ffffff", "#111827", "#1e3a8a",
                                                                     "#b91c1c", "#f59e0b"), _draw_mug),
        Product("poster", "Poster", (1200, 1600), (132, 136, 1068, 1464),
                ("#ffffff", "#fef3c7", "#111827", "#e5e7eb"), _draw_poster),
        Product("tote", "Tote bag", (1200, 1200), (276, 420, 924, 1050),
                ("#f5f0e1", "#111827", "#1e3a8a", "#15803d"), _draw_tote),
        Product("phone_case", "Phone case", (700, 1400), (84, 340, 616, 1300),
                ("#111827", "#ffffff", "#1e3a8a", "#b91c1c", "#7c3aed"), _draw_phone_case),
    )
}


def parse_color(value: str) -> tuple[int, int, int, int]:
    """#rrggbb or #rrggbbaa → RGBA tuple."""
    raw = value.lstrip("#")
    rgba = [int(raw[i:i + 2], 16) for i in range(0, len(raw), 2)]
    return (rgba[0], rgba[1], rgba[2], rgba[3] if len(rgba) == 4 else 255)


@lru_cache(maxsize=64)
def _shapes(key: str) -> tuple[Image.Image, Image.Image]:
    """(silhouette mask, shading map) of a product at canvas size, colour-independent."""
    product = PRODUCTS[key]
    w, h = product.canvas[0] * SS, product.canvas[1] * SS
    mask = Image.new("L", (w, h), 0)
    detail = Image.new("L", (w, h), 255)
    product.draw(ImageDraw.Draw(mask), ImageDraw.Draw(detail), w, h)
    size = product.canvas
    mask = mask.resize(size, Image.Resampling.LANCZOS)
    detail = detail.resize(size, Image.Resampling.LANCZOS)
    # Soft light from the top left: a gentle gradient, darker towards the edges of the silhouette.
    gradient = Image.linear_gradient("L").rotate(-30, expand=False).resize(size).point(lambda v: 255 - v // 6)
    edge = mask.filter(ImageFilter.GaussianBlur(max(4, size[0] // 60))).point(lambda v: 200 + v * 55 // 255)
    shade = ImageChops.multiply(ImageChops.multiply(gradient, edge), detail)
    return mask, shade


@lru_cache(maxsize=128)
def product_base(key: str, color: str) -> Image.Image:
    """The product drawn in `color` on the background, RGB at canvas size (cached; copy before drawing)."""
    product = PRODUCTS[key]
    mask, shade = _shapes(key)
    r, g, b, _ = parse_color(color)
    tinted = ImageChops.multiply(Image.new("RGB", product.canvas, (r, g, b)), shade.convert("RGB"))
    # Light garments need a visible edge: an outline a little darker than the fabric.
    outline = mask.filter(ImageFilter.FIND_EDGES).point(lambda v: min(255, v * 2))
    shadow = mask.filter(ImageFilter.GaussianBlur(product.canvas[0] // 80)).point(lambda v: v * 60 // 255)
    canvas = Image.new("RGB", product.canvas, BACKGROUND)
    canvas.paste((150, 155, 165), (product.canvas[0] // 90, product.canvas[0] // 60), shadow)
    canvas.paste(tinted, (0, 0), mask)
    edge_color = tuple(max(0, int(c * 0.55)) for c in (r, g, b))
    canvas.paste(edge_color, (0, 0), outline)  # type: ignore[arg-type]
    return canvas
