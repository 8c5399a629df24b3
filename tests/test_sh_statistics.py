"""The Sentinel Hub Statistical API driven by the real sentinelhub-py package.

Every number is compared with numpy over the same pixels, read here independently: the band
files warped with rasterio onto the request's grid, reflectance by the baseline's offset, the
polygon's pixels chosen by their centres with shapely.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
import rasterio
import shapely.geometry
from sentinelhub import CRS, BBox, DataCollection, Geometry, SentinelHubStatistical

from server.models import Grid
from tests.support.sentinelhub_client import plain_http_oauth, sentinel2_l2a_at, sh_config  # noqa: F401 - fixture
from tests.test_pixels import T29UNU, T35VPK, band_file, img_data, warp_to

T35VPK_2017 = img_data("2017/09/24", "S2B_MSIL2A_20170924T093020_N0500_R136_T35VPK")
# Both bundled 35VPK crops (2017-09-24 and 2018-02-04, 15 km apart) on their own 10 m pixel grid.
VPK_BOX = (668400.0, 6953220.0, 684000.0, 6971220.0)
VPK_SIZE = (1560, 1800)

NDVI = """//VERSION=3
function setup() {
  return {
    input: [{bands: ["B04", "%(nir)s", "dataMask"]}],
    output: [{id: "ndvi", bands: 1, sampleType: "FLOAT32"}, {id: "dataMask", bands: 1}],
  };
}
function evaluatePixel(s) {
  return {ndvi: [(s.%(nir)s - s.B04) / (s.%(nir)s + s.B04)], dataMask: [s.dataMask]};
}
"""


def l2a_here(live_url: str) -> DataCollection:
    """Sentinel-2 L2A defined at this server (sentinelhub-py sends requests to a collection's service_url)."""
    return sentinel2_l2a_at(live_url)


def independent_ndvi(folder: Path, nir: str, res: int, grid: Grid) -> np.ndarray:
    """NDVI (float32, as the script returns it) with NaN where a band has no data: samples are
    float32 reflectance, (DN - 1000) x 0.0001 in float32, and the script computes in double."""
    red = warp_to(band_file(folder, "B04", res), grid)
    near = warp_to(band_file(folder, nir, res), grid)
    r = np.maximum((red.astype(np.float32) - 1000) * np.float32(0.0001), 0).astype(np.float64)
    n = np.maximum((near.astype(np.float32) - 1000) * np.float32(0.0001), 0).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        ndvi = (n - r) / (n + r)
    return np.where((red == 0) | (near == 0), np.nan, ndvi).astype(np.float32)


def expected_stats(values: np.ndarray, counted: int, ks: list[float]) -> dict:
    picked = values[np.isfinite(values)].astype(np.float64)
    return {
        "min": picked.min(),
        "max": picked.max(),
        "mean": picked.mean(),
        "stDev": picked.std(ddof=1),
        "sampleCount": counted,
        "noDataCount": counted - picked.size,
        "percentiles": {str(float(k)): float(np.percentile(picked, k, method="higher")) for k in ks},
    }


def assert_stats(got: dict, expected: dict) -> None:
    assert got["sampleCount"] == expected["sampleCount"] and got["noDataCount"] == expected["noDataCount"]
    for name in ("min", "max", "mean", "stDev"):
        assert got[name] == pytest.approx(expected[name], rel=1e-9, abs=1e-12), name
    assert got["percentiles"] == expected["percentiles"]


def test_p1d_intervals_with_data_percentiles_and_histogram_equal_numpy(live_url: str):
    l2a = l2a_here(live_url)
    ks = [10, 50, 90]
    request = SentinelHubStatistical(
        aggregation=SentinelHubStatistical.aggregation(
            evalscript=NDVI % {"nir": "B08"},
            time_interval=("2017-09-20", "2018-02-10"),
            aggregation_interval="P1D",
            resolution=(10, 10),
        ),
        input_data=[SentinelHubStatistical.input_data(l2a, maxcc=1.0)],
        bbox=BBox(VPK_BOX, crs=CRS(32635)),
        calculations={
            "ndvi": {
                "statistics": {"default": {"percentiles": {"k": ks}}},
                "histograms": {"default": {"nBins": 8, "lowEdge": -0.2, "highEdge": 0.6}},
            }
        },
        config=sh_config(live_url),
    )
    answer = request.get_data()[0]
    assert answer["status"] == "OK"
    days = [entry["interval"] for entry in answer["data"]]
    assert days == [
        {"from": "2017-09-24T00:00:00Z", "to": "2017-09-25T00:00:00Z"},
        {"from": "2018-02-04T00:00:00Z", "to": "2018-02-05T00:00:00Z"},
    ]  # 144 daily intervals, two with a scene
    grid = Grid(VPK_BOX, rasterio.crs.CRS.from_epsg(32635), *VPK_SIZE)
    for entry, folder in zip(answer["data"], (T35VPK_2017, T35VPK), strict=True):
        band = entry["outputs"]["ndvi"]["bands"]["B0"]
        assert set(entry["outputs"]) == {"ndvi"}  # dataMask excludes pixels; it is no statistic
        values = independent_ndvi(folder, "B08", 10, grid)
        expected = expected_stats(values, VPK_SIZE[0] * VPK_SIZE[1], ks)
        assert 10_000 < VPK_SIZE[0] * VPK_SIZE[1] - expected["noDataCount"] < 20_000  # one 1.2 km crop
        assert_stats(band["stats"], expected)
        picked = values[np.isfinite(values)].astype(np.float64)
        edges = np.linspace(-0.2, 0.6, 9)
        counts = np.histogram(picked[(picked >= -0.2) & (picked <= 0.6)], bins=edges)[0]
        histogram = band["histogram"]
        assert [b["count"] for b in histogram["bins"]] == counts.tolist()
        assert [b["lowEdge"] for b in histogram["bins"]] == pytest.approx(edges[:-1].tolist())
        assert histogram["overflowCount"] == int((picked > 0.6).sum())
        assert histogram["underflowCount"] == int((picked < -0.2).sum())
        assert sum(counts) + histogram["overflowCount"] + histogram["underflowCount"] == picked.size


def test_polygon_selects_pixels_by_centre(live_url: str):
    with rasterio.open(band_file(T29UNU, "B04", 60)) as src:
        t = src.transform
    x0, y1 = t.c + 134 * t.a, t.f + 234 * t.e  # a window of the file's own 60 m grid
    box = (x0, y1 - 100 * 60, x0 + 166 * 60, y1)
    # corners off the pixel grid: no pixel centre lies on an edge, where "inside" would be a convention
    corners = [(box[0] + 7.3, box[1] + 11.9), (box[2] - 5.1, box[1] + 23.7), (box[0] + 3017.3, box[3] - 3.1)]
    triangle = shapely.geometry.Polygon(corners)
    l2a = l2a_here(live_url)
    request = SentinelHubStatistical(
        aggregation=SentinelHubStatistical.aggregation(
            evalscript=NDVI % {"nir": "B8A"},
            time_interval=("2022-10-04", "2022-10-06"),
            aggregation_interval="P1D",
            size=(166, 100),
        ),
        input_data=[SentinelHubStatistical.input_data(l2a)],
        bbox=BBox(box, crs=CRS(32629)),  # the grid; the geometry selects its pixels
        geometry=Geometry(triangle, crs=CRS(32629)),
        calculations={"default": {"statistics": {"B0": {"percentiles": {"k": [25, 75]}}}}},
        config=sh_config(live_url),
    )
    answer = request.get_data()[0]
    assert [d["interval"]["from"] for d in answer["data"]] == ["2022-10-05T00:00:00Z"]
    band = answer["data"][0]["outputs"]["ndvi"]["bands"]["B0"]
    grid = Grid(box, rasterio.crs.CRS.from_epsg(32629), 166, 100)
    values = independent_ndvi(T29UNU, "B8A", 60, grid)
    rows, cols = np.mgrid[0:100, 0:166]
    inside = shapely.contains_xy(triangle, box[0] + (cols + 0.5) * 60, box[3] - (rows + 0.5) * 60)
    assert 0.3 < inside.mean() < 0.7
    assert_stats(band["stats"], expected_stats(values[inside], int(inside.sum()), [25, 75]))


def test_empty_range_has_no_intervals(client: httpx.Client):
    body = {
        "input": {"bounds": {"bbox": list(VPK_BOX), "properties": {"crs": "http://www.opengis.net/def/crs/EPSG/0/32635"}},
                  "data": [{"type": "sentinel-2-l2a"}]},
        "aggregation": {
            "timeRange": {"from": "2019-01-01T00:00:00Z", "to": "2019-03-01T00:00:00Z"},
            "aggregationInterval": {"of": "P10D", "lastIntervalBehavior": "SHORTEN"},
            "resx": 100,
            "resy": 100,
            "evalscript": NDVI % {"nir": "B08"},
        },
    }
    response = client.post("/api/v1/statistics", json=body)
    assert response.status_code == 200, response.text[:300]
    assert response.json() == {"status": "OK", "data": []}
