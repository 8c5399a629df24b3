"""Table-driven bad input over every endpoint: the status, the content type and the error code.

The fuzz (``tests/test_fuzz.py``) shows no input gives a 5xx; this table pins down *which* answer
each kind of bad input gets, so a regression to a vaguer error is caught too.
"""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest
from fastapi.testclient import TestClient
from lxml import etree

from server.app import create_app
from server.settings import Settings
from tests.test_request_evalscript import b64

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


# ---- the generated table: every parameter of every endpoint x the kinds of bad value -----------


JS_SETUP = "//VERSION=3\nfunction setup() { return {input: ['B04'], output: {bands: 1}}; }\n"
BAD_TIMES = [
    "2022-13-01",
    "2022-02-30",
    "yesterday",
    "2022-10/2022-09",
    "2022-10-05T25:00:00Z",
    "1e10",
    "2022-10-05/2022-10-06/2022-10-07",
    "9" * 3000,
    "NaN",
    "2022-10-05T00:00:00+99:00",
]
BAD_SCRIPTS = {  # base64 value -> what the message names
    "%%%": "base64",
    b64(b"\xff\xfe\x00"): "EVALSCRIPT",
    b64("B04\x00"): "NUL",
    b64("B99 * 2"): "B99",
    b64("__import__('os').system('id')"): "EVALSCRIPT",
    b64("B04 *" * 3000): "EVALSCRIPT",
    b64('{"expression": "B04", "rescale": [1, 1]}'): "rescale",
    b64('{"expression": "B04", "colormap": "no-such-map", "rescale": [0, 1]}'): "EVALSCRIPT",
    b64(JS_SETUP + "function evaluatePixel(s) { return [s.B04; }"): "SyntaxError",
    b64(JS_SETUP + "function evaluatePixel(s) { return [1, 2]; }"): "returned 2 values",
    b64(JS_SETUP + "// " + "x" * 33_000 + "\nfunction evaluatePixel(s) { return [1]; }"): "longer than 32768 bytes",
}
REST_TILE = f"{T}/11/974/666.png"
GENERATED_REST = [
    *[(f"{T}/{z}/974/666.png", 400, "z") for z in ("-1", "x", "1.5", "99", "1e3", "%EF%BC%91", "99999999999")],
    *[
        (f"{T}/11/{x}/666.png", 404 if x.lstrip("-").isdigit() else 400, "x/y" if x.lstrip("-").isdigit() else "x")
        for x in ("-5", "2048", "abc", "1.5", "0x10")
    ],
    *[
        (f"{T}/11/974/{y}", 400, p)
        for y, p in (
            ("666.gif", "format"),
            ("666", "y"),
            ("666.png.png", "y"),
            ("666@0x.png", "scale"),
            ("666@2.5x.png", "y"),
            ("666@99x.png", "scale"),
            ("abc.png", "y"),
        )
    ],
    *[
        (f"/layers/TRUE_COLOR/tiles/{tms}/11/974/666.png", 400, "tms")
        for tms in ("Nope", "webmercatorquad%00", "%2e%2e")
    ],
    *[
        (f"/layers/{layer}/tiles/WebMercatorQuad/11/974/666.png", 404, "layer")
        for layer in ("NOPE", "x" * 300, "%2e%2e")
    ],
    *[(f"{T}/11/{x}/666.png", 400, "x") for x in ("1e308", "nan", "-0.0", "9" * 5000)],
    *[(f"{T}/11/974/{y}.png", 400, "y") for y in ("1e308", "inf", "9" * 5000)],
    *[(f"/layers/TRUE_COLOR/tilejson.json?tile_scale={v}", 400, "tile_scale") for v in ("1e308", "nan", "9" * 5000)],
    *[(f"{REST_TILE}?time={value}", 400, "time") for value in BAD_TIMES],
    *[(f"{REST_TILE}?maxcc={value}", 400, "maxcc") for value in ("-1", "101", "nan", "inf", "abc", "1e400", "50%")],
    *[(f"{REST_TILE}?priority={value}", 400, "priority") for value in ("newest", "1", "mostRecent;leastCC")],
    *[(f"{REST_TILE}?evalscript={value}", 400, "evalscript") for value in BAD_SCRIPTS],
    (f"{REST_TILE}?time=2022-10-05&time=2022-10-06", 400, "time"),
    (f"{REST_TILE}?maxcc=10&MAXCC=20", 400, "maxcc"),
    (f"{REST_TILE}?evalscript={b64('B04')}&evalscript={b64('B03')}", 400, "evalscript"),
    *[
        (f"/layers/TRUE_COLOR/tilejson.json?{q}", 400, p)
        for q, p in (
            ("tile_scale=0", "tile_scale"),
            ("tile_scale=x", "tile_scale"),
            ("tile_scale=9", "tile_scale"),
            ("format=bmp", "format"),
            ("tms=Nope", "tms"),
            ("format=png&format=jpg", "format"),
        )
    ],
    ("/layers/NOPE/tilejson.json", 404, "layer"),
    ("/layers/NOPE", 404, "layer"),
    ("/layers/NOPE/legend.png", 404, "layer"),
]

