"""The float work between read and encode: exact values, and no needless full-size copies.

A 1024 px map is 4 MB per float32 band and pass, so every scratch array costs time and
resident memory. Values are checked against an independent numpy computation of the
formula; the copies are counted with tracemalloc (numpy reports its buffers to it), as a
bound on the peak memory of one call relative to the size of its output.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from datetime import datetime

import numpy as np
import rasterio
from rasterio.io import MemoryFile
from rasterio.transform import from_bounds

from server.config.models import BandConfig
from server.evalscript.contract import OutputSpec, SampleType
from server.evalscript.helpers import color_blend, value_interpolate
from server.evalscript.postprocess import to_sample_type
from server.models import Grid, ImageFormat, Scene
from server.render.encode import GEOTIFF_ZLEVEL, _with_alpha, encode
from server.render.mosaic import Mosaic
from server.sources.scene_reader import to_units

SIZE = 512
BASELINE_4 = Scene("S2B_MSIL2A_20230601T115409_N0509_R023_T29UNU_20230601T142047", datetime(2023, 6, 1), 0.0,
                   (0.0, 0.0, 1.0, 1.0), {})  # fmt: skip


def peak_bytes(call: Callable[[], object]) -> int:
    """Peak traced memory during ``call`` above what was allocated before it."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        call()
        return tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


def dn_band() -> np.ma.MaskedArray:
    """uint16 DNs 0..19,999 with the no-data value 0 masked, as rio-tiler returns a band."""
    rng = np.random.default_rng(18)
    data = rng.integers(0, 20000, (SIZE, SIZE), dtype=np.uint16)
    data[:40] = 0
    return np.ma.MaskedArray(data, mask=data == 0)


def test_to_units_is_the_reflectance_formula_in_float32_without_scratch_copies():
    raw = dn_band()
    band = BandConfig(asset="B04", scale=0.0001, offset_rule="s2-baseline")
    value = to_units(raw, band, BASELINE_4, "REFLECTANCE")
    # independent: (DN - 1000) x 0.0001 in float32, clamped at 0, 0 where masked
    expected = np.maximum((raw.data.astype(np.float32) - np.float32(1000)) * np.float32(0.0001), np.float32(0))
    expected[raw.mask] = 0
    assert value.dtype == np.float32
    assert value.tobytes() == expected.tobytes()
    dn = to_units(raw, band, BASELINE_4, "DN")
    assert np.array_equal(dn, np.where(raw.mask, 0, np.maximum(expected / np.float32(0.0001), 0)).astype(np.float32))
    # One float32 result and nothing else of its size (the formula step by step made 3).
    assert peak_bytes(lambda: to_units(raw, band, BASELINE_4, "REFLECTANCE")) < 1.5 * value.nbytes


def test_to_units_linear_power_and_categorical_values():
    raw = np.ma.MaskedArray(np.array([[0, 3, 300, 65535]], np.uint16), mask=[[True, False, False, False]])
    radar = BandConfig(asset="VV", power_scale=1e-4)
    assert to_units(raw, radar, BASELINE_4, "DEFAULT").tolist() == [
        [0.0, np.float32(9e-4), np.float32(9.0), np.float32(65535.0**2 * 1e-4)]
    ]
    scl = BandConfig(asset="SCL", categorical=True, dtype="uint8")
    assert to_units(raw, scl, BASELINE_4, "REFLECTANCE").tolist() == [[0.0, 3.0, 300.0, 65535.0]]


def test_a_scene_covering_the_grid_becomes_the_mosaic_without_a_copy():
    mosaic = Mosaic.empty((SIZE, SIZE), ("B04",))
    b04 = np.full((SIZE, SIZE), 0.25, np.float32)
    full = mosaic.add(np.ones((SIZE, SIZE), bool), {"B04": b04}, BASELINE_4)
    assert full and mosaic.scenes == [BASELINE_4]
    assert mosaic.bands["B04"] is b04
    assert (mosaic.scene_index == 0).all() and mosaic.filled.all()


def test_later_scenes_fill_only_the_pixels_still_empty():
    mosaic = Mosaic.empty((4, 4), ("B04",))
    first_valid = np.zeros((4, 4), bool)
    first_valid[:2] = True
    first = np.arange(16, dtype=np.float32).reshape(4, 4)
    assert not mosaic.add(first_valid, {"B04": first}, BASELINE_4)
    second = np.full((4, 4), 100, np.float32)
    second_valid = np.ones((4, 4), bool)
    second_valid[3, 3] = False
    assert not mosaic.add(second_valid, {"B04": second}, BASELINE_4)
    expected = np.where(first_valid, first, np.where(second_valid, 100, 0))
    assert np.array_equal(mosaic.bands["B04"], expected)
    assert mosaic.scene_index.tolist() == [[0] * 4, [0] * 4, [1] * 4, [1, 1, 1, -1]]
    assert first.tolist() == np.arange(16).reshape(4, 4).tolist()  # the scene's own array is untouched


