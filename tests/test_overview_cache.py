"""The overview cache: zoomed-out JPEG2000 reads become local COGs, and S3 is not asked again."""

from __future__ import annotations

import os
import time
from pathlib import Path

import morecantile
import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.warp import reproject
from rasterio.warp import transform as warp_transform

from server.catalog.layers import LayerRegistry
from server.config import load_config
from server.models import Grid, ImageFormat, RenderRequest, parse_time
from server.pipeline import Pipeline
from tests.support.s3_fixtures import s3_settings
from tests.support.s3_server import S3Server

WEBMERCATOR = morecantile.tms.get("WebMercatorQuad")


def tile_grid(zoom: int) -> Grid:
    lon, lat = warp_transform("EPSG:32629", "EPSG:4326", [505000], [5893000])
    b = WEBMERCATOR.xy_bounds(WEBMERCATOR.tile(lon[0], lat[0], zoom))
    return Grid((b.left, b.bottom, b.right, b.top), CRS.from_epsg(3857), 256, 256)


def make_pipeline(config: Path, s3: S3Server, directory: Path, max_bytes: int = 1 << 30) -> Pipeline:
    settings = s3_settings(config, s3, overview_cache_dir=directory, overview_cache_bytes=max_bytes)
    return Pipeline(LayerRegistry(load_config(config), settings), settings)


def render(pipe: Pipeline, product: str, zoom: int) -> np.ma.MaskedArray:
    day = f"{product[11:15]}-{product[15:17]}-{product[17:19]}"
    req = RenderRequest("REQ_B04", tile_grid(zoom), ImageFormat.GTIFF, time=parse_time(day))
    rendered = pipe.render_data(req)
    assert [s.id for s in rendered.mosaic.scenes] == [product]
    return np.ma.MaskedArray(rendered.values[0], mask=~rendered.mosaic.filled)


def expected_z10(tree: dict, product: str) -> np.ndarray:
    """Independent: the band's JPEG2000 resolution level at 80 m (read by rasterio from the local
    file), warped with nearest neighbour. A resolution level is the wavelet low-pass, not a box
    average: that is what any JPEG2000 reader shows when zoomed out."""
    path = next((tree["root"] / "eodata").rglob(f"*{product[11:19]}T115411_B04_10m.jp2"))
    with rasterio.open(path) as src:
        coarse = src.read(1, out_shape=(256, 256)).astype(np.float64)
        transform, crs = src.transform, src.crs
    grid = tile_grid(10)
    out = np.zeros((256, 256))
    reproject(
        coarse,
        out,
        src_transform=transform * transform.scale(8, 8),
        src_crs=crs,
        dst_transform=rasterio.transform.from_bounds(*grid.bbox, 256, 256),
        dst_crs=grid.crs,
        resampling=Resampling.nearest,
        src_nodata=0,
        dst_nodata=0,
    )
    return np.where(out > 0, np.maximum(np.rint(out) - 1000, 0), np.nan)


def test_warm_overview_needs_no_s3_request(config: Path, s3: S3Server, tree: dict, tmp_path: Path):
    product = tree["requests"]["jp2"][0]
    crashed = tmp_path / "ov" / "0123abcd_80m.4242.1.tmp"  # a build that died an hour ago
    crashed.parent.mkdir()
    crashed.write_bytes(b"x" * 1000)
    os.utime(crashed, (time.time() - 3600,) * 2)
    pipe = make_pipeline(config, s3, tmp_path / "ov")
    try:
        s3.reset()
        render(pipe, product, 10)  # cold: reads the source, queues the level
        assert s3.requests()
        assert pipe.overviews is not None and pipe.overviews.drain()
        assert pipe.overviews.stats()["builds"] == 1  # built from S3 once, off the request
        assert not crashed.exists()  # removed when the new level was counted in
        s3.reset()
        got = render(pipe, product, 10).filled(np.nan)
        assert s3.requests() == []
        expected = expected_z10(tree, product)
        both = ~np.isnan(got) & ~np.isnan(expected)
        assert both.mean() > 0.3 and np.array_equal(np.isnan(got), np.isnan(expected))
        assert (np.abs(got[both] - expected[both]) <= 1).mean() > 0.99
        s3.reset()
        again = render(pipe, product, 10)
        coarser = render(pipe, product, 9)  # served by the same level (the COG has overviews)
        assert s3.requests() == []
        assert np.array_equal(again.filled(np.nan), got, equal_nan=True)
        assert coarser.count() > 0 and pipe.overviews.stats()["builds"] == 1
    finally:
        pipe.close()
    other = make_pipeline(config, s3, tmp_path / "ov")  # another worker sharing the directory
    try:
        s3.reset()
        assert np.array_equal(render(other, product, 10).filled(np.nan), got, equal_nan=True)
        assert s3.requests() == []
    finally:
        other.close()


