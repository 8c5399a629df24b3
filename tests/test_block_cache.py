"""The decoded-block cache: same pixels as rio-tiler, one decode per block, shared by processes.

Pixels are compared with rio-tiler's ``Reader.part`` on the same file (the path the cache
replaces), on the real T29UNU bands of the shared sample (10, 20 and 60 m, ESA's 1024, 640 and
192 px code-stream tiles) and on the untouched ESA original the S3 tests use, read over a real
S3 server on loopback. The server tests run ``eotiler serve`` processes against that S3 server
and a STAC API, counting decodes in ``/metrics`` and requests at the S3 server.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import rasterio
import rasterio.io
import rasterio.windows
from rasterio.warp import transform as warp_transform
from rasterio.warp import transform_bounds
from rio_tiler.io import Reader

from server.grids import get_tms, tile_grid
from server.models import Grid
from server.sources import block_read
from server.sources.block_cache import BlockCache, BlockKey
from server.sources.block_read import object_version, read_from_blocks
from server.sources.gdal_env import GdalEnvironment, S3Settings
from server.sources.gdal_native import forget_remote_file
from tests.support.s3_fixtures import s3_config
from tests.support.s3_server import S3Server
from tests.support.serve_process import eotiler_process

SHARED = Path(__file__).resolve().parents[2] / "shared/data"
GRANULE = (
    SHARED / "eodata/Sentinel-2/MSI/L2A/2022/10/05/S2A_MSIL2A_20221005T115411_N0400_R023_T29UNU_20221005T164454.SAFE"
    "/GRANULE/L2A_T29UNU_A038058_20221005T115407/IMG_DATA"
)
REAL_BANDS = {
    "AOT_10m": GRANULE / "R10m/T29UNU_20221005T115411_AOT_10m.jp2",
    "SCL_20m": GRANULE / "R20m/T29UNU_20221005T115411_SCL_20m.jp2",
    "B04_60m": GRANULE / "R60m/T29UNU_20221005T115411_B04_60m.jp2",
}
ORIGINAL = SHARED / "sources/s2_l2a_T29UNU_20221005_N0400/original_jp2/T29UNU_20221005T115411_B04_60m.jp2"
TMS = get_tms("WebMercatorQuad")

pytestmark = pytest.mark.skipif(not ORIGINAL.is_file(), reason="needs the shared real Sentinel-2 files")


def rio_tiler_part(dataset: rasterio.io.DatasetReader, grid: Grid, method: str, nodata: float) -> np.ma.MaskedArray:
    """What ``scene_reader._read_one`` computes without the block cache."""
    options = {"nodata": nodata, "resampling_method": method, "reproject_method": method}
    with Reader(dataset.name, dataset=dataset, options=options) as src:  # type: ignore[arg-type]
        image = src.part(grid.bbox, dst_crs=grid.crs, bounds_crs=grid.crs, width=grid.width, height=grid.height)
    return image.array[0]


def tiles_over(path: str, zoom: int, count: int, seed: int) -> list[Grid]:
    """``count`` tiles of ``zoom`` drawn at random over the file's extent."""
    with rasterio.open(path) as dataset:
        west, south, east, north = transform_bounds(dataset.crs, "EPSG:4326", *dataset.bounds)
    tiles = list(TMS.tiles(west + 0.01, south + 0.01, east - 0.01, north - 0.01, [zoom]))
    picks = np.random.default_rng(seed).choice(len(tiles), min(count, len(tiles)), replace=False)
    return [tile_grid(TMS, zoom, tiles[i].x, tiles[i].y) for i in picks]


def assert_same(got: np.ma.MaskedArray, want: np.ma.MaskedArray) -> None:
    np.testing.assert_array_equal(np.ma.getmaskarray(got), np.ma.getmaskarray(want))
    np.testing.assert_array_equal(got.data, want.data)


