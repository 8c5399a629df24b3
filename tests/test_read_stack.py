"""Local bands of one pixel grid are warped together, with the pixels of separate band reads.

The bands are the bundled T29UNU 60 m B04/B03/B02, written as tiled GeoTIFFs with overviews
(what a COG per band looks like); the reference is each band read on its own through
``_read_one`` (rio-tiler ``Reader.part``, the path used when bands cannot be stacked).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.warp import transform_bounds

from server.config.models import BandConfig, CollectionConfig
from server.models import Grid, Scene
from server.sources import block_cache, block_read
from server.sources.block_cache import BlockCache
from server.sources.dataset_pool import DatasetPool
from server.sources.paths import gdal_path
from server.sources.scene_reader import _read_one, _read_stack, read_scene, to_units
from tests.conftest import EODATA
from tests.support.s3_server import S3Server
from tests.test_block_cache import s3_environment

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


# ---- JPEG2000 bands over decoded blocks (block_read.py): one warp for the scene's bands ---------

JP2_BANDS = {
    name: BandConfig(asset=f"{name}_{{res}}m", resolutions=[60], scale=0.0001) for name in ("B04", "B03", "B02")
}


@pytest.fixture(scope="module")
def eodata_store() -> Iterator[S3Server]:
    server = S3Server(EODATA)
    yield server
    server.stop()


def jp2_scene(data_root: str) -> tuple[Scene, CollectionConfig]:
    """The T29UNU sample's 60 m B04, B03 and B02 JPEG2000 files as one scene under ``data_root``."""
    assets = {
        f"{name}_60m": "s3://eodata/" + str(next(R60.glob(f"*_{name}_60m.jp2")).relative_to(EODATA))
        for name in JP2_BANDS
    }
    scene = Scene("T29UNU", datetime(2022, 10, 5, tzinfo=UTC), 0.0, (-9.0, 52.9, -8.5, 53.3), assets)
    collection = CollectionConfig(
        title="sample", catalogue={"type": "static", "path": str(EODATA)}, data_root=data_root, bands=JP2_BANDS
    )
    return scene, collection


@pytest.mark.parametrize("where", ["local", "s3"])
@pytest.mark.parametrize(("crs", "size", "method"), [("EPSG:3857", 256, "nearest"), ("EPSG:4326", 1024, "bilinear")])
def test_jpeg2000_bands_of_a_scene_are_warped_once_over_decoded_blocks(
    monkeypatch: pytest.MonkeyPatch, eodata_store: S3Server, where: str, crs: str, size: int, method: str
):
    """``read_scene`` decodes each band's blocks once and warps the three bands in one read, with
    the pixels of each band read alone by rio-tiler (``_read_one`` without the block cache)."""
    data_root = str(EODATA) if where == "local" else "/vsis3/eodata"
    gdal = s3_environment(eodata_store) if where == "s3" else None
    scene, collection = jp2_scene(data_root)
    path_of = {name: gdal_path(scene.assets[f"{name}_60m"], collection.href_prefix, data_root) for name in JP2_BANDS}
    grid = grid_over(str(next(R60.glob("*_B04_60m.jp2"))), crs, size)
    cache = BlockCache(256 * 1024**2)
    warps: list[int] = []
    real_warp = block_read.warp

    def counted(parts: list[block_read.Assembled], grid: Grid, method: str) -> list[np.ma.MaskedArray]:
        warps.append(len(parts))
        return real_warp(parts, grid, method)

    monkeypatch.setattr(block_read, "warp", counted)
    monkeypatch.setattr(block_cache, "_CURRENT", cache)
    with ThreadPoolExecutor(4) as executor:
        data = read_scene(scene, collection, list(JP2_BANDS), grid, resampling=method, units="DN", gdal=gdal,
                          executor=executor, pool=DatasetPool(8))  # fmt: skip
    assert data is not None
    assert warps == [3], "one warp for the three bands"
    assert cache.decodes > 0
    monkeypatch.setattr(block_cache, "_CURRENT", None)
    valid = np.ones((size, size), dtype=bool)
    for name, band in JP2_BANDS.items():
        with gdal.env(path_of[name]) if gdal is not None else rasterio.Env():
            alone = _read_one(path_of[name], band, grid, method, False)
        assert alone is not None
        valid &= ~np.ma.getmaskarray(alone)
        assert np.array_equal(data.bands[name], to_units(alone, band, scene, "DN"))
    assert np.array_equal(data.valid, valid) and valid.mean() > 0.9


