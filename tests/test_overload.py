"""Bounded rendering: beyond the render slots and the waiting line, a fast 503 with Retry-After."""

from __future__ import annotations

import threading
import time

from fastapi.testclient import TestClient
from lxml import etree

from server.app import create_app
from server.settings import Settings

TILE = "/layers/TRUE_COLOR/tiles/WebMercatorQuad/11/974/666.png?time=2022-10-05"
OTHER = "/layers/TRUE_COLOR/tiles/WebMercatorQuad/12/1948/1332.png?time=2022-10-05"
GETMAP = (
    "/ogc/wms?SERVICE=WMS&VERSION=1.3.0&REQUEST=GetMap&LAYERS=TRUE_COLOR&STYLES=&CRS=EPSG:4326"
    "&BBOX=53.0,-8.9,53.2,-8.6&WIDTH=64&HEIGHT=64&FORMAT=image/png&TIME=2022-10-05"
)


def test_busy_server_refuses_fast_and_still_serves_cached_tiles(test_config):
    settings = Settings(config=test_config, overview_cache_bytes=0, render_concurrency=1, render_queue=0)
    client = TestClient(create_app(settings))
    assert client.get(TILE).status_code == 200  # now in the memory cache
    pipeline = client.app.state.pipeline
    holding, release = threading.Event(), threading.Event()

    def busy() -> None:
        with pipeline.render_slot():
            holding.set()
            release.wait(30)

    worker = threading.Thread(target=busy)
    worker.start()
    try:
        assert holding.wait(10)
        start = time.perf_counter()
        refused = client.get(OTHER)
        elapsed = time.perf_counter() - start
        assert refused.status_code == 503 and refused.headers["retry-after"] == "2"
        assert "busy" in refused.json()["detail"] and elapsed < 1.0
        wms = client.get(GETMAP)
        assert wms.headers["retry-after"] == "2"
        assert etree.QName(etree.fromstring(wms.content)).localname == "ServiceExceptionReport"
        cached = client.get(TILE)
        assert cached.status_code == 200 and cached.headers["x-cache"] == "HIT"
    finally:
        release.set()
        worker.join()
    assert client.get(OTHER).status_code == 200  # the slot is free again
