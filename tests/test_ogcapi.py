"""OGC API - Tiles and OGC API - Maps with real clients: GDAL's OGCAPI driver (Debian's GDAL, as
a user runs it), OWSLib's ``ogcapi`` module, OpenLayers' ``OGCMapTile`` in headless Chromium;
documents in JSON and HTML by ``f`` and ``Accept``; tiles equal to the XYZ tiles; bad input 4xx."""

from __future__ import annotations

import io
import shutil
import subprocess
from urllib.parse import parse_qs, urlsplit

import morecantile
import numpy as np
import pytest
import rasterio
from owslib.ogcapi.maps import Maps
from PIL import Image

from tests.test_ogc_browsers import painted, watch

WEB_MERCATOR = morecantile.tms.get("WebMercatorQuad")
TILE = WEB_MERCATOR.tile(-8.77, 53.11, 12)  # inside T29UNU (2022-10-05)
REL = "http://www.opengis.net/def/rel/ogc/1.0/"


def pixels(content: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(content)))


def rels(document: dict) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for item in document["links"]:
        found.setdefault(item["rel"], []).append(item)
    return found


def system_gdal() -> str:
    """Debian's ``gdal_translate`` when it has the OGCAPI driver (rasterio's wheel has none)."""
    found = shutil.which("gdal_translate")
    if found is None or b"OGCAPI" not in subprocess.run(["gdalinfo", "--formats"], capture_output=True).stdout:
        pytest.skip("no GDAL with the OGCAPI driver")
    return found


def test_landing_page_and_conformance(client):
    landing = client.get("/", headers={"Accept": "application/json"})
    assert landing.status_code == 200 and landing.headers["content-type"] == "application/json"
    links = rels(landing.json())
    for rel in ("self", "alternate", "service-desc", "service-doc", "conformance", "data", f"{REL}tiling-schemes"):
        assert rel in links, rel
    assert client.get(links["data"][0]["href"]).json()["collections"]
    classes = client.get("/conformance").json()["conformsTo"]
    for needed in (
        "http://www.opengis.net/spec/ogcapi-common-1/1.0/conf/core",
        "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/tileset",
        "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/tilesets-list",
        "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/geodata-tilesets",
        "http://www.opengis.net/spec/ogcapi-maps-1/1.0/conf/core",
        "http://www.opengis.net/spec/ogcapi-maps-1/1.0/conf/crs",
    ):
        assert needed in classes
    assert not any("mvt" in c or "features" in c for c in classes)  # only what is implemented


def test_html_and_json_by_f_and_accept(client):
    browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    viewer = client.get("/", headers={"Accept": browser})
    assert viewer.status_code == 200 and "<title>eotiler viewer</title>" in viewer.text
    html = client.get("/", params={"f": "html"})
    assert html.headers["content-type"].startswith("text/html") and 'href="http' in html.text
    collection = client.get("/collections/TRUE_COLOR", headers={"Accept": browser})
    assert collection.headers["content-type"].startswith("text/html") and "TRUE_COLOR" in collection.text
    assert client.get("/collections/TRUE_COLOR", headers={"Accept": "*/*"}).json()["id"] == "TRUE_COLOR"
    assert client.get("/collections/TRUE_COLOR?f=json", headers={"Accept": browser}).json()["id"] == "TRUE_COLOR"
    bad = client.get("/collections?f=xml")
    assert bad.status_code == 400 and bad.json()["parameter"] == "f"


def test_collection_extents_and_links(client):
    doc = client.get("/collections/RAW_B04").json()
    layer = client.get("/layers/RAW_B04").json()
    assert doc["extent"]["spatial"]["bbox"] == [layer["bounds"]]
    assert doc["extent"]["temporal"]["interval"] == [
        [f"{layer['times'][0]}T00:00:00Z", f"{layer['times'][-1]}T23:59:59Z"]
    ]
    links = rels(doc)
    assert links[f"{REL}tilesets-map"][0]["type"] == "application/json"
    assert {m["type"] for m in links[f"{REL}map"]} == {"image/tiff; application=geotiff"}  # float32: GeoTIFF only
    visual = rels(client.get("/collections/TRUE_COLOR").json())
    assert {"image/png", "image/jpeg"} <= {m["type"] for m in visual[f"{REL}map"]}
    assert "data" not in links  # GDAL would take the collection for a landing page


