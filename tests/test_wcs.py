"""WCS 1.0.0 and 2.0.1 with real clients (OWSLib, GDAL's WCS driver): documents, coverage values
against an independent rasterio computation, CRS, size and scaling, range subsetting, TIME, and
one test per exception code.

No WCS, GMLCOV or SWE schemas are available offline (PyPI, Debian and npm ship none), so the
documents are checked by parsing them with lxml, OWSLib and GDAL rather than by XSD validation.
"""

from __future__ import annotations

import io
import json
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml
from lxml import etree
from owslib.wcs import WebCoverageService
from rasterio.crs import CRS
from rasterio.enums import MaskFlags
from rasterio.windows import Window

from server.models import Grid
from tests.test_pixels import T29UNU, band_file, refl, warp_to

B04_60M = band_file(T29UNU, "B04", 60)
WCS20 = "http://www.opengis.net/wcs/2.0"
OWS20 = "http://www.opengis.net/ows/2.0"
GML32 = "http://www.opengis.net/gml/3.2"
NATIVE_DEG = 10 / 111_320  # the native grid of 10 m layers, in degrees


def geotiff(response) -> rasterio.io.DatasetReader:
    assert response.status_code == 200, response.text[:500]
    assert response.headers["content-type"] == "image/tiff"
    return rasterio.open(io.BytesIO(response.content))


def expected_b04(src) -> np.ndarray:
    """Independent B04 reflectance of the baseline-04.00 scene on the coverage's own grid."""
    grid = Grid(tuple(src.bounds), src.crs, src.width, src.height)
    dn = warp_to(B04_60M, grid)
    return np.where(dn == 0, np.nan, refl(dn, -1000.0))


def assert_matches(got: np.ndarray, expected: np.ndarray, share: float = 0.99) -> None:
    both = ~np.isnan(got) & ~np.isnan(expected)
    assert both.mean() > 0.5, "the coverage should hold data"
    close = np.isclose(got, expected, atol=1e-6) | (np.isnan(got) & np.isnan(expected))
    assert close.mean() >= share, f"only {close.mean():.3f} of pixels match"


def coverage(client, **params):
    base = {"SERVICE": "WCS", "VERSION": "2.0.1", "REQUEST": "GetCoverage", "FORMAT": "image/tiff"}
    items = [(k, v) for k, v in {**base, **params}.items() if k != "SUBSET"]
    items += [("SUBSET", s) for s in params.get("SUBSET", [])]
    return client.get("/ogc/wcs", params=items)


def test_owslib_201_capabilities_description_and_coverage(live_url):
    wcs = WebCoverageService(f"{live_url}/ogc/wcs", version="2.0.1")
    assert {"TRUE_COLOR", "NDVI_FLOAT", "RAW_B04"} <= set(wcs.contents)
    # OWSLib's 2.0.1 reader looks for a 1.0-style lonLatEnvelope; read ows:WGS84BoundingBox directly
    summary = wcs.contents["RAW_B04"]._elem
    box = summary.find(f"{{{OWS20}}}WGS84BoundingBox")
    west, south = map(float, box.find(f"{{{OWS20}}}LowerCorner").text.split())
    east, north = map(float, box.find(f"{{{OWS20}}}UpperCorner").text.split())
    assert west <= -9.0 and east >= 30.6 and south <= 39.4 and north >= 62.8
    assert "image/tiff" in wcs.contents["RAW_B04"].supportedFormats
    grid = wcs.contents["RAW_B04"].grid
    assert grid.axislabels == ["Long", "Lat"] and grid.lowlimits == ["0", "0"]
    assert float(grid.offsetvectors[0][1]) == pytest.approx(NATIVE_DEG, rel=1e-6)
    response = wcs.getCoverage(
        identifier="RAW_B04",
        format="image/tiff",
        subsets=[("Long", -8.9, -8.8), ("Lat", 53.05, 53.1)],
        SCALESIZE="Long(200),Lat(100)",
    )
    with rasterio.open(io.BytesIO(response.read())) as src:
        assert src.crs == CRS.from_epsg(4326) and (src.width, src.height) == (200, 100)
        assert src.dtypes[0] == "float32" and src.count == 1
        assert np.allclose(tuple(src.bounds), (-8.9, 53.05, -8.8, 53.1))
        assert_matches(src.read(1), expected_b04(src))