WMS_BASE = {
    "SERVICE": "WMS",
    "VERSION": "1.3.0",
    "REQUEST": "GetMap",
    "LAYERS": "TRUE_COLOR",
    "STYLES": "",
    "CRS": "EPSG:4326",
    "BBOX": "53.0,-8.9,53.2,-8.6",
    "WIDTH": "64",
    "HEIGHT": "64",
    "FORMAT": "image/png",
}
WMS_BAD = {
    "BBOX": [
        ("", "MissingParameterValue"),
        ("1,2,3", "InvalidParameterValue"),
        ("1,2,3,4,5", "InvalidParameterValue"),
        ("a,b,c,d", "InvalidParameterValue"),
        ("nan,0,1,1", "InvalidParameterValue"),
        ("inf,0,1,1", "InvalidParameterValue"),
        ("1,1,1,1", "InvalidParameterValue"),
        ("53.2,-8.6,53.0,-8.9", "InvalidParameterValue"),
        ("1e400,0,1,1", "InvalidParameterValue"),
        ("53.0,-8.9,53.0,-8.6", "InvalidParameterValue"),
        # outside EPSG:4326's area of use (lat,lon in 1.3.0), or absurdly far past it
        *[(v, "InvalidParameterValue") for v in ("95,0,100,10", "0,185,10,190", "-1e308,-1e308,1e308,1e308")],
        *[(v, "InvalidParameterValue") for v in ("-1e300,0,-90.5,1", "0,-1e12,1,-1e11", "-0,1e308,1,1e308")],
    ],
    "WIDTH": [(v, "InvalidParameterValue") for v in ("0", "-1", "abc", "1.5", "100000", "nan", "1e3")]
    + [("", "MissingParameterValue")],
    "HEIGHT": [(v, "InvalidParameterValue") for v in ("0", "-64", "x", "99999")],
    "CRS": [
        ("EPSG:999999", "InvalidCRS"),
        ("EPSG:", "InvalidCRS"),
        ("foo", "InvalidCRS"),
        ("EPSG:4326;DROP", "InvalidCRS"),
        ("CRS:99", "InvalidCRS"),
        ("", "MissingParameterValue"),
    ],
    "FORMAT": [
        ("image/bmp", "InvalidFormat"),
        ("text/html", "InvalidFormat"),
        ("application/x-evil", "InvalidFormat"),
        ("", "MissingParameterValue"),
    ],
    "LAYERS": [
        ("", "MissingParameterValue"),
        ("NOPE", "LayerNotDefined"),
        ("TRUE_COLOR,NOPE", "LayerNotDefined"),
        ("x" * 300, "LayerNotDefined"),
    ],
    "STYLES": [("fancy", "StyleNotDefined"), ("default,default", "StyleNotDefined")],
    "TIME": [(v, "InvalidDimensionValue") for v in BAD_TIMES],
    "MAXCC": [(v, "InvalidParameterValue") for v in ("-1", "101", "nan", "abc")],
    "PRIORITY": [(v, "InvalidParameterValue") for v in ("newest", "1")],
    "EVALSCRIPT": [(v, "InvalidParameterValue") for v in BAD_SCRIPTS],
    "TRANSPARENT": [(v, "InvalidParameterValue") for v in ("maybe", "2")],
    "BGCOLOR": [(v, "InvalidParameterValue") for v in ("0xZZZZZZ", "red", "0x12345")],
}
WMTS_BASE = {
    "SERVICE": "WMTS",
    "VERSION": "1.0.0",
    "REQUEST": "GetTile",
    "LAYER": "TRUE_COLOR",
    "STYLE": "default",
    "TILEMATRIXSET": "WebMercatorQuad",
    "TILEMATRIX": "11",
    "TILEROW": "666",
    "TILECOL": "974",
    "FORMAT": "image/png",
}
WMTS_BAD = {
    "TILEMATRIX": [
        ("99", "InvalidParameterValue"),
        ("-1", "InvalidParameterValue"),
        ("x", "InvalidParameterValue"),
        ("", "MissingParameterValue"),
    ],
    "TILEROW": [
        ("99999999", "TileOutOfRange"),
        ("-1", "TileOutOfRange"),
        ("x", "InvalidParameterValue"),
        ("", "MissingParameterValue"),
    ],
    "TILECOL": [("4096", "TileOutOfRange"), ("1.5", "InvalidParameterValue")]
    + [(v, "InvalidParameterValue") for v in ("1e308", "9" * 5000, "nan", "-0.0", "inf")],
    "TILEMATRIXSET": [("Nope", "InvalidParameterValue"), ("", "MissingParameterValue")],
    "LAYER": [("NOPE", "InvalidParameterValue"), ("", "MissingParameterValue")],
    "STYLE": [("fancy", "InvalidParameterValue")],
    "FORMAT": [("image/bmp", "InvalidParameterValue")],
    "TIME": [(v, "InvalidParameterValue") for v in BAD_TIMES[:5]],
    "EVALSCRIPT": [(v, "InvalidParameterValue") for v in list(BAD_SCRIPTS)[:6]],
}
WCS_BASE = {
    "SERVICE": "WCS",
    "VERSION": "2.0.1",
    "REQUEST": "GetCoverage",
    "COVERAGEID": "NDVI_FLOAT",
    "FORMAT": "image/tiff",
}
WCS_BAD = {
    "SUBSET": [
        ("Long(a,b)", "InvalidSubsetting"),
        ("Long(1)", "InvalidSubsetting"),
        ("Long(1,2", "InvalidSubsetting"),
        ("Foo(1,2)", "InvalidAxisLabel"),
        ("Long(-8,-9)", "InvalidSubsetting"),
        ("Lat(nan,1)", "InvalidSubsetting"),
        ("Long(-8.9,-8.6)Lat(53,53.2)", "InvalidSubsetting"),
        # outside EPSG:4326's area of use, or absurdly far past it
        *[
            (v, "InvalidSubsetting")
            for v in ("Long(185,190)", "Lat(91,95)", "Long(-1e308,1e308)", "Long(1e308,1e308)", "Lat(-1e300,-91)")
        ],
    ],
    "SCALESIZE": [(v, "InvalidParameterValue") for v in ("x(0),y(0)", "x(abc)", "x(100000),y(100000)", "i(10)")],
    "SCALEFACTOR": [(v, "InvalidParameterValue") for v in ("0", "-1", "abc", "nan", "1e308", "inf")],
    "SCALEAXES": [(v, "InvalidParameterValue") for v in ("x(1e308)", "x(nan)", "y(-1)")],
    # the WCS 2.0 CRS extension's own codes
    "OUTPUTCRS": [(v, "OutputCrs-NotSupported") for v in ("EPSG:999999", "http://www.opengis.net/def/crs/EPSG/0/0")],
    "SUBSETTINGCRS": [(v, "SubsettingCrs-NotSupported") for v in ("urn:evil", "EPSG:999999")],
    "FORMAT": [(v, "InvalidParameterValue") for v in ("image/bmp", "text/plain")],
    "COVERAGEID": [("NOPE", "NoSuchCoverage"), ("", "MissingParameterValue")],
    "RANGESUBSET": [(v, "InvalidParameterValue") for v in ("band_99", "nope")],
}
WCS10_BASE = {
    "SERVICE": "WCS",
    "VERSION": "1.0.0",
    "REQUEST": "GetCoverage",
    "COVERAGE": "NDVI_FLOAT",
    "CRS": "EPSG:4326",
    "BBOX": "-8.9,53.0,-8.6,53.2",
    "WIDTH": "64",
    "HEIGHT": "64",
    "FORMAT": "GeoTIFF",
}
WCS10_BAD = {
    "BBOX": [
        (v, "InvalidParameterValue")
        for v in ("1,2,3", "a,b,c,d", "-8.6,53.0,-8.9,53.2", "185,0,190,10", "-1e308,-1e308,1e308,1e308")
    ],
    "WIDTH": [(v, "InvalidParameterValue") for v in ("0", "x", "100000")],
    # zone 1 is half a world away from the box: it cannot be expressed there
    "RESPONSE_CRS": [("EPSG:32601", "InvalidParameterValue")],
    "CRS": [(v, "InvalidParameterValue") for v in ("EPSG:999999", "nope")],
    "FORMAT": [("image/bmp", "InvalidFormat")],
    "COVERAGE": [("NOPE", "CoverageNotDefined")],
}
WMS111_BASE = {
    **{k: v for k, v in WMS_BASE.items() if k != "CRS"},
    "VERSION": "1.1.1",
    "SRS": "EPSG:4326",
    "BBOX": "-8.9,53.0,-8.6,53.2",
}
WMS111_BAD = {
    "SRS": [("EPSG:999999", "InvalidSRS"), ("nope", "InvalidSRS"), ("", "MissingParameterValue")],
    "BBOX": [
        (v, "InvalidParameterValue")
        for v in ("-8.6,53.0,-8.9,53.2", "x,y,z,w", "1,2", "-8.9,53.0,-8.9,53.2", "190,0,200,10", "-1e308,0,1e308,1")
    ],
    "WIDTH": [(v, "InvalidParameterValue") for v in ("0", "-3", "65536")],
    "FORMAT": [("image/svg+xml", "InvalidFormat")],
    "LAYERS": [("NOPE", "LayerNotDefined")],
    "STYLES": [("fancy", "StyleNotDefined")],
    "TIME": [(v, "InvalidDimensionValue") for v in BAD_TIMES[:4]],
    "EXCEPTIONS": [("application/x-evil", "InvalidParameterValue")],
}
LEGEND_BASE = {
    "SERVICE": "WMS",
    "VERSION": "1.3.0",
    "REQUEST": "GetLegendGraphic",
    "LAYER": "NDVI",
    "FORMAT": "image/png",
}
LEGEND_BAD = {
    "LAYER": [("NOPE", "LayerNotDefined"), ("", "MissingParameterValue")],
    "FORMAT": [("image/bmp", "InvalidFormat")],
    "STYLE": [("fancy", "StyleNotDefined")],
    "WIDTH": [(v, "InvalidParameterValue") for v in ("0", "x", "99999")],
}
WMS3857 = {**WMS_BASE, "CRS": "EPSG:3857", "BBOX": "-990000,7000000,-960000,7030000"}
WMS3857_BAD = {
    "BBOX": [
        (v, "InvalidParameterValue")
        for v in (
            "0,0,0,0",
            "1,2,3,x",
            "-960000,7000000,-990000,7030000",
            ",,,",
            "1;2;3;4",
            "0x10,0,1,1",
            "1 2 3 4",
            # outside EPSG:3857's area of use, or absurdly far past it (PROJ held the GIL for minutes)
            "-1e308,-1e308,1e308,1e308",
            "1e300,1e300,1e308,1e308",
            "-1e12,0,0,1",
            "0,-1e308,1,1e308",
            "-4e8,-4e8,-3e8,-3e8",
        )
    ],
    "WIDTH": [(v, "InvalidParameterValue") for v in ("+-1", "1_000", "٣")],
    "HEIGHT": [(v, "InvalidParameterValue") for v in ("1e2", "0x40", "64.0")],
    "EVALSCRIPT": [(v, "InvalidParameterValue") for v in list(BAD_SCRIPTS)[6:]],
}
WMS_UTM = {**WMS_BASE, "CRS": "EPSG:32629", "BBOX": "500000,5870000,530000,5900000"}
WMS_UTM_BAD = {  # a UTM zone's area of use is its 6 degrees of longitude (and a few degrees around)
    "BBOX": [
        (v, "InvalidParameterValue")
        for v in ("5e7,0,5.1e7,100000", "-1e308,0,1e308,1", "500000,-1e10,530000,-9e9", "-5e6,0,-4e6,1e5")
    ]
}
WMS_CRS84 = {**WMS_BASE, "CRS": "CRS:84", "BBOX": "-8.9,53.0,-8.6,53.2"}
WMS_CRS84_BAD = {"BBOX": [(v, "InvalidParameterValue") for v in ("185,0,190,10", "0,91,10,95", "-1e308,0,1e308,1")]}
WCS_3857 = {**WCS_BASE, "SUBSETTINGCRS": "EPSG:3857"}
WCS_3857_BAD = {
    "SUBSET": [(v, "InvalidSubsetting") for v in ("x(-1e308,1e308)", "x(1e300,1e308)", "y(-1e12,-1e11)")],
}
WCS10_RES = {**{k: v for k, v in WCS10_BASE.items() if k not in ("WIDTH", "HEIGHT")}, "RESX": "0.01", "RESY": "0.01"}
WCS10_RES_BAD = {
    "RESX": [(v, "InvalidParameterValue") for v in ("1e-310", "0", "nan", "-1", "inf")],
    "RESY": [(v, "InvalidParameterValue") for v in ("1e-300", "abc")],
}
WMTS_REST_BAD = [
    ("/ogc/wmts/TRUE_COLOR/default/default/WebMercatorQuad/3/2/3.gif", 400),
    ("/ogc/wmts/TRUE_COLOR/default/default/WebMercatorQuad/x/2/3.png", 400),
    ("/ogc/wmts/TRUE_COLOR/default/default/WebMercatorQuad/3/99/3.png", 404),
    ("/ogc/wmts/TRUE_COLOR/default/default/Nope/3/2/3.png", 400),
    ("/ogc/wmts/TRUE_COLOR/fancy/default/WebMercatorQuad/3/2/3.png", 400),
    ("/ogc/wmts/TRUE_COLOR/default/not-a-time/WebMercatorQuad/3/2/3.png", 400),
]
DESCRIBE_BASE = {"SERVICE": "WCS", "VERSION": "2.0.1", "REQUEST": "DescribeCoverage", "COVERAGEID": "NDVI"}
DESCRIBE_BAD = {"COVERAGEID": [("NOPE", "NoSuchCoverage"), ("", "MissingParameterValue")]}
SERVICE_BAD = [
    ("/ogc/wms", {"SERVICE": "WMS", "REQUEST": "GetMap", "VERSION": "1.3.0"}, "MissingParameterValue"),
    ("/ogc", {"SERVICE": "WFS", "REQUEST": "GetFeature"}, "MissingParameterValue"),  # WFS: no TYPENAMES
    ("/ogc/wms", {"SERVICE": "WMS"}, "MissingParameterValue"),
    ("/ogc/wmts", {"SERVICE": "WMTS", "REQUEST": "DescribeLayer"}, "OperationNotSupported"),
    ("/ogc/wcs", {"SERVICE": "WCS", "REQUEST": "Transaction", "VERSION": "2.0.1"}, "OperationNotSupported"),
    ("/ogc/wcs", {"SERVICE": "WCS", "VERSION": "2.0.1"}, "MissingParameterValue"),
    ("/ogc", {"SERVICE": "SOS", "REQUEST": "GetCapabilities"}, "InvalidParameterValue"),
]
GFI_BASE = {
    **WMS_BASE,
    "REQUEST": "GetFeatureInfo",
    "QUERY_LAYERS": "TRUE_COLOR",
    "I": "10",
    "J": "10",
    "INFO_FORMAT": "application/json",
}
GFI_BAD = {
    "I": [("64", "InvalidPoint"), ("-1", "InvalidPoint"), ("x", "InvalidPoint"), ("9" * 5000, "InvalidPoint")],
    "J": [("640", "InvalidPoint"), ("1.5", "InvalidPoint"), ("1e308", "InvalidPoint"), ("\u0661", "InvalidPoint")],
    "QUERY_LAYERS": [("NOPE", "LayerNotDefined"), ("NDVI", "LayerNotDefined")],
    "INFO_FORMAT": [("image/png", "InvalidFormat")],
}