def test_owslib_lists_the_collections(live_url, client):
    api = Maps(live_url)
    ids = {c["id"] for c in api.collections()["collections"]}
    assert ids == {layer["id"] for layer in client.get("/layers").json()["layers"]}
    assert "TRUE_COLOR" in api.maps()
    assert "http://www.opengis.net/spec/ogcapi-maps-1/1.0/conf/core" in api.conformance()["conformsTo"]
    image = api.map("TRUE_COLOR", bbox=[-8.9, 53.0, -8.7, 53.2], width=200, height=200)
    assert pixels(image.read())[..., 3].mean() > 200


def test_tileset_metadata_bbox_and_limits(client):
    sets = client.get("/collections/TRUE_COLOR/tiles").json()["tilesets"]
    own = {next(x["href"] for x in s["links"] if x["rel"] == "self").rsplit("/", 1)[-1] for s in sets}
    assert own == set(morecantile.tms.list())
    doc = client.get("/collections/TRUE_COLOR/tiles/WebMercatorQuad").json()
    west, south, east, north = client.get("/layers/TRUE_COLOR").json()["bounds"]
    assert doc["boundingBox"]["lowerLeft"] == [west, south] and doc["boundingBox"]["upperRight"] == [east, north]
    limits = {item["tileMatrix"]: item for item in doc["tileMatrixSetLimits"]}
    tiles = list(WEB_MERCATOR.tiles(west, south, east, north, [12]))
    assert limits["12"] == {
        "tileMatrix": "12",
        "minTileRow": min(t.y for t in tiles),
        "maxTileRow": max(t.y for t in tiles),
        "minTileCol": min(t.x for t in tiles),
        "maxTileCol": max(t.x for t in tiles),
    }
    items = [x for x in doc["links"] if x["rel"] == "item"]
    assert all("{tileMatrix}/{tileRow}/{tileCol}" in x["href"] for x in items)
    scheme = next(x for x in doc["links"] if x["rel"] == f"{REL}tiling-scheme")
    definition = client.get(scheme["href"]).json()
    assert definition["id"] == "WebMercatorQuad" and len(definition["tileMatrices"]) == 25
    names = {s["id"] for s in client.get("/tileMatrixSets").json()["tileMatrixSets"]}
    assert names == set(morecantile.tms.list())


def test_tile_is_row_then_column_and_equals_xyz(client):
    ogc = client.get(f"/collections/TRUE_COLOR/tiles/WebMercatorQuad/{TILE.z}/{TILE.y}/{TILE.x}", params={"f": "png"})
    xyz = client.get(f"/layers/TRUE_COLOR/tiles/WebMercatorQuad/{TILE.z}/{TILE.x}/{TILE.y}.png")
    assert ogc.status_code == xyz.status_code == 200 and ogc.headers["content-type"] == "image/png"
    assert np.array_equal(pixels(ogc.content), pixels(xyz.content)) and pixels(ogc.content)[..., 3].mean() > 200
    jpeg = client.get(
        f"/collections/TRUE_COLOR/tiles/WebMercatorQuad/{TILE.z}/{TILE.y}/{TILE.x}", headers={"Accept": "image/jpeg"}
    )
    assert jpeg.headers["content-type"] == "image/jpeg"
    # datetime picks the scenes: no scene of 2017-06-17 on this tile.
    empty = client.get(
        f"/collections/TRUE_COLOR/tiles/WebMercatorQuad/{TILE.z}/{TILE.y}/{TILE.x}",
        params={"f": "png", "datetime": "2017-06-17"},
    )
    assert "x-eotiler-scenes" not in empty.headers and (pixels(empty.content)[..., 3] == 0).all()


