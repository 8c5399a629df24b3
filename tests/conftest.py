"""Shared fixtures: the bundled configuration plus test-only layers, and a live server.

The live server is real uvicorn on a free 127.0.0.1 port, reached with httpx, as a user's
client would reach it.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
import yaml

from server.app import create_app
from server.catalog.layers import LayerRegistry
from server.config import load_config
from server.pipeline import Pipeline
from server.resources import default_config_path
from server.settings import Settings

# Servers started by tests (in-process or as subprocesses) keep overview COGs, decoded JPEG2000
# blocks and the JPEG2000 index (with its tile-parts) under one temporary directory per test run,
# never in the user's ~/.cache; the process that made it (the xdist controller, whose environment
# the workers inherit) removes it at exit.
if "EOTILER_TEST_CACHE_ROOT" not in os.environ:
    _CACHE_ROOT = tempfile.mkdtemp(prefix="eotiler-test-caches-")
    os.environ["EOTILER_TEST_CACHE_ROOT"] = _CACHE_ROOT
    atexit.register(shutil.rmtree, _CACHE_ROOT, True)
_TEST_CACHES = {"OVERVIEW_CACHE_DIR": "overviews", "BLOCK_CACHE_DIR": "blocks", "JP2_INDEX_DIR": "jp2-index"}
for _name, _folder in _TEST_CACHES.items():
    os.environ.setdefault(f"EOTILER_{_name}", os.path.join(os.environ["EOTILER_TEST_CACHE_ROOT"], _folder))

pytest_plugins = ["tests.support.s3_fixtures"]

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample"
EODATA = SAMPLE / "eodata"

# Layers that expose raw values (float32) so tests can compare with rasterio directly.
TEST_LAYERS = {
    "RAW_B04": {"title": "B04 reflectance", "collection": "sentinel-2-l2a", "expression": "B04"},
    "RAW_B04_DN": {"title": "B04 DN", "collection": "sentinel-2-l2a", "expression": "B04", "units": "DN"},
    "RAW_NDMI": {"title": "NDMI", "collection": "sentinel-2-l2a", "expression": "(B8A - B11) / (B8A + B11)"},
    "SCL_BILINEAR": {"title": "SCL", "collection": "sentinel-2-l2a", "expression": "SCL", "resampling": "bilinear"},
    "LOCKED_B04": {
        "title": "B04, no request scripts",
        "collection": "sentinel-2-l2a",
        "expression": "B04",
        "request_evalscript": False,
    },
    "RAW_S1_VH_DB": {"title": "VH dB", "collection": "sentinel-1-grd", "expression": "10 * log10(VH * VH)"},
    "RAW_MOSAIC_NDVI": {
        "title": "mosaic NDVI",
        "collection": "sentinel-2-global-mosaics",
        "expression": "(B08 - B04) / (B08 + B04)",
    },
}


def write_test_config(directory: Path) -> Path:
    """The default configuration with absolute paths and the test layers added."""
    raw = yaml.safe_load(default_config_path().read_text())
    base = default_config_path().parent
    raw["evalscripts_dir"] = str((base / raw["evalscripts_dir"]).resolve())
    for collection in raw["collections"].values():
        collection["catalogue"]["path"] = str((base / collection["catalogue"]["path"]).resolve())
        collection["data_root"] = str((base / collection["data_root"]).resolve())
    raw["layers"].update(TEST_LAYERS)
    path = directory / "eotiler-test.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def test_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_test_config(tmp_path_factory.mktemp("config"))


@pytest.fixture(scope="session")
def settings(test_config: Path) -> Settings:
    # No overview cache: pixel tests compare zoomed-out reads with direct reads of the files.
    return Settings(config=test_config, overview_cache_bytes=0)


@pytest.fixture(scope="session")
def pipeline(settings: Settings) -> Iterator[Pipeline]:
    pipe = Pipeline(LayerRegistry(load_config(settings.config), settings), settings)
    yield pipe
    pipe.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serve(settings: Settings) -> Iterator[str]:
    """Run the app for ``settings`` under real uvicorn on a free 127.0.0.1 port; yield its base URL."""
    with serve_app(create_app(settings)) as url:
        yield url


@contextlib.contextmanager
def serve_app(app: object) -> Iterator[str]:
    """Run ``app`` (an ASGI app already built, e.g. with a pipeline setting changed) like ``serve``."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="session")
def live_url(settings: Settings) -> Iterator[str]:
    """Base URL of a real uvicorn server running the test configuration."""
    with serve(settings) as url:
        yield url


@pytest.fixture(scope="session")
def client(live_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_url, timeout=60) as http:
        yield http


# Headless Chromium (Debian's package) driven by Playwright, shared by the browser tests.
# Skipped when /usr/bin/chromium is missing, unless EOTILER_REQUIRE_BROWSER=1 (set by .ci/run).
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        if os.environ.get("EOTILER_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium is required (EOTILER_REQUIRE_BROWSER=1) but not installed")
        pytest.skip("Debian chromium not installed")
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as profile, sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=FLAGS, viewport={"width": 1000, "height": 700}
        )
        yield context
        context.close()
