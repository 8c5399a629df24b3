"""The REST API over real HTTP: discovery, tiles in every format and TMS, TileJSON, legends,
TIME/MAXCC/PRIORITY, and every bad-input case answering a 4xx JSON that names the parameter."""

from __future__ import annotations

import io
from collections.abc import Iterator

import httpx
import morecantile
import numpy as np
import pytest
import rasterio
from PIL import Image

from server.settings import Settings
from tests.conftest import serve

WEB_MERCATOR = morecantile.tms.get("WebMercatorQuad")
T29UNU_TILE = WEB_MERCATOR.tile(-8.75, 53.12, 12)
T29UNU_PATH = f"{T29UNU_TILE.z}/{T29UNU_TILE.x}/{T29UNU_TILE.y}"


def test_layers_lists_every_configured_layer(client):
    body = client.get("/layers").json()
    ids = {layer["id"] for layer in body["layers"]}
    assert {
        "TRUE_COLOR",
        "FALSE_COLOR",
        "NDVI",
        "NDVI_FLOAT",
        "KNDVI",
        "NDWI",
        "MOISTURE_INDEX",
        "SWIR",
        "SCL",
        "TRUE_COLOR_CLOUDMASKED",
        "MOSAIC_TRUE_COLOR",
    } <= ids
    ndvi = next(layer for layer in body["layers"] if layer["id"] == "NDVI")
    assert ndvi["legend"].endswith("/layers/NDVI/legend.png")
    assert "2022-10-05" in ndvi["times"] and "2017-06-17" in ndvi["times"] and "2020-02-19" in ndvi["times"]
    west, south, east, north = ndvi["bounds"]
    # west and south: the 29RKH crop (Western Sahara); east and north: the 35VPK patches (Finland)
    assert -11.7 < west < -11.6 and 30 < east < 31 and 24.5 < south < 24.6 and 62 < north < 63
    assert next(layer for layer in body["layers"] if layer["id"] == "NDVI_FLOAT")["formats"] == ["tif"]


def test_layer_details_list_scenes(client):
    body = client.get("/layers/TRUE_COLOR").json()
    assert len(body["scenes"]) == 7
    assert {s["id"][:10] for s in body["scenes"]} == {"S2A_MSIL2A", "S2B_MSIL2A"}


@pytest.fixture(scope="module")
def uncached_client(settings: Settings) -> Iterator[httpx.Client]:
    """A server of its own without a tile cache, so every tile it answers is read and rendered.

    The session server's memory cache holds whatever other modules requested (WMTS, WMS and OGC
    API tests ask for the same T29UNU tile), and a cached tile has no read to time.
    """
    with (
        serve(settings.model_copy(update={"cache_memory_bytes": 0})) as url,
        httpx.Client(base_url=url, timeout=60) as http,
    ):
        yield http


@pytest.mark.parametrize(
    ("suffix", "media_type", "size"),
    [
        (".png", "image/png", 256),
        ("@2x.png", "image/png", 512),
        (".jpg", "image/jpeg", 256),
        (".webp", "image/webp", 256),
    ],
)
def test_tile_formats_and_sizes(uncached_client: httpx.Client, suffix: str, media_type: str, size: int):
    response = uncached_client.get(f"/layers/TRUE_COLOR/tiles/WebMercatorQuad/{T29UNU_PATH}{suffix}")
    assert response.status_code == 200
    assert response.headers["content-type"] == media_type
    assert "read;dur=" in response.headers["server-timing"]
    assert "T29UNU" in response.headers["x-eotiler-scenes"]
    image = Image.open(io.BytesIO(response.content))
    assert image.size == (size, size)
    pixels = np.asarray(image.convert("RGB"))
    assert pixels.std() > 5  # real imagery, not a flat fill


def test_geotiff_tile_is_georeferenced(client):
    response = client.get(f"/layers/TRUE_COLOR/tiles/WebMercatorQuad/{T29UNU_PATH}.tif")
    assert response.headers["content-type"] == "image/tiff"
    with rasterio.open(io.BytesIO(response.content)) as src:
        assert src.crs.to_epsg() == 3857
        assert src.count == 4 and src.dtypes[0] == "uint8"
        bounds = WEB_MERCATOR.xy_bounds(T29UNU_TILE)
        assert np.allclose(src.bounds, (bounds.left, bounds.bottom, bounds.right, bounds.top))


def test_other_tile_matrix_sets(client):
    tms = morecantile.tms.get("WorldCRS84Quad")
    tile = tms.tile(-8.75, 53.12, 11)
    response = client.get(f"/layers/NDVI_FLOAT/tiles/WorldCRS84Quad/{tile.z}/{tile.x}/{tile.y}.tif?time=2017-06-17")
    assert response.status_code == 200
    with rasterio.open(io.BytesIO(response.content)) as src:
        assert src.crs.to_string() in ("OGC:CRS84", "EPSG:4326") or src.crs.to_epsg() == 4326
        assert (src.width, src.height) == (256, 256)


def test_empty_tile_is_transparent(client):
    response = client.get("/layers/TRUE_COLOR/tiles/WebMercatorQuad/5/0/0.png")
    assert response.status_code == 200
    image = np.asarray(Image.open(io.BytesIO(response.content)))
    assert image.shape == (256, 256, 4) and (image[..., 3] == 0).all()
    assert "x-eotiler-scenes" not in response.headers


