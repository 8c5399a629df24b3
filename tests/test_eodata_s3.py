"""Reading eodata over real S3 and STAC API protocols, as in production.

A moto S3 server (``tests/support/s3_server.py``) holds the bundled sample and derived fixtures
as bucket ``eodata`` at the real key paths and counts every request; a small STAC API
(``tests/support/stac_api.py``) answers ``/search`` in the CDSE item shape. The server under
test reaches both over HTTP with ``AWS_S3_ENDPOINT=127.0.0.1:PORT``, ``AWS_HTTPS=NO`` and
``AWS_VIRTUAL_HOSTING=FALSE``; nothing is monkeypatched.
"""

from __future__ import annotations

import io
import statistics
import time
from pathlib import Path

import httpx
import morecantile
import numpy as np
import pytest
import rasterio
import yaml
from lxml import etree
from PIL import Image
from rasterio.crs import CRS
from rasterio.warp import transform as warp_transform

from server.catalog.layers import LayerRegistry
from server.config import load_config
from server.models import Grid, ImageFormat, Priority, RenderRequest, parse_time
from server.pipeline import Pipeline
from tests.support.eodata_fixtures import B_OFFSET, SPLIT_A, SPLIT_B, Split
from tests.support.s3_fixtures import MOSAIC_ITEMS, S1_ITEMS, S2_ITEMS, s3_settings
from tests.support.s3_server import S3Server
from tests.support.stac_api import StacApi

WEBMERCATOR = morecantile.tms.get("WebMercatorQuad")


