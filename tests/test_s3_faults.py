"""S3 faults: errors, a hung connection and a truncated body become a bounded 502, and reads
resume as soon as S3 is healthy again. The faults come from the real S3 server
(``tests/support/s3_server.py``), between GDAL and moto, not from monkeypatching."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import morecantile
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.warp import transform as warp_transform

from server.catalog.layers import LayerRegistry
from server.config import load_config
from server.errors import UpstreamCircuitOpen, UpstreamUnavailable
from server.models import Grid, ImageFormat, RenderRequest, parse_time
from server.pipeline import Pipeline
from tests.conftest import serve
from tests.support.hung_store import HungStore
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


def test_hung_store_is_answered_within_the_budget_and_recovery_shows_quickly(config: Path, faulty: S3Server, tree):
    """A store that accepts connections and never answers: every tile is answered within the
    request budget (504, then 503 from the circuit breaker), and once the store answers again
    the breaker's probe lets tiles through within a few seconds."""
    budget = 4
    store = HungStore(faulty.endpoint)
    settings = s3_settings(
        config, faulty, s3_endpoint=store.endpoint, s3_retries=0, request_budget=budget, breaker_threshold=1
    )
    product = tree["requests"]["jp2"][3]  # a file no other case here reads: GDAL's caches are cold
    req = request_for(product)
    lon, lat = warp_transform("EPSG:3857", "EPSG:4326", [sum(req.grid.bbox[0::2]) / 2], [sum(req.grid.bbox[1::2]) / 2])
    tile = WEBMERCATOR.tile(lon[0], lat[0], 14)
    path = f"/layers/REQ_B04/tiles/WebMercatorQuad/14/{tile.x}/{tile.y}.tif?time={req.time.isoformat()}"
    try:
        with serve(settings) as url, httpx.Client(base_url=url, timeout=budget + 10) as http:
            start = time.perf_counter()
            hung = http.get(path)
            assert hung.status_code == 504 and time.perf_counter() - start < budget + 1.5
            assert store.accepted >= 1  # GDAL did reach the hung store
            # The render it left fails at its own deadline and opens the circuit: refused at once.
            statuses = []
            for _ in range(40):
                start = time.perf_counter()
                answer = http.get(path)
                assert time.perf_counter() - start < budget + 1.5
                statuses.append(answer.status_code)
                if answer.status_code == 503:
                    break
                time.sleep(0.25)
            assert statuses[-1] == 503 and "left alone" in answer.json()["detail"], statuses
            rest = int(answer.headers["retry-after"])  # 2 s, doubled for each probe that met the hung store
            assert 1 <= rest <= 8
            store.forward()
            recovered = time.perf_counter()
            for _ in range(40):
                answer = http.get(path)
                if answer.status_code == 200:
                    break
                assert answer.status_code == 503, answer.status_code
                time.sleep(0.25)
            waited = time.perf_counter() - recovered
    finally:
        store.stop()
    assert answer.status_code == 200 and waited < rest + 3, (waited, rest)  # probed again at once
    with rasterio.open(io.BytesIO(answer.content)) as tif:
        assert tif.read(1).any()
