"""The server keeps within an S3 quota: every read goes through the S3 gateway's governor.

A real S3 server on loopback holds the sample as bucket ``eodata``; its request log says how many
requests were in flight when each arrived, and ``429xN`` makes it answer as CDSE does beyond the
quota. Servers run under real uvicorn, one in-process and one ``eotiler serve --workers 2``.
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import time
from pathlib import Path

import httpx
import morecantile
import pytest
from rasterio.crs import CRS

from server.catalog.layers import LayerRegistry
from server.config import load_config
from server.models import Grid, ImageFormat, RenderRequest, parse_time
from server.pipeline import Pipeline
from tests.conftest import serve
from tests.support.s3_fixtures import s3_settings
from tests.support.s3_server import S3Server
from tests.support.serve_process import eotiler_process

WEBMERCATOR = morecantile.tms.get("WebMercatorQuad")
# 16 z12 tiles over T29UNU's data (52.97-53.25 N, 8.54-9.00 W), true colour: three bands each
TILES = [
    f"/layers/TRUE_COLOR/tiles/WebMercatorQuad/12/{x}/{y}.png?time=2022-10-05"
    for x in range(1946, 1950)
    for y in range(1330, 1334)
]


def tile_answers(base: str, paths: list[str]) -> list[httpx.Response]:
    with concurrent.futures.ThreadPoolExecutor(len(paths)) as pool:
        return list(pool.map(lambda path: httpx.get(base + path, timeout=60), paths))


def drawn(answer: httpx.Response) -> bool:
    return answer.status_code == 200 and "T29UNU" in answer.headers.get("x-eotiler-scenes", "")


def test_concurrent_tiles_hold_at_most_the_configured_connections(config: Path, s3: S3Server) -> None:
    settings = s3_settings(config, s3, s3_gateway=True, s3_connections=2, dataset_handles=0)
    with serve(settings) as url:
        s3.reset()
        answers = tile_answers(url, TILES)
        seen = s3.requests()
    assert all(drawn(a) for a in answers), [(a.status_code, a.headers.get("x-eotiler-failed-scenes")) for a in answers]
    assert len({entry["path"] for entry in seen}) >= 3  # the three bands' files were read
    assert max(entry["active"] for entry in seen) <= 2


def test_a_429_with_retry_after_delays_the_read_and_the_tile_succeeds(config: Path, s3: S3Server) -> None:
    settings = s3_settings(config, s3, s3_gateway=True)
    with serve(settings) as url:
        s3.reset()
        s3.set_fault("429x2")
        start = time.monotonic()
        answer = httpx.get(url + TILES[5], timeout=60)
        elapsed = time.monotonic() - start
        statuses = [entry["status"] for entry in s3.requests()]
    assert drawn(answer) and "x-eotiler-failed-scenes" not in answer.headers
    assert statuses[:2] == [429, 429] and 429 not in statuses[2:]
    # Retry-After: 1 held every read back (the tile's three bands may meet the two 429s at once)
    assert elapsed >= 1.0


def test_workers_share_one_gateway_and_no_credential_work_per_tile(config: Path, s3: S3Server, tmp_path: Path) -> None:
    """Two workers, documented AWS_* credentials: the quota holds for the whole server."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "EOTILER_"))},
        **s3.env(),
        "EOTILER_S3_GATEWAY": "true",
        "EOTILER_S3_CONNECTIONS": "3",
        "EOTILER_CACHE_MEMORY_BYTES": "0",
        "EOTILER_OVERVIEW_CACHE_BYTES": "0",
        "EOTILER_JP2_INDEX_DIR": str(tmp_path / "index"),
        "EOTILER_LOG_LEVEL": "info",
    }
    log = tmp_path / "server.log"
    with log.open("w") as output, eotiler_process(config, "--workers", "2", env=env, output=output) as (url, _):
        s3.reset()
        answers = tile_answers(url, TILES)
        seen = s3.requests()
        made = 0.0
        for _ in range(40):  # the supervisor folds the gateway's counters in every few seconds
            metrics = httpx.get(url + "/metrics", timeout=30).text
            found = re.search(r"^eotiler_s3_gateway_requests_total ([0-9.e+]+)$", metrics, re.M)
            made = float(found.group(1)) if found else 0.0
            if made >= len(seen):
                break
            time.sleep(0.25)
    assert all(drawn(a) for a in answers)
    assert max(entry["active"] for entry in seen) <= 3
    assert made == len(seen)  # every S3 request of both workers went through the one gateway
    text = log.read_text()
    assert "Found credentials" not in text  # botocore's line: no boto3 session was built
    assert "test-secret" not in text


