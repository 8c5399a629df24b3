"""Rendered-image caching: keys (``keys.py``) and the two-level tile cache (``tile_cache.py``)."""
