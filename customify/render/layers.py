"""Drawing one layer onto the print area (an RGBA image).

Coordinates are fractions of the print area (origin top left); sizes of text
are fractions of its height, widths of its width, stroke widths of its
shorter side. Rotation is in degrees, clockwise, about the anchor point.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from PIL import Image, ImageDraw, ImageFont

from customify.render.fonts import FONTS, load_font
from customify.render.spec import Anchor, ImageLayer, Layer, ShapeLayer, TextLayer, parse_color

ANCHORS: dict[Anchor, tuple[float, float]] = {
    "top_left": (0.0, 0.0),
    "top": (0.5, 0.0),
    "top_right": (1.0, 0.0),
    "left": (0.0, 0.5),
    "center": (0.5, 0.5),
    "right": (1.0, 0.5),
    "bottom_left": (0.0, 1.0),
    "bottom": (0.5, 1.0),
    "bottom_right": (1.0, 1.0),
}
SS = 3  # supersampling for shapes: drawn at 3× their box, then box-averaged down
MAX_TEXT_SCALE = 4  # a text block larger than this many print areas fits nowhere


class LayerError(Exception):
    """A layer that cannot be drawn as specified."""


def draw_layer(area: Image.Image, layer: Layer, assets: Mapping[str, Image.Image]) -> None:
    """Draw one layer onto the print area, in place; LayerError says what to change."""
    if isinstance(layer, TextLayer):
        _place(area, _text_image(area, layer), layer.x, layer.y, layer.anchor, layer.rotation)
    elif isinstance(layer, ImageLayer):
        source = assets.get(layer.asset_id)
        if source is None:
            raise LayerError(
                f"its image (asset {layer.asset_id}) no longer exists; upload the image "
                "again and set the layer's asset_id to the new id"
            )
        _place(area, _image_image(area, layer, source), layer.x, layer.y, layer.anchor, layer.rotation)
    else:
        _draw_shape(area, layer)


def _place(area: Image.Image, image: Image.Image, x: float, y: float, anchor: Anchor, rotation: float) -> None:
    """Rotate `image` about its anchor and composite it at (x, y), clipped to the area."""
    w, h = area.size
    fx, fy = ANCHORS[anchor]
    ax, ay = fx * image.width, fy * image.height  # the anchor inside the unrotated image
    if rotation % 360:
        cx, cy = image.width / 2, image.height / 2
        rotated = image.rotate(-rotation, resample=Image.Resampling.BICUBIC, expand=True)
        # Where the anchor went: rotate its offset from the centre, clockwise on screen.
        rad = math.radians(rotation)
        dx, dy = ax - cx, ay - cy
        rx = dx * math.cos(rad) - dy * math.sin(rad)
        ry = dx * math.sin(rad) + dy * math.cos(rad)
        ax, ay = rotated.width / 2 + rx, rotated.height / 2 + ry
        image = rotated
    left = round(x * w - ax)
    top = round(y * h - ay)
    ink = image.getbbox()  # the visible part (non-zero alpha), not the padded box
    if ink is None:
        return
    if left + ink[0] >= w or top + ink[1] >= h or left + ink[2] <= 0 or top + ink[3] <= 0:
        raise LayerError(
            "it lies entirely outside the print area, so nothing of it would be printed; move x/y or change the anchor"
        )
    _composite(area, image, left, top)


def _composite(area: Image.Image, image: Image.Image, left: int, top: int) -> None:
    """alpha_composite that accepts an image partly (or at negative offsets) outside the area."""
    src_left, src_top = max(0, -left), max(0, -top)
    dst_left, dst_top = max(0, left), max(0, top)
    width = min(image.width - src_left, area.width - dst_left)
    height = min(image.height - src_top, area.height - dst_top)
    if width <= 0 or height <= 0:
        return
    area.alpha_composite(image, (dst_left, dst_top), (src_left, src_top, src_left + width, src_top + height))


def _wrap(text: str, font: ImageFont.FreeTypeFont, max_width: float | None) -> str:
    if max_width is None:
        return text
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split(" "):
            candidate = f"{line} {word}" if line else word
            if font.getlength(candidate) <= max_width:
                line = candidate
                continue
            if line:
                lines.append(line)
            # A word longer than the width breaks between characters, like CSS overflow-wrap.
            line = ""
            for char in word:
                if font.getlength(line + char) > max_width:
                    if not line:
                        raise LayerError("the text size is larger than its wrap width; lower size or raise width")
                    lines.append(line)
                    line = ""
                line += char
        lines.append(line)
    return "\n".join(lines)


def _text_image(area: Image.Image, layer: TextLayer) -> Image.Image:
    size_px = max(1, round(layer.size * area.height))
    family, weight = layer.font, layer.weight
    if family not in FONTS or weight not in FONTS[family]:
        raise LayerError(f"font {family!r} ({weight}) is not shipped; choose one of {', '.join(FONTS)}")
    font = load_font(family, weight, size_px)
    wrap_width = layer.width
    text = _wrap(layer.text, font, wrap_width * area.width if wrap_width else None)
    align = layer.align
    probe = ImageDraw.Draw(Image.new("L", (1, 1)))
    spacing = size_px // 5
    left, _, right, bottom = probe.multiline_textbbox((0, 0), text, font=font, align=align, spacing=spacing)
    # Lay out on the font's line box, not the ink box, so anchors are stable across strings.
    ascent, descent = font.getmetrics()
    lines = text.count("\n") + 1
    height = max(bottom, lines * (ascent + descent) + (lines - 1) * spacing)
    if right - min(0, left) > MAX_TEXT_SCALE * area.width or height > MAX_TEXT_SCALE * area.height:
        raise LayerError(
            f"the text does not fit: at size {layer.size:g} its {lines} line(s) "
            f"are {round(right - min(0, left))}×{round(height)} px for a print area of "
            f"{area.width}×{area.height} px; lower size, shorten the text or set a wrap width"
        )
    image = Image.new("RGBA", (max(1, math.ceil(right - min(0, left))), max(1, math.ceil(height))), (0, 0, 0, 0))
    ImageDraw.Draw(image).multiline_text(
        (-min(0, left), 0), text, font=font, align=align, spacing=spacing, fill=parse_color(layer.color)
    )
    return image


def _image_image(area: Image.Image, layer: ImageLayer, source: Image.Image) -> Image.Image:
    """The asset scaled to `width` of the print area, aspect kept, its transparency and opacity applied."""
    width = max(1, round(layer.width * area.width))
    height = max(1, round(source.height * width / source.width))
    if height > MAX_TEXT_SCALE * area.height:
        raise LayerError(f"the image would be {height} px tall for a print area {area.height} px tall; lower width")
    mode = "RGBA" if source.mode in ("RGBA", "LA", "PA") or "transparency" in source.info else "RGB"
    image = source.convert(mode)
    if image.size != (width, height):
        # Downscaling: a whole-factor box reduction first when the factor is large, then Lanczos.
        shrinking = width < image.width
        image = image.resize(
            (width, height),
            Image.Resampling.LANCZOS if shrinking else Image.Resampling.BICUBIC,
            reducing_gap=3.0 if shrinking else None,
        )
    if image.mode != "RGBA":
        image = image.convert("RGBA")
    opacity = layer.opacity
    if opacity < 1.0:
        image.putalpha(image.getchannel("A").point([round(v * opacity) for v in range(256)]))
    return image


def _draw_shape(area: Image.Image, layer: ShapeLayer) -> None:
    w, h = area.size
    fill = parse_color(layer.fill) if layer.fill else None
    stroke = parse_color(layer.stroke) if layer.stroke else None
    stroke_px = round(layer.stroke_width * min(w, h) * SS)
    kind = layer.shape
    x0, y0 = layer.x, layer.y
    x1 = layer.x2 if layer.x2 is not None else x0
    y1 = layer.y2 if layer.y2 is not None else y0
    if kind == "line":
        box_w, box_h = abs(x1 - x0) * w, abs(y1 - y0) * h
    else:
        box_w, box_h = layer.width * w, layer.height * h
    pad = stroke_px // SS + 2
    canvas = Image.new("RGBA", ((round(box_w) + 2 * pad) * SS, (round(box_h) + 2 * pad) * SS), (0, 0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    box = (pad * SS, pad * SS, (pad + box_w) * SS, (pad + box_h) * SS)
    if kind == "rectangle":
        draw.rectangle(box, fill=fill, outline=stroke, width=stroke_px if stroke else 0)
    elif kind == "rounded_rectangle":
        radius = layer.radius * min(box_w, box_h) * SS
        draw.rounded_rectangle(box, radius=radius, fill=fill, outline=stroke, width=stroke_px if stroke else 0)
    elif kind == "ellipse":
        draw.ellipse(box, fill=fill, outline=stroke, width=stroke_px if stroke else 0)
    elif kind == "line":
        start = (box[0] if x1 >= x0 else box[2], box[1] if y1 >= y0 else box[3])
        end = (box[2] if x1 >= x0 else box[0], box[3] if y1 >= y0 else box[1])
        draw.line([start, end], fill=stroke or fill or (0, 0, 0, 255), width=max(SS, stroke_px))
    else:
        raise LayerError(f"unknown shape {kind!r}")
    canvas = canvas.reduce(SS)
    if kind == "line":
        left = round(min(x0, x1) * w) - pad
        top = round(min(y0, y1) * h) - pad
        _composite(area, canvas, left, top)
        return
    # Anchor and rotation apply to the shape's box, as for text and images.
    _place_box(area, canvas, layer, pad)


def _place_box(area: Image.Image, canvas: Image.Image, layer: ShapeLayer, pad: int) -> None:
    # The padded canvas's anchor sits `pad` pixels inside its edges; shift x/y so the box, not the pad, is anchored.
    w, h = area.size
    fx, fy = ANCHORS[layer.anchor]
    inner_w, inner_h = canvas.width - 2 * pad, canvas.height - 2 * pad
    x = (layer.x * w + (fx * canvas.width - (pad + fx * inner_w))) / w
    y = (layer.y * h + (fy * canvas.height - (pad + fy * inner_h))) / h
    _place(area, canvas, x, y, layer.anchor, layer.rotation)
