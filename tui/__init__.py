"""The Customify dashboard: a Textual app that is a pure client of the HTTP API."""

from tui.app import Dashboard
from tui.client import ApiClient

__all__ = ["ApiClient", "Dashboard"]
