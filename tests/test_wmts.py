"""WMTS 1.0.0 with real clients (OWSLib, GDAL's WMTS driver), schema validation, KVP = REST,
the time dimension, the 512 px set and OWS exception codes."""

from __future__ import annotations

import base64
import io
import os

import mapproxy
import morecantile
import numpy as np
import pytest
import rasterio
from lxml import etree
from owslib.wmts import WebMapTileService
from PIL import Image

SCHEMAS = os.path.join(os.path.dirname(mapproxy.__file__), "test", "schemas")
NS = {"w": "http://www.opengis.net/wmts/1.0", "ows": "http://www.opengis.net/ows/1.1"}
TILE = morecantile.tms.get("WebMercatorQuad").tile(-8.77, 53.11, 12)
GOOD = {
    "SERVICE": "WMTS",
    "REQUEST": "GetTile",
    "VERSION": "1.0.0",
    "LAYER": "TRUE_COLOR",
    "STYLE": "default",
    "FORMAT": "image/png",
    "TILEMATRIXSET": "WebMercatorQuad",
    "TILEMATRIX": "3",
    "TILEROW": "2",
    "TILECOL": "3",
}
AT_TILE = {"TILEMATRIX": str(TILE.z), "TILEROW": str(TILE.y), "TILECOL": str(TILE.x)}


def caps(client) -> etree._Element:
    response = client.get("/ogc/wmts", params={"SERVICE": "WMTS", "REQUEST": "GetCapabilities", "VERSION": "1.0.0"})
    assert response.status_code == 200
    return etree.fromstring(response.content)


def test_capabilities_validate_and_describe_grids(client):
    doc = caps(client)
    schema = etree.XMLSchema(etree.parse(os.path.join(SCHEMAS, "wmts/1.0/wmtsGetCapabilities_response.xsd")))
    assert doc.tag == "{http://www.opengis.net/wmts/1.0}Capabilities"
    assert schema.validate(doc), schema.error_log
    sets = {
        s.findtext("ows:Identifier", namespaces=NS): s for s in doc.xpath("//w:Contents/w:TileMatrixSet", namespaces=NS)
    }
    assert set(sets) == {"WebMercatorQuad", "WebMercatorQuad512", "WorldCRS84Quad"}
    google = sets["WebMercatorQuad"]
    assert google.findtext("w:WellKnownScaleSet", namespaces=NS).endswith("GoogleMapsCompatible")
    zero = google.find("w:TileMatrix", namespaces=NS)
    assert zero.findtext("w:TopLeftCorner", namespaces=NS).split()[0].startswith("-20037508.34")
    assert float(zero.findtext("w:ScaleDenominator", namespaces=NS)) == pytest.approx(559082264.0287178)
    crs84 = sets["WorldCRS84Quad"].find("w:TileMatrix", namespaces=NS)
    assert [float(v) for v in crs84.findtext("w:TopLeftCorner", namespaces=NS).split()] == [-180.0, 90.0]
    assert sets["WebMercatorQuad512"].find("w:TileMatrix/w:TileWidth", namespaces=NS).text == "512"
    layer = doc.xpath("//w:Layer[ows:Identifier='NDVI']", namespaces=NS)[0]
    values = layer.xpath("w:Dimension/w:Value/text()", namespaces=NS)
    assert "2022-10-05" in values and layer.findtext("w:Dimension/w:Default", namespaces=NS) == "2022-10-05"
    assert layer.xpath("w:Style/w:LegendURL", namespaces=NS)
    assert "{Time}" in layer.find("w:ResourceURL", namespaces=NS).get("template")


def test_owslib_gettile_matches_xyz(client, live_url):
    service = WebMapTileService(f"{live_url}/ogc/wmts")
    assert "TRUE_COLOR" in service.contents
    assert "WebMercatorQuad" in service.contents["TRUE_COLOR"].tilematrixsetlinks
    tile = service.gettile(
        layer="TRUE_COLOR",
        tilematrixset="WebMercatorQuad",
        tilematrix=str(TILE.z),
        row=TILE.y,
        column=TILE.x,
        format="image/png",
        style="default",
    )
    xyz = client.get(f"/layers/TRUE_COLOR/tiles/WebMercatorQuad/{TILE.z}/{TILE.x}/{TILE.y}.png")
    assert tile.read() == xyz.content