def test_owslib_100_capabilities_description_and_coverage(live_url):
    wcs = WebCoverageService(f"{live_url}/ogc/wcs", version="1.0.0")
    cov = wcs.contents["RAW_B04"]
    assert cov.title == "B04 reflectance"
    assert "2022-10-05" in cov.timepositions and cov.timelimits == ["2017-06-13", "2022-10-05"]
    assert {c.getcode() for c in cov.supportedCRS} >= {"EPSG:4326", "EPSG:3857", "EPSG:32629"}
    assert cov.grid.axislabels == ["x", "y"]
    response = wcs.getCoverage(
        identifier="RAW_B04",
        bbox=(-8.9, 53.05, -8.8, 53.1),
        crs="EPSG:4326",
        format="GeoTIFF",
        width=120,
        height=60,
        time=["2022-10-05"],
    )
    with rasterio.open(io.BytesIO(response.read())) as src:
        assert (src.width, src.height) == (120, 60) and src.crs == CRS.from_epsg(4326)
        assert_matches(src.read(1), expected_b04(src))


@pytest.mark.parametrize("version", ["1.0.0", "2.0.1"])
def test_gdal_wcs_driver_reads_georeferenced_values(live_url, tmp_path, version):
    url = f"WCS:{live_url}/ogc/wcs?version={version}&coverage=RAW_B04&cache={tmp_path}"
    with rasterio.Env(GDAL_HTTP_TIMEOUT="60"), rasterio.open(url) as src:
        assert src.crs == CRS.from_epsg(4326) and src.count == 1 and src.dtypes[0] == "float32"
        assert src.res == pytest.approx((NATIVE_DEG, NATIVE_DEG), rel=1e-6)
        row, col = src.index(-8.85, 53.1)
        window = Window(col, row, 96, 64)
        got = src.read(1, window=window)
        bounds = rasterio.windows.bounds(window, src.transform)
    grid = Grid(bounds, CRS.from_epsg(4326), 96, 64)
    dn = warp_to(B04_60M, grid)
    assert_matches(got, np.where(dn == 0, np.nan, refl(dn, -1000.0)))


def test_outputcrs_and_subsettingcrs(client):
    response = coverage(
        client,
        COVERAGEID="RAW_B04",
        SUBSET=["x(508000,518000)", "y(5880000,5886000)"],
        SUBSETTINGCRS="http://www.opengis.net/def/crs/EPSG/0/32629",
        OUTPUTCRS="http://www.opengis.net/def/crs/EPSG/0/32629",
    )
    with geotiff(response) as src:
        assert src.crs == CRS.from_epsg(32629)
        # no scaling: the native 10 m resolution, measured on the ground
        assert (src.width, src.height) == pytest.approx((1000, 600), abs=2)
        assert np.allclose(tuple(src.bounds), (508000, 5880000, 518000, 5886000))
        assert_matches(src.read(1), expected_b04(src))


def test_scalefactor_multiplies_the_native_size(client):
    """The scaling extension's factor multiplies the grid (as MapServer reads it): 0.5 halves, 2 doubles."""
    subset = ["Long(-8.9,-8.8)", "Lat(53.05,53.1)"]
    native = coverage(client, COVERAGEID="RAW_B04", SUBSET=subset)
    half = coverage(client, COVERAGEID="RAW_B04", SUBSET=subset, SCALEFACTOR="0.5")
    double = coverage(client, COVERAGEID="RAW_B04", SUBSET=subset, SCALEAXES="Long(2),Lat(2)")
    with geotiff(native) as a, geotiff(half) as b, geotiff(double) as c:
        assert a.width == round(0.1 / NATIVE_DEG) and a.height == round(0.05 / NATIVE_DEG)
        assert (b.width, b.height) == (round(a.width / 2), round(a.height / 2))
        assert (c.width, c.height) == (a.width * 2, a.height * 2)
        assert np.allclose(tuple(b.bounds), tuple(a.bounds)) and np.allclose(tuple(c.bounds), tuple(a.bounds))
    # 1000 times the native resolution is far beyond the size limit
    refused = coverage(client, COVERAGEID="RAW_B04", SUBSET=subset, SCALEFACTOR="1000")
    assert refused.status_code == 400 and ows_code(refused) == "InvalidParameterValue"
    assert etree.fromstring(refused.content)[0].get("locator") == "SCALEFACTOR"


def test_range_subset_and_visual_coverage_have_no_alpha(client):
    subset = ["Long(-8.9,-8.8)", "Lat(53.05,53.1)"]
    full = coverage(client, COVERAGEID="TRUE_COLOR", SUBSET=subset, SCALESIZE="x(100),y(50)")
    green = coverage(client, COVERAGEID="TRUE_COLOR", SUBSET=subset, SCALESIZE="x(100),y(50)", RANGESUBSET="band_2")
    with geotiff(full) as a, geotiff(green) as b:
        assert a.count == 3 and a.dtypes[0] == "uint8"  # RGB; no-data is an internal mask, not a 4th band
        assert b.count == 1
        assert (b.read(1) == a.read(2)).all() and a.read(2).std() > 1
        assert all(MaskFlags.per_dataset in flags for flags in a.mask_flag_enums)  # the internal mask
        assert a.read_masks(1).max() == 255


