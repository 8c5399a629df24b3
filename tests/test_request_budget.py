"""The request budget bounds every request, and a layer's floor answers zoomed-out views at once.

Zoomed-out views (a zoom-0 tile, a world WMS map) used to take minutes inside GDAL's warp and
fill every render slot. Beyond ``max_meters_per_pixel`` nothing is searched or read: maps get a
transparent image with ``X-Eotiler-Notice``, WCS a 400. Whatever a render does, the request is
answered when its budget is spent, and the render keeps its slot until it really ends.
"""

from __future__ import annotations

import io
import threading
import time

import morecantile
import numpy as np
import pytest
import rasterio
from lxml import etree
from pyproj import Geod
from rasterio.crs import CRS
from rasterio.errors import RasterioIOError

from server.errors import Overloaded, UpstreamTimeout
from server.models import Grid, ImageFormat, RenderRequest, RenderResult
from server.pipeline import Pipeline
from server.settings import Settings
from tests.support.hung_store import HungStore

BUDGET = Settings().request_budget  # the default every test server runs with
WEBMERCATOR = morecantile.tms.get("WebMercatorQuad")


def test_a_world_tile_is_measured_around_the_globe():
    """A zoom-0 tile's middle row is the whole equator: one geodesic between its ends is zero."""
    b = WEBMERCATOR.xy_bounds(0, 0, 0)
    grid = Grid((b.left, b.bottom, b.right, b.top), CRS.from_epsg(3857), 256, 256)
    geod = Geod(ellps="WGS84")
    meridian = geod.inv(0, b_lat(b.bottom), 0, b_lat(b.top))[2]  # the middle column, exactly
    across, down = grid.ground_size()
    assert across == pytest.approx(2 * np.pi * 6378137.0, rel=1e-6)  # the equator
    assert down == pytest.approx(meridian, rel=1e-6)
    assert grid.ground_resolution() == pytest.approx(meridian / 256, rel=1e-6)  # ~74 km per pixel


def b_lat(y: float) -> float:
    """Latitude of Web Mercator northing ``y``."""
    return float(np.degrees(2 * np.arctan(np.exp(y / 6378137.0)) - np.pi / 2))


@pytest.mark.parametrize(("name", "size"), [("0/0/0.png", 256), ("0/0/0@2x.png", 512), ("2/1/1.png", 256)])
def test_zoomed_out_tile_is_transparent_with_a_notice_within_the_budget(client, name, size):
    start = time.perf_counter()
    response = client.get(f"/layers/NDVI/tiles/WebMercatorQuad/{name}", timeout=BUDGET + 10)
    elapsed = time.perf_counter() - start
    assert response.status_code == 200 and elapsed < BUDGET, elapsed
    notice = response.headers["x-eotiler-notice"]
    assert notice.startswith("zoom in: NDVI is drawn at 1500 m per pixel or finer"), notice
    assert response.headers["cache-control"].startswith("public, max-age=")
    assert "x-eotiler-scenes" not in response.headers
    with rasterio.open(io.BytesIO(response.content)) as png:
        assert (png.width, png.height, png.count) == (size, size, 4)
        assert not png.read(4).any()  # fully transparent
    again = client.get(f"/layers/NDVI/tiles/WebMercatorQuad/{name}")
    assert again.headers["x-cache"] == "HIT" and again.headers["x-eotiler-notice"] == notice


def test_tile_finer_than_the_floor_is_drawn(client):
    tile = WEBMERCATOR.tile(-8.9, 53.1, 11)  # ~92 m per pixel over the T29UNU scene
    response = client.get(f"/layers/TRUE_COLOR/tiles/WebMercatorQuad/{tile.z}/{tile.x}/{tile.y}.png?time=2022-10-05")
    assert response.status_code == 200 and "x-eotiler-notice" not in response.headers
    with rasterio.open(io.BytesIO(response.content)) as png:
        assert png.read(4).any()


def test_world_map_is_transparent_and_a_world_coverage_is_refused(client):
    wms = client.get(
        "/ogc/wms",
        params={
            "SERVICE": "WMS", "VERSION": "1.3.0", "REQUEST": "GetMap", "LAYERS": "NDVI", "STYLES": "",
            "CRS": "CRS:84", "BBOX": "-180,-90,180,90", "WIDTH": "512", "HEIGHT": "256",
            "FORMAT": "image/png", "TRANSPARENT": "TRUE",
        },
    )  # fmt: skip
    assert wms.status_code == 200 and wms.headers["x-eotiler-notice"].startswith("zoom in")
    with rasterio.open(io.BytesIO(wms.content)) as png:
        assert (png.width, png.height) == (512, 256) and not png.read(4).any()
    wcs = client.get(
        "/ogc/wcs",
        params={
            "SERVICE": "WCS", "VERSION": "1.0.0", "REQUEST": "GetCoverage", "COVERAGE": "RAW_B04",
            "CRS": "EPSG:4326", "BBOX": "-20,30,40,70", "WIDTH": "256", "HEIGHT": "256", "FORMAT": "GeoTIFF",
        },
    )  # fmt: skip
    assert wcs.status_code == 400
    report = etree.fromstring(wcs.content)
    assert report[0].get("code") == "InvalidParameterValue" and "m per pixel" in report[0].text


