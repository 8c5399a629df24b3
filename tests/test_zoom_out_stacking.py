"""A zoomed-out view of a remote collection reads its bands' local levels in one stacked warp.

The scene is the bundled T29UNU sample's 60 m B04, B03 and B02 JPEG2000 files served over S3
(moto on 127.0.0.1, ``/vsis3/eodata``). A z10 tile at 53 N (92 m per pixel) is coarser than the
60 m files, so the overview cache copies each band to a local COG; once they are there the tile's
bands are local files on one pixel grid and are warped together (``_read_stack``), as a local
collection's are, while a band whose level is missing is still read from S3 on its own. The
reference is rasterio's warp of each band's JPEG2000 file read from disk, the way rio-tiler warps
(its VRT transform, then a nearest read onto the grid): no eotiler code.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import morecantile
import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform as warp_transform
from rio_tiler.utils import get_vrt_transform

from server.config.models import BandConfig, CollectionConfig
from server.models import Grid, Scene
from server.sources import block_cache, overview_cache
from server.sources.block_cache import BlockCache
from server.sources.dataset_pool import DatasetPool
from server.sources.overview_cache import OverviewCache
from server.sources.scene_reader import SceneData, read_scene
from tests.conftest import EODATA
from tests.support.s3_server import S3Server
from tests.test_block_cache import s3_environment
from tests.test_read_stack import R60, CountingExecutor

# scale 1 and no baseline offset: DN units are the stored values, 0 where invalid
BANDS = {name: BandConfig(asset=f"{name}_{{res}}m", resolutions=[60]) for name in ("B04", "B03", "B02")}
FILES = {name: next(R60.glob(f"*_{name}_60m.jp2")) for name in BANDS}
SCENE = Scene(
    "T29UNU",
    datetime(2022, 10, 5, tzinfo=UTC),
    0.0,
    (-9.0, 52.9, -8.5, 53.3),
    {f"{name}_60m": "s3://eodata/" + str(path.relative_to(EODATA)) for name, path in FILES.items()},
)
COLLECTION = CollectionConfig(
    title="sample", catalogue={"type": "static", "path": str(EODATA)}, data_root="/vsis3/eodata", bands=BANDS
)


@pytest.fixture(scope="module")
def store() -> Iterator[S3Server]:
    server = S3Server(EODATA)
    yield server
    server.stop()


def z10_grid() -> Grid:
    """The z10 WebMercatorQuad tile over the middle of the granule (92 m per pixel at 53 N)."""
    tms = morecantile.tms.get("WebMercatorQuad")
    with rasterio.open(FILES["B04"]) as src:
        b = src.bounds
        crs = src.crs
    lon, lat = warp_transform(crs, "EPSG:4326", [(b.left + b.right) / 2], [(b.bottom + b.top) / 2])
    box = tms.xy_bounds(tms.tile(lon[0], lat[0], 10))
    return Grid((box.left, box.bottom, box.right, box.top), CRS.from_epsg(3857), 256, 256)


def expected(grid: Grid) -> dict[str, np.ma.MaskedArray]:
    """Each band's JPEG2000 file from disk, warped by rasterio onto ``grid`` as rio-tiler does."""
    out = {}
    for name, path in FILES.items():
        with rasterio.open(path) as src:
            transform, width, height = get_vrt_transform(src, grid.bbox, grid.height, grid.width, dst_crs=grid.crs)
            options = {"crs": grid.crs, "transform": transform, "width": width, "height": height}
            with WarpedVRT(src, **options, nodata=0, src_nodata=0, resampling=Resampling.nearest) as vrt:
                data = vrt.read(1, out_shape=(grid.height, grid.width), resampling=Resampling.nearest)
        out[name] = np.ma.MaskedArray(data, mask=data == 0)
    return out


def assert_pixels(data: SceneData | None, grid: Grid) -> None:
    assert data is not None
    valid = np.ones((grid.height, grid.width), dtype=bool)
    for name, reference in expected(grid).items():
        valid &= ~reference.mask
        assert np.array_equal(data.bands[name], reference.filled(0).astype(np.float32)), name
    assert np.array_equal(data.valid, valid) and valid.mean() > 0.3  # the tile reaches past the granule


def read(grid: Grid, overviews: OverviewCache, pool: DatasetPool, store: S3Server) -> tuple[SceneData | None, int]:
    """``read_scene`` over S3 as the server calls it; the read-thread tasks it handed out."""
    with CountingExecutor(4) as executor:
        data = read_scene(
            SCENE, COLLECTION, list(BANDS), grid, units="DN", gdal=s3_environment(store), executor=executor,
            overviews=overviews, pool=pool,
        )  # fmt: skip
    return data, executor.tasks


def stacked_sources(pool: DatasetPool) -> list[list[str]]:
    """The files of every stacked VRT the pool holds."""
    vrts = [key[0] for key in pool._idle if key[0].startswith("<VRTDataset")]
    return [[part.split("</SourceFilename>")[0] for part in vrt.split('shared="0">')[1:]] for vrt in vrts]