def ogc_cases() -> list[tuple[str, dict[str, str], str]]:
    cases = []
    for endpoint, base, table in (
        ("/ogc/wms", WMS_BASE, WMS_BAD),
        ("/ogc/wmts", WMTS_BASE, WMTS_BAD),
        ("/ogc/wcs", WCS_BASE, WCS_BAD),
        ("/ogc/wcs", WCS10_BASE, WCS10_BAD),
        ("/ogc/wms", GFI_BASE, GFI_BAD),
        ("/ogc/wms", WMS111_BASE, WMS111_BAD),
        ("/ogc/wms", LEGEND_BASE, LEGEND_BAD),
        ("/ogc/wcs", DESCRIBE_BASE, DESCRIBE_BAD),
        ("/ogc/wms", WMS3857, WMS3857_BAD),
        ("/ogc/wms", WMS_UTM, WMS_UTM_BAD),
        ("/ogc/wms", WMS_CRS84, WMS_CRS84_BAD),
        ("/ogc/wcs", WCS_3857, WCS_3857_BAD),
        ("/ogc/wcs", WCS10_RES, WCS10_RES_BAD),
    ):
        for name, values in table.items():
            for value, code in values:
                cases.append((endpoint, {**base, name: value}, code))
    repeated = [
        ("/ogc/wms", [*WMS_BASE.items(), ("BBOX", "0,0,1,1")], "InvalidParameterValue"),
        ("/ogc/wms", [*WMS_BASE.items(), ("layers", "NDVI")], "InvalidParameterValue"),
        ("/ogc/wmts", [*WMTS_BASE.items(), ("TileRow", "1")], "InvalidParameterValue"),
        ("/ogc/wcs", [*WCS_BASE.items(), ("FORMAT", "image/png")], "InvalidParameterValue"),
    ]
    return cases + repeated + SERVICE_BAD  # type: ignore[return-value]


