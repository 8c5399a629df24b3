"""One EVALSCRIPT size limit on every endpoint: 32 KiB of decoded script on XYZ, WMS, WMTS and WCS.

A ~20 KB script renders the same pixels on all four; a script above the limit is refused on each
with a message naming the limit. The server runs with a URL bound above the 40 KB script's URL,
so what refuses it is the script limit itself and not the 414 of ``EOTILER_MAX_URL_BYTES``.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import morecantile
import numpy as np
import pytest
import rasterio
from lxml import etree

from server.evalscript.request_script import MAX_SCRIPT_BYTES
from server.settings import Settings
from tests.conftest import serve
from tests.test_request_evalscript import b64, wmts_tile

ZOOM, COL, ROW = 10, 486, 333  # over T29UNU
DAY = "2022-10-05"  # one scene, the same on every endpoint
TILE = f"/layers/TRUE_COLOR/tiles/WebMercatorQuad/{ZOOM}/{COL}/{ROW}.tif"
LIMIT_MESSAGE = f"is longer than {MAX_SCRIPT_BYTES} bytes (decoded)"
BODY = """//VERSION=3
function setup() {
  return {input: ["B03", "B04", "dataMask"], output: {bands: 1, sampleType: "FLOAT32"}};
}
function evaluatePixel(s) {
  if (s.dataMask == 0) { return [NaN]; }
  return [(s.B04 - s.B03) / (s.B04 + s.B03)];
}
"""


def script_of(size: int) -> str:
    """A normalised-difference evalscript padded with comment lines to exactly ``size`` bytes."""
    line = "// " + "padding " * 9 + "\n"
    padding = line * ((size - len(BODY)) // len(line))
    text = BODY + padding
    return text + " " * (size - len(text))


NEAR_LIMIT = script_of(20_000)
OVER_LIMIT = script_of(40_000)


@pytest.fixture(scope="module")
def wide_url(test_config: Path) -> Iterator[str]:
    """A server whose URL bound (128 KiB) lets the 40 KB script reach the script limit."""
    settings = Settings(config=test_config, overview_cache_bytes=0, max_url_bytes=131072)
    with serve(settings) as url:
        yield url


@pytest.fixture(scope="module")
def http(wide_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=wide_url, timeout=60) as client:
        yield client


def tile_bounds() -> tuple[float, float, float, float]:
    bounds = morecantile.tms.get("WebMercatorQuad").xy_bounds(COL, ROW, ZOOM)
    return bounds.left, bounds.bottom, bounds.right, bounds.top


def wms(script: str) -> tuple[str, dict[str, str]]:
    x0, y0, x1, y1 = tile_bounds()
    return "/ogc/wms", {
        "SERVICE": "WMS",
        "VERSION": "1.3.0",
        "REQUEST": "GetMap",
        "LAYERS": "TRUE_COLOR",
        "STYLES": "",
        "CRS": "EPSG:3857",
        "BBOX": f"{x0!r},{y0!r},{x1!r},{y1!r}",
        "WIDTH": "256",
        "HEIGHT": "256",
        "FORMAT": "image/tiff",
        "TIME": DAY,
        "EVALSCRIPT": b64(script),
    }


def wmts(script: str) -> tuple[str, dict[str, str]]:
    return "/ogc/wmts", wmts_tile("TRUE_COLOR", TIME=DAY, EVALSCRIPT=b64(script))


def wcs(script: str) -> tuple[str, list[tuple[str, str]]]:
    x0, y0, x1, y1 = tile_bounds()
    params = {
        "SERVICE": "WCS",
        "VERSION": "2.0.1",
        "REQUEST": "GetCoverage",
        "COVERAGEID": "TRUE_COLOR",
        "FORMAT": "image/tiff",
        "SUBSETTINGCRS": "EPSG:3857",
        "OUTPUTCRS": "EPSG:3857",
        "SCALESIZE": "x(256),y(256)",
        "TIME": DAY,
        "EVALSCRIPT": b64(script),
    }
    subsets = [("SUBSET", f"x({x0!r},{x1!r})"), ("SUBSET", f"y({y0!r},{y1!r})")]
    return "/ogc/wcs", [*params.items(), *subsets]


def xyz(script: str) -> tuple[str, dict[str, str]]:
    return TILE, {"time": DAY, "evalscript": b64(script)}


def get(http: httpx.Client, request: tuple[str, dict[str, str] | list[tuple[str, str]]]) -> httpx.Response:
    url, params = request
    return http.get(url, params=params)


def first_band(response: httpx.Response) -> np.ndarray:
    """Band 1 as float64 with NaN where the file marks no data (NaN values, nodata or a mask)."""
    assert response.status_code == 200, response.text[:300]
    with rasterio.open(io.BytesIO(response.content)) as src:
        assert src.crs.to_epsg() == 3857 and (src.width, src.height) == (256, 256)
        band = src.read(1, masked=True).astype(np.float64)
    return band.filled(np.nan)


def test_scripts_are_the_sizes_the_tests_claim():
    assert len(NEAR_LIMIT.encode()) == 20_000 and len(OVER_LIMIT.encode()) == 40_000
    assert len(NEAR_LIMIT.encode()) < MAX_SCRIPT_BYTES < len(OVER_LIMIT.encode())


def test_a_20_kb_script_gives_the_same_pixels_on_every_endpoint(http: httpx.Client):
    reference = first_band(get(http, xyz(NEAR_LIMIT)))
    valid = ~np.isnan(reference)
    assert valid.mean() > 0.3 and np.nanstd(reference) > 0.01, "the tile has data, and varied values"
    # An independent computation of the XYZ values: the same script without its padding.
    assert np.array_equal(first_band(get(http, xyz(BODY))), reference, equal_nan=True)
    for request in (wms, wmts, wcs):
        pixels = first_band(get(http, request(NEAR_LIMIT)))
        assert np.array_equal(~np.isnan(pixels), valid), request.__name__
        assert np.allclose(pixels[valid], reference[valid], atol=1e-6), request.__name__


@pytest.mark.parametrize("request_of", [wms, wmts, wcs], ids=["wms", "wmts", "wcs"])
def test_a_40_kb_script_is_refused_on_ogc_endpoints_naming_the_limit(http: httpx.Client, request_of):
    response = get(http, request_of(OVER_LIMIT))
    assert response.status_code == 400, response.text[:300]
    root = etree.fromstring(response.content)
    texts = [e.text or "" for e in root.iter() if e.tag.endswith("ServiceException") or e.tag.endswith("ExceptionText")]
    codes = {e.get("code") or e.get("exceptionCode") for e in root.iter()} - {None}
    assert "InvalidParameterValue" in codes, response.text[:300]
    assert any(f"EVALSCRIPT {LIMIT_MESSAGE}" in text for text in texts), texts


def test_a_40_kb_script_is_refused_on_xyz_naming_the_limit(http: httpx.Client):
    response = get(http, xyz(OVER_LIMIT))
    assert response.status_code == 400
    assert response.json() == {"detail": f"evalscript {LIMIT_MESSAGE}", "parameter": "evalscript"}


def test_one_byte_over_the_limit_is_refused_and_the_limit_itself_accepted(http: httpx.Client):
    at_limit = get(http, xyz(script_of(MAX_SCRIPT_BYTES)))
    assert at_limit.status_code == 200, at_limit.text[:300]
    for request_of in (wms, xyz):
        response = get(http, request_of(script_of(MAX_SCRIPT_BYTES + 1)))
        assert response.status_code == 400 and LIMIT_MESSAGE in response.text, response.text[:300]
