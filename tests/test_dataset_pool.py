"""Open dataset handles are reused between reads, lent to one thread at a time, and bounded."""

from __future__ import annotations

import threading

import pytest
import rasterio

from server.models import Grid, ImageFormat, RenderRequest, parse_time
from server.pipeline import Pipeline
from server.sources.dataset_pool import DatasetPool
from tests.conftest import EODATA

JP2 = sorted(EODATA.rglob("*_60m.jp2"))


def test_a_handle_is_reused_and_never_shared():
    pool = DatasetPool(4)
    with pool.lend(str(JP2[0])) as first:
        pass
    with pool.lend(str(JP2[0])) as again:
        assert again is first and not again.closed
    inside = threading.Event()
    release = threading.Event()
    seen = []

    def hold() -> None:
        with pool.lend(str(JP2[0])) as held:
            seen.append(held)
            inside.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    inside.wait(10)
    with pool.lend(str(JP2[0])) as other:
        assert other is not seen[0]  # lent out: another thread gets its own handle
    release.set()
    thread.join()
    assert pool.stats()["opened"] == 2 and pool.stats()["idle"] == 2
    pool.close()


def test_idle_handles_are_bounded_and_failures_close_them():
    pool = DatasetPool(3)
    for path in JP2[:8]:
        with pool.lend(str(path)):
            pass
    assert pool.stats()["idle"] == 3
    with pytest.raises(rasterio.errors.RasterioIOError), pool.lend(str(JP2[0])) as dataset:
        raise rasterio.errors.RasterioIOError("simulated read failure")
    assert dataset.closed and pool.stats()["idle"] == 3
    pool.close()
    assert pool.stats()["idle"] == 0


def test_pipeline_reuses_handles_across_tiles(pipeline: Pipeline):
    from rasterio.crs import CRS

    before = pipeline.datasets.stats()
    b04 = next(p for p in JP2 if p.name.startswith("T29UNU") and "_B04_" in p.name)
    with rasterio.open(b04) as src:
        x0, y0, x1, y1 = src.bounds
        crs = src.crs
    scene_time = parse_time("2022-10-05")
    for shift in (0.0, 0.1, 0.2):  # three overlapping grids over the same scene
        dx = (x1 - x0) * shift
        grid = Grid((x0 + dx, y0, x0 + dx + (x1 - x0) / 2, y1), CRS.from_user_input(crs), 64, 64)
        pipeline.render_data(RenderRequest("RAW_B04", grid, ImageFormat.GTIFF, time=scene_time))
    after = pipeline.datasets.stats()
    assert after["reused"] - before["reused"] >= 2
