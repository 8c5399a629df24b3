"""Rendered values against an independent rasterio + numpy computation on the same files.

Tolerances: float32 outputs on the native grid must match to 1e-6; 8-bit outputs to +-1 DN
(rounding of float32 vs float64). On Web Mercator tiles, GDAL's warper (server) and
``rasterio.warp.reproject`` (test) may pick a different source pixel where a target pixel centre
falls almost exactly on a source edge, so at least 99 % of pixels must match within tolerance.
"""

from __future__ import annotations

import io
from pathlib import Path

import morecantile
import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.crs import CRS
from rasterio.transform import from_bounds
from rasterio.warp import Resampling, reproject
from rasterio.windows import Window

from server.models import Grid, ImageFormat, RenderRequest, parse_time
from server.pipeline import Pipeline
from tests.conftest import EODATA
from tests.support.script_ramps import layer_script, script_palette, script_ramp

S2 = EODATA / "Sentinel-2" / "MSI"


def img_data(day: str, product: str) -> Path:
    """IMG_DATA folder of a bundled product, found at its real eodata key path."""
    return next(S2.glob(f"L2A*/{day}/{product}*.SAFE/GRANULE/*/IMG_DATA"))


T29UNU = img_data("2022/10/05", "S2A_MSIL2A_20221005T115411_N0400_R023_T29UNU")  # baseline 04.00
T29UPU = img_data("2017/06/17", "S2A_MSIL2A_20170617T113321_N0205_R080_T29UPU")  # baseline 02.05
T35VPK = img_data("2018/02/04", "S2B_MSIL2A_20180204T094156_N0500_R036_T35VPK")  # L2A_N0500 path
MOSAIC = EODATA / "Global-Mosaics/Sentinel-2/S2MSI_L3__MCQ/2020/01/01/Sentinel-2_mosaic_2020_Q1_29RKH_0_0"
WEB_MERCATOR = morecantile.tms.get("WebMercatorQuad")


def band_file(img_data: Path, band: str, res: int) -> Path:
    return next((img_data / f"R{res}m").glob(f"*_{band}_{res}m.jp2"))


def native_grid(path: Path, col: int, row: int, size: int) -> Grid:
    """A grid equal to a window of ``path``'s own pixel grid."""
    with rasterio.open(path) as src:
        t = src.transform
        x0, y1 = t.c + col * t.a, t.f + row * t.e
        return Grid((x0, y1 + size * t.e, x0 + size * t.a, y1), src.crs, size, size)


def read_window(path: Path, col: int, row: int, size: int) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1, window=Window(col, row, size, size)).astype(np.float64)


def render_array(pipeline: Pipeline, layer: str, grid: Grid, time: str | None = None) -> np.ndarray:
    req = RenderRequest(layer, grid, ImageFormat.GTIFF, time=parse_time(time))
    with rasterio.open(io.BytesIO(pipeline.render(req).content)) as src:
        assert src.crs == grid.crs and (src.width, src.height) == (grid.width, grid.height)
        return src.read()


def tile_grid(lon: float, lat: float, zoom: int) -> tuple[morecantile.Tile, Grid]:
    tile = WEB_MERCATOR.tile(lon, lat, zoom)
    b = WEB_MERCATOR.xy_bounds(tile)
    return tile, Grid((b.left, b.bottom, b.right, b.top), CRS.from_epsg(3857), 256, 256)


def warp_to(path: Path, grid: Grid, resampling: Resampling = Resampling.nearest) -> np.ndarray:
    """Independent reprojection of a whole band file onto ``grid`` (0 = nodata)."""
    with rasterio.open(path) as src:
        data = src.read(1).astype(np.float64)
        out = np.zeros((grid.height, grid.width), dtype=np.float64)
        reproject(
            data,
            out,
            src_transform=src.transform,
            src_crs=src.crs,
            src_nodata=0,
            dst_transform=from_bounds(*grid.bbox, grid.width, grid.height),
            dst_crs=grid.crs,
            dst_nodata=0,
            resampling=resampling,
        )
    return out


def refl(dn: np.ndarray, offset: float) -> np.ndarray:
    return np.maximum((dn + offset) / 10000.0, 0.0)


def legend_ramp(layer: str, values: np.ndarray) -> np.ndarray:
    """Colours from the stops of the layer's script (``STOPS``/``COLORS``), read by the test itself."""
    stops, rgb = script_ramp(layer_script(layer))
    return np.stack([np.clip(np.rint(np.interp(values, stops, [c[k] for c in rgb])), 0, 255) for k in range(3)])