def test_map_crs_bbox_crs_and_size(client):
    lonlat = client.get("/collections/TRUE_COLOR/map", params={"bbox": "-8.9,53.0,-8.7,53.2", "width": "200"})
    assert lonlat.status_code == 200
    assert lonlat.headers["content-crs"] == "<http://www.opengis.net/def/crs/OGC/1.3/CRS84>"
    # width only: the height follows the box's ground aspect (0.2 deg of longitude at 53 N).
    assert pixels(lonlat.content).shape[:2] == (round(200 / np.cos(np.radians(53.1))), 200)
    latlon = client.get(
        "/collections/TRUE_COLOR/map",
        params={
            "bbox": "53.0,-8.9,53.2,-8.7",
            "bbox-crs": "http://www.opengis.net/def/crs/EPSG/0/4326",
            "width": "200",
        },
    )
    assert np.array_equal(pixels(latlon.content), pixels(lonlat.content))  # EPSG:4326 is lat/lon
    mercator = client.get(
        "/collections/TRUE_COLOR/map",
        params={
            "bbox": "-8.9,53.0,-8.7,53.2",
            "crs": "http://www.opengis.net/def/crs/EPSG/0/3857",
            "width": "256",
            "height": "256",
            "f": "tiff",
        },
    )
    assert mercator.headers["content-crs"] == "<http://www.opengis.net/def/crs/EPSG/0/3857>"
    with rasterio.MemoryFile(mercator.content) as memory, memory.open() as src:
        assert src.crs.to_epsg() == 3857 and (src.width, src.height) == (256, 256)
        assert src.bounds.left == pytest.approx(-990743.0, abs=1.0)  # -8.9 degrees in metres


@pytest.mark.parametrize(
    ("path", "params", "status", "parameter"),
    [
        ("/collections/NOPE", {}, 404, "collectionId"),
        ("/collections/TRUE_COLOR/tiles/NoSuchSet", {}, 404, "tileMatrixSetId"),
        ("/tileMatrixSets/NoSuchSet", {}, 404, "tileMatrixSetId"),
        ("/collections/TRUE_COLOR/tiles/WebMercatorQuad/99/0/0", {}, 400, "tileMatrix"),
        ("/collections/TRUE_COLOR/tiles/WebMercatorQuad/2/9/0", {}, 404, "tileRow/tileCol"),
        ("/collections/TRUE_COLOR/tiles/WebMercatorQuad/2/x/0", {}, 400, "tileRow"),
        ("/collections/TRUE_COLOR/tiles/WebMercatorQuad/12/0/0", {"f": "gif"}, 400, "f"),
        ("/collections/RAW_B04/tiles/WebMercatorQuad/12/0/0", {"f": "png"}, 400, "f"),
        ("/collections/TRUE_COLOR/tiles/WebMercatorQuad/12/0/0", {"datetime": "soon"}, 400, "datetime"),
        ("/collections/TRUE_COLOR/map", {"bbox": "1,2,3"}, 400, "bbox"),
        ("/collections/TRUE_COLOR/map", {"bbox": "5,5,1,1"}, 400, "bbox"),
        ("/collections/TRUE_COLOR/map", {"bbox": "1e308,0,1e309,1"}, 400, "bbox"),
        ("/collections/TRUE_COLOR/map", {"bbox": "400,0,500,1"}, 400, "bbox"),
        ("/collections/TRUE_COLOR/map", {"crs": "EPSG:99999"}, 400, "crs"),
        ("/collections/TRUE_COLOR/map", {"bbox-crs": "urn:nothing", "bbox": "0,0,1,1"}, 400, "bbox-crs"),
        ("/collections/TRUE_COLOR/map", {"width": "0"}, 400, "width"),
        ("/collections/TRUE_COLOR/map", {"height": "100000"}, 400, "height"),
        ("/collections/TRUE_COLOR/map", {"datetime": "2022-13"}, 400, "datetime"),
    ],
)
def test_bad_input_answers_4xx_json(client, path, params, status, parameter):
    response = client.get(path, params=params)
    assert response.status_code == status, response.text
    assert response.json()["parameter"] == parameter


