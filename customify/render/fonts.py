"""The fonts Customify ships. Clients name a family; they never pass a path."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import get_args

from PIL import ImageFont

from customify.render.spec import Weight

FONT_DIR = Path(__file__).parent / "fonts"

# family → weight → file inside the package
FONTS: dict[str, dict[str, str]] = {
    "DejaVu Sans": {"regular": "DejaVuSans.ttf", "bold": "DejaVuSans-Bold.ttf"},
    "DejaVu Serif": {"regular": "DejaVuSerif.ttf", "bold": "DejaVuSerif-Bold.ttf"},
    "DejaVu Sans Mono": {"regular": "DejaVuSansMono.ttf", "bold": "DejaVuSansMono-Bold.ttf"},
    "DejaVu Sans Condensed": {"regular": "DejaVuSansCondensed.ttf", "bold": "DejaVuSansCondensed-Bold.ttf"},
}
WEIGHTS: tuple[str, ...] = get_args(Weight)


@lru_cache(maxsize=256)
def load_font(family: str, weight: str, size_px: int) -> ImageFont.FreeTypeFont:
    """A shipped font at a pixel size; KeyError for a family or weight we do not ship."""
    return ImageFont.truetype(str(FONT_DIR / FONTS[family][weight]), size_px)
