"""Request ids, JSON access logs, Prometheus metrics and readiness."""

from __future__ import annotations

import json
import logging

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from server.app import create_app
from server.settings import Settings

TILE = "/layers/TRUE_COLOR/tiles/WebMercatorQuad/11/974/666.png?time=2022-10-05"


@pytest.fixture(scope="module")
def app_client(test_config) -> TestClient:
    return TestClient(create_app(Settings(config=test_config, overview_cache_bytes=0)))


def samples(client: TestClient) -> dict[tuple[str, tuple], float]:
    text = client.get("/metrics").text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_request_id_is_returned_and_logged_as_json(app_client: TestClient, caplog):
    caplog.set_level(logging.INFO, logger="eotiler.access")
    mine = app_client.get(TILE, headers={"X-Request-ID": "client-id-42"})
    assert mine.headers["x-request-id"] == "client-id-42"
    hostile = app_client.get(TILE, headers={"X-Request-ID": "bad id\nwith newline"})
    generated = hostile.headers["x-request-id"]
    assert generated != "bad id\nwith newline" and len(generated) == 32
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "eotiler.access"]
    logged = {line["request_id"]: line for line in lines}
    assert logged["client-id-42"]["status"] == 200 and logged["client-id-42"]["endpoint"] == "tiles"
    assert logged["client-id-42"]["bytes"] == len(mine.content) and logged[generated]["cache"] == "HIT"
    bad = app_client.get("/layers/NOPE/tiles/WebMercatorQuad/1/0/0.png")
    assert bad.status_code == 404 and bad.headers["x-request-id"]


def test_metrics_count_requests_by_endpoint_status_and_cache(app_client: TestClient):
    before = samples(app_client)
    app_client.get(TILE)
    app_client.get("/ogc/wms?SERVICE=WMS&REQUEST=GetMap&VERSION=1.3.0")  # missing parameters: an OGC exception
    after = samples(app_client)

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("eotiler_requests_total", endpoint="tiles", status="200") == 1
    assert delta("eotiler_tile_cache_total", outcome="HIT") + delta("eotiler_tile_cache_total", outcome="MISS") == 1

    def wms_requests(values: dict) -> float:
        return sum(v for (name, labels), v in values.items() if name == "eotiler_requests_total" and
                   ("endpoint", "wms") in labels)  # fmt: skip

    assert wms_requests(after) == wms_requests(before) + 1
    assert delta("eotiler_request_seconds_count", endpoint="tiles") == 1


def test_readyz_reports_each_dependency(app_client: TestClient, config, stac, s3):
    ready = app_client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    from tests.support.s3_fixtures import s3_settings

    remote = TestClient(create_app(s3_settings(config, s3, redis_url="redis://127.0.0.1:9/0")))
    body = remote.get("/readyz")
    assert body.status_code == 503
    checks = body.json()["checks"]
    assert checks["s3"] is True and checks["catalogue:sentinel-2-l2a"] is True and checks["redis"] is False
    stac.fail_with = 503
    try:
        checks = remote.get("/readyz").json()["checks"]
    finally:
        stac.fail_with = None
    assert checks["catalogue:sentinel-2-l2a"] is False
    s3_down = TestClient(create_app(s3_settings(config, s3, s3_endpoint="127.0.0.1:9")))
    assert s3_down.get("/readyz").json()["checks"]["s3"] is False
    assert httpx.get(f"{stac.url}/collections/sentinel-2-l2a").status_code == 200


@pytest.mark.parametrize("gateway", [False, True])
def test_metrics_report_s3_requests_bytes_failures_queue_and_circuits(config, tree, stac, gateway: bool):
    """GDAL's own requests and bytes (``eotiler_s3_*``: to the store, or to the S3 gateway when it
    runs) and, through the gateway, the requests it made to the store."""
    from tests.support.s3_fixtures import eodata_s3, s3_settings

    servers = eodata_s3(tree)  # a server of its own: a new endpoint, so GDAL's caches are cold
    s3 = next(servers)
    try:
        client = TestClient(create_app(s3_settings(config, s3, s3_gateway=gateway)))
        before = samples(client)
        s3.reset()
        tile = client.get(TILE)
        assert tile.status_code == 200
        after = samples(client)
        served = [r for r in s3.requests() if r["method"] == "GET"]
    finally:
        next(servers, None)

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert served, "the tile was read from S3"
    if gateway:  # GDAL reads from the gateway, which fetches whole tile-parts: its own count is the store's
        assert delta("eotiler_s3_gateway_requests_total") == len(served)
        assert delta("eotiler_s3_requests_total", fs="s3", method="GET") >= len(served)
    else:
        assert delta("eotiler_s3_requests_total", fs="s3", method="GET") == len(served)
        assert delta("eotiler_s3_downloaded_bytes_total", fs="s3", method="GET") == sum(r["bytes"] for r in served)
    assert ("eotiler_renders_waiting", ()) in after and ("eotiler_renders_running", ()) in after
    circuits = {
        dict(labels)["upstream"]: value
        for (name, labels), value in after.items()
        if name == "eotiler_upstream_circuit_open"
    }
    assert any(name.startswith("catalogue http://127.0.0.1") for name in circuits)
    assert any(name.startswith("data store /vsis3/") for name in circuits) and not any(circuits.values())
    assert ("eotiler_scene_read_failures_total", ()) in after
