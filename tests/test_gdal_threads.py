"""GDAL in many threads: rasterio must not reset PROJ's search paths each time a thread starts.

rasterio sets them (process-wide) in every thread's first GDAL environment; GDAL then drops the
PROJ objects cached for all threads, and a warp on another thread crashed the server.
"""

from __future__ import annotations

import threading

import rasterio
import rasterio._env

import server.sources.gdal_env  # noqa: F401 - installs the once-per-process rule


def test_new_threads_do_not_reset_proj_search_paths(monkeypatch) -> None:
    calls: list[str] = []
    # what the rule wraps: count the calls that reach GDAL's OSRSetPROJSearchPaths
    wrapped = rasterio._env.set_proj_data_search_path
    assert getattr(wrapped, "eotiler_once", False)
    cell = next(c for c in wrapped.__closure__ if callable(c.cell_contents) and c.cell_contents is not wrapped)
    monkeypatch.setattr(cell, "cell_contents", lambda path: calls.append(path))

    def work() -> None:
        with rasterio.Env():
            pass

    for _ in range(5):
        thread = threading.Thread(target=work)
        thread.start()
        thread.join()
    assert len(calls) <= 1  # at most the first thread's call, never one per thread