def test_local_levels_of_a_remote_collection_are_read_in_one_stacked_warp(
    monkeypatch: pytest.MonkeyPatch, store: S3Server, tmp_path: Path
):
    """Cold, the tile reads S3 and queues a local copy of each band (copies too large to make
    for the request); then the three copies are looked up once each and warped together on the
    calling thread (no read-thread hop, no S3 request), with the pixels of each band's own warp."""
    monkeypatch.setattr(block_cache, "_CURRENT", BlockCache(64 * 1024**2))  # on, as in the server
    monkeypatch.setattr(overview_cache, "COPY_NOW_PIXELS", 100 * 100)
    grid = z10_grid()
    overviews = OverviewCache(tmp_path / "ov", 1 << 30)
    try:
        cold, _ = read(grid, overviews, DatasetPool(8), store)
        assert_pixels(cold, grid)
        assert overviews.drain() and overviews.stats()["builds"] == 3
        levels = sorted(str(path) for path in (tmp_path / "ov").glob("*_60m.tif"))
        assert len(levels) == 3
        pool = DatasetPool(8)
        store.reset()
        hits = overviews.stats()["hits"]
        warm, tasks = read(grid, overviews, pool, store)
        assert store.requests() == []
        assert overviews.stats()["hits"] - hits == 3, "one lookup per band"
        assert tasks == 0, "one stacked read on the calling thread"
        assert [sorted(files) for files in stacked_sources(pool)] == [levels]
        assert_pixels(warm, grid)
        pool.close()
    finally:
        overviews.close()


def test_a_band_without_its_level_is_read_from_s3_on_its_own(
    monkeypatch: pytest.MonkeyPatch, store: S3Server, tmp_path: Path
):
    """B04's copy gone: B03 and B02 are still one stacked warp of their local levels, B04 is
    read from S3 by a task of its own, and the pixels are each band's own warp."""
    monkeypatch.setattr(block_cache, "_CURRENT", None)
    monkeypatch.setattr(overview_cache, "COPY_NOW_PIXELS", 100 * 100)  # B04's copy is left to the background
    grid = z10_grid()
    overviews = OverviewCache(tmp_path / "ov", 1 << 30)
    try:
        read(grid, overviews, DatasetPool(8), store)
        assert overviews.drain()
        remote = "/vsis3/eodata/" + SCENE.assets["B04_60m"].removeprefix("s3://eodata/")
        b04 = overviews._file(remote, 60.0)
        assert b04.exists()
        b04.unlink()
        pool = DatasetPool(8)
        data, tasks = read(grid, overviews, pool, store)
        # over S3 (GDAL's cache of the remote file may answer it without a request)
        assert [key[0] for key in pool._idle if key[0].startswith("/vsi")] == [remote]
        assert tasks == 2, "the remote band and the stacked pair"
        (sources,) = stacked_sources(pool)
        assert len(sources) == 2 and all(source.startswith(str(tmp_path / "ov")) for source in sources)
        assert_pixels(data, grid)
        pool.close()
        assert overviews.drain()  # the missing copy is queued again
    finally:
        overviews.close()


def test_a_zoom_out_before_the_background_copies_copies_small_bands_for_itself(
    monkeypatch: pytest.MonkeyPatch, store: S3Server, tmp_path: Path
):
    """No copy on disk yet (the background ones run at low priority behind the first view): four
    concurrent z10 reads copy each 1830 px band once, the three at once (the first request's
    thread and two copying threads), the other requests waiting for them, and every read is
    then one stacked warp of the copies with each band's own pixels."""
    monkeypatch.setattr(block_cache, "_CURRENT", None)
    grid = z10_grid()
    overviews = OverviewCache(tmp_path / "ov", 1 << 30)
    pools = [DatasetPool(8) for _ in range(4)]
    copiers: list[str] = []
    build = OverviewCache._build

    def watched(self: OverviewCache, *args, **kwargs) -> bool:  # noqa: ANN002, ANN003 - _build's own
        copiers.append(threading.current_thread().name)
        return build(self, *args, **kwargs)

    monkeypatch.setattr(OverviewCache, "_build", watched)
    try:
        with ThreadPoolExecutor(4) as requests:
            results = list(requests.map(lambda pool: read(grid, overviews, pool, store), pools))
        assert overviews.stats()["builds"] == 3, "one copy per band, not one per request"
        assert len(copiers) == 3 and len(set(copiers)) == 3, "the three copies at once, on three threads"
        levels = sorted(str(path) for path in (tmp_path / "ov").glob("*_60m.tif"))
        assert len(levels) == 3
        for (data, tasks), pool in zip(results, pools, strict=True):
            assert tasks == 0
            assert [sorted(files) for files in stacked_sources(pool)] == [levels]
            assert_pixels(data, grid)
            pool.close()
        assert overviews.drain() and overviews.stats()["builds"] == 3  # nothing left to the background
    finally:
        overviews.close()
