"""Credentials never leave the server: not in responses, headers, documents or logs.

The server runs as users run it (``eotiler serve`` with ``AWS_*`` variables) against a real S3
server that refuses its key with the key id in the error XML, as AWS S3 does. Every response
and the server's whole log output are searched for the canary key id and secret.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import EODATA, write_test_config
from tests.support.s3_fixtures import MOSAIC_ITEMS, S1_ITEMS, S2_ITEMS, s3_config
from tests.support.s3_server import S3Server
from tests.support.serve_process import eotiler_process
from tests.support.stac_api import StacApi

KEY_ID = "AKIACANARY7Q2W9XKEYID"
SECRET = "canary/Secret+Value9f3b2c1d0e"  # noqa: S105 - a canary, not a credential
TOKEN_PATH = "/auth/realms/main/protocol/openid-connect/token"


@pytest.fixture(scope="module")
def leaky_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, S3Server]]:
    s3 = S3Server(EODATA, require_key="the-only-valid-key")
    stac = StacApi({"sentinel-2-l2a": S2_ITEMS, "sentinel-2-global-mosaics": MOSAIC_ITEMS, "sentinel-1-grd": S1_ITEMS})
    directory = tmp_path_factory.mktemp("leak")
    config = s3_config(directory, stac.url)
    log_path = directory / "server.log"
    env = {
        **os.environ,
        **s3.env(KEY_ID, SECRET),
        "EOTILER_CACHE_MEMORY_BYTES": "0",
        "EOTILER_LOG_LEVEL": "debug",
    }
    env.pop("EOTILER_REDIS_URL", None)
    with log_path.open("w") as log, eotiler_process(config, env=env, output=log) as (url, _):
        yield url, log_path, s3
    s3.stop()
    stac.stop()


def test_s3_auth_failure_leaks_no_credentials(leaky_server: tuple[str, Path, S3Server]):
    url, log_path, s3 = leaky_server
    tile = "/layers/TRUE_COLOR/tiles/WebMercatorQuad/11/974/666.png"  # T29UNU
    wms = "SERVICE=WMS&VERSION=1.3.0&REQUEST=GetMap&LAYERS=NDVI&STYLES=&CRS=EPSG:4326&WIDTH=64&HEIGHT=64"
    wcs = "SERVICE=WCS&VERSION=2.0.1&REQUEST=GetCoverage&COVERAGEID=NDVI_FLOAT&FORMAT=image/tiff"
    paths = [
        tile,
        "/layers/NDVI/tiles/WebMercatorQuad/12/1948/1332.png",
        f"/ogc/wms?{wms}&BBOX=53.0,-8.9,53.2,-8.6&FORMAT=image/png",
        f"/ogc/wcs?{wcs}&SUBSET=Long(-8.9,-8.8)&SUBSET=Lat(53.1,53.2)",
        "/ogc/wms?SERVICE=WMS&REQUEST=GetCapabilities",
        "/ogc/wmts?SERVICE=WMTS&REQUEST=GetCapabilities",
        "/ogc/wcs?SERVICE=WCS&REQUEST=GetCapabilities",
        "/layers",
        "/layers/TRUE_COLOR",
        "/healthz",
        "/cache/stats",
        "/openapi.json",
        "/docs",
        "/",
    ]
    statuses = {}
    with httpx.Client(base_url=url, timeout=60) as client:
        for path in paths:
            response = client.get(path)
            statuses[path] = response.status_code
            seen = response.text + "".join(f"{k}: {v}\n" for k, v in response.headers.items())
            assert KEY_ID not in seen and SECRET not in seen, path
            assert response.status_code < 500 or response.status_code in (502, 503), path
    assert statuses[tile] == 502  # the refused key makes every read fail: a clean 502
    refused = [r for r in s3.requests() if r["status"] == 403]
    assert refused, "the S3 server must have refused the canary key"
    time.sleep(0.5)  # let the server flush its log
    log = log_path.read_text()
    assert "reading scene" in log  # the failures were logged...
    assert KEY_ID not in log and SECRET not in log  # ...without the credentials


def test_log_filter_redacts_secrets_from_messages_and_tracebacks():
    """Defence in depth: some S3 servers echo the key id; whatever a library logs is redacted."""
    import io
    import logging

    from server.log_redaction import RedactSecrets

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactSecrets([KEY_ID, SECRET]))
    logger = logging.getLogger("eotiler.test.redaction")
    logger.addHandler(handler)
    try:
        logger.warning("S3 said: <AWSAccessKeyId>%s</AWSAccessKeyId>", KEY_ID)
        try:
            raise RuntimeError(f"signing with {SECRET} failed")
        except RuntimeError:
            logger.exception("read failed")
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert "<AWSAccessKeyId>***</AWSAccessKeyId>" in text and "signing with *** failed" in text
    assert KEY_ID not in text and SECRET not in text


CLIENT_SECRET = "canary-client-secret-6d2f9e8a1b"  # noqa: S105 - canaries, not credentials
API_KEY = "canary-api-key-3c7b1a9e5d0f"
INSTANCE = "c0ffee00-canary-instance"
WRONG_KEY = "canary-wrong-key-8e1d4c2b7a"


@pytest.fixture(scope="module")
def guarded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """``eotiler serve`` with a client whose secret, key and instance id are canaries (clients file)."""
    directory = tmp_path_factory.mktemp("guarded")
    config = write_test_config(directory)
    clients = directory / "clients.yaml"
    client = {"secret": CLIENT_SECRET, "api_keys": [API_KEY], "instance_id": INSTANCE, "layers": ["TRUE_COLOR"]}
    clients.write_text(yaml.safe_dump({"canary": client}))
    log_path = directory / "server.log"
    env = {**os.environ, "EOTILER_CLIENTS_FILE": str(clients), "EOTILER_LOG_LEVEL": "debug"}
    env.pop("EOTILER_REDIS_URL", None)
    with log_path.open("w") as log, eotiler_process(config, env=env, output=log) as (url, _):
        yield url, log_path


def test_client_credentials_stay_out_of_responses_and_logs(guarded_server: tuple[str, Path]):
    url, log_path = guarded_server
    tile = "/layers/TRUE_COLOR/tiles/WebMercatorQuad/11/974/666.png"
    caps = "/ogc/wms?SERVICE=WMS&REQUEST=GetCapabilities"
    basic = base64.b64encode(f"canary:{CLIENT_SECRET}".encode()).decode()
    with httpx.Client(base_url=url, timeout=60) as http:
        form = {"grant_type": "client_credentials", "client_id": "canary", "client_secret": CLIENT_SECRET}
        token = http.post(TOKEN_PATH, data=form).json()["access_token"]
        sent = [
            (f"{tile}?key={API_KEY}", {}, 200),
            (tile, {"X-API-Key": API_KEY}, 200),
            (tile, {"Authorization": f"Basic {basic}"}, 200),
            (tile, {"Authorization": f"Bearer {token}"}, 200),
            (f"/{INSTANCE}{tile}", {}, 200),
            (f"/ogc/wms/{INSTANCE}?SERVICE=WMS&REQUEST=GetCapabilities", {}, 200),
            (f"{caps}&key={API_KEY}", {}, 200),
            ("/layers/FALSE_COLOR/tiles/WebMercatorQuad/11/974/666.png", {"X-API-Key": API_KEY}, 403),
            (f"{tile}?key={WRONG_KEY}", {}, 401),
            (tile, {"X-API-Key": WRONG_KEY}, 401),
            (f"/ogc/wms/{WRONG_KEY}?SERVICE=WMS&REQUEST=GetCapabilities", {}, 401),
            (f"{caps}&key={WRONG_KEY}", {}, 401),
            (caps, {}, 401),
        ]
        for path, headers, status in sent:
            response = http.get(path, headers=headers)
            assert response.status_code == status, (path, response.text[:200])
            seen = response.text + "".join(f"{k}: {v}\n" for k, v in response.headers.items())
            for canary in (CLIENT_SECRET, API_KEY, WRONG_KEY, token):
                assert canary not in seen, path
            if "GetCapabilities" not in path or status != 200:
                assert INSTANCE not in seen, path  # only the client's own capabilities carry its instance id
    time.sleep(0.5)  # let the server flush its log
    log = log_path.read_text()
    assert '"status": 401' in log and '"status": 200' in log  # the requests were logged...
    for canary in (CLIENT_SECRET, API_KEY, INSTANCE, WRONG_KEY, token):
        assert canary not in log  # ...without any credential, right or wrong
