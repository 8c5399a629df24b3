"""The renders' pixel budget (``EOTILER_RENDER_PIXELS``): large maps wait for memory, tiles do not.

A render holds ~110 bytes per pixel while it runs (``docs/memory.md``), so the admission bounds
the pixels rendered at once besides the number of renders. Threads here are real render
threads or real waiting callers; nothing is timed except generous "did not hang" bounds.
"""

from __future__ import annotations

import io
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from server.app import create_app
from server.errors import Overloaded
from server.render.admission import Admission
from server.settings import RENDER_PIXELS, Settings
from tests.support.serve_process import eotiler_process

MAP = 1024 * 1024
TILE = 256 * 256
GETMAP = (
    "/ogc/wms?SERVICE=WMS&VERSION=1.3.0&REQUEST=GetMap&LAYERS=TRUE_COLOR&STYLES=&CRS=EPSG:4326"
    "&BBOX=53.0,-8.9,53.2,-8.6&WIDTH=1024&HEIGHT=1024&FORMAT=image/png&TIME=2022-10-05"
)


def _admission(pixels: int) -> Admission:
    return Admission(4, 8, on_idle=lambda: None, pixels=pixels)


def _admit_later(admission: Admission, pixels: int, deadline: float = 30.0) -> tuple[threading.Thread, dict]:
    """``admit`` on a thread of its own; the dict gets ``"admitted"`` (a monotonic time) or ``"refused"``."""
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            admission.admit(time.monotonic() + deadline, pixels)
            outcome["admitted"] = time.monotonic()
        except Overloaded as exc:
            outcome["refused"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def _until_waiting(admission: Admission, count: int) -> None:
    """Until ``count`` renders wait in the admission (10 s at most: the test is broken otherwise)."""
    end = time.monotonic() + 10
    while admission.load()[1] != count:
        assert time.monotonic() < end, f"waiting {admission.load()[1]}, expected {count}"
        time.sleep(0.01)


def test_a_second_map_waits_until_the_first_leaves():
    admission = _admission(MAP)
    admission.admit(time.monotonic() + 5, MAP)
    thread, outcome = _admit_later(admission, MAP)
    _until_waiting(admission, 1)
    assert outcome == {}, "the budget holds one map"
    left = time.monotonic()
    admission.leave(MAP)
    thread.join(10)
    assert outcome["admitted"] >= left
    admission.leave(MAP)
    assert admission.load() == (0, 0)


def test_tiles_share_the_budget_and_an_image_larger_than_it_runs_alone():
    admission = _admission(MAP)
    deadline = time.monotonic() + 5
    for _ in range(4):  # four tiles fit at once: the slots, not the pixels, bound them
        admission.admit(deadline, TILE)
    assert admission.load() == (4, 0)
    for _ in range(4):
        admission.leave(TILE)
    admission.admit(deadline, 4 * MAP)  # larger than the budget: it takes all of it and runs
    thread, outcome = _admit_later(admission, TILE)
    _until_waiting(admission, 1)
    admission.leave(4 * MAP)
    thread.join(10)
    assert "admitted" in outcome
    admission.leave(TILE)


def test_a_waiting_map_is_not_overtaken_by_later_tiles():
    """First come, first served: a stream of tiles cannot starve a map waiting for the whole budget."""
    admission = _admission(MAP)
    admission.admit(time.monotonic() + 5, TILE)
    map_thread, map_outcome = _admit_later(admission, MAP)
    _until_waiting(admission, 1)
    tile_thread, tile_outcome = _admit_later(admission, TILE)
    _until_waiting(admission, 2)
    assert map_outcome == {} and tile_outcome == {}, "the later tile would fit, but waits behind the map"
    admission.leave(TILE)
    map_thread.join(10)
    assert "admitted" in map_outcome
    _until_waiting(admission, 1)
    assert tile_outcome == {}, "the map holds the whole budget"
    admission.leave(MAP)
    tile_thread.join(10)
    assert "admitted" in tile_outcome
    admission.leave(TILE)
    assert admission.load() == (0, 0)


def test_a_map_waiting_past_its_deadline_is_refused_and_leaves_the_budget_as_it_was():
    admission = _admission(MAP)
    admission.admit(time.monotonic() + 5, MAP)
    thread, outcome = _admit_later(admission, MAP, deadline=0.3)
    thread.join(10)
    assert isinstance(outcome.get("refused"), Overloaded)
    assert admission.load() == (1, 0)
    admission.leave(MAP)
    admission.admit(time.monotonic() + 1, MAP)  # the whole budget is free again
    admission.leave(MAP)


def test_the_budget_is_the_servers_and_each_worker_takes_its_share(monkeypatch: pytest.MonkeyPatch):
    assert Settings().render_pixels == RENDER_PIXELS == 2 * MAP
    assert Settings().render_pixels_per_process == 2 * MAP
    monkeypatch.setenv("EOTILER_WORKERS", "2")
    assert Settings().render_pixels_per_process == MAP
    monkeypatch.setenv("EOTILER_WORKERS", "8")
    assert Settings().render_pixels_per_process == MAP, "never below one 1024 px map"
    monkeypatch.setenv("EOTILER_RENDER_PIXELS", str(MAP // 2))
    assert Settings().render_pixels_per_process == MAP // 2, "unless the operator's budget is smaller"
    monkeypatch.setenv("EOTILER_RENDER_PIXELS", "0")
    assert Settings().render_pixels_per_process == 0


def test_serve_tells_each_worker_how_many_workers_share_the_budget(test_config: Path):
    env = {**os.environ, "EOTILER_ACCESS_LOG": "false"}
    env.pop("EOTILER_WORKERS", None)
    with eotiler_process(test_config, "--workers", "2", env=env) as (_url, process):
        workers = subprocess.run(["pgrep", "-P", str(process.pid), "-f", "spawn_main"], capture_output=True, text=True)
        pids = workers.stdout.split()
        assert len(pids) == 2, workers
        for pid in pids:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            assert b"EOTILER_WORKERS=2" in environ


def test_a_getmap_waits_for_pixels_held_by_another_render_then_is_drawn(test_config: Path):
    """Through the real pipeline: the map waits while the budget is short, then renders whole."""
    settings = Settings(config=test_config, overview_cache_bytes=0, render_pixels=MAP, cache_memory_bytes=0)
    client = TestClient(create_app(settings))
    admission = client.app.state.pipeline.admission
    assert admission.pixels == MAP
    alone = client.get(GETMAP)
    assert alone.status_code == 200
    admission.admit(time.monotonic() + 5, 512 * 512)  # a 512 px tile being drawn
    answer: dict[str, object] = {}
    thread = threading.Thread(target=lambda: answer.update(response=client.get(GETMAP)))
    thread.start()
    try:
        _until_waiting(admission, 1)
        assert answer == {}, "the map waits for the tile's pixels"
    finally:
        admission.leave(512 * 512)
    thread.join(60)
    response = answer["response"]
    assert response.status_code == 200, response.text
    assert Image.open(io.BytesIO(response.content)).size == (1024, 1024)
    assert response.content == alone.content, "the same pixels as the map drawn without waiting"
    assert admission.load() == (0, 0)
