"""Capabilities and coverage domains live as long as the catalogue extent they were built from.

A STAC API that is down when the first GetCapabilities arrives gives every layer the whole-globe
stand-in; once the API answers again (the catalogue retries its extent a minute later), the next
capabilities documents carry the collection's real extent instead of the stand-in.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from lxml import etree

from server.app import create_app
from server.settings import Settings
from tests.conftest import free_port
from tests.support.s3_fixtures import MOSAIC_ITEMS, S1_ITEMS, S2_ITEMS, s3_config
from tests.support.stac_api import StacApi

WMS = "{http://www.opengis.net/wms}"
OWS = "{http://www.opengis.net/ows/1.1}"
GLOBE = (-180.0, -90.0, 180.0, 90.0)


@contextlib.contextmanager
def serving(app: FastAPI) -> Iterator[httpx.Client]:
    """``app`` under real uvicorn on 127.0.0.1, with a client on it."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "test server did not start"
        time.sleep(0.05)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.config.port}", timeout=60) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def wms_box(client: httpx.Client, layer: str) -> tuple[float, ...]:
    response = client.get("/ogc/wms", params={"SERVICE": "WMS", "REQUEST": "GetCapabilities", "VERSION": "1.3.0"})
    assert response.status_code == 200, response.text[:300]
    root = etree.fromstring(response.content)
    for element in root.iter(f"{WMS}Layer"):
        if element.findtext(f"{WMS}Name") == layer:
            box = element.find(f"{WMS}EX_GeographicBoundingBox")
            names = ("westBoundLongitude", "southBoundLatitude", "eastBoundLongitude", "northBoundLatitude")
            return tuple(float(box.findtext(f"{WMS}{name}")) for name in names)
    raise AssertionError(f"{layer} is not in the WMS capabilities")


def wmts_box(client: httpx.Client, layer: str) -> tuple[float, ...]:
    response = client.get("/ogc/wmts", params={"SERVICE": "WMTS", "REQUEST": "GetCapabilities"})
    assert response.status_code == 200, response.text[:300]
    root = etree.fromstring(response.content)
    for element in root.iter("{http://www.opengis.net/wmts/1.0}Layer"):
        if element.findtext(f"{OWS}Identifier") == layer:
            box = element.find(f"{OWS}WGS84BoundingBox")
            west, south = (float(v) for v in box.findtext(f"{OWS}LowerCorner").split())
            east, north = (float(v) for v in box.findtext(f"{OWS}UpperCorner").split())
            return west, south, east, north
    raise AssertionError(f"{layer} is not in the WMTS capabilities")


@pytest.fixture()
def stac() -> Iterator[StacApi]:
    api = StacApi({"sentinel-2-l2a": S2_ITEMS, "sentinel-2-global-mosaics": MOSAIC_ITEMS, "sentinel-1-grd": S1_ITEMS})
    yield api
    api.stop()


def test_capabilities_are_rebuilt_once_the_catalogue_recovers(tmp_path: Path, stac: StacApi) -> None:
    settings = Settings(config=s3_config(tmp_path, stac.url), s3_gateway=False, cache_memory_bytes=0)
    app = create_app(settings)
    real = tuple(stac.collection("sentinel-2-l2a")["extent"]["spatial"]["bbox"][0])
    catalogue = app.state.pipeline.registry.get("TRUE_COLOR").catalogue
    stac.fail_with = 503  # the catalogue is down when the first client asks
    with serving(app) as client:
        assert wms_box(client, "TRUE_COLOR") == GLOBE
        assert wmts_box(client, "TRUE_COLOR") == pytest.approx(GLOBE)
        stac.fail_with = None  # it recovers ...
        catalogue._extent_retry = time.monotonic() - 1  # ... and the catalogue's minute before a retry has passed
        assert wms_box(client, "TRUE_COLOR") == pytest.approx(real, abs=1e-5)
        assert wmts_box(client, "TRUE_COLOR") == pytest.approx(real, abs=1e-5)
        assert wms_box(client, "TRUE_COLOR") == pytest.approx(real, abs=1e-5)  # and stays
