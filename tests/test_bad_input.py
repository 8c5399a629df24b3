"""Table-driven bad input over every endpoint: the status, the content type and the error code.

The fuzz (``tests/test_fuzz.py``) shows no input gives a 5xx; this table pins down *which* answer
each kind of bad input gets, so a regression to a vaguer error is caught too.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from lxml import etree

from server.app import create_app
from server.settings import Settings

T = "/layers/TRUE_COLOR/tiles/WebMercatorQuad"
WMS = "/ogc/wms?SERVICE=WMS&VERSION=1.3.0&REQUEST=GetMap&LAYERS=TRUE_COLOR&STYLES=&CRS=EPSG:4326&FORMAT=image/png"
WMS_OK = WMS + "&BBOX=53.0,-8.9,53.2,-8.6&WIDTH=64&HEIGHT=64"
WMTS = "/ogc/wmts?SERVICE=WMTS&REQUEST=GetTile&VERSION=1.0.0&LAYER=TRUE_COLOR&STYLE=default&FORMAT=image/png"
WCS = "/ogc/wcs?SERVICE=WCS&VERSION=2.0.1&REQUEST=GetCoverage&COVERAGEID=NDVI_FLOAT&FORMAT=image/tiff"

# (url, status, JSON parameter or OGC exception code)
JSON_CASES = [
    (f"{T}/11/974/666.gif", 400, "format"),
    (f"{T}/99/0/0.png", 400, "z"),
    (f"{T}/x/974/666.png", 400, "z"),
    (f"{T}/11/99999/666.png", 404, "x/y"),
    (f"{T}/11/-1/666.png", 404, "x/y"),
    ("/layers/TRUE_COLOR/tiles/NoSuchTMS/11/974/666.png", 400, "tms"),
    ("/layers/NO_SUCH/tiles/WebMercatorQuad/11/974/666.png", 404, "layer"),
    (f"{T}/11/974/666.png?time=2022-13-45", 400, "time"),
    (f"{T}/11/974/666.png?time=2022-10/2022-09", 400, "time"),
    (f"{T}/11/974/666.png?maxcc=101", 400, "maxcc"),
    (f"{T}/11/974/666.png?maxcc=nan", 400, "maxcc"),
    (f"{T}/11/974/666.png?priority=newest", 400, "priority"),
    (f"{T}/11/974/666.png?evalscript=%25%25%25", 400, "evalscript"),
    (f"{T}/11/974/666@9x.png", 400, "scale"),
    ("/layers/NDVI_FLOAT/tiles/WebMercatorQuad/11/974/666.png", 400, "format"),
    ("/layers/TRUE_COLOR/tilejson.json?tile_scale=0", 400, "tile_scale"),
    ("/layers/TRUE_COLOR/tilejson.json?format=bmp", 400, "format"),
]
OGC_CASES = [
    (WMS, "MissingParameterValue"),
    (WMS + "&BBOX=53.2,-8.6,53.0,-8.9&WIDTH=64&HEIGHT=64", "InvalidParameterValue"),
    (WMS + "&BBOX=a,b,c,d&WIDTH=64&HEIGHT=64", "InvalidParameterValue"),
    (WMS + "&BBOX=53.0,-8.9,53.2,-8.6&WIDTH=0&HEIGHT=64", "InvalidParameterValue"),
    (WMS + "&BBOX=53.0,-8.9,53.2,-8.6&WIDTH=100000&HEIGHT=64", "InvalidParameterValue"),
    (WMS_OK.replace("CRS=EPSG:4326", "CRS=EPSG:999999"), "InvalidCRS"),
    (WMS_OK.replace("LAYERS=TRUE_COLOR", "LAYERS=NOPE"), "LayerNotDefined"),
    (WMS_OK.replace("FORMAT=image/png", "FORMAT=image/bmp"), "InvalidFormat"),
    (WMS_OK.replace("STYLES=", "STYLES=fancy"), "StyleNotDefined"),
    (WMS_OK + "&TIME=yesterday", "InvalidDimensionValue"),
    ("/ogc/wms?SERVICE=WMS&REQUEST=Explode", "OperationNotSupported"),
    (WMTS + "&TILEMATRIXSET=WebMercatorQuad&TILEMATRIX=11&TILEROW=666", "MissingParameterValue"),
    (WMTS + "&TILEMATRIXSET=WebMercatorQuad&TILEMATRIX=11&TILEROW=666&TILECOL=999999", "TileOutOfRange"),
    (WMTS + "&TILEMATRIXSET=Nope&TILEMATRIX=11&TILEROW=666&TILECOL=974", "InvalidParameterValue"),
    (WCS.replace("NDVI_FLOAT", "NOPE"), "NoSuchCoverage"),
    (WCS + "&SUBSET=Height(1,2)", "InvalidAxisLabel"),
    (WCS + "&SUBSET=Long(-8,-9)", "InvalidSubsetting"),
    ("/ogc/wcs?SERVICE=WCS&REQUEST=GetCapabilities&ACCEPTVERSIONS=9.9.9", "VersionNegotiationFailed"),
]


@pytest.fixture(scope="module")
def bad_client(test_config) -> TestClient:
    return TestClient(create_app(Settings(config=test_config, overview_cache_bytes=0)), raise_server_exceptions=False)


@pytest.mark.parametrize(("url", "status", "parameter"), JSON_CASES)
def test_rest_bad_input(bad_client: TestClient, url: str, status: int, parameter: str):
    response = bad_client.get(url)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["parameter"] == parameter and body["detail"] and "Traceback" not in body["detail"]


@pytest.mark.parametrize(("url", "code"), OGC_CASES)
def test_ogc_bad_input(bad_client: TestClient, url: str, code: str):
    response = bad_client.get(url)
    assert response.status_code < 500
    assert "xml" in response.headers["content-type"] and not response.headers["content-type"].startswith("image/")
    root = etree.fromstring(response.content)
    codes = {e.get("code") or e.get("exceptionCode") for e in root.iter() if e.get("code") or e.get("exceptionCode")}
    assert code in codes, (codes, response.text[:300])