@pytest.mark.parametrize("method", ["nearest", "bilinear"])
@pytest.mark.parametrize("band", sorted(REAL_BANDS))
def test_pixels_identical_to_rio_tiler_on_real_bands(band: str, method: str) -> None:
    path = str(REAL_BANDS[band])
    cache = BlockCache(256 * 1024**2)
    served = 0
    for zoom in range(11, 17):
        for grid in tiles_over(path, zoom, 3, seed=zoom):
            with rasterio.open(path) as dataset:
                got = read_from_blocks(dataset, path, grid, method, 0, cache)
                if got is None:  # coarser than the file: GDAL reads resolution levels there
                    continue
                served += 1
                assert_same(got, rio_tiler_part(dataset, grid, method, 0))
    assert served >= 9, "the block path served too few tiles to compare"
    assert cache.decodes > 0
    # a 1024 x 512 px WMS GetMap in lon/lat at 0.8 x the file's resolution, over its centre
    with rasterio.open(path) as dataset:
        west, south, east, north = transform_bounds(dataset.crs, "EPSG:4326", *dataset.bounds)
        step = 0.8 * (east - west) / dataset.width
        cx, cy = (west + east) / 2, (south + north) / 2
        bbox = (cx - 512 * step, cy - 256 * step * 0.6, cx + 512 * step, cy + 256 * step * 0.6)
        grid = Grid(bbox, rasterio.CRS.from_epsg(4326), 1024, 512)
        got = read_from_blocks(dataset, path, grid, method, 0, cache)
        assert got is not None
        assert_same(got, rio_tiler_part(dataset, grid, method, 0))


@pytest.fixture(scope="module")
def originals(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    root = tmp_path_factory.mktemp("originals")
    (root / "originals").mkdir()
    shutil.copy(ORIGINAL, root / "originals" / ORIGINAL.name)
    server = S3Server(root)
    yield server
    server.stop()


def s3_environment(store: S3Server) -> GdalEnvironment:
    from pydantic import SecretStr

    s3 = S3Settings(
        endpoint=store.endpoint,
        https=False,
        region="us-east-1",
        access_key_id=SecretStr("test-key"),
        secret_access_key=SecretStr("test-secret"),
    )
    return GdalEnvironment({"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR"}, s3)


def test_pixels_identical_over_s3_and_second_tile_reads_nothing(originals: S3Server) -> None:
    """The ESA original over /vsis3/: same pixels; a tile inside decoded blocks decodes and reads nothing."""
    path = f"/vsis3/eodata/originals/{ORIGINAL.name}"
    gdal = s3_environment(originals)
    cache = BlockCache(256 * 1024**2)
    grids = tiles_over(str(ORIGINAL), 14, 4, seed=1)
    with gdal.env(path), rasterio.open(path) as dataset:
        assert dataset.block_shapes[0] == (192, 192)
        first = read_from_blocks(dataset, path, grids[0], "bilinear", 0, cache)
        assert first is not None
        assert_same(first, rio_tiler_part(dataset, grids[0], "bilinear", 0))
        decodes = cache.decodes
        assert decodes > 0
        originals.reset()
        again = read_from_blocks(dataset, path, grids[0], "bilinear", 0, cache)
        assert again is not None
        assert cache.decodes == decodes and originals.requests() == []
        assert_same(again, first)
        for grid in grids[1:]:
            got = read_from_blocks(dataset, path, grid, "nearest", 0, cache)
            assert got is not None
            assert_same(got, rio_tiler_part(dataset, grid, "nearest", 0))


def test_concurrent_reads_of_one_block_decode_it_once() -> None:
    cache = BlockCache(64 * 1024**2)
    key = BlockKey("/data/a.jp2", "1-1", 1, 0, 0)
    calls: list[int] = []
    started = threading.Event()

    def decode() -> np.ndarray:
        calls.append(1)
        started.set()
        time.sleep(0.3)  # the second reader arrives while this decode runs
        return np.arange(16, dtype=np.uint16).reshape(4, 4)

    results: list[np.ndarray] = []
    first = threading.Thread(target=lambda: results.append(cache.get(key, decode)))
    first.start()
    started.wait(5)
    second = threading.Thread(target=lambda: results.append(cache.get(key, decode)))
    second.start()
    first.join(10)
    second.join(10)
    assert len(calls) == 1 and cache.waits == 1
    assert len(results) == 2 and all(np.array_equal(r, np.arange(16).reshape(4, 4)) for r in results)


def test_concurrent_tiles_on_real_blocks_decode_each_block_once() -> None:
    """Eight threads, each with its own handle (as the dataset pool lends them), one 1024 px block."""
    path = str(REAL_BANDS["AOT_10m"])
    cache = BlockCache(256 * 1024**2)
    grids = [g for g in tiles_over(path, 16, 40, seed=3)][:8]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(grids))

    def read(grid: Grid) -> None:
        try:
            with rasterio.open(path) as dataset:
                barrier.wait(10)
                assert read_from_blocks(dataset, path, grid, "nearest", 0, cache) is not None
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=read, args=(g,)) for g in grids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    blocks = len(cache._memory)  # noqa: SLF001 - the distinct blocks those tiles touched
    assert cache.decodes == blocks


