"""`customify render-samples OUT_DIR`: one example design per product and a contact sheet to look at.

Each sample uses text, an image made in code (no files, no network) and a
shape, rendered by the same functions the workers use, with the default
encoder settings.
"""

from __future__ import annotations

import html
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from customify.config import RenderSettings
from customify.render import PRODUCTS, encode, render_design

LOGO = "sample-logo"


def badge(size: int = 600) -> Image.Image:
    """A round mountain-and-sun badge, RGBA with a transparent outside: the sample image layer."""
    ss = 3
    big = size * ss
    sky = Image.linear_gradient("L").resize((big, big))
    art = Image.merge(
        "RGB", (sky.point(lambda v: 255 - v // 6), sky.point(lambda v: 150 - v // 3), sky.point(lambda v: 60 + v // 2))
    )
    draw = ImageDraw.Draw(art)
    draw.ellipse((big * 0.30, big * 0.22, big * 0.70, big * 0.62), fill=(255, 214, 102))  # sun
    draw.polygon(
        [
            (0, big * 0.78),
            (big * 0.32, big * 0.40),
            (big * 0.55, big * 0.70),
            (big * 0.70, big * 0.52),
            (big, big * 0.85),
            (big, big),
            (0, big),
        ],
        fill=(40, 36, 80),
    )
    draw.polygon(
        [
            (big * 0.32, big * 0.40),
            (big * 0.40, big * 0.50),
            (big * 0.35, big * 0.48),
            (big * 0.30, big * 0.52),
            (big * 0.25, big * 0.49),
        ],
        fill=(240, 240, 250),
    )  # snow cap
    draw.polygon(
        [(0, big * 0.90), (big * 0.45, big * 0.78), (big, big * 0.92), (big, big), (0, big)], fill=(24, 22, 52)
    )
    mask = Image.new("L", (big, big), 0)
    ImageDraw.Draw(mask).ellipse((0, 0, big - 1, big - 1), fill=255)
    ring = ImageDraw.Draw(art)
    ring.ellipse((0, 0, big - 1, big - 1), outline=(255, 255, 255), width=big // 40)
    art.putalpha(mask)
    return art.reduce(ss)


def text(value: str, **fields: Any) -> dict[str, Any]:
    return {"type": "text", "text": value, **fields}


def image(**fields: Any) -> dict[str, Any]:
    return {"type": "image", "asset_id": LOGO, **fields}


def shape(kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": "shape", "shape": kind, **fields}


SAMPLES: list[dict[str, Any]] = [
    {
        "name": "Team shirt",
        "product": "tshirt",
        "color": "#1e3a8a",
        "layers": [
            text("TEAM SUMMIT", font="DejaVu Sans", weight="bold", size=0.09, color="#ffffff", x=0.5, y=0.08),
            image(x=0.5, y=0.45, width=0.62),
            shape("rounded_rectangle", x=0.5, y=0.83, width=0.78, height=0.11, radius=0.5, fill="#f59e0b"),
            text("EST. 2025", font="DejaVu Sans Condensed", weight="bold", size=0.065, color="#1e3a8a", x=0.5, y=0.83),
        ],
    },
    {
        "name": "Night shift hoodie",
        "product": "hoodie",
        "color": "#111827",
        "layers": [
            text(
                "NIGHT\nSHIFT",
                font="DejaVu Sans",
                weight="bold",
                size=0.16,
                color="#f9fafb",
                x=0.5,
                y=0.27,
                align="center",
            ),
            shape("line", x=0.15, y=0.56, x2=0.85, y2=0.56, stroke="#f59e0b", stroke_width=0.012),
            image(x=0.5, y=0.80, width=0.32, opacity=0.9),
        ],
    },
    {
        "name": "Morning mug",
        "product": "mug",
        "color": "#ffffff",
        "layers": [
            image(x=0.22, y=0.5, width=0.34),
            text(
                "Good\nmorning,\nsunshine",
                font="DejaVu Serif",
                weight="bold",
                size=0.095,
                color="#7c2d12",
                x=0.44,
                y=0.5,
                anchor="left",
                align="left",
            ),
            shape("ellipse", x=0.22, y=0.8, width=0.28, height=0.035, fill="#7c2d1240"),
        ],
    },
    {
        "name": "Summer fest poster",
        "product": "poster",
        "color": "#fef3c7",
        "layers": [
            shape("rectangle", x=0.5, y=0.5, width=0.96, height=0.97, stroke="#7c2d12", stroke_width=0.012),
            text("SUMMER\nFEST", font="DejaVu Serif", weight="bold", size=0.11, color="#7c2d12", x=0.5, y=0.19),
            image(x=0.5, y=0.56, width=0.66, rotation=-6),
            text(
                "Live music, food trucks and fireworks by the lake. Bring friends, bring a blanket.",
                font="DejaVu Sans",
                size=0.03,
                color="#1f2937",
                x=0.5,
                y=0.88,
                width=0.7,
            ),
            shape("ellipse", x=0.86, y=0.34, width=0.2, height=0.15, fill="#dc2626", rotation=12),
            text("FREE", font="DejaVu Sans", weight="bold", size=0.045, color="#ffffff", x=0.86, y=0.34, rotation=12),
        ],
    },
    {
        "name": "Market tote",
        "product": "tote",
        "color": "#f5f0e1",
        "layers": [
            shape(
                "rounded_rectangle",
                x=0.5,
                y=0.5,
                width=0.9,
                height=0.92,
                radius=0.08,
                stroke="#14532d",
                stroke_width=0.01,
            ),
            text(
                "FARMERS\nMARKET",
                font="DejaVu Sans Condensed",
                weight="bold",
                size=0.12,
                color="#14532d",
                x=0.5,
                y=0.235,
            ),
            image(x=0.5, y=0.6, width=0.4),
            text("fresh · local · seasonal", font="DejaVu Sans Mono", size=0.045, color="#14532d", x=0.5, y=0.86),
        ],
    },
    {
        "name": "Stella phone case",
        "product": "phone_case",
        "color": "#7c3aed",
        "layers": [
            shape("ellipse", x=0.5, y=0.42, width=0.9, height=0.48, fill="#ffffff26"),
            image(x=0.5, y=0.42, width=0.7),
            text("Stella", font="DejaVu Serif", weight="bold", size=0.09, color="#ffffff", x=0.5, y=0.82, rotation=-8),
        ],
    },
]


@dataclass(frozen=True)
class Sample:
    name: str
    product: str
    color: str
    preview: str
    thumbnail: str
    render_ms: float


def render_samples(out_dir: Path, settings: RenderSettings | None = None) -> Path:
    """Render every sample into `out_dir` (previews, thumbnails, index.html); returns the index path."""
    settings = settings or RenderSettings()
    out_dir.mkdir(parents=True, exist_ok=True)
    assets = {LOGO: badge()}
    done: list[Sample] = []
    for spec in SAMPLES:
        started = time.perf_counter()
        image = render_design(spec, assets)
        rendered = encode(
            image,
            PRODUCTS[spec["product"]],
            settings.png_compress_level,
            settings.thumbnail_size,
            settings.thumbnail_format,
        )
        elapsed = (time.perf_counter() - started) * 1000
        ext = "webp" if settings.thumbnail_format == "webp" else "jpg"
        preview, thumb = f"{spec['product']}.png", f"{spec['product']}.thumb.{ext}"
        (out_dir / preview).write_bytes(rendered.preview)
        (out_dir / thumb).write_bytes(rendered.thumbnail)
        done.append(Sample(spec["name"], spec["product"], spec["color"], preview, thumb, elapsed))
    index = out_dir / "index.html"
    index.write_text(contact_sheet(done))
    return index


def contact_sheet(samples: list[Sample]) -> str:
    cards = "\n".join(
        f'  <figure><a href="{html.escape(s.preview)}"><img src="{html.escape(s.thumbnail)}" '
        f'alt="{html.escape(s.name)}" loading="lazy"></a>'
        f"<figcaption><b>{html.escape(s.name)}</b><br>{html.escape(PRODUCTS[s.product].name)} · "
        f'<span class="swatch" style="background:{html.escape(s.color)}"></span> {html.escape(s.color)} · '
        f"{s.render_ms:.0f} ms</figcaption></figure>"
        for s in samples
    )
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Customify samples</title>
<style>
  body {{ font: 15px/1.4 system-ui, sans-serif; margin: 2rem; background: #fafafa; color: #111827; }}
  main {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(300px, 1fr)); gap: 1.5rem; }}
  figure {{ margin: 0; background: #fff; border-radius: 12px; padding: 12px;
            box-shadow: 0 1px 3px rgba(0, 0, 0, .12); text-align: center; }}
  img {{ max-width: 100%; height: 300px; object-fit: contain; }}
  .swatch {{ display: inline-block; width: .9em; height: .9em; border-radius: 50%;
             vertical-align: -.1em; border: 1px solid #d1d5db; }}
</style>
</head>
<body>
<h1>Customify samples</h1>
<p>One design per product; click a thumbnail for the full-size preview PNG.</p>
<main>
{cards}
</main>
</body>
</html>
"""
