"""The Sentinel Hub Process API driven by the real sentinelhub-py package.

Only ``SHConfig`` changes, as in sentinelhub-py's documentation examples. Images are compared
with the server's own WCS output for the same grid and script (the one pipeline must give the
same pixels whatever the protocol), and with independent rasterio/numpy/shapely computations.
"""

from __future__ import annotations

import base64
import io
import tarfile

import httpx
import numpy as np
import pytest
import rasterio
import shapely.geometry
from PIL import Image
from sentinelhub import CRS, BBox, DataCollection, Geometry, MimeType, SentinelHubRequest

from server.models import Grid
from server.pipeline import Pipeline
from server.render import strips as strips_module
from server.shapi import process as process_module
from tests.support.sentinelhub_client import plain_http_oauth, sentinel2_l2a_at, sh_config  # noqa: F401 - fixture
from tests.test_pixels import T29UNU, band_file, refl, warp_to

UTM29 = CRS(32629)
BOX = (508000, 5880000, 518000, 5886000)  # inside the sample's 29UNU scene of 2022-10-05
TIME = ("2022-10-01", "2022-10-31")
SIZE = (200, 120)

TRUE_COLOUR = """//VERSION=3
function setup() {
  return {input: ["B02", "B03", "B04"], output: {bands: 3}};
}
function evaluatePixel(s) {
  return [2.5 * s.B04, 2.5 * s.B03, 2.5 * s.B02];
}
"""
NDVI = """//VERSION=3
function setup() {
  return {input: ["B04", "B8A"], output: {bands: 1, sampleType: "FLOAT32"}};
}
function evaluatePixel(s) {
  return [(s.B8A - s.B04) / (s.B8A + s.B04)];
}
"""
BOTH = """//VERSION=3
function setup() {
  return {
    input: ["B02", "B03", "B04", "B8A"],
    output: [{id: "default", bands: 3}, {id: "ndvi", bands: 1, sampleType: "FLOAT32"}],
  };
}
function evaluatePixel(s) {
  return {
    default: [2.5 * s.B04, 2.5 * s.B03, 2.5 * s.B02],
    ndvi: [(s.B8A - s.B04) / (s.B8A + s.B04)],
  };
}
"""


def time_range(first: str, last: str) -> dict[str, str]:
    return {"from": f"{first}T00:00:00Z", "to": f"{last}T23:59:59Z"}


def l2a(live_url: str) -> DataCollection:
    """Sentinel-2 L2A served here: sentinelhub-py sends a collection's requests to its own
    service_url, so it is defined at this server (as CDSE's examples do for their deployment)."""
    return sentinel2_l2a_at(live_url)


def sh_request(live_url: str, evalscript: str, responses: list, **bounds) -> SentinelHubRequest:
    return SentinelHubRequest(
        evalscript=evalscript,
        input_data=[SentinelHubRequest.input_data(data_collection=l2a(live_url), time_interval=TIME)],
        responses=responses,
        size=bounds.pop("size", SIZE),
        config=sh_config(live_url),
        **bounds,
    )


def wcs_params(evalscript: str, size: tuple[int, int]) -> list[tuple[str, str]]:
    """A WCS 2.0.1 GetCoverage of TRUE_COLOR's collection with ``evalscript`` on BOX at ``size``."""
    return [
        ("SERVICE", "WCS"),
        ("VERSION", "2.0.1"),
        ("REQUEST", "GetCoverage"),
        ("COVERAGEID", "TRUE_COLOR"),
        ("FORMAT", "image/tiff"),
        ("SUBSET", f"x({BOX[0]},{BOX[2]})"),
        ("SUBSET", f"y({BOX[1]},{BOX[3]})"),
        ("SUBSET", 'time("2022-10-01","2022-10-31")'),
        ("SUBSETTINGCRS", "http://www.opengis.net/def/crs/EPSG/0/32629"),
        ("OUTPUTCRS", "http://www.opengis.net/def/crs/EPSG/0/32629"),
        ("SCALESIZE", f"x({size[0]}),y({size[1]})"),
        ("EVALSCRIPT", base64.b64encode(evalscript.encode()).decode()),
    ]


