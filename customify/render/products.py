"""Product templates, drawn in code so they render the same on every machine.

Each product draws, in fractions of its canvas, a silhouette (mask), crisp
details that darken (seams, openings), soft folds that darken or lighten,
gloss, and fixed-colour parts (camera lenses, tape) that are not tinted. The
lighting is built once per product; the tinted base image is cached per
(product, colour): it is the same for every design of that product and colour.
The print area is a box in canvas pixels; the design is composited into it
and clipped to it.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from PIL import Image, ImageChops, ImageDraw, ImageFilter

from customify.render.spec import parse_color

BACKGROUND = (241, 243, 246)
SS = 2  # supersampling factor of the crisp parts (silhouette, seams)
NEUTRAL = 128  # value of the folds map where the fabric is neither darker nor lighter

Point = tuple[float, float]


@dataclass
class Surfaces:
    """The drawing surfaces of one product, all at SS × canvas size; coordinates are fractions."""

    w: int
    h: int
    mask: ImageDraw.ImageDraw  # 255 where the product is
    lines: ImageDraw.ImageDraw  # multiplies the colour: < 255 darkens (seams, openings)
    folds: ImageDraw.ImageDraw  # blurred later: < 128 shadow, > 128 light
    gloss: ImageDraw.ImageDraw  # blurred later, added as light (screen)
    fixed: ImageDraw.ImageDraw  # RGBA parts in their own colour, not tinted
    fixed_image: Image.Image  # the image `fixed` draws on, for pasting rotated parts

    def p(self, points: Sequence[Point]) -> list[tuple[float, float]]:
        return [(x * self.w, y * self.h) for x, y in points]

    def box(self, x0: float, y0: float, x1: float, y1: float) -> tuple[float, float, float, float]:
        return (x0 * self.w, y0 * self.h, x1 * self.w, y1 * self.h)

    def px(self, fraction: float) -> int:
        """A stroke width as a fraction of the canvas width."""
        return max(1, round(fraction * self.w))


@dataclass(frozen=True)
class Product:
    key: str
    name: str
    canvas: tuple[int, int]
    print_area: tuple[int, int, int, int]  # left, top, right, bottom in canvas pixels
    colors: tuple[str, ...]
    draw: Callable[[Surfaces], None]
    print_lit: bool = False  # the design takes the product's light (a glazed mug, a glossy case)
    light_from: float = 0.35  # how much the top-left light falls off towards the bottom right

    @property
    def print_size(self) -> tuple[int, int]:
        left, top, right, bottom = self.print_area
        return right - left, bottom - top


def _arc(cx: float, cy: float, rx: float, ry: float, start: float, end: float, n: int = 24) -> list[Point]:
    """Points on an ellipse arc, angles in degrees (0 = right, 90 = down)."""
    return [
        (cx + rx * math.cos(math.radians(a)), cy + ry * math.sin(math.radians(a)))
        for a in (start + (end - start) * i / n for i in range(n + 1))
    ]


def _mirror(right: list[Point]) -> list[Point]:
    return [(1 - x, y) for x, y in reversed(right)]


# T-shirt -----------------------------------------------------------------------


def _draw_tshirt(a: Surfaces) -> None:
    front_neck = _arc(0.5, 0.075, 0.088, 0.068, 0, 180)  # right to left, dipping down
    right = [
        (0.588, 0.072),
        (0.70, 0.098),
        (0.80, 0.128),
        (0.885, 0.215),
        (0.978, 0.345),
        (0.888, 0.418),
        (0.79, 0.33),
        (0.787, 0.50),
        (0.792, 0.75),
        (0.80, 0.955),
    ]
    hem = [(0.65, 0.962), (0.5, 0.965), (0.35, 0.962)]
    back_neck = _arc(0.5, 0.085, 0.088, 0.03, 180, 360)  # left to right, over the top
    outline = [*back_neck, *right, *hem, *_mirror(right)]
    a.mask.polygon(a.p(outline), fill=255)
    # Inside of the back of the shirt, seen through the neck opening, then the ribbed collar.
    a.lines.polygon(a.p([*back_neck, *front_neck]), fill=150)
    a.lines.line(a.p(front_neck), fill=185, width=a.px(0.020))
    a.lines.line(a.p(_arc(0.5, 0.075, 0.088, 0.068, 0, 180)), fill=230, width=a.px(0.004))
    a.lines.line(a.p(_arc(0.5, 0.075, 0.098, 0.082, 0, 180)), fill=215, width=a.px(0.002))
    for side in (1, -1):

        def s(x: float, side: int = side) -> float:
            return x if side == 1 else 1 - x

        a.lines.line(a.p([(s(0.80), 0.128), (s(0.79), 0.33)]), fill=205, width=a.px(0.003))  # sleeve seam
        a.lines.line(a.p([(s(0.588), 0.072), (s(0.80), 0.128)]), fill=225, width=a.px(0.002))  # shoulder
        a.lines.line(a.p([(s(0.951), 0.368), (s(0.868), 0.433)]), fill=205, width=a.px(0.002))  # sleeve hem
        # Folds: from the armpit towards the chest, and up from the hem.
        a.folds.line(a.p([(s(0.77), 0.36), (s(0.70), 0.47)]), fill=70, width=a.px(0.03))
        a.folds.line(a.p([(s(0.75), 0.40), (s(0.69), 0.52)]), fill=185, width=a.px(0.025))
        a.folds.line(a.p([(s(0.86), 0.22), (s(0.92), 0.33)]), fill=160, width=a.px(0.04))
        a.folds.line(a.p([(s(0.66), 0.80), (s(0.64), 0.95)]), fill=80, width=a.px(0.03))
        a.folds.line(a.p([(s(0.70), 0.78), (s(0.69), 0.95)]), fill=175, width=a.px(0.025))
    a.lines.line(a.p([(0.203, 0.93), (0.5, 0.935), (0.797, 0.93)]), fill=205, width=a.px(0.002))


# Hoodie ------------------------------------------------------------------------


def _draw_hoodie(a: Surfaces) -> None:
    right = [
        (0.60, 0.15),
        (0.70, 0.165),
        (0.79, 0.20),
        (0.85, 0.33),
        (0.935, 0.62),
        (0.965, 0.80),
        (0.97, 0.875),
        (0.88, 0.885),
        (0.865, 0.80),
        (0.80, 0.50),
        (0.785, 0.40),
        (0.785, 0.88),
        (0.775, 0.955),
    ]
    a.mask.polygon(a.p([(0.40, 0.15), *right, (0.5, 0.958), *_mirror(right)]), fill=255)
    a.mask.ellipse(a.box(0.33, 0.015, 0.67, 0.27), fill=255)  # the hood, lying behind the neck
    # Hood opening: dark inside, a lighter rim around it.
    a.lines.ellipse(a.box(0.395, 0.055, 0.605, 0.235), fill=175)
    a.lines.ellipse(a.box(0.41, 0.07, 0.59, 0.225), fill=105)
    a.folds.ellipse(a.box(0.34, 0.03, 0.66, 0.26), outline=180, width=a.px(0.02))
    # Drawstrings (cords in their own colour, so they show on every fabric) with metal tips,
    # ending above the print area.
    for x0, x1 in ((0.468, 0.46), (0.532, 0.54)):
        a.fixed.line(a.p([(x0, 0.215), (x1, 0.285)]), fill=(150, 154, 162, 255), width=a.px(0.011))
        a.fixed.line(a.p([(x0, 0.215), (x1, 0.285)]), fill=(236, 238, 242, 255), width=a.px(0.007))
        a.fixed.rounded_rectangle(
            a.box(x1 - 0.007, 0.275, x1 + 0.007, 0.305),
            radius=a.px(0.004),
            fill=(196, 200, 206, 255),
            outline=(120, 124, 130, 255),
            width=a.px(0.002),
        )
    # Kangaroo pocket with curved side openings, its shadow just below its top edge.
    pocket = [(0.35, 0.69), (0.65, 0.69), (0.70, 0.78), (0.72, 0.885), (0.28, 0.885), (0.30, 0.78)]
    a.lines.line(a.p([*pocket, pocket[0]]), fill=190, width=a.px(0.003), joint="curve")
    a.lines.line(a.p(_arc(0.65, 0.785, 0.05, 0.095, 270, 360, 10)), fill=150, width=a.px(0.004))
    a.lines.line(a.p(_arc(0.35, 0.785, 0.05, 0.095, 180, 270, 10)), fill=150, width=a.px(0.004))
    a.folds.line(a.p([(0.36, 0.70), (0.64, 0.70)]), fill=90, width=a.px(0.012))
    # Ribbed waistband and cuffs.
    a.lines.line(a.p([(0.218, 0.895), (0.782, 0.895)]), fill=180, width=a.px(0.003))
    for i in range(40):
        x = 0.225 + i * 0.55 / 40
        a.lines.line(a.p([(x, 0.90), (x, 0.952)]), fill=228, width=a.px(0.0015))
    for side in (1, -1):

        def s(x: float, side: int = side) -> float:
            return x if side == 1 else 1 - x

        a.lines.line(a.p([(s(0.865), 0.815), (s(0.967), 0.82)]), fill=180, width=a.px(0.003))
        a.lines.line(a.p([(s(0.79), 0.20), (s(0.785), 0.40)]), fill=210, width=a.px(0.003))  # sleeve seam
        a.folds.line(a.p([(s(0.84), 0.40), (s(0.90), 0.62)]), fill=185, width=a.px(0.035))
        a.folds.line(a.p([(s(0.82), 0.45), (s(0.87), 0.70)]), fill=80, width=a.px(0.02))
        a.folds.line(a.p([(s(0.76), 0.42), (s(0.70), 0.50)]), fill=85, width=a.px(0.025))


# Mug ---------------------------------------------------------------------------

MUG_LEFT, MUG_RIGHT, MUG_TOP, MUG_BOTTOM = 0.13, 0.77, 0.20, 0.87


def _cylinder(x: float) -> tuple[int, int]:
    """(shade, gloss) across a cylinder lit from the front left; x in 0…1."""
    facing = math.sin(math.pi * x) ** 0.5
    shade = 0.70 + 0.30 * facing - 0.10 * max(0.0, x - 0.6)
    gloss = 150 * math.exp(-(((x - 0.22) / 0.045) ** 2)) + 35 * math.exp(-(((x - 0.86) / 0.03) ** 2))
    return round(255 * shade), round(gloss)


def _draw_mug(a: Surfaces) -> None:
    # Handle: a thick ring on the right, partly behind the body.
    a.mask.ellipse(a.box(0.68, 0.33, 0.95, 0.73), fill=255)
    a.mask.ellipse(a.box(0.735, 0.415, 0.89, 0.645), fill=0)
    a.gloss.arc(a.box(0.70, 0.35, 0.93, 0.71), 290, 40, fill=110, width=a.px(0.012))
    a.folds.arc(a.box(0.70, 0.35, 0.93, 0.71), 50, 110, fill=60, width=a.px(0.03))
    ry = 0.04
    a.mask.rectangle(a.box(MUG_LEFT, MUG_TOP, MUG_RIGHT, MUG_BOTTOM), fill=255)
    a.mask.ellipse(a.box(MUG_LEFT, MUG_BOTTOM - ry, MUG_RIGHT, MUG_BOTTOM + ry), fill=255)
    a.mask.ellipse(a.box(MUG_LEFT, MUG_TOP - ry, MUG_RIGHT, MUG_TOP + ry), fill=255)
    # The opening: the inner wall, darker at the back, and a bright lip.
    a.lines.ellipse(a.box(MUG_LEFT + 0.012, MUG_TOP - ry + 0.006, MUG_RIGHT - 0.012, MUG_TOP + ry - 0.006), fill=150)
    a.folds.ellipse(a.box(MUG_LEFT + 0.05, MUG_TOP - ry + 0.004, MUG_RIGHT - 0.05, MUG_TOP + 0.01), fill=60)
    a.gloss.arc(
        a.box(MUG_LEFT + 0.004, MUG_TOP - ry + 0.002, MUG_RIGHT - 0.004, MUG_TOP + ry - 0.002),
        20,
        160,
        fill=90,
        width=a.px(0.004),
    )
    a.lines.arc(a.box(MUG_LEFT, MUG_BOTTOM - ry, MUG_RIGHT, MUG_BOTTOM + ry), 0, 180, fill=200, width=a.px(0.004))


def _mug_light(size: tuple[int, int]) -> tuple[Image.Image, Image.Image]:
    """The cylinder's shade and gloss over the mug's body, at canvas size."""
    w, h = size
    left, right = round(MUG_LEFT * w), round(MUG_RIGHT * w)
    shade_row = Image.new("L", (right - left, 1))
    gloss_row = Image.new("L", (right - left, 1))
    values = [_cylinder((i + 0.5) / (right - left)) for i in range(right - left)]
    shade_row.putdata([v[0] for v in values])
    gloss_row.putdata([v[1] for v in values])
    shade, gloss = Image.new("L", size, 255), Image.new("L", size, 0)
    shade.paste(shade_row.resize((right - left, h)), (left, 0))
    gloss.paste(gloss_row.resize((right - left, h)), (left, 0))
    return shade, gloss


# Poster ------------------------------------------------------------------------


def _draw_poster(a: Surfaces) -> None:
    a.mask.rectangle(a.box(0.06, 0.05, 0.94, 0.95), fill=255)
    # Paper: a soft sheen across, the bottom corners lifting a little off the wall.
    a.gloss.polygon(a.p([(0.06, 0.30), (0.94, 0.12), (0.94, 0.20), (0.06, 0.42)]), fill=25)
    a.folds.polygon(a.p([(0.80, 0.95), (0.94, 0.86), (0.94, 0.95)]), fill=100)
    a.folds.polygon(a.p([(0.06, 0.88), (0.18, 0.95), (0.06, 0.95)]), fill=105)
    # Two strips of tape at the top corners (fixed colour, translucent).
    for cx, angle in ((0.075, -35), (0.925, 35)):
        tape = Image.new("RGBA", (a.px(0.16), a.px(0.045)), (236, 228, 200, 205))
        rotated = tape.rotate(angle, expand=True, resample=Image.Resampling.BICUBIC)
        a.fixed_image.alpha_composite(
            rotated, (round(cx * a.w - rotated.width / 2), round(0.055 * a.h - rotated.height / 2))
        )


# Tote bag ----------------------------------------------------------------------


def _draw_tote(a: Surfaces) -> None:
    strap = a.px(0.042)
    # The back strap first (seen through, darker), then the body, then the front strap.
    a.mask.arc(a.box(0.34, 0.04, 0.70, 0.56), 180, 360, fill=255, width=strap)
    a.lines.arc(a.box(0.34, 0.04, 0.70, 0.56), 180, 360, fill=165, width=strap)
    a.mask.rounded_rectangle(a.box(0.17, 0.30, 0.83, 0.955), radius=a.px(0.012), fill=255)
    a.mask.arc(a.box(0.30, 0.06, 0.66, 0.60), 180, 360, fill=255, width=strap)
    a.lines.arc(a.box(0.30 + 0.006, 0.06 + 0.006, 0.66 - 0.006, 0.60 - 0.006), 180, 360, fill=215, width=a.px(0.002))
    a.lines.arc(a.box(0.30 + 0.036, 0.06 + 0.036, 0.66 - 0.036, 0.60 - 0.036), 180, 360, fill=215, width=a.px(0.002))
    # Strap feet over the top hem, with box-and-cross stitching.
    for x in (0.30, 0.62):
        a.lines.rectangle(a.box(x, 0.30, x + 0.042, 0.36), fill=235, outline=195, width=a.px(0.002))
        a.lines.line(a.p([(x, 0.30), (x + 0.042, 0.36)]), fill=205, width=a.px(0.0015))
        a.lines.line(a.p([(x + 0.042, 0.30), (x, 0.36)]), fill=205, width=a.px(0.0015))
    a.lines.line(a.p([(0.17, 0.34), (0.83, 0.34)]), fill=200, width=a.px(0.002))  # top hem stitching
    a.folds.line(a.p([(0.17, 0.345), (0.83, 0.345)]), fill=95, width=a.px(0.01))
    # Canvas sags a little: soft vertical folds near the sides and the bottom.
    for x, value in ((0.22, 170), (0.25, 90), (0.78, 90), (0.75, 170)):
        a.folds.line(a.p([(x, 0.40), (x + (0.01 if x < 0.5 else -0.01), 0.93)]), fill=value, width=a.px(0.03))
    a.folds.line(a.p([(0.17, 0.95), (0.83, 0.95)]), fill=90, width=a.px(0.02))


# Phone case --------------------------------------------------------------------


def _draw_phone_case(a: Surfaces) -> None:
    a.mask.rounded_rectangle(a.box(0.07, 0.025, 0.93, 0.975), radius=round(0.14 * a.w), fill=255)
    for y0, y1 in ((0.20, 0.27), (0.30, 0.35)):  # side buttons, covered by the case
        a.mask.rounded_rectangle(a.box(0.925, y0, 0.945, y1), radius=a.px(0.008), fill=255)
    # The lip of the case: a bright line just inside the edge.
    a.gloss.rounded_rectangle(
        a.box(0.082, 0.031, 0.918, 0.969), radius=round(0.13 * a.w), outline=70, width=a.px(0.006)
    )
    # Camera module: a raised square, lit from the top left.
    a.folds.rounded_rectangle(a.box(0.13, 0.05, 0.55, 0.235), radius=a.px(0.09), fill=200)
    a.folds.rounded_rectangle(a.box(0.14, 0.058, 0.555, 0.24), radius=a.px(0.09), outline=40, width=a.px(0.01))
    a.lines.rounded_rectangle(a.box(0.13, 0.05, 0.55, 0.235), radius=a.px(0.09), outline=175, width=a.px(0.006))
    hy = a.w / a.h  # keeps lenses round on a tall canvas
    for cx, cy in ((0.245, 0.095), (0.245, 0.19), (0.435, 0.1425)):
        r = 0.078
        a.fixed.ellipse(a.box(cx - r, cy - r * hy, cx + r, cy + r * hy), fill=(48, 52, 60, 255))
        a.fixed.ellipse(
            a.box(cx - r * 0.72, cy - r * 0.72 * hy, cx + r * 0.72, cy + r * 0.72 * hy), fill=(14, 16, 24, 255)
        )
        a.fixed.ellipse(a.box(cx - r * 0.4, cy - r * 0.4 * hy, cx + r * 0.4, cy + r * 0.4 * hy), fill=(28, 40, 70, 255))
        a.fixed.ellipse(
            a.box(cx - r * 0.35, cy - r * 0.45 * hy, cx - r * 0.1, cy - r * 0.2 * hy), fill=(200, 210, 230, 200)
        )
    a.fixed.ellipse(a.box(0.41, 0.056, 0.46, 0.056 + 0.05 * hy), fill=(250, 240, 205, 255))  # flash
    # A broad diagonal sheen across the glossy back.
    a.gloss.polygon(a.p([(0.07, 0.62), (0.93, 0.30), (0.93, 0.40), (0.07, 0.76)]), fill=22)


PALETTE = ("#ffffff", "#111827", "#1e3a8a", "#b91c1c", "#15803d", "#f59e0b", "#6b7280", "#7c3aed")

PRODUCTS: dict[str, Product] = {
    p.key: p
    for p in (
        Product("tshirt", "T-shirt", (1200, 1200), (384, 300, 816, 900), PALETTE, _draw_tshirt),
        Product("hoodie", "Hoodie", (1200, 1200), (408, 370, 792, 790), PALETTE, _draw_hoodie),
        Product(
            "mug",
            "Mug",
            (1200, 1200),
            (216, 330, 864, 1000),
            ("#ffffff", "#111827", "#1e3a8a", "#b91c1c", "#f59e0b"),
            _draw_mug,
            print_lit=True,
        ),
        Product(
            "poster",
            "Poster",
            (1200, 1600),
            (132, 136, 1068, 1464),
            ("#ffffff", "#fef3c7", "#111827", "#e5e7eb"),
            _draw_poster,
            light_from=0.12,
        ),
        Product(
            "tote",
            "Tote bag",
            (1200, 1200),
            (276, 420, 924, 1050),
            ("#f5f0e1", "#111827", "#1e3a8a", "#15803d"),
            _draw_tote,
        ),
        Product(
            "phone_case",
            "Phone case",
            (700, 1400),
            (84, 340, 616, 1300),
            ("#111827", "#ffffff", "#1e3a8a", "#b91c1c", "#7c3aed"),
            _draw_phone_case,
            print_lit=True,
        ),
    )
}


@dataclass(frozen=True)
class Lighting:
    """A product's colour-independent parts at canvas size."""

    mask: Image.Image  # L: the silhouette
    shade: Image.Image  # L: multiplies the colour (255 = the colour itself)
    gloss: Image.Image  # L: light added on top (screen)
    fixed: Image.Image | None  # RGBA parts in their own colour, cropped to where they are, or None
    fixed_at: tuple[int, int]  # where `fixed` goes on the canvas
    shadow: Image.Image  # L: the soft shadow the product casts on the background
    edge: Image.Image  # L: a thin ring along the silhouette's border


