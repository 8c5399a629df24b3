"""The tile cache with a real redis-server: hits are identical bytes without touching the data,
keys follow the configuration, scripts and resolved scenes, HTTP caching headers, seeding, and
serving on when Redis dies.

The redis-server binary is Debian's (installed by .ci/run); the tests skip without it unless
EOTILER_REQUIRE_REDIS=1.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import morecantile
import pytest
import redis
import yaml
from fastapi.testclient import TestClient

from server.__main__ import main as eotiler_main
from server.app import create_app
from server.cache.tile_cache import CachedImage, TileCache
from server.settings import Settings
from tests.conftest import free_port, write_test_config
from tests.test_request_evalscript import wmts_tile

TILE = "/layers/TRUE_COLOR/tiles/WebMercatorQuad/10/486/333.png"  # over T29UNU, 2022-10-05


class RedisServer:
    """A throw-away redis-server on a free loopback port (no persistence)."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            cwd=self.directory,
            stdout=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)
        for _ in range(100):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture()
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        if os.environ.get("EOTILER_REQUIRE_REDIS") == "1":
            pytest.fail("redis-server is required (EOTILER_REQUIRE_REDIS=1) but not installed")
        pytest.skip("redis-server not installed")
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


def private_data_config(tmp_path: Path) -> Path:
    """The test configuration with the L2A data copied to ``tmp_path`` (so a test can delete it)."""
    config = write_test_config(tmp_path)
    raw = yaml.safe_load(config.read_text())
    collection = raw["collections"]["sentinel-2-l2a"]
    data = tmp_path / "eodata"
    shutil.copytree(collection["data_root"], data)
    collection["data_root"] = str(data)
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    return config


def drop_data(tmp_path: Path) -> None:
    """Delete every data file (the empty root stays, so the configuration still loads)."""
    shutil.rmtree(tmp_path / "eodata")
    (tmp_path / "eodata").mkdir()


def app_client(config: Path, **settings: object) -> TestClient:
    return TestClient(create_app(Settings(config=config, **settings)))


def test_hit_returns_identical_bytes_without_reading_data(tmp_path, redis_server):
    config = private_data_config(tmp_path)
    first = app_client(config, redis_url=redis_server.url).get(TILE, params={"time": "2022-10-05"})
    assert first.status_code == 200 and first.headers["x-cache"] == "MISS"
    assert "read;dur=" in first.headers["server-timing"]
    drop_data(tmp_path)  # the data source is gone: only the cache can answer now
    # a new process (empty memory level) sharing the same Redis, like a second worker
    second = app_client(config, redis_url=redis_server.url).get(TILE, params={"time": "2022-10-05"})
    assert second.status_code == 200 and second.headers["x-cache"] == "HIT"
    assert second.content == first.content
    assert "cache-redis" in second.headers["server-timing"] and "read" not in second.headers["server-timing"]
    third = app_client(config, redis_url=redis_server.url)
    third.get(TILE, params={"time": "2022-10-05"})
    again = third.get(TILE, params={"time": "2022-10-05"})
    assert "cache-memory" in again.headers["server-timing"] and again.content == first.content


def test_two_times_resolving_to_the_same_scenes_share_an_entry(tmp_path, redis_server):
    client = app_client(write_test_config(tmp_path), redis_url=redis_server.url)
    month = client.get(TILE, params={"time": "2022-10"})
    day = client.get(TILE, params={"time": "2022-10-05"})
    assert month.headers["x-cache"] == "MISS" and day.headers["x-cache"] == "HIT"
    assert month.content == day.content
    other = client.get(TILE, params={"time": "2017-06"})  # other scenes: another entry
    assert other.headers["x-cache"] == "MISS"


def test_editing_the_evalscript_changes_the_key(tmp_path, redis_server):
    config = write_test_config(tmp_path)
    raw = yaml.safe_load(config.read_text())
    scripts = tmp_path / "scripts"
    shutil.copytree(raw["evalscripts_dir"], scripts)
    raw["evalscripts_dir"] = str(scripts)
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    before = app_client(config, redis_url=redis_server.url).get(TILE, params={"time": "2022-10-05"})
    script = scripts / "true_color.py"
    script.write_text(script.read_text().replace("2.5", "1.5"))
    after = app_client(config, redis_url=redis_server.url).get(TILE, params={"time": "2022-10-05"})
    assert after.headers["x-cache"] == "MISS" and after.content != before.content
    # and editing the layer's configuration does too
    raw["layers"]["TRUE_COLOR"]["maxcc"] = 90
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    edited = app_client(config, redis_url=redis_server.url).get(TILE, params={"time": "2022-10-05"})
    assert edited.headers["x-cache"] == "MISS"