def wcs(client: httpx.Client, evalscript: str, size: tuple[int, int] = SIZE) -> rasterio.io.MemoryFile:
    """The server's WCS 2.0.1 coverage of TRUE_COLOR's collection with ``evalscript`` on the same grid."""
    response = client.get("/ogc/wcs", params=wcs_params(evalscript, size))
    assert response.status_code == 200, response.text[:300]
    return rasterio.io.MemoryFile(response.content)


def wcs_bands(client: httpx.Client, evalscript: str) -> np.ndarray:
    with wcs(client, evalscript) as memory, memory.open() as src:
        assert src.crs.to_epsg() == 32629 and (src.width, src.height) == SIZE
        assert np.allclose(tuple(src.bounds), BOX)
        return src.read()


def test_true_colour_png_equals_wcs(live_url: str, client: httpx.Client):
    request = sh_request(
        live_url,
        TRUE_COLOUR,
        [SentinelHubRequest.output_response("default", MimeType.PNG)],
        bbox=BBox(BOX, crs=UTM29),
    )
    image = request.get_data()[0]
    # three output bands are an RGB PNG, as Sentinel Hub returns it: no alpha the script did not make
    assert image.shape == (SIZE[1], SIZE[0], 3) and image.dtype == np.uint8
    expected = wcs_bands(client, TRUE_COLOUR)  # (3, h, w) uint8
    assert expected.dtype == np.uint8 and expected.std() > 5  # a real picture, not a blank
    assert np.array_equal(np.moveaxis(image, -1, 0), expected)


def test_a_fourth_output_band_is_the_png_alpha(live_url: str):
    """Sentinel Hub's transparency: the script's 4th band (here dataMask) is the PNG's alpha."""
    with_alpha = TRUE_COLOUR.replace('"B04"]', '"B04", "dataMask"]').replace("bands: 3", "bands: 4")
    with_alpha = with_alpha.replace("2.5 * s.B02]", "2.5 * s.B02, s.dataMask]")
    assert "dataMask]" in with_alpha and "bands: 4" in with_alpha
    responses = [SentinelHubRequest.output_response("default", MimeType.PNG)]
    rgb = sh_request(live_url, TRUE_COLOUR, responses, bbox=BBox(BOX, crs=UTM29)).get_data()[0]
    rgba = sh_request(live_url, with_alpha, responses, bbox=BBox(BOX, crs=UTM29)).get_data()[0]
    assert rgba.shape == (SIZE[1], SIZE[0], 4)
    assert np.array_equal(rgba[..., :3][rgba[..., 3] == 255], rgb[rgba[..., 3] == 255])
    assert set(np.unique(rgba[..., 3])) <= {0, 255} and (rgba[..., 3] == 255).mean() > 0.5


def test_ndvi_float32_tiff_equals_wcs_and_an_independent_ndvi(live_url: str, client: httpx.Client):
    request = sh_request(
        live_url, NDVI, [SentinelHubRequest.output_response("default", MimeType.TIFF)], bbox=BBox(BOX, crs=UTM29)
    )
    ndvi = request.get_data()[0]
    assert ndvi.dtype == np.float32 and ndvi.shape == (SIZE[1], SIZE[0])
    expected = wcs_bands(client, NDVI)[0]
    assert np.array_equal(ndvi, expected, equal_nan=True)
    grid = Grid(BOX, rasterio.crs.CRS.from_epsg(32629), *SIZE)
    b04 = refl(warp_to(band_file(T29UNU, "B04", 60), grid), -1000.0)
    b8a = refl(warp_to(band_file(T29UNU, "B8A", 60), grid), -1000.0)
    independent = ((b8a - b04) / (b8a + b04)).astype(np.float32)
    assert np.isfinite(ndvi).mean() > 0.99 and np.nanstd(ndvi) > 0.05
    assert np.allclose(ndvi, independent, atol=1e-6, equal_nan=True)


