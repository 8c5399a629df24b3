"""The sample's complete scene: every Sentinel-2 L2A layer renders over it, values from the files.

29RKH 2020-02-19 (baseline 02.14: reflectance = DN / 10000, no offset) is the one bundled product
with B08 and SCL together; its files are real pixels at 100 m (B02 B03 B04 B08), 200 m (B05 B06
B07 B8A B11 B12 SCL) and 600 m (B01 B09). Expected values are read from the JPEG2000 files with
rasterio and computed with numpy on the files' own grids.
"""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import numpy as np
import pytest
import rasterio
import yaml
from PIL import Image
from rasterio.windows import Window

from server.evalscript.contract import SampleType
from server.models import Grid, ImageFormat, RenderRequest, parse_time
from server.pipeline import Pipeline
from server.resources import default_config_path
from tests.conftest import EODATA

PRODUCT = "S2A_MSIL2A_20200219T112111_N0214_R037_T29RKH_20200219T123947"
IMG = next(EODATA.glob(f"Sentinel-2/MSI/L2A/2020/02/19/{PRODUCT}.SAFE/GRANULE/*/IMG_DATA"))
DAY = "2020-02-19"
TILE = "11/958/878"  # WebMercatorQuad, inside the 50.4 km crop
S2_LAYERS = sorted(
    lid
    for lid, layer in yaml.safe_load(default_config_path().read_text())["layers"].items()
    if layer["collection"] == "sentinel-2-l2a"
)


def band_file(band: str) -> Path:
    return next(IMG.glob(f"R*m/*_{band}_*m.jp2"))


def native_grid(path: Path, col: int, row: int, size: int) -> Grid:
    with rasterio.open(path) as src:
        t = src.transform
        x0, y1 = t.c + col * t.a, t.f + row * t.e
        return Grid((x0, y1 + size * t.e, x0 + size * t.a, y1), src.crs, size, size)


def reflectance(band: str, col: int, row: int, size: int) -> np.ndarray:
    with rasterio.open(band_file(band)) as src:
        return src.read(1, window=Window(col, row, size, size)).astype(np.float64) / 10000


def render(pipeline: Pipeline, layer: str, grid: Grid) -> np.ndarray:
    req = RenderRequest(layer, grid, ImageFormat.GTIFF, time=parse_time(DAY))
    with rasterio.open(io.BytesIO(pipeline.render(req).content)) as src:
        assert src.crs == grid.crs and (src.width, src.height) == (grid.width, grid.height)
        return src.read()


def test_the_scene_has_every_l2a_band_and_scl():
    files = {p.name.split("_")[2]: p for p in IMG.glob("R*m/*.jp2")}
    assert sorted(files) == ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "B11", "B12", "B8A", "SCL"]
    for band, path in files.items():
        with rasterio.open(path) as src:
            assert src.crs.to_epsg() == 32629 and src.bounds == (229980.0, 2719620.0, 280380.0, 2770020.0)
            assert src.res[0] == {"B02": 100, "B03": 100, "B04": 100, "B08": 100, "B01": 600, "B09": 600}.get(band, 200)


@pytest.mark.parametrize("layer", S2_LAYERS)
def test_tile_over_the_complete_scene_is_not_empty(layer: str, client: httpx.Client, pipeline: Pipeline):
    script = pipeline.registry.get(layer).evalscript
    time = "2020-02-01/2020-02-28" if script.mosaicking != "SIMPLE" else DAY
    if script.output.sample_type is SampleType.FLOAT32:
        response = client.get(f"/layers/{layer}/tiles/WebMercatorQuad/{TILE}.tif", params={"time": time})
        assert response.status_code == 200, response.text
        assert response.headers["X-Eotiler-Scenes"] == PRODUCT
        with rasterio.open(io.BytesIO(response.content)) as src:
            assert np.isfinite(src.read()).all()
        return
    response = client.get(f"/layers/{layer}/tiles/WebMercatorQuad/{TILE}.png", params={"time": time})
    assert response.status_code == 200, response.text
    assert response.headers["X-Eotiler-Scenes"] == PRODUCT
    assert "X-Eotiler-Failed-Scenes" not in response.headers
    image = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGBA"))
    assert image.shape == (256, 256, 4)
    assert (image[..., 3] > 0).mean() > 0.99  # desert under 4 % cloud: (almost) every pixel drawn
    assert image[..., :3].std() > 0 or layer == "SCL"  # real texture, not a constant fill


def test_ndvi_equals_the_files(pipeline: Pipeline):
    grid = native_grid(band_file("B04"), 100, 200, 64)
    red, nir = reflectance("B04", 100, 200, 64), reflectance("B08", 100, 200, 64)
    rendered = render(pipeline, "NDVI_FLOAT", grid)[0]
    np.testing.assert_allclose(rendered, (nir - red) / (nir + red), atol=1e-6)
    assert 0.0 < np.median(rendered) < 0.2  # bare desert


def test_moisture_index_equals_the_files(pipeline: Pipeline):
    grid = native_grid(band_file("B11"), 40, 60, 48)
    nir, swir = reflectance("B8A", 40, 60, 48), reflectance("B11", 40, 60, 48)
    np.testing.assert_allclose(render(pipeline, "RAW_NDMI", grid)[0], (nir - swir) / (nir + swir), atol=1e-6)


def test_cloud_mask_hides_exactly_the_scl_cirrus(pipeline: Pipeline):
    col, row, size = 236, 36, 16  # holds the scene's 12 thin-cirrus pixels (SCL 10)
    grid = native_grid(band_file("SCL"), col, row, size)
    with rasterio.open(band_file("SCL")) as src:
        scl = src.read(1, window=Window(col, row, size, size))
    assert (scl == 10).sum() == 12
    req = RenderRequest("TRUE_COLOR_CLOUDMASKED", grid, ImageFormat.PNG, time=parse_time(DAY))
    image = np.asarray(Image.open(io.BytesIO(pipeline.render(req).content)).convert("RGBA"))
    np.testing.assert_array_equal(image[..., 3] == 0, np.isin(scl, [3, 8, 9, 10]))


def test_kndvi_colours_follow_the_files(pipeline: Pipeline):
    grid = native_grid(band_file("B04"), 300, 300, 32)
    red, nir = reflectance("B04", 300, 300, 32), reflectance("B08", 300, 300, 32)
    kndvi = np.tanh(((nir - red) / (nir + red)) ** 2)
    # first segment of the ramp (0 -> 0.2): #f7fcf5 -> #c7e9c0, linear in kNDVI
    assert kndvi.max() < 0.2
    start, end = np.array([0xF7, 0xFC, 0xF5]), np.array([0xC7, 0xE9, 0xC0])
    expected = start + (end - start) * (kndvi / 0.2)[..., None]
    req = RenderRequest("KNDVI", grid, ImageFormat.PNG, time=parse_time(DAY))
    image = np.asarray(Image.open(io.BytesIO(pipeline.render(req).content)).convert("RGBA")).astype(float)
    assert np.abs(image[..., :3] - expected).max() <= 1.0
    assert (image[..., 3] == 255).all()
