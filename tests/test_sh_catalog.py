"""The Sentinel Hub Catalog API driven by the real sentinelhub-py package.

Only ``SHConfig`` changes (``sh_base_url``, ``sh_token_url``, client id and secret), as in
sentinelhub-py's documentation examples; every answer is compared with the sample's STAC items
read here as plain JSON (footprints with shapely, cloud cover and dates in Python).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest
import shapely.geometry
from sentinelhub import CRS, BBox, DataCollection, SentinelHubCatalog
from sentinelhub.exceptions import DownloadFailedException

from server.settings import Settings
from tests.conftest import serve
from tests.support.s3_fixtures import S2_ITEMS, s3_config
from tests.support.sentinelhub_client import plain_http_oauth, sh_config  # noqa: F401 - fixture

SAMPLE = Path(__file__).resolve().parents[1] / "sample" / "stac"
WORLD = BBox((-180, -90, 180, 90), crs=CRS.WGS84)
ALL_TIME = ("2015-01-01", "2030-12-31")


def items(collection: str) -> list[dict]:
    return [
        json.loads(p.read_text()) for p in sorted((SAMPLE / collection).glob("*.json")) if "collection" not in p.name
    ]


@pytest.fixture(scope="module")
def catalog(live_url: str) -> SentinelHubCatalog:
    return SentinelHubCatalog(config=sh_config(live_url))


def test_collections_are_the_configured_ones(catalog: SentinelHubCatalog, settings: Settings):
    from server.config import load_config

    configured = load_config(settings.config).collections
    found = {c["id"]: c for c in catalog.get_collections()}
    assert set(found) == set(configured)
    l2a = items("sentinel-2-l2a")
    west = min(i["bbox"][0] for i in l2a)
    north = max(i["bbox"][3] for i in l2a)
    box = found["sentinel-2-l2a"]["extent"]["spatial"]["bbox"][0]
    assert box[0] == pytest.approx(west) and box[3] == pytest.approx(north)
    assert catalog.get_collection(DataCollection.SENTINEL2_L2A)["id"] == "sentinel-2-l2a"


def test_cloud_filter_pages_cover_every_match_exactly_once(catalog: SentinelHubCatalog, live_url: str):
    expected = sorted(
        (i["properties"]["datetime"], i["id"])
        for i in items("sentinel-2-l2a")
        if i["properties"]["eo:cloud_cover"] < 20
    )
    assert 2 < len(expected) < len(items("sentinel-2-l2a"))  # the filter keeps some, drops some
    search = catalog.search(
        DataCollection.SENTINEL2_L2A, bbox=WORLD, time=ALL_TIME, filter="eo:cloud_cover < 20", limit=2
    )
    found = list(search)
    assert [f["id"] for f in found] == [i for _, i in expected]  # ascending time, each once
    assert all(f["properties"]["eo:cloud_cover"] < 20 for f in found)
    # the same filter in CQL2 JSON, and the paging seen on the wire: 2 per page, next = offset
    body = {
        "collections": ["sentinel-2-l2a"],
        "filter": {"op": "<", "args": [{"property": "eo:cloud_cover"}, 20]},
        "filter-lang": "cql2-json",
        "limit": 2,
    }
    pages, offset = [], None
    with httpx.Client(base_url=live_url) as http:
        while True:
            page = http.post("/api/v1/catalog/1.0.0/search", json={**body, "next": offset} if offset else body).json()
            pages.append([f["id"] for f in page["features"]])
            offset = page["context"].get("next")
            if offset is None:
                break
    assert [len(p) for p in pages[:-1]] == [2] * (len(pages) - 1) and 1 <= len(pages[-1]) <= 2
    assert sum(pages, []) == [i for _, i in expected]


def test_distinct_dates_are_the_item_dates(catalog: SentinelHubCatalog):
    dates = {i["properties"]["datetime"][:10] for i in items("sentinel-2-l2a")}
    search = catalog.search(DataCollection.SENTINEL2_L2A, bbox=WORLD, time=ALL_TIME, distinct="date", limit=3)
    assert list(search) == sorted(dates)
    window = catalog.search(DataCollection.SENTINEL2_L2A, time=("2017-06-01", "2017-12-31"), distinct="date")
    assert list(window) == sorted(d for d in dates if "2017-06-01" <= d <= "2017-12-31")


def test_bbox_and_geometry_search_use_the_footprints(catalog: SentinelHubCatalog):
    l2a = items("sentinel-2-l2a")
    target = next(i for i in l2a if "T29UNU" in i["id"])
    footprint = shapely.geometry.shape(target["geometry"])
    # a small box inside the footprint, and one just outside its bounding box's corner
    inside = footprint.representative_point().buffer(0.01).bounds
    expected = sorted(
        i["id"] for i in l2a if shapely.geometry.shape(i["geometry"]).intersects(shapely.geometry.box(*inside))
    )
    found = catalog.search(DataCollection.SENTINEL2_L2A, bbox=BBox(inside, crs=CRS.WGS84), time=ALL_TIME)
    assert sorted(found.get_ids()) == expected and target["id"] in expected
    shapes = found.get_geometries()
    assert shapes[found.get_ids().index(target["id"])].geometry.equals(footprint)
    timestamps = found.get_timestamps()
    assert datetime.fromisoformat(target["properties"]["datetime"].replace("Z", "+00:00")) in timestamps
    west, south, east, north = target["bbox"]
    outside = (east + 0.001, north + 0.001, east + 0.01, north + 0.01)
    assert not [
        i
        for i in catalog.search(DataCollection.SENTINEL2_L2A, bbox=BBox(outside, crs=CRS.WGS84)).get_ids()
        if i == target["id"]
    ]


def test_fields_include_only_what_is_asked(catalog: SentinelHubCatalog):
    fields = {"include": ["properties.datetime"], "exclude": []}
    found = list(catalog.search(DataCollection.SENTINEL2_L2A, bbox=WORLD, time=ALL_TIME, fields=fields))
    assert len(found) == len(items("sentinel-2-l2a"))
    assert all(set(f) == {"type", "id", "properties"} and set(f["properties"]) == {"datetime"} for f in found)
    excluded = list(catalog.search(DataCollection.SENTINEL2_L2A, fields={"exclude": ["assets", "properties.platform"]}))
    assert all("assets" not in f and "platform" not in f["properties"] and "geometry" in f for f in excluded)


def test_sentinel1_search_with_the_collection_filters(catalog: SentinelHubCatalog):
    s1 = items("sentinel-1-grd")
    iw = sorted(i["id"] for i in s1 if i["properties"].get("sar:instrument_mode") == "IW")
    assert 0 < len(iw) < len(s1)
    found = catalog.search("sentinel-1-grd", time=ALL_TIME, filter="sar:instrument_mode = 'IW'")
    assert sorted(found.get_ids()) == iw


def test_unknown_collection_is_a_client_error(catalog: SentinelHubCatalog):
    with pytest.raises(DownloadFailedException) as failure:
        list(catalog.search("sentinel-9-nope", bbox=WORLD))
    response = failure.value.request_exception.response
    assert response.status_code == 400
    assert (
        response.json()["error"]["code"] == "COMMON_BAD_PAYLOAD"
        and "sentinel-9-nope" in response.json()["error"]["message"]
    )


@pytest.fixture(scope="module")
def stac_url(tmp_path_factory: pytest.TempPathFactory, stac) -> Iterator[str]:
    """The server with every collection behind the test STAC API (no pixels are read here)."""
    config = s3_config(tmp_path_factory.mktemp("sh-stac"), stac.url)
    with serve(Settings(config=config, stac_cache_ttl=0)) as url:
        yield url


def test_catalog_answered_from_a_stac_api(stac_url: str):
    catalog = SentinelHubCatalog(config=sh_config(stac_url))
    l2a = [json.loads(p.read_text()) for p in S2_ITEMS]
    expected = sorted((i["properties"]["datetime"], i["id"]) for i in l2a if i["properties"]["eo:cloud_cover"] < 20)
    found = catalog.search(
        DataCollection.SENTINEL2_L2A, bbox=WORLD, time=ALL_TIME, filter="eo:cloud_cover < 20", limit=2
    )
    assert [f["id"] for f in found] == [i for _, i in expected]
    dates = catalog.search(DataCollection.SENTINEL2_L2A, bbox=WORLD, time=ALL_TIME, distinct="date")
    assert list(dates) == sorted({i["properties"]["datetime"][:10] for i in l2a})
    assert "sentinel-2-l2a" in {c["id"] for c in catalog.get_collections()}