def fetch_png(client, url: str) -> np.ndarray:
    response = client.get(url)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(response.content))
    assert image.size == (256, 256) and image.mode == "RGBA"
    return np.asarray(image).astype(np.int32)


@pytest.mark.parametrize(
    ("img_data", "res", "offset", "time"),
    [
        (T29UNU, 60, -1000.0, "2022-10-05"),  # baseline 04.00: BOA_ADD_OFFSET applies
        (T35VPK, 10, -1000.0, "2018-02-04"),  # baseline 05.00 (L2A_N0500 path)
        (T29UPU, 10, 0.0, "2017-06-17"),  # baseline 02.05: no offset
    ],
)
def test_reflectance_offset_rule_by_baseline(pipeline: Pipeline, img_data: Path, res: int, offset: float, time: str):
    path = band_file(img_data, "B04", res)
    size = 64 if res == 10 else 128
    col = row = 20 if res == 10 else 64
    got = render_array(pipeline, "RAW_B04", native_grid(path, col, row, size), time)[0]
    dn = read_window(path, col, row, size)
    expected = np.where(dn == 0, np.nan, refl(dn, offset))
    assert np.isnan(got).sum() == np.isnan(expected).sum()
    np.testing.assert_allclose(got, expected, atol=1e-6, equal_nan=True)
    # The wrong rule must be detectably wrong, so the test can fail.
    wrong = refl(dn, -1000.0 - offset)
    assert not np.allclose(got[dn > 0], wrong[dn > 0], atol=1e-3)


def test_dn_units_are_harmonised(pipeline: Pipeline):
    path = band_file(T29UNU, "B04", 60)
    got = render_array(pipeline, "RAW_B04_DN", native_grid(path, 100, 100, 64))[0]
    dn = read_window(path, 100, 100, 64)
    np.testing.assert_allclose(got, np.maximum(dn - 1000, 0), atol=0.01)


def test_true_colour_matches_numpy_on_native_grid(client, pipeline: Pipeline):
    b04, b03, b02 = (band_file(T29UNU, b, 60) for b in ("B04", "B03", "B02"))
    grid = native_grid(b04, 200, 200, 128)
    req = RenderRequest("TRUE_COLOR", grid, ImageFormat.PNG)
    got = np.asarray(Image.open(io.BytesIO(pipeline.render(req).content))).astype(np.int32)
    expected = np.stack(
        [np.clip(np.rint(2.5 * refl(read_window(p, 200, 200, 128), -1000) * 255), 0, 255) for p in (b04, b03, b02)]
    )
    assert got.shape == (128, 128, 4)
    assert np.abs(got[..., :3].transpose(2, 0, 1) - expected).max() <= 1
    assert (got[..., 3] == 255).all()


def test_ndmi_float_matches_numpy_on_native_grid(pipeline: Pipeline):
    b8a, b11 = band_file(T29UNU, "B8A", 60), band_file(T29UNU, "B11", 60)
    got = render_array(pipeline, "RAW_NDMI", native_grid(b8a, 300, 50, 128))[0]
    nir, swir = refl(read_window(b8a, 300, 50, 128), -1000), refl(read_window(b11, 300, 50, 128), -1000)
    expected = (nir - swir) / (nir + swir)
    np.testing.assert_allclose(got, expected, atol=1e-6)