@pytest.fixture(autouse=True)
def _healed(s3: S3Server):
    yield
    s3.set_fault("none")


def test_the_gateway_is_a_process_of_its_own_and_comes_back_when_killed(config: Path, s3: S3Server) -> None:
    """A GDAL call that keeps the GIL (a decimated GeoTIFF read: the Sentinel-1 layer) cannot stall a
    gateway in another process; a gateway that dies is started again on the same port."""
    settings = s3_settings(config, s3, s3_gateway=True)
    pipeline = Pipeline(LayerRegistry(load_config(config), settings), settings)
    try:
        gateway = pipeline.gateway
        assert gateway is not None and gateway.alive()
        start = time.monotonic()
        s1 = pipeline.render(RenderRequest("S1_VH_DB", tile_grid(8, 182, 120), ImageFormat.PNG))
        assert s1.scenes and not s1.failed
        assert time.monotonic() - start < 5  # a thread gateway waited out GDAL's 10 s timeout here
        gateway._process.kill()  # type: ignore[union-attr]
        for _ in range(200):
            if gateway.restarts == 1 and gateway.alive():
                break
            time.sleep(0.05)
        assert gateway.restarts == 1 and gateway.alive()
        s2 = pipeline.render(
            RenderRequest("TRUE_COLOR", tile_grid(12, 1947, 1331), ImageFormat.PNG, time=parse_time("2022-10-05"))
        )
        assert s2.scenes and not s2.failed
    finally:
        pipeline.close()


def tile_grid(z: int, x: int, y: int) -> Grid:
    b = WEBMERCATOR.xy_bounds(morecantile.Tile(x, y, z))
    return Grid((b.left, b.bottom, b.right, b.top), CRS.from_epsg(3857), 256, 256)


def test_sixteen_concurrent_tiles_stay_within_the_quota_proxys_count(config: Path, s3: S3Server) -> None:
    """Counted as CDSE counts: ``benchmarks/quota_proxy.py`` (4 in flight, 429 beyond, 30 ms, 20 MB/s)
    with every connection closed after its answer, so the proxy still counts a finished request
    while the gateway's next one arrives on a new connection (the governor's linger covers it)."""
    from benchmarks.quota_proxy import Limits, QuotaProxy

    proxy = QuotaProxy(s3.endpoint, Limits(connections=4, rtt_ms=30, mb_per_s=20, keep_alive=False))
    try:
        settings = s3_settings(config, proxy, s3_gateway=True, dataset_handles=0)  # type: ignore[arg-type]
        with serve(settings) as url:
            proxy.reset()
            answers = tile_answers(url, TILES)
            seen = [entry for entry in proxy.requests() if entry["key"] == "test-key"]
    finally:
        proxy.stop()
    assert all(drawn(a) for a in answers), [(a.status_code, a.headers.get("x-eotiler-failed-scenes")) for a in answers]
    assert len({entry["path"] for entry in seen}) >= 3  # the three bands' files were read
    assert max(entry["active"] for entry in seen) <= 4, [e for e in seen if e["active"] > 4]
    assert not [entry for entry in seen if entry["status"] == 429]