def test_the_stacked_vrt_is_a_pooled_handle_that_threads_share_in_turn(band_files: list[str]):
    """The VRT is kept open in the dataset pool (its opening is a quarter of a 256 px tile's read)
    and lent to one thread at a time: reads from four threads over one pool give the pixels of
    the band reads alone, and the pool holds one VRT besides the three files."""
    pool = DatasetPool(16)
    grids = [grid_over(band_files[0], crs, size) for crs in ("EPSG:3857", "EPSG:4326") for size in (256, 384, 512)]
    expected = {
        id(grid): [_read_one(path, BAND, grid, "nearest", False) for path in band_files] for grid in grids
    }

    def check(grid: Grid) -> bool:
        stacked = _read_stack(band_files, BAND, grid, "nearest", pool, "")
        assert stacked is not None
        return all(
            np.array_equal(np.ma.getmaskarray(a), np.ma.getmaskarray(b)) and np.array_equal(a.filled(0), b.filled(0))
            for a, b in zip(stacked, expected[id(grid)], strict=True)
        )

    with ThreadPoolExecutor(4) as executor:
        assert all(executor.map(check, grids * 4))
    stats = pool.stats()
    assert stats["reused"] > 0
    vrts = [key for key in pool._idle if key[0].startswith("<VRTDataset")]
    assert len(vrts) == 1, "one VRT key for the three files"
    assert stats["idle"] <= 4 * 4, "at most one handle per file and thread"
    pool.close()