def test_time_selects_scenes(client):
    url = f"/layers/TRUE_COLOR/tiles/WebMercatorQuad/{T29UNU_PATH}.png"
    assert "T29UNU" in client.get(url, params={"time": "2022-10"}).headers["x-eotiler-scenes"]
    assert "T29UNU" in client.get(url, params={"time": "2022-10-01/2022-10-31"}).headers["x-eotiler-scenes"]
    empty = client.get(url, params={"time": "2021"})
    assert "x-eotiler-scenes" not in empty.headers
    # T29UNU has 59.8 % cloud cover: MAXCC below it removes the scene
    assert "x-eotiler-scenes" not in client.get(url, params={"maxcc": "50"}).headers
    assert "T29UNU" in client.get(url, params={"maxcc": "60", "priority": "leastCC"}).headers["x-eotiler-scenes"]


def test_tilejson(client):
    body = client.get("/layers/NDVI/tilejson.json", params={"time": "2017-06-17", "tile_scale": "2"}).json()
    assert body["tilejson"] == "3.0.0"
    url = body["tiles"][0]
    assert url.endswith("/layers/NDVI/tiles/WebMercatorQuad/{z}/{x}/{y}@2x.png?time=2017-06-17")
    tile = WEB_MERCATOR.tile(-7.4423, 52.6407, 15)
    concrete = url.replace("{z}", str(tile.z)).replace("{x}", str(tile.x)).replace("{y}", str(tile.y))
    response = client.get(concrete)
    assert response.status_code == 200 and Image.open(io.BytesIO(response.content)).size == (512, 512)
    assert "T29UPU" in response.headers["x-eotiler-scenes"]


def test_legend_png(client):
    for layer in ("NDVI", "SCL", "NDVI_EXPRESSION"):
        response = client.get(f"/layers/{layer}/legend.png")
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
        image = Image.open(io.BytesIO(response.content))
        assert image.width >= 60 and image.height >= 60
    missing = client.get("/layers/TRUE_COLOR/legend.png")
    assert missing.status_code == 404 and missing.json()["parameter"] == "layer"


def test_healthz_docs_and_viewer(client):
    assert client.get("/healthz").json()["status"] == "ok"
    assert client.get("/openapi.json").json()["info"]["title"] == "eotiler"
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/static/vendor/swagger-ui/swagger-ui-bundle.js" in docs.text
    assert "cdn" not in docs.text.lower()
    assert client.get("/static/vendor/swagger-ui/swagger-ui-bundle.js").status_code == 200
    page = client.get("/", headers={"Accept": "text/html"})  # a browser; other clients get the OGC API landing page
    assert page.status_code == 200 and "/static/vendor/leaflet/leaflet.js" in page.text
    assert client.get("/static/vendor/leaflet/leaflet.js").status_code == 200


BAD_INPUT = [
    ("/layers/NOPE/tiles/WebMercatorQuad/1/0/0.png", 404, "layer"),
    ("/layers/NOPE", 404, "layer"),
    ("/layers/NOPE/tilejson.json", 404, "layer"),
    ("/layers/TRUE_COLOR/tiles/NoSuchTMS/1/0/0.png", 400, "tms"),
    ("/layers/TRUE_COLOR/tiles/WebMercatorQuad/1/0/0.gif", 400, "format"),
    ("/layers/TRUE_COLOR/tiles/WebMercatorQuad/1/0/0", 400, "y"),
    ("/layers/TRUE_COLOR/tiles/WebMercatorQuad/1/0/0@9x.png", 400, "scale"),
    ("/layers/TRUE_COLOR/tiles/WebMercatorQuad/99/0/0.png", 400, "z"),
    ("/layers/TRUE_COLOR/tiles/WebMercatorQuad/abc/0/0.png", 400, "z"),
    ("/layers/TRUE_COLOR/tiles/WebMercatorQuad/1/x/0.png", 400, "x"),
    ("/layers/TRUE_COLOR/tiles/WebMercatorQuad/1/2/0.png", 404, "x/y"),
    ("/layers/TRUE_COLOR/tiles/WebMercatorQuad/1/0/-1.png", 404, "x/y"),
    ("/layers/TRUE_COLOR/tiles/WebMercatorQuad/1/0/0.png?time=yesterday", 400, "time"),
    ("/layers/TRUE_COLOR/tiles/WebMercatorQuad/1/0/0.png?time=2022-13-01", 400, "time"),
    ("/layers/TRUE_COLOR/tiles/WebMercatorQuad/1/0/0.png?time=2022-10-05/2022-01-01", 400, "time"),
    ("/layers/TRUE_COLOR/tiles/WebMercatorQuad/1/0/0.png?maxcc=abc", 400, "maxcc"),
    ("/layers/TRUE_COLOR/tiles/WebMercatorQuad/1/0/0.png?maxcc=120", 400, "maxcc"),
    ("/layers/TRUE_COLOR/tiles/WebMercatorQuad/1/0/0.png?priority=random", 400, "priority"),
    ("/layers/NDVI_FLOAT/tiles/WebMercatorQuad/1/0/0.png", 400, "format"),
    ("/layers/NDVI/tilejson.json?tms=Nope", 400, "tms"),
    ("/layers/NDVI/tilejson.json?time=bad", 400, "time"),
    ("/layers/NDVI/tilejson.json?tile_scale=0", 400, "tile_scale"),
]


@pytest.mark.parametrize(("url", "status", "parameter"), BAD_INPUT)
def test_bad_input_names_the_parameter(client, url: str, status: int, parameter: str):
    response = client.get(url)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["parameter"] == parameter
    assert body["detail"] and "Traceback" not in body["detail"] and "/work" not in body["detail"]