def test_time_subset_selects_scenes(client):
    subset = ["Long(-8.9,-8.8)", "Lat(53.05,53.1)"]
    inside = coverage(client, COVERAGEID="RAW_B04", SUBSET=[*subset, 'time("2022-10-01","2022-10-31")'])
    outside = coverage(client, COVERAGEID="RAW_B04", SUBSET=[*subset, "time(2017-06-01,2017-06-30)"])
    with geotiff(inside) as a, geotiff(outside) as b:
        assert (~np.isnan(a.read(1))).mean() > 0.5
        assert np.isnan(b.read(1)).all()
    assert "T29UNU" in inside.headers["x-eotiler-scenes"]


def test_100_resx_resy_and_response_crs(client):
    params = {
        "SERVICE": "WCS",
        "VERSION": "1.0.0",
        "REQUEST": "GetCoverage",
        "COVERAGE": "RAW_B04",
        "CRS": "EPSG:4326",
        "RESPONSE_CRS": "EPSG:32629",
        "BBOX": "-8.9,53.05,-8.8,53.1",
        "RESX": "60",
        "RESY": "60",
        "FORMAT": "image/tiff",
    }
    with geotiff(client.get("/ogc/wcs", params=params)) as src:
        assert src.crs == CRS.from_epsg(32629)
        assert src.res == pytest.approx((60, 60), rel=0.02)
        assert_matches(src.read(1), expected_b04(src))


def test_evalscript_on_getcoverage(client):
    import base64

    script = base64.b64encode(b"B04 * 2").decode()
    subset = ["Long(-8.9,-8.8)", "Lat(53.05,53.1)"]
    plain = coverage(client, COVERAGEID="RAW_B04", SUBSET=subset, SCALESIZE="x(50),y(25)")
    doubled = coverage(client, COVERAGEID="RAW_B04", SUBSET=subset, SCALESIZE="x(50),y(25)", EVALSCRIPT=script)
    with geotiff(plain) as a, geotiff(doubled) as b:
        assert np.allclose(b.read(1), 2 * a.read(1), equal_nan=True)


def test_evalscript_sets_the_range_of_the_coverage(client):
    import base64

    subset = ["Long(-8.9,-8.8)", "Lat(53.05,53.1)"]
    one_band = base64.b64encode(b"B04").decode()  # over a 3-band layer: the range becomes 1 band
    ok = coverage(client, COVERAGEID="TRUE_COLOR", SUBSET=subset, SCALESIZE="x(40),y(20)", EVALSCRIPT=one_band)
    with geotiff(ok) as src:
        assert src.count == 1 and src.dtypes[0] == "float32"
    beyond = coverage(
        client,
        COVERAGEID="TRUE_COLOR",
        SUBSET=subset,
        SCALESIZE="x(40),y(20)",
        EVALSCRIPT=one_band,
        RANGESUBSET="band_2",
    )
    assert beyond.status_code == 400 and ows_code(beyond) == "InvalidParameterValue"
    rgba = base64.b64encode(b'{"expression": "B04", "rescale": [0, 0.3], "colormap": "viridis"}').decode()
    visual = coverage(client, COVERAGEID="RAW_B04", SUBSET=subset, SCALESIZE="x(40),y(20)", EVALSCRIPT=rgba)
    with geotiff(visual) as src:
        assert src.count == 3 and src.dtypes[0] == "uint8"  # the colormap's alpha became the mask


def ows_code(response) -> str:
    doc = etree.fromstring(response.content)
    assert doc.tag == f"{{{OWS20}}}ExceptionReport" and doc.get("version") == "2.0.1"
    return doc[0].get("exceptionCode")


GOOD_201 = {"COVERAGEID": "RAW_B04", "SUBSET": ["Long(-8.9,-8.8)", "Lat(53.05,53.1)"]}
BAD_201 = [
    ({"COVERAGEID": "NOPE"}, "NoSuchCoverage"),
    ({"COVERAGEID": ""}, "MissingParameterValue"),
    ({"SUBSET": ["Height(1,2)"]}, "InvalidAxisLabel"),
    ({"SUBSET": ["Long(5,1)"]}, "InvalidSubsetting"),
    ({"SUBSET": ["Long(a,b)"]}, "InvalidSubsetting"),
    ({"SUBSET": ["Long(1,2"]}, "InvalidSubsetting"),
    ({"SUBSET": ['time("yesterday")']}, "InvalidSubsetting"),
    ({"FORMAT": "image/png"}, "InvalidParameterValue"),
    ({"SCALESIZE": "x(9000),y(10)"}, "InvalidParameterValue"),
    ({"SCALEFACTOR": "-2"}, "InvalidParameterValue"),
    ({"SCALEFACTOR": "1000"}, "InvalidParameterValue"),  # 1111 x 556 native pixels, x 1000: too large
    ({"SCALEAXES": "Long(1e308)"}, "InvalidParameterValue"),
    ({"SUBSET": ["Long(-9,9)", "Lat(40,60)"]}, "InvalidParameterValue"),  # beyond the size limit at 10 m
    ({"OUTPUTCRS": "http://www.opengis.net/def/crs/EPSG/0/2154"}, "OutputCrs-NotSupported"),
    ({"SUBSETTINGCRS": "EPSG:2154"}, "SubsettingCrs-NotSupported"),
    ({"RANGESUBSET": "band_7"}, "InvalidParameterValue"),
    ({"INTERPOLATION": "spline"}, "InvalidParameterValue"),
    ({"EVALSCRIPT": "%%%"}, "InvalidParameterValue"),
    ({"REQUEST": "GetEverything"}, "OperationNotSupported"),
    ({"VERSION": "3.0.0"}, "VersionNegotiationFailed"),
]