def _diagonal(size: tuple[int, int], falloff: float) -> Image.Image:
    """Light from the top left: 255 there, 255 × (1 - falloff) at the bottom right. No rotation, no corners."""
    ramp = Image.linear_gradient("L")  # 0 at the top, 255 at the bottom
    both = ImageChops.add(
        ramp.resize(size),
        ramp.transpose(Image.Transpose.ROTATE_90).transpose(Image.Transpose.FLIP_LEFT_RIGHT).resize(size),
        scale=2.0,
    )
    return both.point([round(255 - v * falloff) for v in range(256)])


# Single flight: two worker threads asking for the same uncached product wait for one build
# instead of both building it (a restarted process gets several renders of one product at once).
_building = threading.RLock()


def lighting(key: str) -> Lighting:
    """The product's colour-independent maps (cached)."""
    with _building:
        return _lighting(key)


@lru_cache(maxsize=8)
def _lighting(key: str) -> Lighting:
    product = PRODUCTS[key]
    size = product.canvas
    big = (size[0] * SS, size[1] * SS)
    mask, lines = Image.new("L", big, 0), Image.new("L", big, 255)
    folds, gloss = Image.new("L", big, NEUTRAL), Image.new("L", big, 0)
    fixed = Image.new("RGBA", big, (0, 0, 0, 0))
    product.draw(
        Surfaces(
            big[0],
            big[1],
            ImageDraw.Draw(mask),
            ImageDraw.Draw(lines),
            ImageDraw.Draw(folds),
            ImageDraw.Draw(gloss),
            ImageDraw.Draw(fixed),
            fixed,
        )
    )
    # Box-average the supersampled surfaces down (anti-aliasing), one at a time to keep the peak low.
    mask, lines, folds, gloss = mask.reduce(SS), lines.reduce(SS), folds.reduce(SS), gloss.reduce(SS)
    fixed_small, fixed_at = _reduce_fixed(fixed)
    del fixed
    soft = max(3, size[0] // 90)
    folds = _blur(folds, soft)
    gloss = gloss.filter(ImageFilter.GaussianBlur(max(2, soft // 2)))
    # Folds: below neutral darkens by up to 30 %, above it lightens.
    fold_shade = folds.point([255 - max(0, NEUTRAL - v) * 77 // NEUTRAL for v in range(256)])
    fold_light = folds.point([max(0, v - NEUTRAL) * 60 // (255 - NEUTRAL) for v in range(256)])
    # Edges turn away from the light: darker towards the silhouette's border.
    edge = _blur(mask, max(4, size[0] // 70)).point([200 + v * 55 // 255 for v in range(256)])
    shade = ImageChops.multiply(
        ImageChops.multiply(_diagonal(size, product.light_from * 0.5), edge), ImageChops.multiply(lines, fold_shade)
    )
    light = ImageChops.add(gloss, fold_light)
    if key == "mug":
        body_shade, body_gloss = _mug_light(size)
        shade = ImageChops.multiply(shade, body_shade)
        light = ImageChops.add(light, body_gloss)
    shadow = _blur(mask, size[0] // 60).point([v * 70 // 255 for v in range(256)])
    # The ring: the mask minus the mask eroded by one pixel (the darkest of its 4 neighbours).
    eroded = mask
    for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        eroded = ImageChops.darker(eroded, ImageChops.offset(mask, dx, dy))
    ring = ImageChops.subtract(mask, eroded).point([v * 3 // 5 for v in range(256)])
    return Lighting(mask, shade, light, fixed_small, fixed_at, shadow, ring)


def _blur(image: Image.Image, radius: float) -> Image.Image:
    """A wide Gaussian blur computed at half resolution: what it blurs is smooth anyway, and 4× cheaper."""
    half = image.reduce(2).filter(ImageFilter.GaussianBlur(radius / 2))
    return half.resize(image.size, Image.Resampling.BILINEAR)


def _reduce_fixed(fixed: Image.Image) -> tuple[Image.Image | None, tuple[int, int]]:
    """The fixed-colour parts at canvas size, cropped to their bounding box, and where that box goes;
    (None, (0, 0)) when there are none. Cropped: a canvas-sized RGBA image is 4-8 MB per product, held
    by every helper, and the parts are small (a hoodie's cords, a poster's tape, a case's camera)."""
    box = fixed.getbbox()
    if box is None:
        return None, (0, 0)
    left, top = box[0] // SS * SS, box[1] // SS * SS
    right, bottom = -(-box[2] // SS) * SS, -(-box[3] // SS) * SS
    return fixed.crop((left, top, right, bottom)).reduce(SS), (left // SS, top // SS)


def product_base(key: str, color: str) -> Image.Image:
    """The product drawn in `color` on the background, RGB at canvas size (cached; copy before drawing)."""
    with _building:
        return _product_base(key, color)


@lru_cache(maxsize=16)
def _product_base(key: str, color: str) -> Image.Image:
    product = PRODUCTS[key]
    light = lighting(key)
    r, g, b, _ = parse_color(color)
    tinted = ImageChops.multiply(Image.new("RGB", product.canvas, (r, g, b)), light.shade.convert("RGB"))
    tinted = ImageChops.screen(tinted, light.gloss.convert("RGB"))
    canvas = Image.new("RGB", product.canvas, BACKGROUND)
    offset = (product.canvas[0] // 120, product.canvas[0] // 50)
    canvas.paste((120, 126, 138), offset, light.shadow)
    canvas.paste(tinted, (0, 0), light.mask)
    # A thin edge a little darker than the colour: light products stay visible on the light background.
    canvas.paste((int(r * 0.55), int(g * 0.55), int(b * 0.55)), (0, 0), light.edge)
    if light.fixed is not None:
        canvas.paste(light.fixed, light.fixed_at, light.fixed)
    return canvas


def light_print(product: Product, area: Image.Image) -> Image.Image:
    """The design in the print area takes the product's light (for glazed or glossy products)."""
    light = lighting(product.key)
    box = product.print_area
    rgb = ImageChops.multiply(area.convert("RGB"), light.shade.crop(box).convert("RGB"))
    rgb = ImageChops.screen(rgb, light.gloss.crop(box).convert("RGB"))
    rgb.putalpha(area.getchannel("A"))
    return rgb
