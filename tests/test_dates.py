"""``GET /layers/{layer}/dates``: the days with scenes over a view, from the static catalogue and
from a STAC API (through the search cache), compared with the item files read here."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from server.settings import Settings
from tests.conftest import SAMPLE, serve, write_test_config

ITEMS = SAMPLE / "stac" / "sentinel-2-l2a"
# Boxes around one sample scene each (lon/lat): T29UNU (2022-10-05, 59.8 % cloud) and T29UPU.
OVER_29UNU = "-8.95,53.0,-8.6,53.2"
OVER_29UPU = "-7.46,52.63,-7.42,52.65"


def items() -> list[dict]:
    """The sample's Sentinel-2 items, read from the files."""
    docs = [json.loads(p.read_text()) for p in sorted(ITEMS.glob("*.json"))]
    return [d for d in docs if d.get("type") == "Feature"]


def day_of(item: dict) -> str:
    return item["properties"]["datetime"][:10]


def item_in(tile: str) -> dict:
    return next(i for i in items() if f"_T{tile}_" in i["id"])


def write_clear_config(directory: Path) -> Path:
    """The test configuration plus ``CLEAR_B04``: B04 with the layer's own cloud limit of 30 %."""
    path = write_test_config(directory)
    raw = yaml.safe_load(path.read_text())
    raw["layers"]["CLEAR_B04"] = {
        "title": "B04, maxcc 30",
        "collection": "sentinel-2-l2a",
        "expression": "B04",
        "maxcc": 30,
    }
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def clear_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    config = write_clear_config(tmp_path_factory.mktemp("clear-config"))
    with serve(Settings(config=config, overview_cache_bytes=0)) as url, httpx.Client(base_url=url, timeout=60) as http:
        yield http


def dates(client: httpx.Client, layer: str, **params: str) -> dict:
    response = client.get(f"/layers/{layer}/dates", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_box_over_one_scene_lists_only_its_date(client):
    found = dates(client, "RAW_B04", bbox=OVER_29UNU)
    scene = item_in("29UNU")
    assert [d["date"] for d in found["dates"]] == [day_of(scene)] == ["2022-10-05"]
    assert found["dates"][0]["cloud_cover"] == pytest.approx(scene["properties"]["eo:cloud_cover"], abs=0.01)
    assert found["dates"][0]["scenes"] == 1 and found["complete"] is True
    other = dates(client, "RAW_B04", bbox=OVER_29UPU)
    assert [d["date"] for d in other["dates"]] == [day_of(item_in("29UPU"))] == ["2017-06-17"]


def test_maxcc_removes_cloudy_dates(client):
    cover = item_in("29UNU")["properties"]["eo:cloud_cover"]  # 59.77
    assert dates(client, "RAW_B04", bbox=OVER_29UNU, maxcc=str(int(cover) - 1))["dates"] == []
    assert [d["date"] for d in dates(client, "RAW_B04", bbox=OVER_29UNU, maxcc=str(int(cover) + 1))["dates"]] == [
        "2022-10-05"
    ]
    everywhere = dates(client, "RAW_B04", maxcc="50")
    expected = sorted({day_of(i) for i in items() if i["properties"]["eo:cloud_cover"] <= 50}, reverse=True)
    assert [d["date"] for d in everywhere["dates"]] == expected and "2022-10-05" not in expected


def test_whole_world_and_time_range(client):
    assert [d["date"] for d in dates(client, "RAW_B04")["dates"]] == sorted({day_of(i) for i in items()}, reverse=True)
    in_2017 = dates(client, "RAW_B04", time="2017-01-01/2017-12-31")
    assert [d["date"] for d in in_2017["dates"]] == sorted(
        {day_of(i) for i in items() if day_of(i).startswith("2017")}, reverse=True
    )
    assert in_2017["time"].startswith("2017-01-01T00:00:00Z/2017-12-31T23:59:59")


def test_a_wrapped_web_map_box_is_folded(client):
    # Leaflet at zoom 1 asks for more than one world; the answer is the whole globe's dates.
    found = dates(client, "RAW_B04", bbox="-250,-85,250,85")
    assert found["bbox"] == [-180.0, -85.0, 180.0, 85.0] and len(found["dates"]) == 7


def test_the_layers_own_maxcc_applies(clear_client):
    found = dates(clear_client, "CLEAR_B04", bbox=OVER_29UNU)
    assert found["dates"] == [] and found["maxcc"] == 30
    assert [d["date"] for d in dates(clear_client, "CLEAR_B04", bbox=OVER_29UNU, maxcc="100")["dates"]] == [
        "2022-10-05"
    ]


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"bbox": "1,2,3"}, "bbox"),
        ({"bbox": "a,b,c,d"}, "bbox"),
        ({"bbox": "10,10,5,5"}, "bbox"),
        ({"bbox": "nan,0,1,1"}, "bbox"),
        ({"bbox": "1e308,0,1e309,1"}, "bbox"),
        ({"maxcc": "101"}, "maxcc"),
        ({"time": "yesterday"}, "time"),
    ],
)
def test_bad_input_is_a_400_naming_the_parameter(client, params, parameter):
    response = client.get("/layers/RAW_B04/dates", params=params)
    assert response.status_code == 400 and response.json()["parameter"] == parameter


def test_unknown_layer_is_404(client):
    assert client.get("/layers/NOPE/dates").status_code == 404


def test_stac_api_dates_go_through_the_search_cache(s3_client, stac):
    before = len(stac.searches)
    first = dates(s3_client, "RAW_B04", bbox=OVER_29UNU)
    again = dates(s3_client, "RAW_B04", bbox=OVER_29UNU)
    assert [d["date"] for d in first["dates"]] == ["2022-10-05"] and again == first
    assert len(stac.searches) == before + 1  # the second answer came from the TTL cache
    assert dates(s3_client, "RAW_B04", bbox=OVER_29UNU, maxcc="50")["dates"] == []
    assert stac.searches[-1]["filter"]["args"][1] == 50.0  # MAXCC reaches the API as a CQL2 filter
