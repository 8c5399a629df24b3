"""The time dimension of WMS 1.3.0, WMS 1.1.1 and WMTS: the days a layer has data on (after the
layer's own MAXCC), the newest as default, ``current``; a period for a STAC API layer; documents
validated against the schemas; a WMTS REST ``{Time}`` draws that day's scene."""

from __future__ import annotations

import io
import os
from datetime import UTC, datetime

import mapproxy
import morecantile
import numpy as np
from lxml import etree
from PIL import Image
from rasterio.io import MemoryFile

from tests.test_dates import clear_client, day_of, items  # noqa: F401 - the fixture is shared

SCHEMAS = os.path.join(os.path.dirname(mapproxy.__file__), "test", "schemas")
WMS = {"w": "http://www.opengis.net/wms"}
WMTS = {"w": "http://www.opengis.net/wmts/1.0", "ows": "http://www.opengis.net/ows/1.1"}
ALL_DAYS = sorted({day_of(i) for i in items()})
CLEAR_DAYS = sorted({day_of(i) for i in items() if i["properties"]["eo:cloud_cover"] <= 30})
TILE = morecantile.tms.get("WebMercatorQuad").tile(-8.77, 53.11, 12)  # inside T29UNU (2022-10-05)


def wms_caps(client, version: str) -> etree._Element:
    response = client.get("/ogc/wms", params={"SERVICE": "WMS", "REQUEST": "GetCapabilities", "VERSION": version})
    assert response.status_code == 200
    return etree.fromstring(response.content)


def wmts_caps(client) -> etree._Element:
    response = client.get("/ogc/wmts", params={"SERVICE": "WMTS", "REQUEST": "GetCapabilities", "VERSION": "1.0.0"})
    assert response.status_code == 200
    return etree.fromstring(response.content)


def test_wms_1_3_0_dimension_lists_the_days_with_data(clear_client):  # noqa: F811
    doc = wms_caps(clear_client, "1.3.0")
    schema = etree.XMLSchema(etree.parse(os.path.join(SCHEMAS, "wms/1.3.0/capabilities_1_3_0.xsd")))
    assert schema.validate(doc), schema.error_log
    raw = doc.xpath("//w:Layer[w:Name='RAW_B04']/w:Dimension[@name='time']", namespaces=WMS)[0]
    assert raw.text.split(",") == ALL_DAYS and raw.get("default") == ALL_DAYS[-1] == "2022-10-05"
    assert raw.get("current") == "1" and raw.get("units") == "ISO8601"
    # CLEAR_B04 draws nothing above 30 % cloud: 2022-10-05 (59.8 %) is not a day it has data on.
    clear = doc.xpath("//w:Layer[w:Name='CLEAR_B04']/w:Dimension[@name='time']", namespaces=WMS)[0]
    assert clear.text.split(",") == CLEAR_DAYS and "2022-10-05" not in CLEAR_DAYS
    assert clear.get("default") == CLEAR_DAYS[-1] == "2020-02-19"


def test_wms_1_1_1_dimension_and_extent(clear_client):  # noqa: F811
    response = clear_client.get("/ogc/wms", params={"SERVICE": "WMS", "REQUEST": "GetCapabilities", "VERSION": "1.1.1"})
    doc = etree.fromstring(response.content)
    dtd = etree.DTD(os.path.join(SCHEMAS, "wms/1.1.1/WMS_MS_Capabilities.dtd"))
    assert dtd.validate(doc), dtd.error_log
    layer = doc.xpath("//Layer[Name='CLEAR_B04']")[0]
    assert layer.xpath("Dimension[@name='time']/@units") == ["ISO8601"]
    extent = layer.xpath("Extent[@name='time']")[0]
    assert extent.text.split(",") == CLEAR_DAYS and extent.get("default") == "2020-02-19"


def test_wmts_dimension_has_dates_and_a_date_default(clear_client):  # noqa: F811
    doc = wmts_caps(clear_client)
    schema = etree.XMLSchema(etree.parse(os.path.join(SCHEMAS, "wmts/1.0/wmtsGetCapabilities_response.xsd")))
    assert schema.validate(doc), schema.error_log
    layer = doc.xpath("//w:Layer[ows:Identifier='CLEAR_B04']", namespaces=WMTS)[0]
    dimension = layer.find("w:Dimension", namespaces=WMTS)
    assert dimension.findtext("ows:Identifier", namespaces=WMTS) == "Time"
    assert dimension.xpath("w:Value/text()", namespaces=WMTS) == CLEAR_DAYS
    assert dimension.findtext("w:Default", namespaces=WMTS) == "2020-02-19"
    assert dimension.findtext("w:Current", namespaces=WMTS) == "true"


def test_wmts_rest_time_renders_that_date(clear_client):  # noqa: F811
    layer = wmts_caps(clear_client).xpath("//w:Layer[ows:Identifier='RAW_B04']", namespaces=WMTS)[0]
    template = next(
        r.get("template") for r in layer.findall("w:ResourceURL", namespaces=WMTS) if r.get("format") == "image/tiff"
    )

    def tile(day: str) -> tuple[str, np.ndarray]:
        url = (
            template.replace("{Style}", "default")
            .replace("{Time}", day)
            .replace("{TileMatrixSet}", "WebMercatorQuad")
            .replace("{TileMatrix}", str(TILE.z))
            .replace("{TileRow}", str(TILE.y))
            .replace("{TileCol}", str(TILE.x))
        )
        response = clear_client.get(url)
        assert response.status_code == 200, response.text
        with MemoryFile(response.content) as memory, memory.open() as src:
            return response.headers.get("x-eotiler-scenes", ""), src.read(1, masked=True)

    scenes, pixels = tile("2022-10-05")
    assert "_20221005T" in scenes and pixels.count() == pixels.size and float(pixels.mean()) > 0
    scenes, pixels = tile("2017-06-17")  # a day with data elsewhere, not on this tile
    assert scenes == "" and pixels.count() == 0


def test_stac_api_layer_advertises_a_period(s3_client):
    doc = etree.fromstring(
        s3_client.get("/ogc/wms", params={"SERVICE": "WMS", "REQUEST": "GetCapabilities", "VERSION": "1.3.0"}).content
    )
    dimension = doc.xpath("//w:Layer[w:Name='RAW_B04']/w:Dimension[@name='time']", namespaces=WMS)[0]
    today = datetime.now(UTC).date().isoformat()
    # The test STAC API's collection document has no temporal extent: from the first Sentinel
    # launch to today, day by day; the newest day is the default.
    assert dimension.text == f"2014-04-03/{today}/P1D" and dimension.get("default") == today
    wmts = etree.fromstring(
        s3_client.get("/ogc/wmts", params={"SERVICE": "WMTS", "REQUEST": "GetCapabilities"}).content
    )
    layer = wmts.xpath("//w:Layer[ows:Identifier='RAW_B04']", namespaces=WMTS)[0]
    assert layer.xpath("w:Dimension/w:Value/text()", namespaces=WMTS) == [f"2014-04-03/{today}/P1D"]
    # A request for one day of that period draws it.
    png = s3_client.get(f"/ogc/wmts/TRUE_COLOR/default/2022-10-05/WebMercatorQuad/{TILE.z}/{TILE.y}/{TILE.x}.png")
    assert png.status_code == 200 and np.asarray(Image.open(io.BytesIO(png.content)))[..., 3].mean() > 200