def test_auto_sample_type_values_and_one_scratch_array():
    values = np.full((4, SIZE, SIZE), 0.5, np.float32)
    values[0, 0, :6] = [np.nan, np.inf, -np.inf, 1.3, -0.2, 0.5 / 255]
    values[1, 0, :2] = [2.5 / 255, 1.5 / 255]  # rounding half to even: 2 and 2
    values[3, 1, :3] = [0.0, np.nan, 1.0]  # alpha: transparent, transparent, opaque
    mask = np.ones((SIZE, SIZE), bool)
    out = to_sample_type(values, OutputSpec(4, SampleType.AUTO), mask)
    assert out.dtype == np.uint8 and out.shape == (3, SIZE, SIZE)
    assert out.data[0, 0, :6].tolist() == [0, 255, 0, 255, 0, 0]
    assert out.data[1, 0, :2].tolist() == [2, 2]
    assert np.ma.getmaskarray(out)[:, 1, :3].tolist() == [[True, True, False]] * 3
    assert int(out.data[2, 5, 5]) == 128
    # the float32 scratch of the three colour bands plus the uint8 result and one boolean pass
    pixels = SIZE * SIZE
    assert peak_bytes(lambda: to_sample_type(values, OutputSpec(4, SampleType.AUTO), mask)) < 24 * pixels


def test_geotiff_is_deflated_at_the_fast_level_with_the_same_pixels():
    rng = np.random.default_rng(5)
    data = rng.normal(0.2, 0.05, (1, 256, 256)).astype(np.float32)
    grid = Grid((500000.0, 5800000.0, 502560.0, 5802560.0), "EPSG:32629", 256, 256)
    content = encode(np.ma.MaskedArray(data), grid, ImageFormat.GTIFF, coverage=True)
    with MemoryFile(content) as memfile, memfile.open() as dataset:
        assert dataset.profile["compress"] == "deflate"
        assert np.array_equal(dataset.read(), data)
    # the same pixels written by GDAL at that deflate level: the same file size
    profile = {
        "driver": "GTiff", "width": 256, "height": 256, "count": 1, "dtype": "float32", "crs": grid.crs,
        "transform": from_bounds(*grid.bbox, 256, 256), "nodata": float("nan"), "tiled": True,
        "blockxsize": 256, "blockysize": 256, "compress": "deflate", "zlevel": GEOTIFF_ZLEVEL,
    }  # fmt: skip
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), MemoryFile() as reference:
        with reference.open(**profile) as dst:
            dst.write(data)
        assert len(content) == len(reference.read())
    assert GEOTIFF_ZLEVEL == 1


def test_colour_ramps_give_np_interp_bits_per_channel():
    """valueInterpolate / colorBlend on a large array: np.interp's values, bit for bit, per channel,
    at the stops, just beside them, outside them, for infinities and NaN (the last colour)."""
    rng = np.random.default_rng(7)
    for _ in range(20):
        xs = np.unique(np.round(rng.uniform(-2, 2, int(rng.integers(2, 10))), 2))
        if len(xs) < 2:
            continue
        colours = rng.integers(0, 256, (len(xs), 3)) / 255
        edges = [xs, np.nextafter(xs, 9), np.nextafter(xs, -9), [np.inf, -np.inf, 0.0, -0.0, 5.0, -5.0]]
        values = np.concatenate([rng.uniform(-3, 3, 8192), *edges])
        value = values[: len(values) // 2 * 2].reshape(2, -1)
        value[0, :3] = np.nan
        ramp = color_blend(value, xs.tolist(), colours.tolist())
        safe = np.where(np.isnan(value), xs[-1], value)
        for c in range(3):
            assert ramp[c].tobytes() == np.interp(safe, xs, colours[:, c]).tobytes()
        scalar = value_interpolate(value, xs.tolist(), colours[:, 0].tolist())
        assert scalar.shape == value.shape
        assert scalar.tobytes() == np.interp(safe, xs, colours[:, 0]).tobytes()


def test_png_and_webp_pixels_are_interleaved_with_alpha_without_wide_temporaries():
    rng = np.random.default_rng(9)
    data = rng.integers(0, 256, (3, SIZE, SIZE), dtype=np.uint8)
    mask = np.zeros((3, SIZE, SIZE), bool)
    mask[:, :10] = True  # transparent rows
    mask[0, 20] = True  # one band masked: still drawn
    image = np.ma.MaskedArray(data, mask=mask)
    pixels = _with_alpha(image, np.dtype(np.uint8))
    alpha = np.where(mask.all(axis=0), 0, 255).astype(np.uint8)
    assert np.array_equal(pixels, np.dstack([data[0], data[1], data[2], alpha]))
    # the (h, w, 4) result, the validity mask and a uint8 alpha; no int64 or moved-axes copy
    assert peak_bytes(lambda: _with_alpha(image, np.dtype(np.uint8))) < 7 * SIZE * SIZE