GENERATED_OGC = ogc_cases()


def test_the_table_is_in_the_hundreds():
    assert len(JSON_CASES) + len(OGC_CASES) + len(GENERATED_REST) + len(GENERATED_OGC) + len(WMTS_REST_BAD) >= 300


@pytest.mark.parametrize(("url", "status"), WMTS_REST_BAD)
def test_wmts_rest_bad_input(bad_client: TestClient, url: str, status: int):
    response = bad_client.get(url)
    assert response.status_code == status, response.text[:300]
    root = etree.fromstring(response.content)
    assert root.tag == "{http://www.opengis.net/ows/1.1}ExceptionReport"
    assert root[0].get("exceptionCode") in ("InvalidParameterValue", "TileOutOfRange") and root[0].get("locator")


@pytest.mark.parametrize(("url", "status", "parameter"), GENERATED_REST)
def test_generated_rest_bad_input(bad_client: TestClient, url: str, status: int, parameter: str):
    response = bad_client.get(url)
    assert response.status_code == status, response.text[:300]
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["parameter"] == parameter, body
    assert body["detail"] and "Traceback" not in body["detail"]


@pytest.mark.parametrize(("endpoint", "params", "code"), GENERATED_OGC)
def test_generated_ogc_bad_input(bad_client: TestClient, endpoint: str, params, code: str):
    response = bad_client.get(endpoint, params=params)
    assert 400 <= response.status_code < 500, response.text[:300]
    assert "xml" in response.headers["content-type"], response.headers["content-type"]
    root = etree.fromstring(response.content)
    codes = {e.get("code") or e.get("exceptionCode") for e in root.iter() if e.get("code") or e.get("exceptionCode")}
    assert code in codes, (codes, response.text[:300])
    assert b"Traceback" not in response.content


# ---- protocol rules: versions, mandatory parameters, SERVICE per endpoint, size limits ----------
# Each case pins the HTTP status, the OGC code and the locator (the parameter the report names).
# VERSION is negotiated in GetCapabilities only; other operations must name a version the server
# implements (WMS 1.1.1/1.3.0, WMTS 1.0.0), else InvalidParameterValue/VERSION (OWS Common).

GFI_130 = {**WMS_BASE, "REQUEST": "GetFeatureInfo", "I": "10", "J": "10", "INFO_FORMAT": "application/json"}
GFI_111 = {**WMS111_BASE, "REQUEST": "GetFeatureInfo", "X": "10", "Y": "10", "INFO_FORMAT": "text/plain"}
WMTS_GFI = {**WMTS_BASE, "REQUEST": "GetFeatureInfo", "I": "10", "J": "10", "INFOFORMAT": "application/json"}
WCS_AREA = [*WCS_BASE.items(), ("SUBSET", "Long(-8.9,-8.8)"), ("SUBSET", "Lat(53.05,53.1)")]
WMTS_GFI_WMS_SPELLING = {**{k: v for k, v in WMTS_GFI.items() if k != "INFOFORMAT"}, "INFO_FORMAT": "text/plain"}
WMTS_CAPS = {"SERVICE": "WMTS", "REQUEST": "GetCapabilities"}
PROTOCOL_CASES = [  # (endpoint, parameters, status, code, locator)
    ("/ogc/wms", {**WMS_BASE, "VERSION": "9.9"}, 400, "InvalidParameterValue", "VERSION"),
    ("/ogc/wms", {**WMS_BASE, "VERSION": "1.2.0"}, 400, "InvalidParameterValue", None),  # reported as 1.1.1
    ("/ogc/wms", {**WMS_BASE, "VERSION": "2.0.0"}, 400, "InvalidParameterValue", "VERSION"),
    ("/ogc/wms", {**WMS111_BASE, "VERSION": "1.1"}, 400, "InvalidParameterValue", None),
    ("/ogc", {**WMS_BASE, "VERSION": "9.9"}, 400, "InvalidParameterValue", "VERSION"),
    ("/ogc/wms", {**GFI_130, "QUERY_LAYERS": "TRUE_COLOR", "VERSION": "9.9"}, 400, "InvalidParameterValue", "VERSION"),
    ("/ogc/wms", GFI_130, 400, "MissingParameterValue", "QUERY_LAYERS"),
    ("/ogc/wms", {**GFI_130, "QUERY_LAYERS": ""}, 400, "MissingParameterValue", "QUERY_LAYERS"),
    ("/ogc/wms", {**GFI_130, "QUERY_LAYERS": ","}, 400, "InvalidParameterValue", "QUERY_LAYERS"),
    ("/ogc/wms", GFI_111, 400, "MissingParameterValue", None),  # the 1.1.1 DTD has no locator
    ("/ogc/wmts", {**WMTS_BASE, "VERSION": "9.9"}, 400, "InvalidParameterValue", "VERSION"),
    ("/ogc/wmts", {**WMTS_BASE, "VERSION": "1.0"}, 400, "InvalidParameterValue", "VERSION"),
    ("/ogc", {**WMTS_BASE, "VERSION": "9.9"}, 400, "InvalidParameterValue", "VERSION"),
    ("/ogc/wmts", {**WMTS_GFI, "VERSION": "9.9"}, 400, "InvalidParameterValue", "VERSION"),
    ("/ogc/wmts", {**WMTS_GFI, "INFOFORMAT": "image/bogus"}, 400, "InvalidParameterValue", "INFOFORMAT"),
    ("/ogc/wmts", {**WMTS_GFI, "INFOFORMAT": "text/xml"}, 400, "InvalidParameterValue", "INFOFORMAT"),
    (
        "/ogc/wmts",
        {**WMTS_CAPS, "ACCEPTVERSIONS": "2.0.0,9.9"},
        400,
        "VersionNegotiationFailed",
        "ACCEPTVERSIONS",
    ),
    # SERVICE names another service than the endpoint's: refused, never answered as this one
    ("/ogc/wms", {**WMS_BASE, "SERVICE": "WFS"}, 400, "InvalidParameterValue", "SERVICE"),
    ("/ogc/wms", {**WMS_BASE, "SERVICE": "WMTS"}, 400, "InvalidParameterValue", "SERVICE"),
    ("/ogc/wms", {**WMS111_BASE, "SERVICE": "WFS"}, 400, "InvalidParameterValue", None),
    ("/ogc/wmts", {**WMTS_BASE, "SERVICE": "WFS"}, 400, "InvalidParameterValue", "SERVICE"),
    ("/ogc/wmts", {**WMTS_BASE, "SERVICE": "WMS"}, 400, "InvalidParameterValue", "SERVICE"),
    ("/ogc/wcs", {**WCS_BASE, "SERVICE": "WFS"}, 400, "InvalidParameterValue", "SERVICE"),
    ("/ogc", {**WMS_BASE, "SERVICE": "WFS"}, 400, "InvalidParameterValue", "VERSION"),  # WFS is 2.0.0
    ("/ogc", {"SERVICE": "WFS", "REQUEST": "GetFeature", "TYPENAMES": "x"}, 400, "InvalidParameterValue", "TYPENAMES"),
    # sizes beyond the server's limit (WCS has no code of its own for it: InvalidParameterValue)
    ("/ogc/wcs", [*WCS_AREA, ("SCALEFACTOR", "1000")], 400, "InvalidParameterValue", "SCALEFACTOR"),
    ("/ogc/wcs", [*WCS_AREA, ("SCALEFACTOR", "1e308")], 400, "InvalidParameterValue", "SCALEFACTOR"),
    ("/ogc/wcs", [*WCS_AREA, ("SCALEAXES", "Lat(1e308)")], 400, "InvalidParameterValue", "SCALEAXES"),
    (
        "/ogc/wcs",
        {**{k: v for k, v in WCS10_BASE.items() if k not in ("WIDTH", "HEIGHT")}, "RESX": "1e-320", "RESY": "1e-320"},
        400,
        "InvalidParameterValue",
        "RESX",
    ),
]
# What real clients send that must keep working: VERSION omitted on GetMap, Leaflet's lowercase
# 1.1.1, an SLD-style GetLegendGraphic VERSION, WMTS GetFeatureInfo with the WMS INFO_FORMAT spelling,
# GetCapabilities of any version (negotiated), a lowercase SERVICE.
PROTOCOL_ACCEPTED = [  # (endpoint, parameters, content type)
    ("/ogc/wms", {k: v for k, v in WMS_BASE.items() if k != "VERSION"}, "image/png"),
    ("/ogc/wms", {k.lower(): v for k, v in WMS111_BASE.items()}, "image/png"),
    ("/ogc/wms", {**WMS_BASE, "SERVICE": "wms"}, "image/png"),
    ("/ogc/wms", {**GFI_130, "QUERY_LAYERS": "TRUE_COLOR"}, "application/json"),
    ("/ogc/wms", {**LEGEND_BASE, "VERSION": "1.0.0"}, "image/png"),
    ("/ogc/wms", {"SERVICE": "WMS", "REQUEST": "GetCapabilities", "VERSION": "9.9"}, "text/xml"),
    ("/ogc/wms", {"SERVICE": "WMS", "REQUEST": "GetCapabilities", "VERSION": "1.2.0"}, "application/vnd.ogc.wms_xml"),
    ("/ogc/wmts", {k: v for k, v in WMTS_BASE.items() if k != "VERSION"}, "image/png"),
    ("/ogc/wmts", WMTS_GFI_WMS_SPELLING, "text/plain"),
    ("/ogc/wmts", {**WMTS_CAPS, "ACCEPTVERSIONS": "2.0.0,1.0.0"}, "application/xml"),
    ("/ogc/wcs", [*WCS_AREA, ("SCALEFACTOR", "0.5")], "image/tiff"),
]