@pytest.mark.parametrize(("img_data", "offset", "time"), [(T29UPU, 0.0, "2017-06-17"), (T35VPK, -1000.0, "2018-02-04")])
def test_ndvi_and_kndvi_tiles_match_independent_warp(client, img_data: Path, offset: float, time: str):
    b04, b08 = band_file(img_data, "B04", 10), band_file(img_data, "B08", 10)
    with rasterio.open(b04) as src:
        lon, lat = rasterio.warp.transform(
            src.crs, "EPSG:4326", [(src.bounds.left + src.bounds.right) / 2], [(src.bounds.bottom + src.bounds.top) / 2]
        )
    tile, grid = tile_grid(lon[0], lat[0], 16)
    red_dn, nir_dn = warp_to(b04, grid), warp_to(b08, grid)
    valid = (red_dn > 0) & (nir_dn > 0)
    red, nir = refl(red_dn, offset), refl(nir_dn, offset)
    with np.errstate(invalid="ignore", divide="ignore"):
        ndvi = np.where(red + nir == 0, 0, (nir - red) / (red + nir))
    assert valid.mean() > 0.3  # the tile really covers the patch
    for layer, values in (("NDVI", ndvi), ("KNDVI", np.tanh(ndvi**2))):
        got = fetch_png(client, f"/layers/{layer}/tiles/WebMercatorQuad/{tile.z}/{tile.x}/{tile.y}.png?time={time}")
        expected = legend_ramp(layer, values)
        close = (np.abs(got[..., :3].transpose(2, 0, 1) - expected) <= 1).all(axis=0)
        assert (close | ~valid).mean() >= 0.99, layer
        assert ((got[..., 3] > 0) == valid).mean() >= 0.99, layer
    # float32 NDVI through the same tile URL as GeoTIFF
    response = client.get(f"/layers/NDVI_FLOAT/tiles/WebMercatorQuad/{tile.z}/{tile.x}/{tile.y}.tif?time={time}")
    with rasterio.open(io.BytesIO(response.content)) as src:
        assert src.crs.to_epsg() == 3857 and src.dtypes[0] == "float32"
        assert np.allclose(src.bounds, grid.bbox)
        got_ndvi = src.read(1)
    both = valid & ~np.isnan(got_ndvi)
    assert both.sum() >= 0.99 * valid.sum()
    assert (np.abs(got_ndvi[both] - ndvi[both]) < 1e-5).mean() >= 0.99


def test_mosaic_cog_ndvi_matches_independent_warp(pipeline: Pipeline):
    tile, grid = tile_grid(-11.42, 24.80, 11)
    red_dn, nir_dn = warp_to(MOSAIC / "B04.tif", grid), warp_to(MOSAIC / "B08.tif", grid)
    got = render_array(pipeline, "RAW_MOSAIC_NDVI", grid)[0]
    valid = (red_dn > 0) & (nir_dn > 0) & ~np.isnan(got)
    red, nir = red_dn / 10000, nir_dn / 10000
    expected = (nir - red) / (nir + red)
    assert valid.mean() > 0.9
    assert (np.abs(got[valid] - expected[valid]) < 1e-5).mean() >= 0.99


def test_scl_is_never_interpolated(pipeline: Pipeline):
    """Even a layer configured for bilinear resampling gets nearest-neighbour SCL classes."""
    scl_path = band_file(T29UNU, "SCL", 20)
    source_classes = set(np.unique(rasterio.open(scl_path).read(1)).tolist())
    for zoom in (12, 15):  # 20 m file downsampled-ish, and strongly upsampled
        _, grid = tile_grid(-8.75, 53.12, zoom)
        got = render_array(pipeline, "SCL_BILINEAR", grid)[0]
        values = got[~np.isnan(got)]
        assert values.size > 0
        assert np.all(values == np.rint(values)), f"interpolated SCL values at z{zoom}"
        assert set(np.unique(values).astype(int).tolist()) <= source_classes
        assert len(np.unique(values)) >= 3


def test_scl_layer_uses_only_palette_colours(client):
    tile, _ = tile_grid(-8.75, 53.12, 14)
    got = fetch_png(client, f"/layers/SCL/tiles/WebMercatorQuad/{tile.z}/{tile.x}/{tile.y}.png")
    palette = set(script_palette(layer_script("SCL"))[1:])  # class 0 is transparent
    opaque = got[got[..., 3] == 255][:, :3]
    colours = {tuple(c) for c in np.unique(opaque, axis=0).tolist()}
    assert colours and colours <= palette


def test_zoomed_out_reads_coarser_files(pipeline: Pipeline):
    """At z10 (~92 m/pixel here) the 60 m SCL file is used; at z11 (~46 m) and z15 the 20 m one."""
    from server.sources.scene_reader import choose_source

    layer = pipeline.registry.get("SCL")
    scene = next(s for s in layer.catalogue.scenes if "T29UNU" in s.id)
    band = layer.collection.bands["SCL"]
    assert choose_source("SCL", band, scene, tile_grid(-8.75, 53.12, 10)[1].ground_resolution()).resolution == 60
    assert choose_source("SCL", band, scene, tile_grid(-8.75, 53.12, 11)[1].ground_resolution()).resolution == 20
    assert choose_source("SCL", band, scene, tile_grid(-8.75, 53.12, 15)[1].ground_resolution()).resolution == 20