def test_every_protocol_uses_the_cache(tmp_path):
    client = app_client(write_test_config(tmp_path))
    wms = {
        "SERVICE": "WMS",
        "VERSION": "1.3.0",
        "REQUEST": "GetMap",
        "LAYERS": "TRUE_COLOR,SCL",
        "STYLES": "",
        "CRS": "EPSG:3857",
        "BBOX": "-990000,6985000,-950000,7015000",
        "WIDTH": "200",
        "HEIGHT": "150",
        "FORMAT": "image/png",
    }
    wmts = wmts_tile("RAW_NDMI")  # B8A and B11: files the T29UNU product has (it has no B08)
    wcs = [
        ("SERVICE", "WCS"),
        ("VERSION", "2.0.1"),
        ("REQUEST", "GetCoverage"),
        ("COVERAGEID", "RAW_B04"),
        ("SUBSET", "Long(-8.9,-8.8)"),
        ("SUBSET", "Lat(53.05,53.1)"),
        ("SCALESIZE", "x(64),y(32)"),
    ]
    for path, params in (("/ogc/wms", wms), ("/ogc/wmts", wmts), ("/ogc/wcs", wcs)):
        first, second = client.get(path, params=params), client.get(path, params=params)
        assert first.status_code == 200, first.text
        assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT"), path
        assert first.content == second.content


def test_etag_304_cache_control_and_cors(tmp_path):
    client = app_client(write_test_config(tmp_path))
    closed = client.get(TILE, params={"time": "2022-10-05"}, headers={"Origin": "https://maps.example.org"})
    assert closed.headers["cache-control"] == "public, max-age=3600"
    assert closed.headers["access-control-allow-origin"] == "*"
    assert "X-Cache" in closed.headers["access-control-expose-headers"]
    etag = closed.headers["etag"]
    assert etag.startswith('"') and len(etag) == 34
    not_modified = client.get(TILE, params={"time": "2022-10-05"}, headers={"If-None-Match": etag})
    assert not_modified.status_code == 304 and not_modified.content == b"" and not_modified.headers["etag"] == etag
    changed = client.get(TILE, params={"time": "2022-10-05"}, headers={"If-None-Match": '"other"'})
    assert changed.status_code == 200 and changed.content == closed.content
    open_ended = client.get(TILE)  # no TIME: newer scenes may appear, so a short max-age
    assert open_ended.headers["cache-control"] == "public, max-age=300"
    preflight = client.options(
        TILE, headers={"Origin": "https://maps.example.org", "Access-Control-Request-Method": "GET"}
    )
    assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == "*"


def test_redis_outage_degrades_then_recovers(tmp_path, redis_server):
    client = app_client(write_test_config(tmp_path), redis_url=redis_server.url, cache_memory_bytes=0)
    assert client.get(TILE, params={"time": "2022-10-05"}).headers["x-cache"] == "MISS"
    assert client.get("/healthz").json()["status"] == "ok"
    redis_server.stop()
    during = client.get(TILE, params={"time": "2022-10-05"})
    assert during.status_code == 200 and during.headers["x-cache"] == "MISS"
    assert client.get("/healthz").json()["status"] == "degraded"
    stats = client.get("/cache/stats").json()
    assert stats["redis"]["degraded"] is True and stats["redis"]["errors"] >= 1
    redis_server.start()  # a fresh, empty Redis on the same port
    time.sleep(5.2)  # the shared level is retried after a pause
    client.get(TILE, params={"time": "2022-10-05"})
    assert client.get(TILE, params={"time": "2022-10-05"}).headers["x-cache"] == "HIT"
    assert client.get("/healthz").json()["status"] == "ok"


def test_memory_level_stays_within_its_byte_bound():
    cache = TileCache(memory_bytes=10_000)
    for i in range(100):
        cache.put(f"eotiler:img:L:{i}", CachedImage(bytes(1000), "image/png", []))
    stats = cache.stats()["memory"]
    assert stats["bytes"] <= 10_000 and 1 <= stats["entries"] <= 10
    assert cache.get("eotiler:img:L:99") is not None and cache.get("eotiler:img:L:0") is None