@pytest.mark.parametrize(("endpoint", "params", "status", "code", "locator"), PROTOCOL_CASES)
def test_protocol_bad_input(bad_client: TestClient, endpoint: str, params, status: int, code: str, locator):
    response = bad_client.get(endpoint, params=params)
    assert response.status_code == status, response.text[:300]
    assert "xml" in response.headers["content-type"], response.headers["content-type"]
    item = etree.fromstring(response.content)[0]  # the one ServiceException / ows:Exception
    assert (item.get("code") or item.get("exceptionCode")) == code, response.text[:300]
    assert item.get("locator") == locator, response.text[:300]


@pytest.mark.parametrize(("endpoint", "params", "media_type"), PROTOCOL_ACCEPTED)
def test_protocol_what_clients_send_is_served(bad_client: TestClient, endpoint: str, params, media_type: str):
    response = bad_client.get(endpoint, params=params)
    assert response.status_code == 200, response.text[:300]
    assert response.headers["content-type"].split(";")[0] == media_type


# ---- Sentinel Hub APIs: Catalog API bodies, the token endpoint and WFS 2.0.0 ---------------------
# Catalog API errors carry Sentinel Hub's shape ({"error": {status, code, message}}) and the
# project's {"detail", "parameter"}; WFS errors are OWS 1.1 reports (version 2.0.0).