def test_native_zoom_reads_the_source(config: Path, s3: S3Server, tree: dict, tmp_path: Path):
    pipe = make_pipeline(config, s3, tmp_path / "ov")
    try:
        render(pipe, tree["requests"]["jp2"][1], 14)
        assert pipe.overviews is not None and pipe.overviews.stats()["files"] == 0
    finally:
        pipe.close()


def test_unusable_directory_never_fails_the_request(config: Path, s3: S3Server, tree: dict, tmp_path: Path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the cache directory should be")
    pipe = make_pipeline(config, s3, blocker)
    try:
        product = tree["requests"]["jp2"][2]
        assert pipe.overviews is not None
        assert render(pipe, product, 10).count() > 0
        assert pipe.overviews.drain()
        assert render(pipe, product, 10).count() > 0
        assert pipe.overviews.drain()
        stats = pipe.overviews.stats() if pipe.overviews else {}
        assert stats["skipped"] == 2 and stats["files"] == 0
    finally:
        pipe.close()


def test_disk_bound_evicts_least_recently_used(config: Path, s3: S3Server, tree: dict, tmp_path: Path):
    one_level = 256 * 256 * 2  # uint16 pixels of one 80 m level, uncompressed: a compressed file fits
    pipe = make_pipeline(config, s3, tmp_path / "ov", max_bytes=one_level)
    try:
        for product in tree["requests"]["jp2"][3:5]:
            assert render(pipe, product, 10).count() > 0
            assert pipe.overviews is not None and pipe.overviews.drain()
        files = list((tmp_path / "ov").glob("*.tif"))
        assert len(files) == 1 and files[0].stat().st_size <= one_level
        tiny = make_pipeline(config, s3, tmp_path / "tiny", max_bytes=1000)  # no level fits: skip, still serve
        try:
            assert render(tiny, tree["requests"]["jp2"][5], 10).count() > 0
            assert tiny.overviews is not None and tiny.overviews.drain()
            assert list((tmp_path / "tiny").glob("*")) == []
        finally:
            tiny.close()
    finally:
        pipe.close()


def test_zoom_between_one_and_two_times_the_file_is_copied_in_the_background(
    config: Path, s3: S3Server, tree: dict, tmp_path: Path
):
    """z12 at 53 N (23 m per pixel) reads the 20 m file: it is copied whole, once, off the request,
    and a new process then serves that zoom without a single S3 request."""
    product = tree["requests"]["levels"][0]  # B04 at 10, 20 and 60 m
    pipe = make_pipeline(config, s3, tmp_path / "ov")
    try:
        s3.reset()
        first = render(pipe, product, 12)
        assert s3.requests()
        assert pipe.overviews is not None and pipe.overviews.drain()  # the copy runs on the cache's thread
        # the 20 m band copied for this zoom, and the 60 m band prefetched for the views zoomed out of it
        assert pipe.overviews.stats()["builds"] == 2 and pipe.overviews.stats()["files"] == 2
    finally:
        pipe.close()
    other = make_pipeline(config, s3, tmp_path / "ov")
    try:
        s3.reset()
        again = render(other, product, 12)
        assert s3.requests() == []
        assert first.count() > 1000
        assert np.array_equal(again.filled(np.nan), first.filled(np.nan), equal_nan=True)
    finally:
        other.close()


def test_a_first_view_prefetches_the_coarsest_file_so_zooming_out_is_local(
    config: Path, s3: S3Server, tree: dict, tmp_path: Path
):
    """z13 reads the 10 m file; the 60 m file is copied meanwhile, and z10 then reads no S3 byte."""
    product = tree["requests"]["levels"][0]
    pipe = make_pipeline(config, s3, tmp_path / "ov")
    try:
        render(pipe, product, 13)
        assert pipe.overviews is not None and pipe.overviews.drain()
        # the 10 m band itself (small enough in this fixture to copy whole) and the prefetched 60 m band
        assert pipe.overviews.stats()["builds"] == 2
        s3.reset()
        zoomed_out = render(pipe, product, 10)
        assert s3.requests() == []
        assert zoomed_out.count() > 1000
    finally:
        pipe.close()


def test_a_band_too_large_to_copy_is_looked_at_once(
    config: Path, s3: S3Server, tree: dict, tmp_path: Path, monkeypatch
):
    """Full copies are for bands up to FULL_COPY_PIXELS; a larger one is opened once to learn its
    size, not again for every tile of every view (each open cost S3 requests in the background)."""
    from server.sources import overview_cache

    monkeypatch.setattr(overview_cache, "FULL_COPY_PIXELS", 100 * 100)  # every band of the fixture is larger
    product = tree["requests"]["levels"][0]
    pipe = make_pipeline(config, s3, tmp_path / "ov")
    try:
        for _ in range(3):
            assert render(pipe, product, 13).count() > 1000
            assert pipe.overviews is not None and pipe.overviews.drain()
        stats = pipe.overviews.stats()
        assert stats["skipped"] == 2 and stats["builds"] == 0  # the 10 m copy and the 60 m prefetch, once each
    finally:
        pipe.close()


def test_a_level_another_process_is_building_is_left_to_it(tmp_path: Path):
    """Two workers' caches over one directory queue the same level at once (the coarse files a
    first view prefetches): one builds it, the other leaves it to that one instead of reading and
    decoding the whole band a second time, and both then serve it."""
    import threading
    from contextlib import contextmanager

    from server.sources.overview_cache import OverviewCache
    from tests.test_read_stack import R60

    source = str(next(R60.glob("*_B04_60m.jp2")))
    first, second = OverviewCache(tmp_path, 1 << 30), OverviewCache(tmp_path, 1 << 30)
    entered, release = threading.Event(), threading.Event()

    @contextmanager
    def held():  # the first worker's build, inside its claim until the test lets it go on
        entered.set()
        release.wait(30)
        with rasterio.Env():
            yield

    try:
        first.build_later(source, 60.0, 60.0, False, 0, held)
        assert entered.wait(30)
        second.build_later(source, 60.0, 60.0, False, 0, rasterio.Env)
        assert second.drain(30)
        assert second.stats()["builds"] == 0 and not list(tmp_path.glob("*.tif"))
        release.set()
        assert first.drain(60) and first.stats()["builds"] == 1
        level = first.local_path(source, 60.0, 92.0, False, 0)
        assert level is not None and second.local_path(source, 60.0, 92.0, False, 0) == level
        with rasterio.open(source) as src, rasterio.open(level) as copy:
            assert np.array_equal(copy.read(1), src.read(1))
        assert not list(tmp_path.glob(".*.build"))  # no lock left behind
        Path(level).unlink()  # evicted: the next request builds it again, in either process
        second.build_later(source, 60.0, 60.0, False, 0, rasterio.Env)
        assert second.drain(60) and second.stats()["builds"] == 1
    finally:
        release.set()
        first.close()
        second.close()


def test_a_build_leaves_the_other_threads_running(tmp_path: Path):
    """A background copy never stops the worker's other threads (its event loop, the supervisor's
    health check): the COG is written without holding Python's GIL. Through rasterio's COG writer
    the conversion ran in one GIL-holding close: here 76-78 ms of a 131-133 ms build, against
    10 ms now (0.2-0.5 s for a 1830 px band of noise; seconds when the thread gets little CPU)."""
    import threading

    from server.sources.overview_cache import OverviewCache
    from tests.test_block_cache import GRANULE

    source = str(GRANULE / "R20m/T29UNU_20221005T115411_AOT_20m.jp2")  # 5490 px, 16 bits
    cache = OverviewCache(tmp_path, 1 << 30)
    gaps: list[float] = []
    done = threading.Event()

    def tick() -> None:  # a thread that needs the GIL every millisecond, as the event loop does
        last = time.monotonic()
        while not done.is_set():
            time.sleep(0.001)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    ticker = threading.Thread(target=tick)
    ticker.start()
    try:
        started = time.monotonic()
        cache.build_later(source, 20.0, 20.0, False, 0, rasterio.Env)
        assert cache.drain(120) and cache.stats()["builds"] == 1
        took = time.monotonic() - started
    finally:
        done.set()
        ticker.join(10)
        cache.close()
    level = cache.local_path(source, 20.0, 31.0, False, 0)
    assert level is not None
    with rasterio.open(source) as src, rasterio.open(level) as copy:
        assert copy.driver == "GTiff" and copy.overviews(1)  # a COG with its overviews
        assert np.array_equal(copy.read(1), src.read(1))
    assert max(gaps) < min(0.3, took / 3), (max(gaps), took)


def test_without_flock_levels_are_still_built(tmp_path: Path, monkeypatch):
    """A shared directory on a file system without ``flock`` (NFS without lockd answers ENOLCK):
    builds go on, unshared, instead of every process taking the error for another's build."""
    import errno
    import fcntl

    from server.sources.overview_cache import OverviewCache
    from tests.test_read_stack import R60

    def no_locks(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    source = str(next(R60.glob("*_B04_60m.jp2")))
    cache = OverviewCache(tmp_path, 1 << 30)
    try:
        cache.build_later(source, 60.0, 60.0, False, 0, rasterio.Env)
        assert cache.drain(60) and cache.stats()["builds"] == 1
        assert cache.copy_now(str(next(R60.glob("*_B03_60m.jp2"))), 60.0, False, 0, rasterio.Env)
        assert cache.stats()["builds"] == 2
    finally:
        cache.close()


def test_a_copy_that_cannot_be_made_is_not_tried_again_on_requests(tmp_path: Path, monkeypatch):
    """A request's own copy that fails (here: the directory is a file's child) reads the whole band
    once; the following requests read the source without copying it again."""
    from rio_tiler.io import Reader

    from server.sources.overview_cache import OverviewCache
    from tests.test_read_stack import R60

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    previews: list[str] = []
    original = Reader.preview

    def counted(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202 - Reader.preview's own
        previews.append(self.input)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Reader, "preview", counted)
    source = str(next(R60.glob("*_B04_60m.jp2")))
    cache = OverviewCache(blocker / "overviews", 1 << 30)
    try:
        assert [cache.copy_now(source, 60.0, False, 0, rasterio.Env) for _ in range(4)] == [False] * 4
        assert len(previews) == 1
    finally:
        cache.close()


def test_a_request_waits_for_the_copy_another_process_is_making(tmp_path: Path):
    """Two workers' requests need the same small copy at once: one makes it, the other waits for
    its file instead of reading and decoding the band a second time."""
    import threading

    from server.sources.overview_cache import OverviewCache
    from tests.test_read_stack import R60

    source = str(next(R60.glob("*_B04_60m.jp2")))
    first, second = OverviewCache(tmp_path, 1 << 30), OverviewCache(tmp_path, 1 << 30)
    entered, release = threading.Event(), threading.Event()
    build = first._build  # noqa: SLF001 - the first worker's copy, held inside its claim

    def held(*args, **kwargs) -> bool:  # noqa: ANN002, ANN003
        entered.set()
        release.wait(30)
        return build(*args, **kwargs)

    first._build = held  # type: ignore[method-assign]  # noqa: SLF001
    answers: list[bool] = []
    try:
        making = threading.Thread(target=lambda: first.copy_now(source, 60.0, False, 0, rasterio.Env))
        making.start()
        assert entered.wait(30)
        waiting = threading.Thread(target=lambda: answers.append(second.copy_now(source, 60.0, False, 0, rasterio.Env)))
        waiting.start()
        time.sleep(0.3)
        assert answers == [] and not list(tmp_path.glob("*.tif"))  # waiting, not copying
        release.set()
        making.join(60)
        waiting.join(60)
        assert answers == [True]
        assert first.stats()["builds"] == 1 and second.stats()["builds"] == 0
    finally:
        release.set()
        first.close()
        second.close()
