"""Customify: designs in, rendered product previews out."""

__version__ = "0.1.0"