CATALOG = "/api/v1/catalog/1.0.0"
SEARCH_OK = {"collections": ["sentinel-2-l2a"]}
CATALOG_SEARCH_BAD = [  # (body, status, parameter)
    (b"{", 400, "body"),
    (b"[]", 400, "body"),
    (b'"text"', 400, "body"),
    (b"[" * 100000, 400, "body"),
    ({}, 400, "collections"),
    ({"collections": "sentinel-2-l2a"}, 400, "collections"),
    ({"collections": []}, 400, "collections"),
    ({"collections": ["sentinel-9-nope"]}, 400, "collections"),
    ({"collections": [1]}, 400, "collections"),
    ({"collections": ["sentinel-2-l2a"] * 11}, 400, "collections"),
    ({**SEARCH_OK, "limit": 0}, 400, "limit"),
    ({**SEARCH_OK, "limit": 101}, 400, "limit"),
    ({**SEARCH_OK, "limit": 10**12}, 400, "limit"),
    ({**SEARCH_OK, "limit": "10"}, 400, "limit"),
    ({**SEARCH_OK, "limit": True}, 400, "limit"),
    ({**SEARCH_OK, "limit": 1.5}, 400, "limit"),
    ({**SEARCH_OK, "next": -1}, 400, "next"),
    ({**SEARCH_OK, "next": "abc"}, 400, "next"),
    ({**SEARCH_OK, "next": 10**30}, 400, "next"),
    ({**SEARCH_OK, "bbox": [1, 2, 3]}, 400, "bbox"),
    ({**SEARCH_OK, "bbox": ["a", 0, 1, 1]}, 400, "bbox"),
    ({**SEARCH_OK, "bbox": [0, 0, 200, 1]}, 400, "bbox"),
    ({**SEARCH_OK, "bbox": [0, 10, 1, 5]}, 400, "bbox"),
    ({**SEARCH_OK, "bbox": [0, 0, 1e308, 1e308]}, 400, "bbox"),
    ({**SEARCH_OK, "bbox": "0,0,1,1"}, 400, "bbox"),
    ({**SEARCH_OK, "bbox": [0, 0, 1, 1], "intersects": {"type": "Point", "coordinates": [0, 0]}}, 400, "bbox"),
    ({**SEARCH_OK, "intersects": {"type": "Polygon"}}, 400, "intersects"),
    ({**SEARCH_OK, "intersects": {"type": "LineString", "coordinates": [[0, 0], [1, 1]]}}, 400, "intersects"),
    ({**SEARCH_OK, "intersects": {"type": "Polygon", "coordinates": [[["a", 0], [1, 1], [0, 1]]]}}, 400, "intersects"),
    ({**SEARCH_OK, "intersects": {"type": "Polygon", "coordinates": [[[0, 0]] * 20001]}}, 400, "intersects"),
    ({**SEARCH_OK, "intersects": {"type": "Point", "coordinates": [0, 95]}}, 400, "intersects"),
    ({**SEARCH_OK, "intersects": [0, 0]}, 400, "intersects"),
    ({**SEARCH_OK, "datetime": 5}, 400, "datetime"),
    ({**SEARCH_OK, "datetime": "2022-13-01"}, 400, "datetime"),
    ({**SEARCH_OK, "datetime": "2022-10-01/2021-01-01"}, 400, "datetime"),
    ({**SEARCH_OK, "filter": "eo:cloud_cover <"}, 400, "filter"),
    ({**SEARCH_OK, "filter": "eo:cloud_cover == 5"}, 400, "filter"),
    ({**SEARCH_OK, "filter": "(" * 200 + "a = 1" + ")" * 200}, 400, "filter"),
    ({**SEARCH_OK, "filter": "a = 1 AND " * 1000 + "a = 1"}, 400, "filter"),
    ({**SEARCH_OK, "filter": {"op": "like", "args": [{"property": "id"}, "S2%"]}}, 400, "filter"),
    ({**SEARCH_OK, "filter": {"op": "<", "args": [{"property": "eo:cloud_cover"}]}}, 400, "filter"),
    ({**SEARCH_OK, "filter": {"op": "<", "args": [{"property": "eo:cloud_cover"}, {"x": 1}]}}, 400, "filter"),
    ({**SEARCH_OK, "filter": "a = 1", "filter-lang": "cql2-json"}, 400, "filter"),
    ({**SEARCH_OK, "filter": "a = 1", "filter-lang": "sql"}, 400, "filter-lang"),
    ({**SEARCH_OK, "filter-crs": "EPSG:3857"}, 400, "filter-crs"),
    ({**SEARCH_OK, "distinct": "month"}, 400, "distinct"),
    ({**SEARCH_OK, "fields": "id"}, 400, "fields"),
    ({**SEARCH_OK, "fields": {"include": [1]}}, 400, "fields"),
    ({**SEARCH_OK, "fields": {"only": ["id"]}}, 400, "fields"),
    ({**SEARCH_OK, "ids": "S2A"}, 400, "ids"),
    ({**SEARCH_OK, "ids": ["x"] * 101}, 400, "ids"),
]
CATALOG_GET_BAD = [  # (path, status, parameter)
    (f"{CATALOG}/collections/sentinel-9-nope", 404, "collection"),
    (f"{CATALOG}/collections/sentinel-2-l2a/items/NOPE", 404, "item"),
    (f"{CATALOG}/collections/nope/items/NOPE", 404, "collection"),
]
TOKEN_BAD = [  # (form, content type, status, OAuth2 error)
    ({"grant_type": "client_credentials", "client_id": "a", "client_secret": "b"}, "text/plain", 400,
     "invalid_request"),
    ({"client_id": "a", "client_secret": "b"}, None, 400, "invalid_request"),
    ({"grant_type": "password", "client_id": "a", "client_secret": "b"}, None, 400, "unsupported_grant_type"),
    ({"grant_type": "client_credentials", "client_id": "a"}, None, 400, "invalid_request"),
    ({"grant_type": "client_credentials", "client_id": "a", "client_secret": "b" * 9000}, None, 400, "invalid_request"),
]
WFS_BASE = {"SERVICE": "WFS", "VERSION": "2.0.0", "REQUEST": "GetFeature", "TYPENAMES": "eotiler:TRUE_COLOR"}
WFS_BAD = {
    "TYPENAMES": [("", "MissingParameterValue"), ("NOPE", "InvalidParameterValue"), ("DSS99", "InvalidParameterValue"),
                  ("TRUE_COLOR,NDVI", "InvalidParameterValue")],
    "BBOX": [("1,2,3", "InvalidParameterValue"), ("a,b,c,d", "InvalidParameterValue"),
             ("10,10,0,0", "InvalidParameterValue"), ("1e308,1e308,1e309,1e309", "InvalidParameterValue"),
             ("0,0,1,1,EPSG:999999", "InvalidParameterValue"), ("nan,0,1,1", "InvalidParameterValue"),
             ("1e7,1e7,2e7,2e7,urn:ogc:def:crs:EPSG::32629", "InvalidParameterValue"),
             ("-1e12,-1e12,1e12,1e12,EPSG:3857", "InvalidParameterValue")],
    "SRSNAME": [("EPSG:999999", "InvalidParameterValue"), ("nonsense", "InvalidParameterValue")],
    "TIME": [("yesterday", "InvalidParameterValue"), ("2022-10-05/2022-01-01", "InvalidParameterValue")],
    "MAXCC": [("101", "InvalidParameterValue"), ("nan", "InvalidParameterValue"), ("-1", "InvalidParameterValue")],
    "COUNT": [("0", "InvalidParameterValue"), ("-1", "InvalidParameterValue"), ("x", "InvalidParameterValue"),
              ("9" * 40, "InvalidParameterValue"), ("1.5", "InvalidParameterValue")],
    "MAXFEATURES": [("0", "InvalidParameterValue"), ("\u0661", "InvalidParameterValue")],
    "STARTINDEX": [("-1", "InvalidParameterValue"), ("1e3", "InvalidParameterValue"),
                   ("9" * 40, "InvalidParameterValue")],
    "FEATURE_OFFSET": [("x", "InvalidParameterValue")],
    "OUTPUTFORMAT": [("image/png", "InvalidParameterValue"), ("shape-zip", "InvalidParameterValue")],
    "RESULTTYPE": [("everything", "InvalidParameterValue")],
    "VERSION": [("1.1.0", "InvalidParameterValue"), ("3.0", "InvalidParameterValue")],
    "REQUEST": [("Transaction", "OperationNotSupported"), ("LockFeature", "OperationNotSupported")],
    "SERVICE": [("WMS", "InvalidParameterValue")],
}
WFS_OTHER_BAD = [  # (endpoint, parameters, code)
    ("/ogc/wfs", {"SERVICE": "WFS", "REQUEST": "GetCapabilities", "ACCEPTVERSIONS": "1.1"}, "VersionNegotiationFailed"),
    ("/ogc/wfs", {"SERVICE": "WFS", "REQUEST": "DescribeFeatureType", "TYPENAMES": "NO"}, "InvalidParameterValue"),
    ("/ogc/wfs", {"SERVICE": "WFS"}, "MissingParameterValue"),
    ("/ogc/wfs/any-instance-id", {**WFS_BASE, "TYPENAMES": "NOPE"}, "InvalidParameterValue"),
    ("/ogc", {**WFS_BASE, "COUNT": "0"}, "InvalidParameterValue"),
]
WFS_CASES = [("/ogc/wfs", {**WFS_BASE, n: value}, code) for n, values in WFS_BAD.items() for value, code in values]
WFS_CASES += WFS_OTHER_BAD


def _sh_error(response, status: int, parameter: str) -> None:
    assert response.status_code == status, response.text[:300]
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["error"]["status"] == status and body["error"]["code"].startswith("COMMON_"), body
    assert body["parameter"] == parameter, body
    assert body["detail"] == body["error"]["message"] and "Traceback" not in body["detail"]


@pytest.mark.parametrize(("body", "status", "parameter"), CATALOG_SEARCH_BAD)
def test_catalog_search_bad_input(bad_client: TestClient, body, status: int, parameter: str):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = bad_client.post(f"{CATALOG}/search", content=content, headers={"Content-Type": "application/json"})
    _sh_error(response, status, parameter)


@pytest.mark.parametrize(("path", "status", "parameter"), CATALOG_GET_BAD)
def test_catalog_get_bad_input(bad_client: TestClient, path: str, status: int, parameter: str):
    _sh_error(bad_client.get(path), status, parameter)


@pytest.mark.parametrize(("form", "content_type", "status", "error"), TOKEN_BAD)
def test_token_endpoint_bad_input(bad_client: TestClient, form, content_type, status: int, error: str):
    headers = {"Content-Type": content_type or "application/x-www-form-urlencoded"}
    path = "/auth/realms/main/protocol/openid-connect/token"
    response = bad_client.post(path, content=urlencode(form).encode(), headers=headers)
    assert response.status_code == status, response.text[:300]
    assert response.json()["error"] == error and response.json()["error_description"]