def _read_in_a_worker(path: str, grids: list[Grid], directory: str, barrier, results) -> None:  # noqa: ANN001 - multiprocessing's Barrier and Queue
    """One worker process's reads: its own cache on the shared directory, started with the other's."""
    cache = BlockCache(256 * 1024**2, Path(directory), 1024**3)
    with rasterio.open(path) as dataset:
        barrier.wait(120)
        arrays = [read_from_blocks(dataset, path, grid, "nearest", 0, cache) for grid in grids]
    results.put((cache.decodes, cache.disk_hits, arrays))


def test_two_worker_processes_decode_a_block_once(tmp_path: Path) -> None:
    """The tiles of a map view land on both workers: two processes asking for the same blocks at
    the same moment decode each block once between them (the other waits and loads its file)."""
    path = str(REAL_BANDS["AOT_10m"])
    grids = tiles_over(path, 15, 3, seed=7)
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    workers = [
        context.Process(target=_read_in_a_worker, args=(path, grids, str(tmp_path / "blocks"), barrier, results))
        for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    try:
        answers = [results.get(timeout=120) for _ in workers]
    finally:
        for worker in workers:
            worker.join(30)
            if worker.is_alive():
                worker.terminate()
    blocks = len(list((tmp_path / "blocks").glob("*.npy")))
    assert blocks >= len(grids)  # zoom 15 tiles of one file, drawn apart: at least a block each
    assert sum(decodes for decodes, _, _ in answers) == blocks
    # each process has every block: decoded itself, or loaded (after waiting, or not) from the other
    assert all(decodes + loaded == blocks for decodes, loaded, _ in answers), answers[0][:2]
    with rasterio.open(path) as dataset:
        for _, _, arrays in answers:
            for grid, got in zip(grids, arrays, strict=True):
                assert got is not None
                assert_same(got, rio_tiler_part(dataset, grid, "nearest", 0))


def test_a_block_the_disk_cannot_keep_leaves_no_lock_file(tmp_path: Path) -> None:
    """Lock files go with their blocks: a block larger than the disk budget is decoded and served,
    and neither it nor its lock file stays in the directory."""
    cache = BlockCache(64 * 1024**2, tmp_path / "blocks", 1024)
    for column in range(5):
        block = cache.get(BlockKey("/data/a.jp2", "v", 1, column, 0), lambda: np.ones((64, 64), np.uint16))
        assert block.shape == (64, 64)
    assert cache.decodes == 5
    assert sorted(p.name for p in (tmp_path / "blocks").iterdir()) == []


class _CountingDataset:
    """A real open dataset whose ``read`` calls are counted (pixels decoded) and slowed down, so
    that two reads started together overlap as two tiles of a map view do."""

    def __init__(self, dataset: rasterio.io.DatasetReader, decoded: list[int], lock: threading.Lock) -> None:
        self._dataset, self._decoded, self._lock = dataset, decoded, lock

    def __getattr__(self, name: str) -> object:
        return getattr(self._dataset, name)

    def read(self, *args: object, window: rasterio.windows.Window, **kwargs: object) -> np.ndarray:
        with self._lock:
            self._decoded.append(int(window.width * window.height))
        time.sleep(0.3)
        return self._dataset.read(*args, window=window, **kwargs)


def test_neighbouring_reads_never_decode_a_shared_block_twice() -> None:
    """Two reads over blocks (0, 1) and (1, 2) of one row, started together: three blocks decoded.

    Each read decodes the blocks it lacks in one read of their rectangle; without claiming them
    together first, both rectangles held block 1 and it was decoded twice.
    """
    path = str(ORIGINAL)
    cache = BlockCache(64 * 1024**2)
    decoded: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(2)
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []
    with rasterio.open(path) as probe:
        size = probe.block_shapes[0][0]
        version = object_version(path)
        expected = probe.read(1, window=rasterio.windows.Window(0, 0, 4 * size, size))
    assert version is not None

    def read(first_block: int) -> None:
        try:
            with rasterio.open(path) as dataset:
                window = (0, size, first_block * size, (first_block + 2) * size)  # rows, then columns
                barrier.wait(10)
                array = block_read._assemble(_CountingDataset(dataset, decoded, lock), path, version, window, cache)  # noqa: SLF001
                results[first_block] = array
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=read, args=(first,)) for first in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert sum(decoded) == 3 * size * size, decoded
    assert cache.decodes == 3
    for first, array in results.items():
        assert np.array_equal(array, expected[:, first * size : (first + 2) * size])


