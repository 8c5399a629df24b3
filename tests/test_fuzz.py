"""Property-based fuzzing of every endpoint's query parameters: no input gives a 5xx.

Hypothesis draws values for the parameters each endpoint knows (plus junk names), from strings
that look almost right (numbers, NaN, inf, huge values, commas, dates, base64, NUL bytes, unicode)
to random text. The only acceptable answers are 2xx/3xx/4xx and, for OGC endpoints, exception
reports; 502/503 are allowed only when the data source is named as the cause.
"""

from __future__ import annotations

import os
import string

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.app import create_app
from server.settings import Settings

# 250 per run in `make test`; EOTILER_FUZZ_EXAMPLES=5000 for a long run by hand.
EXAMPLES = int(os.environ.get("EOTILER_FUZZ_EXAMPLES", "250"))
NEAR_MISS = st.sampled_from(
    [
        "", "0", "-1", "1e309", "nan", "NaN", "inf", "-inf", "1,2,3", "1,2,3,4", "4,3,2,1", "0,0,0,0",
        "-180,-90,180,90", "53.0,-8.9,53.2,-8.6", "99999999999", "256", "0x10", "2022-10-05", "2022-13-45",
        "2022-10/2022-09", "../../etc/passwd", "/vsicurl/http://127.0.0.1:1/x", "EPSG:4326", "EPSG:0",
        "CRS:84", "image/png", "image/tiff", "text/html", "TRUE_COLOR", "NDVI_FLOAT", "band_1", "Long(-9,-8)",
        "Lat(53,x)", 'time("2022")', "\x00", "é", "𝕏", "B04 +", "KChCMDgtQjA0KQ==", "!!!", "a" * 3000,
    ]
)  # fmt: skip
VALUES = st.one_of(NEAR_MISS, st.text(alphabet=string.printable + "éü€\x00", max_size=40))

ENDPOINTS = {
    "/ogc/wms": ["SERVICE", "VERSION", "REQUEST", "LAYERS", "STYLES", "CRS", "SRS", "BBOX", "WIDTH", "HEIGHT",
                 "FORMAT", "TIME", "MAXCC", "PRIORITY", "TRANSPARENT", "BGCOLOR", "EXCEPTIONS", "EVALSCRIPT",
                 "QUERY_LAYERS", "I", "J", "X", "Y", "INFO_FORMAT", "LAYER"],
    "/ogc/wmts": ["SERVICE", "VERSION", "REQUEST", "LAYER", "STYLE", "TILEMATRIXSET", "TILEMATRIX", "TILEROW",
                  "TILECOL", "FORMAT", "TIME", "EVALSCRIPT", "I", "J", "INFOFORMAT"],
    "/ogc/wcs": ["SERVICE", "VERSION", "ACCEPTVERSIONS", "REQUEST", "COVERAGEID", "COVERAGE", "SUBSET",
                 "SUBSETTINGCRS", "OUTPUTCRS", "SCALESIZE", "SCALEFACTOR", "SCALEAXES", "SCALEEXTENT",
                 "RANGESUBSET", "FORMAT", "MEDIATYPE", "CRS", "RESPONSE_CRS", "BBOX", "WIDTH", "HEIGHT",
                 "RESX", "RESY", "TIME", "BAND", "INTERPOLATION", "EVALSCRIPT"],
    "/layers/TRUE_COLOR/tilejson.json": ["tms", "format", "tile_scale", "time", "maxcc", "priority", "evalscript"],
    "/layers/RAW_B04/tiles/WebMercatorQuad/11/974/666.tif": ["time", "maxcc", "priority", "evalscript"],
}  # fmt: skip
PATHS = st.sampled_from(
    [
        "/layers/{v}/tiles/WebMercatorQuad/11/974/666.png",
        "/layers/TRUE_COLOR/tiles/{v}/11/974/666.png",
        "/layers/TRUE_COLOR/tiles/WebMercatorQuad/{v}/974/666.png",
        "/layers/TRUE_COLOR/tiles/WebMercatorQuad/11/{v}/666.png",
        "/layers/TRUE_COLOR/tiles/WebMercatorQuad/11/974/{v}",
        "/layers/{v}/legend.png",
        "/layers/{v}",
        "/ogc/wmts/{v}/default/default/WebMercatorQuad/11/666/974.png",
    ]
)


@pytest.fixture(scope="module")
def fuzz_client(test_config) -> TestClient:
    # Small limits keep each drawn request cheap; behaviour at the limits is what is fuzzed.
    settings = Settings(config=test_config, overview_cache_bytes=0, max_image_size=512, cache_memory_bytes=0)
    return TestClient(create_app(settings), raise_server_exceptions=False)


def acceptable(response) -> bool:
    if response.status_code < 500:
        return True
    return response.status_code in (502, 503) and b"Traceback" not in response.content


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    endpoint=st.sampled_from(sorted(ENDPOINTS)),
    data=st.data(),
)
def test_query_parameters_never_give_a_5xx(fuzz_client: TestClient, endpoint: str, data):
    names = ENDPOINTS[endpoint]
    chosen = data.draw(st.lists(st.sampled_from([*names, "junk", "SERVICE"]), min_size=1, max_size=8))
    params = [(name if data.draw(st.booleans()) else name.lower(), data.draw(VALUES)) for name in chosen]
    response = fuzz_client.get(endpoint, params=params)
    assert acceptable(response), (endpoint, params, response.status_code, response.text[:300])
    assert b"Traceback" not in response.content


@settings(max_examples=EXAMPLES // 2, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(template=PATHS, value=VALUES)
def test_path_segments_never_give_a_5xx(fuzz_client: TestClient, template: str, value: str):
    from urllib.parse import quote

    response = fuzz_client.get(template.format(v=quote(value, safe="")))
    assert acceptable(response), (template, value, response.status_code, response.text[:300])