@pytest.mark.parametrize(("endpoint", "params", "code"), WFS_CASES)
def test_wfs_bad_input(bad_client: TestClient, endpoint: str, params, code: str):
    response = bad_client.get(endpoint, params=params)
    assert 400 <= response.status_code < 500, response.text[:300]
    assert response.headers["content-type"].startswith("application/xml")
    root = etree.fromstring(response.content)
    assert root.tag == "{http://www.opengis.net/ows/1.1}ExceptionReport" and root.get("version") == "2.0.0"
    assert root[0].get("exceptionCode") == code, response.text[:300]
    assert root[0].get("locator") or code == "NoApplicableCode"


# ---- Sentinel Hub Process and Statistical APIs: bodies ------------------------------------------
# Every case is a 4xx in Sentinel Hub's error shape naming the offending member, never a 500.

PROCESS = "/api/v1/process"
STATISTICS = "/api/v1/statistics"
_DROP = object()
_JS_NDVI = (
    "//VERSION=3\nfunction setup() { return {input: ['B04', 'B8A', 'dataMask'], output: ["
    "{id: 'default', bands: 1, sampleType: 'FLOAT32'}, {id: 'dataMask', bands: 1}]}; }\n"
    "function evaluatePixel(s) { return {default: [(s.B8A - s.B04) / (s.B8A + s.B04)], dataMask: [s.dataMask]}; }"
)
_INPUT = {
    "bounds": {"bbox": [-8.9, 53.05, -8.8, 53.1], "properties": {"crs": "http://www.opengis.net/def/crs/OGC/1.3/CRS84"}},
    "data": [{"type": "sentinel-2-l2a", "dataFilter": {"timeRange": {"from": "2022-10-01T00:00:00Z",
                                                                     "to": "2022-10-31T23:59:59Z"}}}],
}
PROCESS_OK = {
    "input": _INPUT,
    "output": {"width": 32, "height": 32, "responses": [{"identifier": "default", "format": {"type": "image/tiff"}}]},
    "evalscript": _JS_NDVI,
}
STATISTICS_OK = {
    "input": _INPUT,
    "aggregation": {
        "timeRange": {"from": "2022-10-01T00:00:00Z", "to": "2022-10-10T00:00:00Z"},
        "aggregationInterval": {"of": "P1D"},
        "width": 32,
        "height": 32,
        "evalscript": _JS_NDVI,
    },
}


def _with(base: dict, path: str, value: object) -> dict:
    """A deep copy of ``base`` with the dotted ``path`` set to ``value`` (removed for ``_DROP``)."""
    body = json.loads(json.dumps(base))
    node = body
    keys = [int(k) if k.isdigit() else k for k in path.split(".")]
    for key in keys[:-1]:
        node = node[key]
    if value is _DROP:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return body


