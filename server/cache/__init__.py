"""Caching: keys (``keys.py``), the two-level tile cache (``tile_cache.py``), renders through it
(``render_cache.py``), documents that live as long as the catalogue extent (``documents.py``)."""