def test_multi_response_tar_holds_each_output_named_as_sentinel_hub_does(live_url: str, client: httpx.Client):
    request = sh_request(
        live_url,
        BOTH,
        [
            SentinelHubRequest.output_response("default", MimeType.PNG),
            SentinelHubRequest.output_response("ndvi", MimeType.TIFF),
            SentinelHubRequest.output_response("userdata", MimeType.JSON),
        ],
        bbox=BBox(BOX, crs=UTM29),
    )
    members = request.get_data()[0]
    assert set(members) == {"default.png", "ndvi.tif", "userdata.json"}
    assert members["userdata.json"] == {}
    assert np.array_equal(np.moveaxis(members["default.png"][:, :, :3], -1, 0), wcs_bands(client, TRUE_COLOUR))
    assert np.array_equal(members["ndvi.tif"], wcs_bands(client, NDVI)[0], equal_nan=True)


def test_multipart_when_accept_asks(live_url: str, client: httpx.Client):
    body = {
        "input": {
            "bounds": {"bbox": list(BOX), "properties": {"crs": "http://www.opengis.net/def/crs/EPSG/0/32629"}},
            "data": [{"type": "S2L2A", "dataFilter": {"timeRange": time_range("2022-10-01", "2022-10-31")}}],
        },
        "output": {
            "width": SIZE[0],
            "height": SIZE[1],
            "responses": [
                {"identifier": "default", "format": {"type": "image/png"}},
                {"identifier": "ndvi", "format": {"type": "image/tiff"}},
            ],
        },
        "evalscript": BOTH,
    }
    response = client.post("/api/v1/process", json=body, headers={"Accept": "multipart/mixed"})
    assert response.status_code == 200, response.text[:300]
    assert response.headers["content-type"].startswith("multipart/mixed; boundary=")
    boundary = response.headers["content-type"].split('boundary="')[1].rstrip('"').encode()
    parts = [p for p in response.content.split(b"--" + boundary) if p.strip(b"\r\n-")]
    names = [p.split(b'filename="')[1].split(b'"')[0] for p in parts]
    assert names == [b"default.png", b"ndvi.tif"]
    tif = parts[1].split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n", 1)[0]
    with rasterio.open(io.BytesIO(tif)) as src:
        assert np.array_equal(src.read(1), wcs_bands(client, NDVI)[0], equal_nan=True)
    plain = client.post("/api/v1/process", json=body)  # no Accept: a tar, as sentinelhub-py asks
    assert plain.headers["content-type"] == "application/x-tar"
    with tarfile.open(fileobj=io.BytesIO(plain.content)) as tar:
        assert tar.getnames() == ["default.png", "ndvi.tif"]


def test_single_response_honours_accept(client: httpx.Client):
    body = {
        "input": {
            "bounds": {"bbox": list(BOX), "properties": {"crs": "http://www.opengis.net/def/crs/EPSG/0/32629"}},
            "data": [{"type": "sentinel-2-l2a"}],
        },
        "output": {"width": 64, "height": 40},
        "evalscript": TRUE_COLOUR,
    }
    png = client.post("/api/v1/process", json=body)
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    jpeg = client.post("/api/v1/process", json=body, headers={"Accept": "image/jpeg"})
    assert jpeg.status_code == 200 and jpeg.headers["content-type"] == "image/jpeg"
    assert jpeg.content[:3] == b"\xff\xd8\xff"


def test_an_rgb_png_over_a_polygon_is_black_outside_it(client: httpx.Client):
    """No alpha band to make them transparent: pixels outside the geometry are 0, as in Sentinel Hub."""
    x0, y0, x1, y1 = BOX
    triangle = [[x0, y0], [x1, y0], [x0, y1], [x0, y0]]  # the lower-left half of the box
    crs = {"crs": "http://www.opengis.net/def/crs/EPSG/0/32629"}
    body = {
        "input": {
            "bounds": {"geometry": {"type": "Polygon", "coordinates": [triangle]}, "properties": crs},
            "data": [{"type": "sentinel-2-l2a"}],
        },
        "output": {"width": 64, "height": 64},
        "evalscript": TRUE_COLOUR,
    }
    png = client.post("/api/v1/process", json=body, headers={"Accept": "image/png"})
    assert png.status_code == 200, png.text
    with Image.open(io.BytesIO(png.content)) as decoded:
        assert decoded.mode == "RGB"
        pixels = np.asarray(decoded)
    rows, cols = np.mgrid[0:64, 0:64]
    outside, inside = cols > rows, cols < rows  # centres right of / left of the diagonal (x1, y0)-(x0, y1)
    assert (pixels[outside] == 0).all()
    assert (pixels[inside].sum(axis=-1) > 0).mean() > 0.9