def test_rest_template_equals_kvp(client):
    template = (
        caps(client)
        .xpath("//w:Layer[ows:Identifier='TRUE_COLOR']/w:ResourceURL[@format='image/png']", namespaces=NS)[0]
        .get("template")
    )
    url = (
        template.replace("{Style}", "default")
        .replace("{Time}", "2022-10-05")
        .replace("{TileMatrixSet}", "WebMercatorQuad")
        .replace("{TileMatrix}", str(TILE.z))
        .replace("{TileRow}", str(TILE.y))
        .replace("{TileCol}", str(TILE.x))
    )
    rest = client.get(url)
    kvp = client.get("/ogc/wmts", params={**GOOD, **AT_TILE, "TIME": "2022-10-05"})
    assert rest.status_code == kvp.status_code == 200 and rest.content == kvp.content
    other_day = client.get(url.replace("2022-10-05", "2017-06-17"))
    assert (np.asarray(Image.open(io.BytesIO(other_day.content)))[..., 3] == 0).all()  # no scene that day here


def test_512_pixel_tiles(client):
    tile = morecantile.tms.get("WebMercatorQuad").tile(-8.77, 53.11, 11)
    response = client.get(f"/ogc/wmts/TRUE_COLOR/default/default/WebMercatorQuad512/{tile.z}/{tile.y}/{tile.x}.png")
    image = Image.open(io.BytesIO(response.content))
    assert image.size == (512, 512) and np.asarray(image)[..., :3].std() > 5


def test_gdal_wmts_driver(live_url):
    url = f"WMTS:{live_url}/ogc/wmts?SERVICE=WMTS&REQUEST=GetCapabilities,layer=SWIR,tilematrixset=WebMercatorQuad"
    with rasterio.Env(GDAL_HTTP_TIMEOUT="30"), rasterio.open(url) as src:
        assert src.crs.to_epsg() == 3857 and src.count == 4
        window = src.window(-985000, 6995000, -965000, 7015000)  # metres in EPSG:3857, inside T29UNU
        data = src.read(window=window, out_shape=(4, 200, 200))
    assert data[3].mean() > 200 and data[:3].std() > 5


def feature_info(client, **extra: str) -> dict:
    """GetFeatureInfo (JSON) at the middle of the test tile of RAW_NDMI: the one feature's properties."""
    params = {
        **GOOD,
        **AT_TILE,
        "REQUEST": "GetFeatureInfo",
        "LAYER": "RAW_NDMI",
        "FORMAT": "image/tiff",
        "I": "128",
        "J": "128",
        "INFOFORMAT": "application/json",
        **extra,
    }
    response = client.get("/ogc/wmts", params=params)
    assert response.status_code == 200, response.text[:300]
    return response.json()["features"][0]["properties"]


def test_feature_info(client):
    props = feature_info(client)
    b8a, b11 = props["bands"]["B8A"], props["bands"]["B11"]
    assert props["value"][0] == pytest.approx((b8a - b11) / (b8a + b11), abs=1e-6)
    assert props["scene"]["id"].startswith("S2A_MSIL2A_20221005")
    expression = base64.b64encode(b"B11 - B8A").decode()  # an expression EVALSCRIPT, as GetTile takes
    scripted = feature_info(client, EVALSCRIPT=expression)
    assert scripted["value"][0] == pytest.approx(b11 - b8a, abs=1e-6)


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"LAYER": "NOPE"}, 404, "InvalidParameterValue"),
        ({"TILEMATRIXSET": "Nope"}, 400, "InvalidParameterValue"),
        ({"TILEMATRIX": "40"}, 400, "InvalidParameterValue"),
        ({"TILEROW": "99"}, 404, "TileOutOfRange"),
        ({"TILECOL": "x"}, 400, "InvalidParameterValue"),
        ({"FORMAT": "image/gif"}, 400, "InvalidParameterValue"),
        ({"STYLE": "fancy"}, 400, "InvalidParameterValue"),
        ({"TIME": "soon"}, 400, "InvalidParameterValue"),
        ({"TILEMATRIX": ""}, 400, "MissingParameterValue"),
        ({"REQUEST": "GetSomething"}, 400, "OperationNotSupported"),
        ({"VERSION": "2.0.0"}, 400, "InvalidParameterValue"),
        ({"SERVICE": "WMS"}, 400, "InvalidParameterValue"),
    ],
)
def test_ows_exceptions(client, change, status, code):
    response = client.get("/ogc/wmts", params={**GOOD, **change})
    assert response.status_code == status
    doc = etree.fromstring(response.content)
    assert doc.tag == "{http://www.opengis.net/ows/1.1}ExceptionReport"
    assert doc[0].get("exceptionCode") == code
    assert doc[0].get("locator")  # the parameter that is wrong


def test_rest_errors_are_ows_reports(client):
    response = client.get("/ogc/wmts/NOPE/default/default/WebMercatorQuad/3/2/3.png")
    assert response.status_code == 404 and b'exceptionCode="InvalidParameterValue" locator="LAYER"' in response.content