_SHARED_BAD = [  # (path, value, parameter): input members, the same in both APIs
    ("input", _DROP, "input"),
    ("input", [1], "input"),
    ("input.bounds", _DROP, "input.bounds"),
    ("input.bounds", "x", "input.bounds"),
    ("input.bounds.bbox", [1, 2, 3], "input.bounds.bbox"),
    ("input.bounds.bbox", ["a", 0, 1, 1], "input.bounds.bbox"),
    ("input.bounds.bbox", [-8.8, 53.1, -8.9, 53.05], "input.bounds.bbox"),
    ("input.bounds.bbox", [0, 0, 1e308, 1e308], "input.bounds.bbox"),
    ("input.bounds.bbox", "0,0,1,1", "input.bounds.bbox"),
    ("input.bounds.properties.crs", "http://www.opengis.net/def/crs/EPSG/0/999999", "input.bounds.properties.crs"),
    ("input.bounds.properties.crs", "nonsense", "input.bounds.properties.crs"),
    ("input.bounds.properties.crs", 4326, "input.bounds.properties.crs"),
    ("input.bounds.bbox", _DROP, "input.bounds"),
    ("input.bounds.geometry", {"type": "LineString", "coordinates": [[0, 0], [1, 1]]}, "input.bounds.geometry"),
    ("input.bounds.geometry", {"type": "Polygon", "coordinates": [[["a", 0], [1, 1], [0, 1]]]},
     "input.bounds.geometry"),
    ("input.bounds.geometry", {"type": "Polygon", "coordinates": [[[0, 0]] * 20001]}, "input.bounds.geometry"),
    ("input.bounds.geometry", {"type": "Polygon"}, "input.bounds.geometry"),
    ("input.data", _DROP, "input.data"),
    ("input.data", [], "input.data"),
    ("input.data", [{"type": "sentinel-2-l2a"}, {"type": "sentinel-1-grd"}], "input.data"),
    ("input.data", ["sentinel-2-l2a"], "input.data"),
    ("input.data.0.type", _DROP, "input.data[0].type"),
    ("input.data.0.type", 5, "input.data[0].type"),
    ("input.data.0.type", "sentinel-9-nope", "input.data[0].type"),
    ("input.data.0.dataFilter.maxCloudCoverage", 101, "input.data[0].dataFilter.maxCloudCoverage"),
    ("input.data.0.dataFilter.maxCloudCoverage", "x", "input.data[0].dataFilter.maxCloudCoverage"),
    ("input.data.0.dataFilter.mosaickingOrder", "newest", "input.data[0].dataFilter.mosaickingOrder"),
    ("input.data.0.dataFilter.timeRange", {"from": "yesterday"}, "input.data[0].dataFilter.timeRange"),
    ("input.data.0.dataFilter.timeRange", {"from": "2022-10-05", "to": "2022-01-01"},
     "input.data[0].dataFilter.timeRange"),
    ("input.data.0.dataFilter.timeRange", "2022", "input.data[0].dataFilter.timeRange"),
    ("input.data.0.processing", {"upsampling": "LANCZOS"}, "input.data[0].processing.upsampling"),
]
PROCESS_BAD = [(_with(PROCESS_OK, p, v), 400, name) for p, v, name in _SHARED_BAD] + [
    (b"{", 400, "body"),
    (b"[]", 400, "body"),
    (b"[" * 100000, 400, "body"),
    (_with(PROCESS_OK, "output.width", 0), 400, "output.width"),
    (_with(PROCESS_OK, "output.width", "32"), 400, "output.width"),
    (_with(PROCESS_OK, "output.width", 100000), 400, "output.width"),
    (_with(_with(PROCESS_OK, "output.width", 16384), "output.height", 16384), 400, "output.width"),
    (_with(PROCESS_OK, "output.resx", 0.001), 400, "output.width"),
    (_with(_with(PROCESS_OK, "output.width", _DROP), "output.height", _DROP), 400, "output.width"),
    (_with(_with(_with(PROCESS_OK, "output.width", _DROP), "output.height", _DROP), "output.resx", -1), 400,
     "output.resx"),
    (_with(_with(_with(PROCESS_OK, "output.width", _DROP), "output.height", _DROP), "output.resx", 1e-9), 400,
     "output.width"),
    (_with(PROCESS_OK, "input.bounds.bbox", [-20, 35, 20, 60]), 400, "output.width"),  # beyond the layer's floor
    (_with(PROCESS_OK, "output.responses", []), 400, "output.responses"),
    (_with(PROCESS_OK, "output.responses", "default"), 400, "output.responses"),
    (_with(PROCESS_OK, "output.responses", [{"identifier": "default"}] * 17), 400, "output.responses"),
    (_with(PROCESS_OK, "output.responses.0.format.type", "image/bmp"), 400, "output.responses[0].format.type"),
    (_with(PROCESS_OK, "output.responses.0.format.type", 7), 400, "output.responses[0].format.type"),
    (_with(PROCESS_OK, "output.responses.0.format", "png"), 400, "output.responses[0].format"),
    (_with(PROCESS_OK, "output.responses.0.identifier", "nope"), 400, "evalscript"),
    (_with(PROCESS_OK, "output.responses.0", {"identifier": "userdata", "format": {"type": "image/png"}}), 400,
     "output.responses[0]"),
    (_with(PROCESS_OK, "output.responses", [{"identifier": "default"}, {"identifier": "default"}]), 400,
     "output.responses[1]"),
    (_with(PROCESS_OK, "output.responses.0.format.type", "image/png"), 400, "format"),  # float32 needs a TIFF
    (_with(PROCESS_OK, "evalscript", _DROP), 400, "evalscript"),
    (_with(PROCESS_OK, "evalscript", 5), 400, "evalscript"),
    (_with(PROCESS_OK, "evalscript", "   "), 400, "evalscript"),
    (_with(PROCESS_OK, "evalscript", "//VERSION=3\nfunction setup( {"), 400, "evalscript"),
    (_with(PROCESS_OK, "evalscript", "B04 +* B03"), 400, "evalscript"),
    (_with(PROCESS_OK, "evalscript", "//" + "x" * 40000 + "\nreturn [B04];"), 400, "evalscript"),
    (_with(PROCESS_OK, "evalscript", "return [B99];"), 400, "evalscript"),
]
STATISTICS_BAD = [(_with(STATISTICS_OK, p, v), 400, name) for p, v, name in _SHARED_BAD] + [
    (b"{", 400, "body"),
    (b"null", 400, "body"),
    (_with(STATISTICS_OK, "aggregation", _DROP), 400, "aggregation"),
    (_with(STATISTICS_OK, "aggregation", []), 400, "aggregation"),
    (_with(STATISTICS_OK, "aggregation.timeRange", _DROP), 400, "aggregation.timeRange"),
    (_with(STATISTICS_OK, "aggregation.timeRange.from", _DROP), 400, "aggregation.timeRange.from"),
    (_with(STATISTICS_OK, "aggregation.timeRange.to", 20221010), 400, "aggregation.timeRange.to"),
    (_with(STATISTICS_OK, "aggregation.timeRange.from", "2022-13-01"), 400, "aggregation.timeRange"),
    (_with(STATISTICS_OK, "aggregation.timeRange.from", "2023-01-01"), 400, "aggregation.timeRange"),
    (_with(STATISTICS_OK, "aggregation.aggregationInterval", _DROP), 400, "aggregation.aggregationInterval"),
    (_with(STATISTICS_OK, "aggregation.aggregationInterval.of", "P1X"), 400, "aggregation.aggregationInterval.of"),
    (_with(STATISTICS_OK, "aggregation.aggregationInterval.of", "P0D"), 400, "aggregation.aggregationInterval.of"),
    (_with(STATISTICS_OK, "aggregation.aggregationInterval.of", "PT1S"), 400, "aggregation.aggregationInterval.of"),
    (_with(STATISTICS_OK, "aggregation.aggregationInterval.of", 1), 400, "aggregation.aggregationInterval.of"),
    (_with(STATISTICS_OK, "aggregation.aggregationInterval.of", "P" + "9" * 30 + "D"), 400,
     "aggregation.aggregationInterval.of"),
    (_with(STATISTICS_OK, "aggregation.aggregationInterval.lastIntervalBehavior", "DROP"), 400,
     "aggregation.aggregationInterval.lastIntervalBehavior"),
    (_with(STATISTICS_OK, "aggregation.timeRange.from", "1990-01-01T00:00:00Z"), 400,
     "aggregation.aggregationInterval.of"),  # more than 1000 daily intervals
    (_with(STATISTICS_OK, "aggregation.width", 100000), 400, "aggregation.width"),
    (_with(STATISTICS_OK, "aggregation.width", -3), 400, "aggregation.width"),
    (_with(STATISTICS_OK, "aggregation.evalscript", _DROP), 400, "aggregation.evalscript"),
    (_with(STATISTICS_OK, "aggregation.evalscript", _JS_NDVI.replace("{id: 'default', bands: 1, sampleType: "
                                                                     "'FLOAT32'}, ", "")), 400,
     "aggregation.evalscript"),
    (_with(STATISTICS_OK, "calculations", "all"), 400, "calculations"),
    (_with(STATISTICS_OK, "calculations", {"nope": {}}), 400, "calculations.nope"),
    (_with(STATISTICS_OK, "calculations", {"default": []}), 400, "calculations.default"),
    (_with(STATISTICS_OK, "calculations", {"default": {"statistics": {"B0": {"percentiles": {"k": [101]}}}}}), 400,
     "calculations.default.statistics.B0.percentiles"),
    (_with(STATISTICS_OK, "calculations", {"default": {"statistics": {"B0": {"percentiles": {}}}}}), 400,
     "calculations.default.statistics.B0.percentiles.k"),
    (_with(STATISTICS_OK, "calculations",
           {"default": {"statistics": {"B0": {"percentiles": {"k": [5], "interpolation": "cubic"}}}}}), 400,
     "calculations.default.statistics.B0.percentiles.interpolation"),
    (_with(STATISTICS_OK, "calculations", {"default": {"histograms": {"B0": {}}}}), 400,
     "calculations.default.histograms.B0"),
    (_with(STATISTICS_OK, "calculations", {"default": {"histograms": {"B0": {"nBins": 10**7}}}}), 400,
     "calculations.default.histograms.B0.nBins"),
    (_with(STATISTICS_OK, "calculations", {"default": {"histograms": {"B0": {"nBins": 2.5}}}}), 400,
     "calculations.default.histograms.B0.nBins"),
    (_with(STATISTICS_OK, "calculations", {"default": {"histograms": {"B0": {"bins": [1, 0.5]}}}}), 400,
     "calculations.default.histograms.B0.bins"),
    (_with(STATISTICS_OK, "calculations", {"default": {"histograms": {"B0": {"binWidth": 1e-9, "lowEdge": 0,
                                                                              "highEdge": 1}}}}), 400,
     "calculations.default.histograms.B0.binWidth"),
    (_with(STATISTICS_OK, "calculations", {"default": {"histograms": {"B0": {"nBins": 4, "lowEdge": 1,
                                                                              "highEdge": 0}}}}), 400,
     "calculations.default.histograms.B0.lowEdge"),
]


@pytest.mark.parametrize(("body", "status", "parameter"), PROCESS_BAD)
def test_process_bad_input(bad_client: TestClient, body, status: int, parameter: str):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = bad_client.post(PROCESS, content=content, headers={"Content-Type": "application/json"})
    _sh_error(response, status, parameter)


@pytest.mark.parametrize(("body", "status", "parameter"), STATISTICS_BAD)
def test_statistics_bad_input(bad_client: TestClient, body, status: int, parameter: str):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = bad_client.post(STATISTICS, content=content, headers={"Content-Type": "application/json"})
    _sh_error(response, status, parameter)


@pytest.mark.parametrize(("endpoint", "body"), [(PROCESS, PROCESS_OK), (STATISTICS, STATISTICS_OK)])
def test_process_and_statistics_good_bodies_are_served(bad_client: TestClient, endpoint: str, body: dict):
    response = bad_client.post(endpoint, json=body)
    assert response.status_code == 200, response.text[:300]