@pytest.mark.parametrize("size", [SIZE, (1800, 1080)], ids=["whole", "in-strips"])
def test_polygon_leaves_pixels_outside_without_data(live_url: str, client: httpx.Client, size: tuple[int, int]):
    """The geometry's mask is rasterised on each strip's own rows when the image is large."""
    assert (size[0] * size[1] > strips_module.STRIP_PIXELS) == (size != SIZE)
    x0, y0, x1, y1 = BOX
    ring = [(x0, y0), (x1, y0), (x0 + 2000, y1), (x0, y1), (x0, y0)]  # a quadrilateral leaning right
    polygon = shapely.geometry.Polygon(ring)
    request = sh_request(
        live_url,
        NDVI,
        [SentinelHubRequest.output_response("default", MimeType.TIFF)],
        geometry=Geometry(polygon, crs=UTM29),
        size=size,
    )
    clipped = request.get_data()[0]
    with wcs(client, NDVI, size) as memory, memory.open() as src:  # the polygon's bounds are BOX: the same grid
        whole = src.read(1)
    rows, cols = np.mgrid[0 : size[1], 0 : size[0]]
    xs = x0 + (cols + 0.5) * (x1 - x0) / size[0]
    ys = y1 - (rows + 0.5) * (y1 - y0) / size[1]
    inside = shapely.contains_xy(polygon, xs, ys)
    assert 0.2 < inside.mean() < 0.8
    assert np.isnan(clipped[~inside]).all()
    assert np.array_equal(clipped[inside], whole[inside], equal_nan=True)
    assert np.isfinite(clipped[inside]).mean() > 0.99


def test_beyond_2500_pixels_renders_in_strips(client: httpx.Client):
    width, height = 3000, 1800
    assert width * height > strips_module.STRIP_PIXELS  # more than one strip
    body = {
        "input": {
            "bounds": {"bbox": list(BOX), "properties": {"crs": "http://www.opengis.net/def/crs/EPSG/0/32629"}},
            "data": [{"type": "sentinel-2-l2a", "dataFilter": {"timeRange": time_range("2022-10-05", "2022-10-05")}}],
        },
        "output": {
            "width": width,
            "height": height,
            "responses": [{"identifier": "default", "format": {"type": "image/tiff"}}],
        },
        "evalscript": "B04",
    }
    response = client.post("/api/v1/process", json=body, timeout=120)
    assert response.status_code == 200, response.text[:300]
    with rasterio.open(io.BytesIO(response.content)) as src:
        assert (src.width, src.height) == (width, height) and src.crs.to_epsg() == 32629
        got = src.read(1)
    grid = Grid(BOX, rasterio.crs.CRS.from_epsg(32629), width, height)
    dn = warp_to(band_file(T29UNU, "B04", 60), grid)
    expected = np.where(dn == 0, np.nan, refl(dn, -1000.0))
    close = np.isclose(got, expected, atol=1e-6) | (np.isnan(got) & np.isnan(expected))
    assert close.mean() > 0.999