def test_gdal_reads_tiles_equal_to_xyz(live_url, client, tmp_path):
    gdal_translate = system_gdal()
    crs84 = morecantile.tms.get("WorldCRS84Quad")
    tile = crs84.tile(-8.77, 53.11, 12)
    bounds = crs84.xy_bounds(tile)
    out = tmp_path / "tiles.tif"
    command = [gdal_translate, f"OGCAPI:{live_url}/collections/TRUE_COLOR", str(out), "-oo", "API=TILES"]
    command += ["-oo", "TILEMATRIXSET=WorldCRS84Quad", "-oo", f"TILEMATRIX={tile.z}", "-oo", "CACHE=NO"]
    command += ["-projwin", *(str(v) for v in (bounds.left, bounds.top, bounds.right, bounds.bottom))]
    # GDAL 3.6 (Debian 12) sizes a tile matrix by its full height but places it by the rows of
    # tileMatrixSetLimits (later versions use the limits only to skip matrices): limits off. So
    # configured, that version fails to open now and then without a message; a few attempts.
    command += ["--config", "GDAL_OGCAPI_TILEMATRIXSET_LIMITS", "NO"]
    for _ in range(6):
        run = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if run.returncode == 0:
            break
    assert run.returncode == 0, run.stderr
    xyz = client.get(f"/layers/TRUE_COLOR/tiles/WorldCRS84Quad/{tile.z}/{tile.x}/{tile.y}.png")
    with rasterio.open(out) as src:
        assert src.crs.to_string() in ("OGC:CRS84", "EPSG:4326") and (src.width, src.height) == (256, 256)
        assert src.transform.c == pytest.approx(bounds.left) and src.transform.f == pytest.approx(bounds.top)
        data = np.moveaxis(src.read(), 0, -1)
    assert np.array_equal(data, pixels(xyz.content)) and data[..., 3].mean() > 200


def test_gdal_reads_a_map_equal_to_wms_getmap(live_url, client, tmp_path):
    gdal_translate = system_gdal()
    # A box under one 256 px block at the collection's 10 m scale: GDAL asks for it in one map
    # request of exactly the dataset's size, so the pixels can be compared one for one.
    west, south, east, north = -8.80, 53.10, -8.79, 53.105
    out = tmp_path / "map.tif"
    command = [gdal_translate, f"OGCAPI:{live_url}/collections/TRUE_COLOR", str(out), "-oo", "API=MAP"]
    for name, value in (("MINX", west), ("MINY", south), ("MAXX", east), ("MAXY", north)):
        command += ["-oo", f"{name}={value}"]
    command += ["-oo", "CACHE=NO", "--config", "CPL_DEBUG", "ON"]
    run = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    asked = [line for line in run.stderr.splitlines() if "Request [" in line and "/collections/TRUE_COLOR/map?" in line]
    assert len(asked) == 1, asked
    query = parse_qs(urlsplit(asked[0].split("Request [0] ")[-1].split(" ")[0]).query)
    with rasterio.open(out) as src:
        assert src.crs.to_epsg() == 4326 and src.count == 4
        assert (src.width, src.height) == (int(query["width"][0]), int(query["height"][0]))
        data = np.moveaxis(src.read(), 0, -1)
        size = (src.width, src.height)
    wms = client.get(
        "/ogc/wms",
        params={
            "SERVICE": "WMS",
            "REQUEST": "GetMap",
            "VERSION": "1.3.0",
            "LAYERS": "TRUE_COLOR",
            "STYLES": "",
            "CRS": "CRS:84",
            "BBOX": f"{west},{south},{east},{north}",
            "WIDTH": str(size[0]),
            "HEIGHT": str(size[1]),
            "FORMAT": "image/png",
        },
    )
    assert wms.status_code == 200
    assert np.array_equal(data, pixels(wms.content)) and data[..., 3].mean() > 200


@pytest.mark.browser
def test_openlayers_ogcmaptile_draws_the_layer(browser, live_url, tmp_path):
    page = browser.new_page()
    errors, responses = watch(page)
    page.goto(live_url + "/static/examples/ogcapi-openlayers.html?layer=TRUE_COLOR")
    page.wait_for_function("window.eotiler && window.eotiler.ready", timeout=30000)
    page.wait_for_function("window.eotiler.loaded >= 4 && window.eotiler.pending === 0", timeout=60000)
    page.wait_for_timeout(300)
    state = page.evaluate("window.eotiler")
    assert state["errors"] == [] and errors == [], [r for r in responses if r[0] >= 400]
    tiles = [u for s, u, _ in responses if "/collections/TRUE_COLOR/tiles/WebMercatorQuad/" in u]
    assert tiles and all(s == 200 for s, u, _ in responses if "/collections/" in u)
    assert painted(page, "#map canvas") > 0.2
    page.screenshot(path=str(tmp_path / "ogcapi-openlayers.png"))