def png(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.asarray(Image.open(io.BytesIO(response.content)))


def centre(path: Path) -> tuple[float, float]:
    box = yaml.safe_load(path.read_text())["bbox"]
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


# --- same pixels as local files -------------------------------------------------------------


@pytest.mark.parametrize("layer", ["TRUE_COLOR", "NDVI", "SCL", "RAW_MOSAIC_NDVI", "S1_VH_DB"])
def test_tiles_over_s3_equal_local_files(layer: str, client: httpx.Client, s3_client: httpx.Client, s3: S3Server):
    items = {"RAW_MOSAIC_NDVI": MOSAIC_ITEMS, "S1_VH_DB": S1_ITEMS}.get(layer, S2_ITEMS)
    zooms = (11, 14) if items is S2_ITEMS else (8, 10)
    compared = 0
    s3.reset()
    for item in items:
        lon, lat = centre(item)
        for zoom in zooms:
            tile = WEBMERCATOR.tile(lon, lat, zoom)
            ext = "tif" if layer == "RAW_MOSAIC_NDVI" else "png"
            path = f"/layers/{layer}/tiles/WebMercatorQuad/{tile.z}/{tile.x}/{tile.y}.{ext}"
            remote = s3_client.get(path)
            local = client.get(path)
            assert remote.status_code == local.status_code == 200, remote.text
            assert remote.headers.get("x-eotiler-scenes") == local.headers.get("x-eotiler-scenes")
            if ext == "png":
                assert np.array_equal(png(remote), png(local))
            else:
                with rasterio.MemoryFile(remote.content) as a, rasterio.MemoryFile(local.content) as b:
                    assert np.array_equal(a.open().read(), b.open().read(), equal_nan=True)
            compared += bool(local.headers.get("x-eotiler-scenes"))
    assert compared >= (2 if layer == "SCL" else len(items))  # each item (with SCL: two) drew a tile
    log = s3.requests()
    assert log and all(r["path"].startswith("/eodata/") and r["status"] == 206 for r in log)


# --- the STAC API search ----------------------------------------------------------------------


def test_search_sends_footprint_time_maxcc_and_priority(s3_client: httpx.Client, stac: StacApi):
    lon, lat = centre(next(p for p in S2_ITEMS if "_T29UNU_" in p.name))  # cloud cover 59.8
    tile = WEBMERCATOR.tile(lon, lat, 13)
    bounds = WEBMERCATOR.bounds(tile)
    before = len(stac.searches)
    query = "time=2022-10-01/2022-10-31&maxcc=70&priority=leastCC"
    response = s3_client.get(f"/layers/TRUE_COLOR/tiles/WebMercatorQuad/{tile.z}/{tile.x}/{tile.y}.png?{query}")
    assert response.status_code == 200
    assert response.headers["x-eotiler-scenes"].startswith("S2A_MSIL2A_20221005T115411")
    body = stac.searches[before]
    assert body["collections"] == ["sentinel-2-l2a"]
    assert body["datetime"] == "2022-10-01T00:00:00Z/2022-10-31T23:59:59.999999Z"
    assert body["filter"] == {"op": "<=", "args": [{"property": "eo:cloud_cover"}, 70.0]}
    assert body["filter-lang"] == "cql2-json"
    assert body["sortby"][0] == {"field": "properties.eo:cloud_cover", "direction": "asc"}
    west, south, east, north = body["bbox"]
    assert west <= bounds.left and south <= bounds.bottom and east >= bounds.right and north >= bounds.top
    assert all(abs(v * 4 - round(v * 4)) < 1e-9 for v in body["bbox"])  # rounded to the 0.25° grid
    # MAXCC below the scene's cloud cover: nothing drawn, and the filter said so.
    response = s3_client.get(
        f"/layers/TRUE_COLOR/tiles/WebMercatorQuad/{tile.z}/{tile.x}/{tile.y}.png?time=2022-10&maxcc=50"
    )
    assert response.status_code == 200 and "x-eotiler-scenes" not in response.headers
    assert stac.searches[-1]["filter"]["args"][1] == 50.0


def test_search_results_are_reused_for_neighbouring_tiles(s3_client: httpx.Client, stac: StacApi):
    tile = WEBMERCATOR.tile(-8.875, 53.125, 14)  # the middle of one 0.25° search cell, inside T29UNU
    before = len(stac.searches)
    for dx in range(-1, 2):
        url = f"/layers/NDVI/tiles/WebMercatorQuad/14/{tile.x + dx}/{tile.y}.png?time=2022-10-05"
        assert s3_client.get(url).status_code == 200
    assert len(stac.searches) - before == 1, stac.searches[before:]  # three tiles, one 0.25° cell
    assert s3_client.get("/cache/stats").json()["stac_searches"]["sentinel-2-l2a"] >= 1


def test_search_pages_through_next_links(pipe: Pipeline, stac: StacApi, tree: dict):
    """The test API returns 2 items per page; the request fixture has 13 items over one place."""
    layer = pipe.registry.get("REQ_B04")
    scenes = layer.catalogue.search((-9.0, 53.0, -8.5, 53.3), None, None, Priority.MOST_RECENT, 50)
    expected = tree["requests"]["cog"] + tree["requests"]["jp2"] + tree["requests"]["levels"]
    assert sorted(s.id for s in scenes) == sorted(expected)
    assert [s.datetime for s in scenes] == sorted((s.datetime for s in scenes), reverse=True)


def test_catalogue_outage_is_a_clean_502(s3_client: httpx.Client, stac: StacApi):
    tile = WEBMERCATOR.tile(-40.0, 10.0, 12)  # never searched before: not in the TTL cache
    stac.fail_with = 503
    try:
        response = s3_client.get(f"/layers/NDVI/tiles/WebMercatorQuad/{tile.z}/{tile.x}/{tile.y}.png")
        wms = s3_client.get(
            "/ogc/wms",
            params={
                "SERVICE": "WMS",
                "VERSION": "1.3.0",
                "REQUEST": "GetMap",
                "LAYERS": "NDVI",
                "CRS": "EPSG:4326",
                "BBOX": "9,-41,10,-40",
                "WIDTH": "64",
                "HEIGHT": "64",
                "FORMAT": "image/png",
                "STYLES": "",
            },
        )
    finally:
        stac.fail_with = None
    assert response.status_code == 502
    assert "catalogue" in response.json()["detail"]
    assert b"Traceback" not in response.content
    root = etree.fromstring(wms.content)
    assert etree.QName(root).localname == "ServiceExceptionReport"
    assert "catalogue" in "".join(root.itertext())


# --- mosaics across granules, PRIORITY and MAXCC -----------------------------------------------


def split_grid(split: Split) -> tuple[Grid, tuple[int, int, int, int]]:
    """A UTM grid on the 60 m pixel grid: rows 100-163, columns 96-415 (across both granules)."""
    r0, r1, c0, c1 = 100, 164, 96, 416
    x0, y0 = split.transform * (c0, r1)
    x1, y1 = split.transform * (c1, r0)
    return Grid((x0, y0, x1, y1), CRS.from_user_input(split.crs), c1 - c0, r1 - r0), (r0, r1, c0, c1)


def expected_split(split: Split, window: tuple[int, int, int, int], winner: str, with_b: bool = True) -> np.ndarray:
    """Independent expectation: DN units are (DN - 1000) clamped at 0; NaN where nothing is drawn."""
    r0, r1, c0, c1 = window
    dn = split.original[r0:r1, c0:c1].astype(np.float64)
    cols = np.arange(c0, c1)[None, :].repeat(r1 - r0, axis=0)
    in_a = (cols >= SPLIT_A[0]) & (cols < SPLIT_A[1])
    in_b = (cols >= SPLIT_B[0]) & (cols < SPLIT_B[1]) & with_b
    from_b = in_b & (~in_a | (winner == "B"))
    value = np.where(from_b, dn + B_OFFSET, dn) - 1000
    value = np.maximum(value, 0)
    return np.where((in_a | in_b) & (dn > 0), value, np.nan)


@pytest.mark.parametrize(
    ("priority", "maxcc", "winner", "with_b"),
    [
        ("mostRecent", None, "B", True),
        ("leastRecent", None, "A", True),
        ("leastCC", None, "A", True),
        ("mostRecent", 20, "A", False),  # B (30 % cloud) is excluded: its own columns stay empty
    ],
)
def test_tile_across_two_granules_is_filled_from_both(
    pipe: Pipeline, tree: dict, priority: str, maxcc: float | None, winner: str, with_b: bool
):
    split: Split = tree["split"]
    grid, window = split_grid(split)
    req = RenderRequest(
        "SPLIT_B04", grid, ImageFormat.GTIFF, time=parse_time("2023-01"), maxcc=maxcc, priority=Priority(priority)
    )
    rendered = pipe.render_data(req)
    got = np.where(rendered.mosaic.filled, rendered.values[0], np.nan)
    expected = expected_split(split, window, winner, with_b)
    assert np.array_equal(np.isnan(got), np.isnan(expected))
    # DN -> reflectance -> DN in float32 leaves ~1e-4 of rounding
    np.testing.assert_allclose(got[~np.isnan(got)], expected[~np.isnan(expected)], atol=1e-3)
    used = {s.id for s in rendered.mosaic.scenes}
    assert used == ({split.ids["A"], split.ids["B"]} if with_b else {split.ids["A"]})


# --- partial and failed reads ------------------------------------------------------------------


def test_unreadable_scenes_give_a_partial_image_named_in_headers(s3_client: httpx.Client, s3: S3Server, tree: dict):
    split: Split = tree["split"]
    grid, _ = split_grid(split)
    bbox = ",".join(str(v) for v in grid.bbox)
    params = {"bbox": bbox, "crs": "EPSG:32629", "width": grid.width, "height": grid.height, "time": "2023-01"}
    s3.reset()
    response = s3_client.get("/ogc/wms", params={
        "SERVICE": "WMS", "VERSION": "1.3.0", "REQUEST": "GetMap", "LAYERS": "BROKEN_B04", "STYLES": "",
        "CRS": params["crs"], "BBOX": bbox, "WIDTH": grid.width, "HEIGHT": grid.height,
        "FORMAT": "image/tiff", "TIME": "2023-01",
    })  # fmt: skip
    assert response.status_code == 200, response.text
    assert response.headers["x-eotiler-scenes"] == split.ids["A"]
    assert set(response.headers["x-eotiler-failed-scenes"].split(",")) == {"MISSING_PRODUCT", "OUTSIDE_PRODUCT"}
    assert response.headers["cache-control"] == "no-store"
    assert all(r["path"].startswith("/eodata/") for r in s3.requests())  # the outside href was never requested
    with rasterio.MemoryFile(response.content) as mem, mem.open() as ds:
        data = ds.read(1, masked=True)
    assert data.count() > 0


def test_all_scenes_failing_is_a_502_or_an_ogc_exception(s3_client: httpx.Client, tree: dict):
    split: Split = tree["split"]
    grid, _ = split_grid(split)
    lon, lat = warp_transform(split.crs, "EPSG:4326", [sum(grid.bbox[::2]) / 2], [sum(grid.bbox[1::2]) / 2])
    tile = WEBMERCATOR.tile(lon[0], lat[0], 12)
    response = s3_client.get(f"/layers/DEAD_B04/tiles/WebMercatorQuad/{tile.z}/{tile.x}/{tile.y}.tif?time=2023-01")
    assert response.status_code == 502
    assert response.json()["detail"] == "no scene could be read from the data source"
    wmts = s3_client.get(
        "/ogc/wmts",
        params={
            "SERVICE": "WMTS", "REQUEST": "GetTile", "VERSION": "1.0.0", "LAYER": "DEAD_B04", "STYLE": "default",
            "TILEMATRIXSET": "WebMercatorQuad", "TILEMATRIX": tile.z, "TILEROW": tile.y, "TILECOL": tile.x,
            "FORMAT": "image/tiff", "TIME": "2023-01",
        },
    )  # fmt: skip
    assert wmts.status_code == 502
    assert etree.QName(etree.fromstring(wmts.content)).localname == "ExceptionReport"


def test_time_budget_stops_reading_and_is_not_cached(config: Path, s3: S3Server, tree: dict):
    settings = s3_settings(config, s3, request_budget=1e-6, cache_memory_bytes=1 << 20)
    pipeline = Pipeline(LayerRegistry(load_config(config), settings), settings)
    try:
        split: Split = tree["split"]
        grid, _ = split_grid(split)
        req = RenderRequest("SPLIT_B04", grid, ImageFormat.GTIFF, time=parse_time("2023-01"))
        result = pipeline.render(req, deadline=time.monotonic() + 60)  # reads stop at the budget, the answer waits
        assert result.scenes == [split.ids["B"]]  # the most recent is always read
        assert result.skipped == [split.ids["A"]]
        assert result.max_age == 0 and pipeline.cache.stats()["memory"]["entries"] == 0
    finally:
        pipeline.close()


# --- requests per tile, counted at the S3 server ----------------------------------------------


def fixture_tile(zoom: int, x: float = 505000, y: float = 5893000) -> morecantile.Tile:
    """A tile over the request fixture (UTM 29N point inside its 20 km square)."""
    lon, lat = warp_transform("EPSG:32629", "EPSG:4326", [x], [y])
    return WEBMERCATOR.tile(lon[0], lat[0], zoom)


def count_requests(pipe: Pipeline, s3: S3Server, product: str, zoom: int) -> list[dict]:
    tile = fixture_tile(zoom)
    b = WEBMERCATOR.xy_bounds(tile)
    grid = Grid((b.left, b.bottom, b.right, b.top), CRS.from_epsg(3857), 256, 256)
    day = f"{product[11:15]}-{product[15:17]}-{product[17:19]}"
    s3.reset()
    result = pipe.render(RenderRequest("REQ_B04", grid, ImageFormat.GTIFF, time=parse_time(day)))
    assert result.scenes == [product] and not result.failed
    return s3.requests()


def assert_plain_gets(log: list[dict]) -> None:
    assert all(r["method"] == "GET" and r["range"] for r in log), log  # no HEAD, no whole-object GET
    assert not any("list-type" in r["query"] or "delimiter" in r["query"] for r in log), log  # no LIST


def cold_tile_counts(pipe: Pipeline, s3: S3Server, products: list[str]) -> list[int]:
    """Requests of one native-resolution tile per product (each product is a new file: cold)."""
    counts = []
    for product in products:
        log = count_requests(pipe, s3, product, 14)
        assert_plain_gets(log)
        counts.append(len(log))
    return counts


def test_cold_cog_tile_needs_at_most_three_requests(pipe: Pipeline, s3: S3Server, tree: dict):
    counts = cold_tile_counts(pipe, s3, tree["requests"]["cog"])
    assert statistics.median(counts) <= 2 and max(counts) <= 3, counts


def test_cold_jpeg2000_tile_with_tlm_needs_at_most_six_requests(pipe: Pipeline, s3: S3Server, tree: dict):
    counts = cold_tile_counts(pipe, s3, tree["requests"]["jp2"])
    assert max(counts) <= 6, counts


def test_a_zoomed_out_jpeg2000_tile_has_its_tile_parts_prefetched(
    config: Path, s3: S3Server, tree: dict, tmp_path: Path
) -> None:
    """GDAL decodes a window's code-stream tiles one after the other; the reader names the window
    to the S3 gateway first (``s3_prefetch.py``), which fetches their tile-parts concurrently
    (``test_s3_gateway.py`` sees them overlap at a store with a round trip), and GDAL then
    fetches nothing of its own. A z11 tile reads the 10 m file at a resolution level over its
    four 1024 px tiles."""
    settings = s3_settings(config, s3, jp2_index_dir=tmp_path / "index")  # a new gateway: nothing held
    pipeline = Pipeline(LayerRegistry(load_config(config), settings), settings)
    try:
        log = count_requests(pipeline, s3, tree["requests"]["jp2"][0], 11)
        assert pipeline.gateway is not None and pipeline.gateway.stats()["prefetched_tile_parts"] == 4
    finally:
        pipeline.close()
    assert_plain_gets(log)
    parts = [r for r in log if not r["range"].startswith("bytes=0-")]  # after the open's first 64 KB
    assert 1 <= len(parts) <= 4, parts  # the prefetch's requests only


@pytest.mark.parametrize(("zoom", "folder"), [(14, "/R10m/"), (12, "/R20m/"), (10, "/R60m/")])
def test_zoomed_out_tiles_read_the_coarser_files(pipe: Pipeline, s3: S3Server, tree: dict, zoom: int, folder: str):
    log = count_requests(pipe, s3, tree["requests"]["levels"][0], zoom)
    assert log and {folder} == {f for f in ("/R10m/", "/R20m/", "/R60m/") if any(f in r["path"] for r in log)}


def test_cache_hit_returns_identical_bytes_without_touching_s3(config: Path, s3: S3Server, tree: dict):
    """A tile of the COG fixture that no other test reads (GDAL's caches would hide the first read)."""
    from fastapi.testclient import TestClient

    from server.app import create_app

    client = TestClient(create_app(s3_settings(config, s3, cache_memory_bytes=16 << 20)))
    product = tree["requests"]["cog"][0]
    day = f"{product[11:15]}-{product[15:17]}-{product[17:19]}"
    tile = fixture_tile(14, 515000, 5884000)
    path = f"/layers/REQ_B04/tiles/WebMercatorQuad/{tile.z}/{tile.x}/{tile.y}.tif"
    s3.reset()
    first = client.get(path, params={"time": day})
    assert first.status_code == 200 and first.headers["x-cache"] == "MISS"
    assert s3.requests(), "the first render reads over S3"
    s3.reset()
    again = client.get(path, params={"time": day})
    assert again.headers["x-cache"] == "HIT" and again.content == first.content
    assert again.headers["etag"] == first.headers["etag"]
    assert s3.requests() == []
