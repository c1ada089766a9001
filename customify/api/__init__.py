"""The HTTP API (Litestar)."""

from customify.api.app import create_app

__all__ = ["create_app"]