def test_beyond_the_configured_limit_is_a_400(client: httpx.Client):
    body = {
        "input": {"bounds": {"bbox": [-8.9, 53.05, -8.8, 53.1]}, "data": [{"type": "sentinel-2-l2a"}]},
        "output": {"width": 5000, "height": 100},
        "evalscript": "B04",
    }
    response = client.post("/api/v1/process", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "COMMON_BAD_PAYLOAD"
    assert "at most 4096" in response.json()["error"]["message"]


DATED = """//VERSION=3
function setup() {
  return {input: ["B04", "B8A", "dataMask"], output: {bands: 1, sampleType: "FLOAT32"}};
}
function evaluatePixel(s) {
  return [(s.B8A - s.B04) / (s.B8A + s.B04)];
}
function updateOutputMetadata(scenes, inputMetadata, outputMetadata) {
  outputMetadata.userData = {
    dates: scenes.tiles.map((tile) => tile.date),
    paths: scenes.tiles.map((tile) => tile.dataPath),
    normalizationFactor: inputMetadata.normalizationFactor,
    serviceVersion: inputMetadata.serviceVersion,
  };
}
"""


def test_userdata_is_what_update_output_metadata_sets_with_the_scene_dates(live_url: str, client: httpx.Client):
    request = sh_request(
        live_url,
        DATED,
        [
            SentinelHubRequest.output_response("default", MimeType.TIFF),
            SentinelHubRequest.output_response("userdata", MimeType.JSON),
        ],
        bbox=BBox(BOX, crs=UTM29),
    )
    members = request.get_data()[0]
    assert set(members) == {"default.tif", "userdata.json"}
    user_data = members["userdata.json"]
    # the one scene of October 2022 over BOX: its sensing time is in its product name
    assert user_data["dates"] == ["2022-10-05T11:54:11Z"]
    assert len(user_data["paths"]) == 1 and "S2A_MSIL2A_20221005T115411" in user_data["paths"][0]
    assert user_data["normalizationFactor"] == 0.0001 and user_data["serviceVersion"]
    assert np.array_equal(members["default.tif"], wcs_bands(client, NDVI)[0], equal_nan=True)


def _body(box: tuple[float, float, float, float], responses: list[dict]) -> dict:
    return {
        "input": {
            "bounds": {"bbox": list(box), "properties": {"crs": "http://www.opengis.net/def/crs/EPSG/0/32629"}},
            "data": [{"type": "sentinel-2-l2a", "dataFilter": {"timeRange": time_range("2022-10-01", "2022-10-31")}}],
        },
        "output": {"width": 60, "height": 40, "responses": responses},
        "evalscript": BOTH,
    }


def test_two_outputs_read_the_scenes_once(pipeline: Pipeline):
    """Outputs of one script come from one mosaic: a two-output request makes as many as a
    one-output request (each on a grid of its own, so no image comes from the cache)."""
    png = {"identifier": "default", "format": {"type": "image/png"}}
    tiff = {"identifier": "ndvi", "format": {"type": "image/tiff"}}
    before = pipeline.mosaics
    one = process_module.process(pipeline, _body((509000, 5881000, 511000, 5882000), [png]), [])
    after_one = pipeline.mosaics
    two = process_module.process(pipeline, _body((512000, 5881000, 514000, 5882000), [png, tiff]), [])
    after_two = pipeline.mosaics
    assert one.status_code == 200 and two.status_code == 200
    assert two.headers["content-type"] == "application/x-tar"
    assert after_one - before == 1
    assert after_two - after_one == after_one - before


def test_an_image_the_process_api_drew_is_the_cached_image_wcs_serves(client: httpx.Client):
    """One pipeline, one cache key per image: the Process API's NDVI GeoTIFF of a grid is the
    WCS coverage of the same grid and script (X-Cache: HIT), stored once."""
    size = (90, 70)  # a grid no other test asks for
    body = {
        "input": {
            "bounds": {"bbox": list(BOX), "properties": {"crs": "http://www.opengis.net/def/crs/EPSG/0/32629"}},
            "data": [{"type": "sentinel-2-l2a", "dataFilter": {"timeRange": time_range("2022-10-01", "2022-10-31")}}],
        },
        "output": {"width": size[0], "height": size[1], "responses": [{"format": {"type": "image/tiff"}}]},
        "evalscript": NDVI,
    }
    drawn = client.post("/api/v1/process", json=body)
    assert drawn.status_code == 200, drawn.text[:300]
    again = client.get("/ogc/wcs", params=wcs_params(NDVI, size))
    assert again.status_code == 200 and again.headers["X-Cache"] == "HIT"
    assert again.content == drawn.content


def test_an_update_output_metadata_that_throws_is_a_400_naming_the_line(client: httpx.Client):
    script = DATED.replace("outputMetadata.userData = {", "throw new Error('no metadata'); outputMetadata.userData = {")
    userdata = {"identifier": "userdata", "format": {"type": "application/json"}}
    body = _body((509000, 5883000, 511000, 5884000), [userdata])
    response = client.post("/api/v1/process", json={**body, "evalscript": script})
    assert response.status_code == 400
    error = response.json()["error"]
    assert "no metadata" in error["message"] and "(line 9)" in error["message"]