def test_memory_budget_holds_under_16_concurrent_tiles() -> None:
    """A budget of three 1024 px blocks, 16 threads over all nine blocks of the 10 m band."""
    path = str(REAL_BANDS["AOT_10m"])
    budget = 3 * 1024 * 1024 * 2
    cache = BlockCache(budget)
    grids = tiles_over(path, 15, 16, seed=7)
    peak = [0]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], cache.stats()["memory_bytes"])
            time.sleep(0.001)

    results: dict[int, np.ma.MaskedArray | None] = {}

    def read(index: int) -> None:
        with rasterio.open(path) as dataset:
            results[index] = read_from_blocks(dataset, path, grids[index], "bilinear", 0, cache)

    watcher = threading.Thread(target=watch)
    watcher.start()
    threads = [threading.Thread(target=read, args=(i,)) for i in range(len(grids))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    done.set()
    watcher.join(5)
    assert 0 < peak[0] <= budget and cache.evicted > 0
    with rasterio.open(path) as dataset:
        for index, grid in enumerate(grids):
            got = results[index]
            assert got is not None
            assert_same(got, rio_tiler_part(dataset, grid, "bilinear", 0))


def test_memory_and_disk_budgets_evict_least_recently_used(tmp_path: Path) -> None:
    block = 1024 * 1024  # bytes of one (512, 1024) uint16 block
    cache = BlockCache(3 * block, tmp_path / "blocks", 4 * block + 4 * 256)
    for i in range(8):
        cache.get(BlockKey("/data/a.jp2", "v", 1, i, 0), lambda i=i: np.full((512, 1024), i, dtype=np.uint16))
        time.sleep(0.01)  # distinct modification times order the files
    assert cache.stats()["memory_bytes"] <= 3 * block
    assert [key.column for key in cache._memory] == [5, 6, 7]  # noqa: SLF001 - the LRU order
    on_disk = sorted(tmp_path.joinpath("blocks").glob("*.npy"))
    assert sum(p.stat().st_size for p in on_disk) <= 4 * block + 4 * 256
    assert {int(p.stem.split("_")[2]) for p in on_disk} == {4, 5, 6, 7}
    # a block evicted from memory but still on disk comes back without a decode
    fresh = BlockCache(3 * block, tmp_path / "blocks", 4 * block + 4 * 256)
    value = fresh.get(BlockKey("/data/a.jp2", "v", 1, 4, 0), lambda: pytest.fail("decoded again"))
    assert int(value[0, 0]) == 4 and fresh.disk_hits == 1


def test_a_changed_file_is_not_served_from_old_blocks(tmp_path: Path) -> None:
    path = tmp_path / "band.jp2"
    shutil.copy(REAL_BANDS["AOT_10m"], path)
    grid = tiles_over(str(path), 15, 1, seed=5)[0]
    cache = BlockCache(256 * 1024**2, tmp_path / "blocks", 1024**3)
    with rasterio.open(path) as dataset:
        before = read_from_blocks(dataset, str(path), grid, "nearest", 0, cache)
    assert before is not None
    with rasterio.open(REAL_BANDS["AOT_10m"]) as src:
        profile = {**src.profile, "driver": "JP2OpenJPEG"}
        data = src.read(1) + 7
    os.unlink(path)
    with rasterio.open(path, "w", **profile, QUALITY=100, REVERSIBLE="YES", BLOCKXSIZE=1024, BLOCKYSIZE=1024) as dst:
        dst.write(data, 1)
    with rasterio.open(path) as dataset:
        after = read_from_blocks(dataset, str(path), grid, "nearest", 0, cache)
        assert after is not None
        assert_same(after, rio_tiler_part(dataset, grid, "nearest", 0))
    valid = ~np.ma.getmaskarray(before)
    assert valid.any() and np.array_equal(after.data[valid], before.data[valid] + 7)


def test_a_changed_s3_object_is_not_served_from_old_blocks(originals: S3Server, tmp_path: Path) -> None:
    """Same key, new object (another band): a process that opens it anew reads the new pixels."""
    path = f"/vsis3/eodata/originals/{ORIGINAL.name}"
    gdal = s3_environment(originals)
    cache = BlockCache(256 * 1024**2, tmp_path / "blocks", 1024**3)
    grid = tiles_over(str(ORIGINAL), 14, 1, seed=11)[0]
    client = originals.client()
    other = ORIGINAL.with_name(ORIGINAL.name.replace("B04", "B8A"))
    try:
        with gdal.env(path):
            with rasterio.open(path) as dataset:
                version = object_version(path)
                before = read_from_blocks(dataset, path, grid, "nearest", 0, cache)
            assert version is not None and not version.endswith("-0")  # size and Last-Modified known
            time.sleep(1.1)  # Last-Modified counts seconds
            client.upload_file(str(other), "eodata", f"originals/{ORIGINAL.name}")
            forget_remote_file(path)  # what a new process starts with
            with rasterio.open(path) as dataset:
                assert object_version(path) != version
                after = read_from_blocks(dataset, path, grid, "nearest", 0, cache)
                assert after is not None and before is not None
                assert_same(after, rio_tiler_part(dataset, grid, "nearest", 0))
            assert not np.array_equal(after.data, before.data)
    finally:
        client.upload_file(str(ORIGINAL), "eodata", f"originals/{ORIGINAL.name}")
        forget_remote_file(path)


# ---- through real server processes ------------------------------------------------------------


def metric(url: str, name: str) -> float:
    """Sum of a metric's samples in ``/metrics``."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    lines = [line for line in text.splitlines() if line.startswith((name + "{", name + " "))]
    return sum(float(line.split()[-1]) for line in lines)


@pytest.fixture(scope="module")
def server_env(tmp_path_factory: pytest.TempPathFactory, s3: S3Server, stac) -> dict:  # noqa: ANN001 - StacApi
    config = s3_config(tmp_path_factory.mktemp("block-config"), stac.url)
    root = tmp_path_factory.mktemp("block-caches")
    env = {
        **os.environ,
        **s3.env(),
        "EOTILER_CONFIG": str(config),
        "EOTILER_CACHE_MEMORY_BYTES": "0",
        "EOTILER_OVERVIEW_CACHE_BYTES": "0",
        "EOTILER_JP2_INDEX_DIR": str(root / "jp2-index"),
        "EOTILER_BLOCK_CACHE_DIR": str(root / "blocks"),
    }
    return {"config": config, "env": env, "blocks": root / "blocks"}


def fixture_tile(zoom: int, x: float, y: float) -> str:
    """``z/x/y`` of the tile over a UTM 29N point of the request fixture."""
    lon, lat = warp_transform("EPSG:32629", "EPSG:4326", [x], [y])
    tile = TMS.tile(lon[0], lat[0], zoom)
    return f"{tile.z}/{tile.x}/{tile.y}"


def test_server_decodes_a_block_once_and_a_fresh_process_reuses_it(server_env: dict, s3: S3Server, tree: dict) -> None:
    """Two z15 tiles inside the first 1024 px block of the 10 m JPEG2000; then a new server process."""
    product = tree["requests"]["jp2"][0]
    day = f"{product[11:15]}-{product[15:17]}-{product[17:19]}"
    # block (0, 0) of the 2048 px band spans x 499980-510220 and y 5889800-5900040
    tile_a, tile_b = fixture_tile(15, 503000, 5895000), fixture_tile(15, 505500, 5895000)
    assert tile_a != tile_b
    tiles = f"{{url}}/layers/REQ_B04/tiles/WebMercatorQuad/{{tile}}.tif?time={day}"
    with eotiler_process(server_env["config"], env=server_env["env"]) as (url, _):
        first = httpx.get(tiles.format(url=url, tile=tile_a), timeout=60)
        assert first.status_code == 200, first.text
        decodes = metric(url, "eotiler_block_decodes_total")
        assert decodes >= 1
        s3.reset()
        second = httpx.get(tiles.format(url=url, tile=tile_b), timeout=60)
        assert second.status_code == 200 and second.content != first.content
        assert metric(url, "eotiler_block_decodes_total") == decodes
        assert metric(url, "eotiler_block_cache_total") >= 1
        assert s3.requests() == []
    assert list(server_env["blocks"].glob("*.npy"))
    s3.reset()
    with eotiler_process(server_env["config"], env=server_env["env"]) as (url, _):
        again = httpx.get(tiles.format(url=url, tile=tile_a), timeout=60)
        assert again.status_code == 200 and again.content == first.content
        assert metric(url, "eotiler_block_decodes_total") == 0
        log = s3.requests()
    # The new process opens the file (one GET of its header) and reads no tile-part of the block;
    # the other requests are the gateway's own to the store as it starts (no object named).
    reads = [r for r in log if r["path"].endswith(".jp2")]
    assert [(r["method"], r["range"]) for r in reads] == [("GET", "bytes=0-65535")], log


def test_in_memory_dataset_without_epsg_code_is_a_copy_with_the_same_georeference() -> None:
    """The zero-copy MEM dataset needs an EPSG code; any other CRS goes through a GeoTIFF in memory."""
    from affine import Affine

    from server.sources.block_read import _in_memory

    array = np.arange(12, dtype=np.uint16).reshape(3, 4)
    transform = Affine(10, 0, 500000, 0, -10, 5900000)
    for crs in (rasterio.CRS.from_epsg(32629), rasterio.CRS.from_proj4("+proj=utm +zone=29 +ellps=intl +units=m")):
        with _in_memory(array, transform, crs) as dataset:
            assert dataset.crs == crs and dataset.transform == transform
            np.testing.assert_array_equal(dataset.read(1), array)


# ---- several bands of one pixel grid, one warp ----------------------------------------------------

R60 = GRANULE / "R60m"


@pytest.fixture(scope="module")
def holed_bands(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The real 60 m B04, B03 and B02 as lossless JPEG2000 on one grid; B03 and B02 with nodata
    holes that overlap in part, so a band's nodata is not the others', and one hole in all three."""
    folder = tmp_path_factory.mktemp("holed")
    holes = {"B04": None, "B03": (150, 260), "B02": (210, 320)}  # of the 512 px sample
    paths = []
    for name, hole in holes.items():
        with rasterio.open(R60 / f"T29UNU_20221005T115411_{name}_60m.jp2") as src:
            profile = {**src.profile, "driver": "JP2OpenJPEG"}
            data = src.read(1)
        if hole is not None:
            data[hole[0] : hole[1], hole[0] : hole[1]] = 0
        data[400:440, 380:470] = 0  # every band's
        target = folder / f"{name}.jp2"
        options = {"QUALITY": 100, "REVERSIBLE": "YES", "BLOCKXSIZE": 192, "BLOCKYSIZE": 192}
        with rasterio.open(target, "w", **profile, **options) as dst:
            dst.write(data, 1)
        paths.append(str(target))
    return paths


def grids_over_holes(path: str) -> list[Grid]:
    """Tiles z12-z16 across the holes' edges, random z14 tiles, and a 1024 x 512 px lon/lat map."""
    points = ((12, 150), (13, 210), (14, 260), (15, 320), (16, 150), (14, 400), (15, 420), (16, 430), (13, 440))
    with rasterio.open(path) as dataset:
        grids = []
        for zoom, pixel in points:
            x, y = dataset.transform * (pixel, pixel)
            lon, lat = warp_transform(dataset.crs, "EPSG:4326", [x], [y])
            tile = TMS.tile(lon[0], lat[0], zoom)
            grids.append(tile_grid(TMS, tile.z, tile.x, tile.y))
        west, south, east, north = transform_bounds(dataset.crs, "EPSG:4326", *dataset.bounds)
        step = 0.3 * (east - west) / dataset.width
    cx, cy = west + (east - west) * 0.45, south + (north - south) * 0.5
    bbox = (cx - 512 * step, cy - 256 * step * 0.6, cx + 512 * step, cy + 256 * step * 0.6)
    return [*grids, *tiles_over(path, 14, 3, seed=21), Grid(bbox, rasterio.CRS.from_epsg(4326), 1024, 512)]


@pytest.mark.parametrize("method", ["nearest", "bilinear"])
def test_bands_warped_together_have_each_band_alone_pixels(holed_bands: list[str], method: str) -> None:
    """One warp of three bands' blocks gives, band by band, rio-tiler's pixels of that band alone;
    bands whose nodata pixels differ under the grid are not warped together."""
    from server.sources.block_read import assemble, warp

    cache = BlockCache(256 * 1024**2)
    stacked_with_nodata = apart = 0
    for grid in grids_over_holes(holed_bands[0]):
        datasets = [rasterio.open(path) for path in holed_bands]
        try:
            pairs = zip(datasets, holed_bands, strict=True)
            parts = [assemble(dataset, path, grid, 0, cache) for dataset, path in pairs]
            assert all(part is not None for part in parts), grid
            first = parts[0]
            assert first is not None
            if not all(first.warps_with(part) for part in parts[1:]):  # type: ignore[arg-type]
                apart += 1
                continue
            together = warp(parts, grid, method)  # type: ignore[arg-type]
            assert len(together) == 3
            for got, dataset in zip(together, datasets, strict=True):
                assert got.shape == (grid.height, grid.width)
                assert_same(got, rio_tiler_part(dataset, grid, method, 0))
            stacked_with_nodata += bool(np.ma.getmaskarray(together[0]).any())  # the hole of all three
        finally:
            for dataset in datasets:
                dataset.close()
    assert apart >= 4, "the grids across one band's hole are warped band by band"
    assert stacked_with_nodata >= 2, "some grids stacked cross the hole of all three bands"
