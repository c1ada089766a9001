"""Every spec the API accepts renders, or fails with a reason that names a layer; nothing crashes the renderer."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema
from PIL import Image

from customify import schemas
from customify.api.designs import check_spec
from customify.config import Limits
from customify.render import PRODUCTS, RenderError, encode, render_design

ASSETS = {"wide": Image.new("RGBA", (300, 80), (200, 30, 30, 160)), "tall": Image.new("RGB", (40, 400), "navy")}


@st.composite
def accepted_specs(draw: st.DrawFn) -> dict[str, Any]:
    """A spec drawn from the API's own JSON schema, then made to pass the server's semantic checks."""
    spec: dict[str, Any] = draw(from_schema(msgspec.json.schema(schemas.DesignIn)))
    spec["color"] = draw(st.sampled_from(PRODUCTS[spec["product"]].colors))
    for layer in spec.get("layers", []):
        if layer["type"] == "image":
            layer["asset_id"] = draw(st.sampled_from(sorted(ASSETS)))
    return spec


@pytest.mark.slow
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(accepted_specs())
def test_every_accepted_spec_renders_or_names_its_layer(spec: dict[str, Any]) -> None:
    data = msgspec.convert(spec, schemas.DesignIn)  # what the API decodes …
    errors = check_spec(data.product, data.color, data.layers, data.name, Limits())  # … and then checks
    if errors:
        return  # refused with a 422: not a spec the API accepts
    stored = msgspec.to_builtins(data)  # what the design row holds and the render helper receives
    try:
        image = render_design(stored, ASSETS)
    except RenderError as exc:
        assert str(exc).startswith("layer "), exc
        return
    rendered = encode(image, PRODUCTS[data.product], 1, 300, "webp")
    assert rendered.size == PRODUCTS[data.product].canvas
