"""`customify render-samples OUT_DIR`: one preview per product and a contact sheet that links them."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner
from PIL import Image, ImageChops

from customify.cli import main
from customify.render import PRODUCTS
from customify.render.spec import parse_color
from customify.samples import SAMPLES, badge

SUN = (255, 214, 102)


def count_near(image: Image.Image, color: tuple[int, ...], tolerance: int) -> int:
    """Pixels whose every channel is within `tolerance` of `color` (computed in C, not per pixel in Python)."""
    diff = ImageChops.difference(image, Image.new("RGB", image.size, color[:3])).split()
    worst = ImageChops.lighter(ImageChops.lighter(diff[0], diff[1]), diff[2])
    return worst.point(lambda v: 255 if v <= tolerance else 0).histogram()[255]


def test_every_product_has_a_sample_with_text_image_and_shape() -> None:
    assert sorted(s["product"] for s in SAMPLES) == sorted(PRODUCTS)
    for sample in SAMPLES:
        assert {layer["type"] for layer in sample["layers"]} == {"text", "image", "shape"}
        assert sample["color"] in PRODUCTS[sample["product"]].colors


def test_badge_is_made_in_code_with_transparent_corners() -> None:
    logo = badge(200)
    assert logo.mode == "RGBA" and logo.size == (200, 200)
    assert logo.getpixel((2, 2))[3] == 0  # type: ignore[index]
    assert logo.getpixel((100, 100))[3] == 255  # type: ignore[index]


def test_render_samples_command_writes_previews_and_a_contact_sheet(tmp_path: Path) -> None:
    out = tmp_path / "gallery"
    result = CliRunner().invoke(main, ["render-samples", str(out)])
    assert result.exit_code == 0, result.output
    assert "index.html" in result.output
    index = (out / "index.html").read_text()
    linked = set(re.findall(r'href="([^"]+)"', index))
    shown = set(re.findall(r'src="([^"]+)"', index))
    assert linked == {f"{key}.png" for key in PRODUCTS}
    assert shown == {f"{key}.thumb.webp" for key in PRODUCTS}
    for sample in SAMPLES:
        key = sample["product"]
        with Image.open(out / f"{key}.png") as png:
            preview = png.convert("RGB")
        assert preview.size == PRODUCTS[key].canvas
        with Image.open(out / f"{key}.thumb.webp") as thumb:
            assert thumb.format == "WEBP" and max(thumb.size) == 300
        # The product's colour covers a good part of the picture, and the badge's sun is there.
        color = parse_color(sample["color"])[:3]
        product_share = count_near(preview, color, 45) / (preview.width * preview.height)
        sun = count_near(preview, SUN, 30)
        assert product_share > 0.08, f"{key}: only {product_share:.0%} of the preview in {sample['color']}"
        assert sun > 500, f"{key}: the image layer's sun is missing"
        assert sample["name"] in index