def test_budget_answers_a_stuck_render_and_its_slot_stays_taken(test_config, pipeline):
    """The request is answered at its budget; the render it leaves keeps the only slot until it ends."""
    settings = Settings(config=test_config, overview_cache_bytes=0, render_concurrency=1, render_queue=0,
                        request_budget=1)  # fmt: skip
    pipeline = Pipeline(pipeline.registry, settings)  # the session's layers, compiled once
    release = threading.Event()
    grid = Grid((0.0, 0.0, 1.0, 1.0), CRS.from_epsg(3857), 1, 1)
    req = RenderRequest("RAW_B04", grid, ImageFormat.GTIFF)

    def stuck() -> RenderResult:  # stands for a thread inside GDAL: it ends when it ends
        release.wait(30)
        return pipeline.render_empty(req)

    try:
        start = time.perf_counter()
        with pytest.raises(UpstreamTimeout) as spent:
            pipeline.cached("stuck", req, stuck, {})
        assert spent.value.status == 504 and time.perf_counter() - start < 1 + 1.0
        assert pipeline.load() == (1, 0)  # the render still holds its slot
        with pytest.raises(Overloaded):  # so the next one is refused, not queued behind it
            pipeline.cached("next", req, stuck, {})
        release.set()
        deadline = time.monotonic() + 10
        while pipeline.load() != (0, 0) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert pipeline.load() == (0, 0)
        assert pipeline.cache.get("stuck") is not None  # the late, complete image is kept
    finally:
        release.set()
        pipeline.close()


def test_gdal_waits_fit_the_budget_left():
    """Each S3 attempt is capped at the time a request has left, and only the retries that fit stay."""
    settings = Settings(s3_timeout=30, s3_retries=3, s3_stall_timeout=5, request_budget=20)
    base = settings.gdal_environment()
    assert (base.options["GDAL_HTTP_TIMEOUT"], base.options["GDAL_HTTP_LOW_SPEED_TIME"]) == (10, 5)  # half the budget
    assert base.within(60) is base
    late = base.within(4.5)
    assert late.options["GDAL_HTTP_TIMEOUT"] == 4 and late.options["GDAL_HTTP_LOW_SPEED_TIME"] == 4
    assert late.options["GDAL_HTTP_MAX_RETRY"] == 0 and late.options["GDAL_HTTP_CONNECTTIMEOUT"] == 4
    assert late.identity != base.identity  # handles opened with shorter waits are pooled apart


def test_background_reads_keep_long_waits_whatever_request_queued_them():
    """An overview build queued by a request near its deadline waits in the gateway's queue behind
    the views: its waits are the background ones, not the request's shortened ones."""
    settings = Settings(s3_timeout=30, s3_retries=3, s3_stall_timeout=5, request_budget=20)
    late = settings.gdal_environment().within(2)
    background = late.background()
    assert background.options["GDAL_HTTP_TIMEOUT"] >= 120 and background.options["GDAL_HTTP_LOW_SPEED_TIME"] >= 120
    assert background.options["GDAL_HTTP_HEADERS"] == "X-Eotiler-Priority: background"
    assert background.identity != late.identity  # never pooled with the request's own handles


def test_gdal_gives_up_on_a_hung_store_within_the_time_left():
    """A real socket that accepts and never answers: GDAL's open fails once the time left is spent
    on each of its requests (it makes two), not after EOTILER_S3_TIMEOUT."""
    store = HungStore("127.0.0.1:9")  # never told to forward
    settings = Settings(s3_endpoint=store.endpoint, s3_https=False, s3_no_sign_request=True, s3_retries=3)
    environment = settings.gdal_environment().within(2)
    path = "/vsis3/eodata/hung/B04.tif"
    try:
        start = time.perf_counter()
        with environment.env(path), pytest.raises(RasterioIOError):
            rasterio.open(path)
        elapsed = time.perf_counter() - start
    finally:
        store.stop()
    assert store.accepted >= 1 and elapsed < 2 * 2 + 1.5, elapsed
