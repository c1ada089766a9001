"""A typed client generated from the OpenAPI document (openapi-python-client) creates a design,
waits for it and downloads its preview from the live app."""

from __future__ import annotations

import importlib
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from customify import records
from customify.api.openapi import EXAMPLE_DESIGN
from tests.conftest import LiveApp

# Image bodies are bytes to a Python client: the generator knows them as octet streams.
GENERATOR_CONFIG = {
    "content_type_overrides": {
        "image/png": "application/octet-stream",
        "image/webp": "application/octet-stream",
        "image/jpeg": "application/octet-stream",
    }
}


def generate(live: LiveApp, out: Path) -> None:
    (out / "openapi.json").write_text(live.client.get("/schema/openapi.json").text)
    (out / "config.json").write_text(json.dumps(GENERATOR_CONFIG))
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("openapi-python-client")),
            "generate",
            "--path",
            "openapi.json",
            "--config",
            "config.json",
            "--meta",
            "none",
            "--output-path",
            "customify_client",
        ],
        cwd=out,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0 and (out / "customify_client" / "client.py").exists(), result.stdout + result.stderr


@pytest.mark.slow
def test_generated_client_creates_waits_for_and_downloads_a_design(live: LiveApp, tmp_path: Path) -> None:
    generate(live, tmp_path)
    with live.rt.transaction() as session:
        _, key = records.create_user(session, "client@example.com", False)
    sys.path.insert(0, str(tmp_path))
    try:
        client_mod: Any = importlib.import_module("customify_client")
        models: Any = importlib.import_module("customify_client.models")
        designs = "customify_client.api.designs"
        create: Any = importlib.import_module(f"{designs}.api_v1_designs_create_design")
        get: Any = importlib.import_module(f"{designs}.api_v1_designs_design_id_get_design")
        preview: Any = importlib.import_module(f"{designs}.api_v1_designs_design_id_preview_png_preview")
        with client_mod.AuthenticatedClient(base_url=live.base_url, token=str(key), timeout=None) as client:
            created = create.sync(client=client, body=models.DesignIn.from_dict(EXAMPLE_DESIGN))
            assert isinstance(created, models.Design) and created.status == models.DesignStatus.DRAFT
            done = get.sync(created.id, client=client, wait=20.0)
            assert isinstance(done, models.Design) and done.status == models.DesignStatus.PUBLISHED, done
            assert isinstance(done.layers[0], models.TextLayer) and done.layers[0].text == "HELLO"
            missing = get.sync("00000000-0000-4000-8000-00000000dead", client=client)
            assert isinstance(missing, models.ProblemDetails) and missing.status == 404
            png = preview.sync_detailed(created.id, client=client)
            assert png.status_code == 200
            image = Image.open(io.BytesIO(png.content))
            assert image.format == "PNG" and image.size == (1200, 1200)
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m == "customify_client" or m.startswith("customify_client.")]:
            del sys.modules[name]
