"""S3 faults: errors, a hung connection and a truncated body become a bounded 502, and reads
resume as soon as S3 is healthy again. The faults come from the real S3 server
(``tests/support/s3_server.py``), between GDAL and moto, not from monkeypatching."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import morecantile
import pytest
from rasterio.crs import CRS
from rasterio.warp import transform as warp_transform

from server.catalog.layers import LayerRegistry
from server.config import load_config
from server.errors import UpstreamCircuitOpen, UpstreamUnavailable
from server.models import Grid, ImageFormat, RenderRequest, parse_time
from server.pipeline import Pipeline
from tests.support.s3_fixtures import eodata_s3, s3_settings
from tests.support.s3_server import S3Server

WEBMERCATOR = morecantile.tms.get("WebMercatorQuad")


@pytest.fixture(scope="module")
def faulty(tree: dict) -> Iterator[S3Server]:
    """A server of its own: faults must not leak into other tests."""
    yield from eodata_s3(tree)


@pytest.fixture(scope="module")
def fault_pipe(config: Path, faulty: S3Server) -> Iterator[Pipeline]:
    settings = s3_settings(config, faulty, s3_timeout=2, s3_retries=1, dataset_handles=0)
    pipeline = Pipeline(LayerRegistry(load_config(config), settings), settings)
    yield pipeline
    pipeline.close()


def request_for(product: str) -> RenderRequest:
    lon, lat = warp_transform("EPSG:32629", "EPSG:4326", [505000], [5893000])
    b = WEBMERCATOR.xy_bounds(WEBMERCATOR.tile(lon[0], lat[0], 14))
    grid = Grid((b.left, b.bottom, b.right, b.top), CRS.from_epsg(3857), 256, 256)
    day = f"{product[11:15]}-{product[15:17]}-{product[17:19]}"
    return RenderRequest("REQ_B04", grid, ImageFormat.GTIFF, time=parse_time(day))


@pytest.mark.parametrize(("mode", "copy"), [("500", 0), ("503", 1), ("hang", 2), ("truncate", 3), ("drop", 4)])
def test_fault_is_a_bounded_502_and_reads_resume(
    fault_pipe: Pipeline, faulty: S3Server, tree: dict, mode: str, copy: int
):
    product = tree["requests"]["cog"][copy]  # a file no other case has touched: GDAL's caches are cold
    faulty.set_fault(mode)
    start = time.perf_counter()
    try:
        with pytest.raises(UpstreamUnavailable) as failure:
            fault_pipe.render(request_for(product))
    finally:
        faulty.set_fault("none")
    assert failure.value.status == (504 if mode == "hang" else 502)
    elapsed = time.perf_counter() - start
    # bound: timeout 2 s per request, 1 retry with GDAL's backoff; far below a client's patience
    assert elapsed < 15, elapsed
    healed = fault_pipe.render(request_for(product))
    assert healed.scenes == [product] and not healed.failed


def test_slow_catalogue_is_a_504(config: Path, s3: S3Server, stac):
    from fastapi.testclient import TestClient

    from server.app import create_app

    client = TestClient(create_app(s3_settings(config, s3, stac_timeout=1)))
    tile = WEBMERCATOR.tile(-60.0, -20.0, 12)  # never searched: not in the TTL cache
    stac.delay = 3.0
    try:
        start = time.perf_counter()
        response = client.get(f"/layers/NDVI/tiles/WebMercatorQuad/{tile.z}/{tile.x}/{tile.y}.png")
        elapsed = time.perf_counter() - start
    finally:
        stac.delay = 0.0
    assert response.status_code == 504 and "in time" in response.json()["detail"]
    assert elapsed < 2.5


def test_flaky_s3_is_absorbed_by_retries(fault_pipe: Pipeline, faulty: S3Server, tree: dict):
    """Every third S3 request dropped: the bounded retry of a dropped connection makes the tile whole."""
    product = tree["requests"]["cog"][5]
    faulty.reset()
    faulty.set_fault("flaky")
    try:
        result = fault_pipe.render(request_for(product))
    finally:
        faulty.set_fault("none")
    dropped = [r for r in faulty.requests() if r["status"] == -1]
    assert dropped, "the fault was not exercised"
    assert result.scenes == [product] and not result.failed


def test_circuit_breaker_rests_a_failing_bucket_then_resumes(config: Path, faulty: S3Server, tree: dict):
    settings = s3_settings(config, faulty, s3_timeout=2, s3_retries=0, breaker_threshold=2, breaker_cooldown=2)
    pipeline = Pipeline(LayerRegistry(load_config(config), settings), settings)
    products = tree["requests"]["jp2"]  # files no other case here reads: GDAL's caches are cold
    try:
        faulty.set_fault("503")
        for product in products[:2]:
            with pytest.raises(UpstreamUnavailable):
                pipeline.render(request_for(product))
        faulty.reset()
        start = time.perf_counter()
        with pytest.raises(UpstreamCircuitOpen) as resting:
            pipeline.render(request_for(products[2]))
        assert time.perf_counter() - start < 0.5
        assert resting.value.status == 503 and 1 <= resting.value.retry_after <= 2
        assert faulty.requests() == []  # the bucket was left alone
        faulty.set_fault("none")
        time.sleep(2.1)
        healed = pipeline.render(request_for(products[2]))
        assert healed.scenes == [products[2]] and not healed.failed
    finally:
        faulty.set_fault("none")
        pipeline.close()


def test_circuit_breaker_rests_a_failing_catalogue(config: Path, s3: S3Server, stac):
    from fastapi.testclient import TestClient

    from server.app import create_app

    client = TestClient(create_app(s3_settings(config, s3, breaker_threshold=2, breaker_cooldown=30)))
    stac.fail_with = 503
    try:
        tiles = [WEBMERCATOR.tile(-50.0 + i, -30.0, 12) for i in range(4)]  # never searched before
        statuses = []
        before = stac.attempts
        for tile in tiles:
            response = client.get(f"/layers/NDVI/tiles/WebMercatorQuad/{tile.z}/{tile.x}/{tile.y}.png")
            statuses.append(response.status_code)
        attempts = stac.attempts - before
    finally:
        stac.fail_with = None
    assert statuses == [502, 502, 503, 503]
    assert response.headers["Retry-After"].isdigit()
    assert "left alone" in response.json()["detail"]
    # two failed searches with their retries, then none at all
    assert attempts == 2 * (1 + 2)
