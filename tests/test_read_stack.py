"""Local bands of one pixel grid are warped together, with the pixels of separate band reads.

The bands are the bundled T29UNU 60 m B04/B03/B02, written as tiled GeoTIFFs with overviews
(what a COG per band looks like); the reference is each band read on its own through
``_read_one`` (rio-tiler ``Reader.part``, the path used when bands cannot be stacked).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.warp import transform_bounds

from server.config.models import BandConfig
from server.models import Grid
from server.sources.scene_reader import _read_one, _read_stack
from tests.conftest import EODATA

R60 = next((EODATA / "Sentinel-2/MSI").glob("L2A*/2022/10/05/*T29UNU*.SAFE/GRANULE/*/IMG_DATA/R60m"))
BAND = BandConfig(asset="B04", resolutions=[60], scale=0.0001)


@pytest.fixture(scope="module")
def band_files(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    folder = tmp_path_factory.mktemp("stack")
    paths = []
    for name in ("B04", "B03", "B02"):
        with rasterio.open(next(R60.glob(f"*_{name}_60m.jp2"))) as src:
            profile = {**src.profile, "driver": "GTiff", "tiled": True, "blockxsize": 256, "blockysize": 256}
            target = folder / f"{name}.tif"
            with rasterio.open(target, "w", **profile) as dst:
                dst.write(src.read())
                dst.build_overviews([2, 4], Resampling.nearest)
        paths.append(str(target))
    return paths


def grid_over(path: str, crs: str, size: int) -> Grid:
    """A ``size`` px square grid in ``crs`` over the middle half of the file."""
    with rasterio.open(path) as src:
        b = src.bounds
        dx, dy = (b.right - b.left) / 4, (b.top - b.bottom) / 4
        box = transform_bounds(src.crs, crs, b.left + dx, b.bottom + dy, b.right - dx, b.top - dy)
    return Grid(box, CRS.from_user_input(crs), size, size)


@pytest.mark.parametrize(("crs", "size"), [("EPSG:3857", 1024), ("EPSG:4326", 1024), ("EPSG:32629", 512)])
def test_a_grid_is_read_in_one_stacked_warp_with_the_band_reads_pixels(band_files: list[str], crs: str, size: int):
    grid = grid_over(band_files[0], crs, size)
    stacked = _read_stack(band_files, BAND, grid, "nearest", None, "")
    assert stacked is not None, f"{size} x {size} px local bands in {crs} are stacked"
    for path, array in zip(band_files, stacked, strict=True):
        alone = _read_one(path, BAND, grid, "nearest", False)
        assert array is not None and alone is not None
        assert array.shape == (size, size)
        assert np.array_equal(np.ma.getmaskarray(array), np.ma.getmaskarray(alone))
        assert np.array_equal(array.filled(0), alone.filled(0))
        assert int(array.count()) > 0.9 * array.size  # the grid is inside the data


def test_grids_beyond_the_limits_read_their_bands_separately(band_files: list[str]):
    """Above 1024 px, or above 512 px in the files' own CRS (no warp to share), bands are read apart."""
    assert _read_stack(band_files, BAND, grid_over(band_files[0], "EPSG:3857", 1100), "nearest", None, "") is None
    assert _read_stack(band_files, BAND, grid_over(band_files[0], "EPSG:32629", 1024), "nearest", None, "") is None


def test_files_of_different_grids_are_not_stacked(band_files: list[str], tmp_path: Path):
    with rasterio.open(band_files[0]) as src:
        profile = {**src.profile, "width": src.width // 2, "height": src.height // 2}
        data = src.read(1)[: src.height // 2, : src.width // 2]
    other = tmp_path / "half.tif"
    with rasterio.open(other, "w", **profile) as dst:
        dst.write(data, 1)
    grid = grid_over(band_files[0], "EPSG:3857", 256)
    assert _read_stack([band_files[0], str(other)], BAND, grid, "nearest", None, "") is None
