"""sentinelhub-py collections served by a server under test.

sentinelhub-py keeps one global registry of collections and refuses a second name for the same
definition, so every test module asks here: one name per server URL, defined once per process.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from sentinelhub import DataCollection


def sentinel2_l2a_at(url: str) -> DataCollection:
    """``SENTINEL2_L2A`` whose requests go to the server at ``url`` (Process, Statistical, WFS)."""
    name = f"eotiler-s2l2a-{urlsplit(url).port}"
    return DataCollection.SENTINEL2_L2A.define_from(name, service_url=url)