@pytest.mark.parametrize(("change", "code"), BAD_201)
def test_exception_codes_201(client, change, code):
    response = coverage(client, **{**GOOD_201, **change})
    assert 400 <= response.status_code < 500
    assert ows_code(response) == code


GOOD_100 = {
    "SERVICE": "WCS",
    "VERSION": "1.0.0",
    "REQUEST": "GetCoverage",
    "COVERAGE": "RAW_B04",
    "CRS": "EPSG:4326",
    "BBOX": "-8.9,53.05,-8.8,53.1",
    "WIDTH": "64",
    "HEIGHT": "32",
    "FORMAT": "GeoTIFF",
}
BAD_100 = [
    ({"COVERAGE": "NOPE"}, "CoverageNotDefined"),
    ({"FORMAT": "image/gif"}, "InvalidFormat"),
    ({"WIDTH": "", "HEIGHT": ""}, "MissingParameterValue"),
    ({"BBOX": "1,2,3"}, "InvalidParameterValue"),
    ({"CRS": "EPSG:2154"}, "InvalidParameterValue"),
    ({"TIME": "not-a-date"}, "InvalidParameterValue"),
    ({"BAND": "4"}, "InvalidParameterValue"),
]


@pytest.mark.parametrize(("change", "code"), BAD_100)
def test_exception_codes_100(client, change, code):
    response = client.get("/ogc/wcs", params={**GOOD_100, **change})
    assert 400 <= response.status_code < 500
    doc = etree.fromstring(response.content)
    assert doc.tag == "{http://www.opengis.net/ogc}ServiceExceptionReport" and doc.get("version") == "1.2.0"
    assert doc[0].get("code") == code


def test_describe_coverage_201_declares_float_range_and_time(client, test_config):
    response = client.get(
        "/ogc", params={"SERVICE": "WCS", "VERSION": "2.0.1", "REQUEST": "DescribeCoverage", "COVERAGEID": "NDVI_FLOAT"}
    )
    doc = etree.fromstring(response.content)
    fields = doc.findall(".//{http://www.opengis.net/swe/2.0}field")
    assert [f.get("name") for f in fields] == ["band_1"]
    assert doc.find(".//{http://www.opengis.net/swe/2.0}nilValue").text == "NaN"
    times = [t.text for t in doc.iter(f"{{{GML32}}}timePosition")]
    assert "2022-10-05" in times and times == sorted(times)
    envelope = doc.find(f".//{{{GML32}}}Envelope")
    assert envelope.get("axisLabels") == "Lat Long"
    lat, lon = map(float, envelope.find(f"{{{GML32}}}lowerCorner").text.split())
    config = yaml.safe_load(test_config.read_text())
    folder = Path(config["collections"][config["layers"]["NDVI_FLOAT"]["collection"]]["catalogue"]["path"])
    items = [json.loads(path.read_text()) for path in folder.glob("*.json")]
    boxes = [item["bbox"] for item in items if item.get("type") == "Feature"]
    # latitude first in EPSG:4326: the items' southern and western edges (to a native pixel)
    assert lat == pytest.approx(min(b[1] for b in boxes), abs=2 * NATIVE_DEG) and lat > 0
    assert lon == pytest.approx(min(b[0] for b in boxes), abs=2 * NATIVE_DEG) and lon < 0


def test_capabilities_operations_point_at_the_wcs_endpoint(client):
    response = client.get("/ogc/wcs", params={"SERVICE": "WCS", "REQUEST": "GetCapabilities"})
    doc = etree.fromstring(response.content)
    assert doc.tag == f"{{{WCS20}}}Capabilities"
    hrefs = {g.get("{http://www.w3.org/1999/xlink}href") for g in doc.iter(f"{{{OWS20}}}Get")}
    assert len(hrefs) == 1 and urllib.parse.urlsplit(hrefs.pop()).path == "/ogc/wcs"