class CountingExecutor(ThreadPoolExecutor):
    """Read threads that count the tasks they are given."""

    def __init__(self, workers: int) -> None:
        super().__init__(workers)
        self.tasks = 0

    def submit(self, fn, /, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN201 - Executor's signature
        self.tasks += 1
        return super().submit(fn, *args, **kwargs)


def test_a_tile_of_local_geotiff_bands_is_read_on_the_calling_thread(
    monkeypatch: pytest.MonkeyPatch, band_files: list[str]
):
    """With the decoded-block cache on, bands in files other than JPEG2000 are not handed to the
    read threads to look for blocks (a hop per band): a 256 px tile of three GeoTIFF bands is one
    stacked warp on the calling thread, with the pixels of each band read alone."""
    folder = Path(band_files[0]).parent
    bands = {name: BandConfig(asset=name, resolutions=[60], scale=0.0001) for name in ("B04", "B03", "B02")}
    assets = {name: f"s3://eodata/{name}.tif" for name in bands}
    scene = Scene("T29UNU", datetime(2022, 10, 5, tzinfo=UTC), 0.0, (-9.0, 52.9, -8.5, 53.3), assets)
    collection = CollectionConfig(
        title="sample", catalogue={"type": "static", "path": str(folder)}, data_root=str(folder), bands=bands
    )
    monkeypatch.setattr(block_cache, "_CURRENT", BlockCache(64 * 1024**2))
    grid = grid_over(band_files[0], "EPSG:3857", 256)
    with CountingExecutor(4) as executor:
        data = read_scene(scene, collection, list(bands), grid, units="DN", executor=executor, pool=DatasetPool(8))
    assert executor.tasks == 0
    assert data is not None and data.valid.mean() > 0.9
    for name, path in zip(("B04", "B03", "B02"), band_files, strict=True):
        alone = _read_one(path, bands[name], grid, "nearest", False)
        assert alone is not None
        assert np.array_equal(data.bands[name], to_units(alone, bands[name], scene, "DN"))


@pytest.mark.parametrize(
    ("crs", "reach"),
    [("EPSG:3857", [0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 2]), ("EPSG:4326", [0, 0, 1, 1, 1, 1, 1, 1, 1, 2, 2])],
)
def test_a_warp_that_reads_no_overview_opens_the_files_without_them(
    band_files: list[str], crs: str, reach: list[int]
):
    """Grids from 0.8 to 3 times coarser than the files (overviews at 2x and 4x): while no
    overview is in reach (``reach``: how many are) the VRT opens its sources without overviews,
    otherwise with their own (never as <Overview> elements, which GDAL opens shared between the
    handles of a thread); every grid has the pixels of rio-tiler's read of each band alone. GDAL
    takes the 2x overview from about 1.58 (measured); in EPSG:4326 at 53 N a grid pixel spans
    more file pixels across than down, so levels come in reach sooner."""
    with rasterio.open(band_files[0]) as src:
        b = src.bounds
        centre_x, centre_y = (b.left + b.right) / 2, (b.bottom + b.top) / 2
    hidden = []
    for shrink in (0.8, 1.0, 1.15, 1.3, 1.5, 1.56, 1.6, 1.7, 1.9, 2.3, 3.0):
        half = 256 * 60 * shrink / 2  # a 256 px grid of ``shrink`` file pixels per grid pixel
        box = transform_bounds(src.crs, crs, centre_x - half, centre_y - half, centre_x + half, centre_y + half)
        grid = Grid(box, CRS.from_user_input(crs), 256, 256)
        pool = DatasetPool(8)
        stacked = _read_stack(band_files, BAND, grid, "nearest", pool, "")
        assert stacked is not None
        (vrt,) = [key[0] for key in pool._idle if key[0].startswith("<VRTDataset")]
        assert "<Overview>" not in vrt
        hidden.append(vrt.count('<OOI key="OVERVIEW_LEVEL">NONE</OOI>') == 3)
        for path, array in zip(band_files, stacked, strict=True):
            alone = _read_one(path, BAND, grid, "nearest", False)
            assert array is not None and alone is not None
            assert np.array_equal(np.ma.getmaskarray(array), np.ma.getmaskarray(alone)), f"x{shrink} in {crs}"
            assert np.array_equal(array.filled(0), alone.filled(0)), f"x{shrink} in {crs}"
        pool.close()
    assert hidden == [level == 0 for level in reach]


def test_files_with_different_overviews_are_warped_through_their_own(band_files: list[str], tmp_path: Path):
    """A band file without the others' overviews: the stack hides none (a VRT over such files
    has no overviews: it reads every band at full resolution), and the band without overviews
    has the pixels of its read alone."""
    with rasterio.open(band_files[1]) as src:
        profile, data = src.profile, src.read()
    bare = tmp_path / "B03_no_overviews.tif"
    with rasterio.open(bare, "w", **profile) as dst:
        dst.write(data)
    paths = [str(bare), band_files[0], band_files[2]]
    with rasterio.open(band_files[0]) as src:
        b = src.bounds
        half = 256 * 60 * 2.3 / 2  # shrunk 2.3 times: the 2x overview is in reach
        centre_x, centre_y = (b.left + b.right) / 2, (b.bottom + b.top) / 2
        box = transform_bounds(src.crs, "EPSG:3857", centre_x - half, centre_y - half, centre_x + half, centre_y + half)
    grid = Grid(box, CRS.from_user_input("EPSG:3857"), 256, 256)
    pool = DatasetPool(8)
    stacked = _read_stack(paths, BAND, grid, "nearest", pool, "")
    assert stacked is not None
    (vrt,) = [key[0] for key in pool._idle if key[0].startswith("<VRTDataset")]
    assert "<Overview>" not in vrt and "OVERVIEW_LEVEL" not in vrt
    alone = _read_one(str(bare), BAND, grid, "nearest", False)
    assert stacked[0] is not None and alone is not None
    assert np.array_equal(np.ma.getmaskarray(stacked[0]), np.ma.getmaskarray(alone))
    assert np.array_equal(stacked[0].filled(0), alone.filled(0))
    assert all(array is not None and int(array.count()) > 0.5 * array.size for array in stacked)
    pool.close()