def test_seed_then_serve_from_cache_and_resume(tmp_path, redis_server, monkeypatch, capsys):
    config = private_data_config(tmp_path)
    monkeypatch.setenv("EOTILER_REDIS_URL", redis_server.url)
    argv = ["seed", "--config", str(config), "--layer", "TRUE_COLOR", "--bbox=-8.9,53.0,-8.7,53.15"]
    wmq = morecantile.tms.get("WebMercatorQuad")
    count = len(list(wmq.tiles(-8.9, 53.0, -8.7, 53.15, zooms=[9, 10])))
    assert eotiler_main([*argv, "--zooms", "9-10", "--time", "2022-10-05"]) == 0
    out = capsys.readouterr().out
    assert f"rendered {count}, skipped 0" in out and "failed 0" in out
    # resumable: a second run over more zooms renders only what is missing
    assert eotiler_main([*argv, "--zooms", "9-11", "--time", "2022-10-05"]) == 0
    out = capsys.readouterr().out
    assert f"skipped {count}" in out and "rendered 0," not in out
    drop_data(tmp_path)
    client = app_client(config, redis_url=redis_server.url)
    response = client.get(TILE, params={"time": "2022-10-05"})
    assert response.status_code == 200 and response.headers["x-cache"] == "HIT"
    assert eotiler_main(["cache", "stats"]) == 0
    assert json.loads(capsys.readouterr().out)["entries"] >= count
    assert eotiler_main(["cache", "clear", "--layer", "TRUE_COLOR"]) == 0
    assert "deleted" in capsys.readouterr().out
    assert client.get(TILE, params={"time": "2022-10-05"}).headers["x-cache"] == "HIT"  # memory level


def test_seed_without_redis_is_refused(monkeypatch, capsys):
    monkeypatch.delenv("EOTILER_REDIS_URL", raising=False)
    code = eotiler_main(["seed", "--layer", "TRUE_COLOR", "--bbox=-9,53,-8,54", "--zooms", "8"])
    assert code == 2 and "EOTILER_REDIS_URL" in capsys.readouterr().out


def test_cache_stats_endpoint(client: httpx.Client):
    stats = client.get("/cache/stats").json()
    assert stats["memory"]["enabled"] is True and stats["redis"]["enabled"] is False


def test_seed_over_a_dask_cluster(tmp_path, redis_server, monkeypatch, capsys):
    """``--dask`` spreads the tile list over a dask.distributed LocalCluster; tiles land in Redis."""
    from distributed import LocalCluster

    config = private_data_config(tmp_path)
    monkeypatch.setenv("EOTILER_REDIS_URL", redis_server.url)
    wmq = morecantile.tms.get("WebMercatorQuad")
    count = len(list(wmq.tiles(-8.9, 53.0, -8.7, 53.15, zooms=[9, 10])))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        argv = ["seed", "--config", str(config), "--layer", "TRUE_COLOR", "--bbox=-8.9,53.0,-8.7,53.15"]
        code = eotiler_main([*argv, "--zooms", "9-10", "--time", "2022-10-05", "--dask", cluster.scheduler_address])
    assert code == 0
    assert f"rendered {count}, skipped 0" in capsys.readouterr().out
    drop_data(tmp_path)
    response = app_client(config, redis_url=redis_server.url).get(TILE, params={"time": "2022-10-05"})
    assert response.status_code == 200 and response.headers["x-cache"] == "HIT"


def test_seeded_tiles_make_no_s3_request(config, s3, redis_server, monkeypatch, capsys):
    """Seed over S3 (STAC API + /vsis3), then serve the same tiles: every one a HIT, S3 untouched."""
    from tests.support.s3_fixtures import s3_settings

    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("EOTILER_REDIS_URL", redis_server.url)
    bbox = (-8.9, 53.0, -8.8, 53.1)
    argv = ["seed", "--config", str(config), "--layer", "TRUE_COLOR", f"--bbox={','.join(map(str, bbox))}"]
    assert eotiler_main([*argv, "--zooms", "11-12", "--time", "2022-10-05"]) == 0
    tiles = list(morecantile.tms.get("WebMercatorQuad").tiles(*bbox, zooms=[11, 12]))
    assert f"rendered {len(tiles)}, skipped 0" in capsys.readouterr().out
    assert any("T29UNU" in r["path"] for r in s3.requests())  # the seeding read over S3
    client = TestClient(create_app(s3_settings(config, s3, redis_url=redis_server.url)))
    s3.reset()
    for tile in tiles:
        path = f"/layers/TRUE_COLOR/tiles/WebMercatorQuad/{tile.z}/{tile.x}/{tile.y}.png"
        response = client.get(path, params={"time": "2022-10-05"})
        assert response.status_code == 200 and response.headers["x-cache"] == "HIT"
    assert s3.requests() == []
