"""One rule for formats: what a layer advertises is exactly what it accepts.

For every configured layer, plus a 16-bit and a two-band one, the formats of its WMTS
capabilities entry (and its ResourceURL templates) are compared with what GetTile answers for
each format the server knows: an advertised format is drawn (200), any other is refused with
InvalidParameterValue (400).
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import yaml
from lxml import etree

from server.models import ImageFormat
from server.settings import Settings
from tests.conftest import serve, write_test_config

UINT16 = """//VERSION=3
function setup() { return {input: ["B04", "B03", "B02"], output: {bands: 3, sampleType: "UINT16"}}; }
function evaluatePixel(s) { return [s.B04 * 10000, s.B03 * 10000, s.B02 * 10000]; }
"""
TWO_BANDS = """//VERSION=3
function setup() { return {input: ["B04", "B08"], output: {bands: 2, sampleType: "UINT8"}}; }
function evaluatePixel(s) { return [s.B04 * 255, s.B08 * 255]; }
"""

WMTS = "{http://www.opengis.net/wmts/1.0}"
OWS = "{http://www.opengis.net/ows/1.1}"
# Tile 10/0/0 (WebMercatorQuad) over the Arctic Ocean: no scene, so every answer is quick.
EMPTY_TILE = {"TILEMATRIXSET": "WebMercatorQuad", "TILEMATRIX": "10", "TILEROW": "0", "TILECOL": "0"}


def advertised(client: httpx.Client) -> dict[str, tuple[set[str], set[str]]]:
    """Layer id -> (its Format values, the formats of its ResourceURL templates)."""
    response = client.get("/ogc/wmts", params={"SERVICE": "WMTS", "REQUEST": "GetCapabilities"})
    assert response.status_code == 200
    root = etree.fromstring(response.content)
    found = {}
    for layer in root.iter(f"{WMTS}Layer"):
        formats = {f.text for f in layer.findall(f"{WMTS}Format")}
        templates = {r.get("format") for r in layer.findall(f"{WMTS}ResourceURL")}
        found[layer.findtext(f"{OWS}Identifier")] = (formats, templates)
    return found


def accepted(client: httpx.Client, layer: str) -> set[str]:
    """The formats GetTile draws for ``layer`` (400 InvalidParameterValue for the others)."""
    drawn = set()
    for fmt in ImageFormat:
        params = {"SERVICE": "WMTS", "REQUEST": "GetTile", "VERSION": "1.0.0", "LAYER": layer, "STYLE": "default"}
        response = client.get("/ogc/wmts", params={**params, **EMPTY_TILE, "FORMAT": fmt.value})
        if response.status_code == 200:
            assert response.headers["content-type"].startswith(fmt.value)
            drawn.add(fmt.value)
        else:
            assert response.status_code == 400, (layer, fmt, response.text[:300])
            assert b"InvalidParameterValue" in response.content
    return drawn


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """The test configuration plus a 16-bit RGB layer and a two-band layer."""
    directory = tmp_path_factory.mktemp("formats")
    path = write_test_config(directory)
    raw = yaml.safe_load(path.read_text())
    for name, script in (("UINT16_RGB", UINT16), ("TWO_BANDS", TWO_BANDS)):
        (directory / f"{name}.js").write_text(script)
        script_path = str(directory / f"{name}.js")
        raw["layers"][name] = {"title": name, "collection": "sentinel-2-l2a", "evalscript": script_path}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    with serve(Settings(config=path, overview_cache_bytes=0)) as url, httpx.Client(base_url=url, timeout=60) as http:
        yield http


def test_every_layer_advertises_exactly_the_formats_it_accepts(client: httpx.Client) -> None:
    layers = advertised(client)
    assert {"UINT16_RGB", "TWO_BANDS"} <= set(layers)
    mismatched = {}
    for layer, (formats, templates) in layers.items():
        assert formats == templates, layer
        drawn = accepted(client, layer)
        assert "image/tiff" in drawn  # every output can be written as GeoTIFF
        if formats != drawn:
            mismatched[layer] = (sorted(formats), sorted(drawn))
    assert not mismatched, f"advertised vs accepted: {mismatched}"


def test_ogc_api_tilesets_offer_exactly_the_formats_the_layer_accepts(client: httpx.Client) -> None:
    """OGC API tile links follow the same rule (a 16-bit or two-band output is not offered as JPEG)."""
    names = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp", "tiff": "image/tiff"}
    for layer in ("UINT16_RGB", "TWO_BANDS", "TRUE_COLOR", "NDVI_FLOAT"):
        document = client.get(f"/collections/{layer}/tiles/WebMercatorQuad", params={"f": "json"}).json()
        offered = {names[item["href"].rsplit("f=", 1)[1]] for item in document["links"] if item["rel"] == "item"}
        assert offered == accepted(client, layer), layer
