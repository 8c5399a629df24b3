"""V8 evalscripts on a small shared-memory filesystem: large maps run in strips, a full one is a 503.

The V8 workers take band values through a file mapping in ``/dev/shm`` (``js_pool.py``), and
Docker gives a container 64 MB of it. These tests mount a real 16 MB tmpfs (as root, which CI
is) and send a 2048 x 2048 WMS GetMap whose script only V8 runs (``Math.exp``: the numpy
runtime leaves it to V8, its last bit differs between fdlibm and numpy): 2048 x 2048 pixels x
(4 bands in + 4 out) x 8 bytes is 256 MB of values, sixteen times the filesystem. The server
must stay up and answer the right pixels: in strips through a buffer that fits, or through
the socket when the filesystem is full.
"""

from __future__ import annotations

import base64
import io
import os
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import pytest
import rasterio

from server.evalscript import js_pool
from server.evalscript.contract import Samples
from server.evalscript.js_pool import JsLimits
from server.evalscript.js_script import JavaScriptEvalscript, SceneInfo
from tests.support.serve_process import eotiler_process

SHM_MB = 16
SIZE = 2048
SCRIPT = """//VERSION=3
function setup() {
  return {input: ["B02", "B03", "B04", "dataMask"], output: {bands: 4, sampleType: "FLOAT32"}};
}
function evaluatePixel(s) { return [Math.exp(s.B04), s.B03, s.B02, s.dataMask]; }
"""
GETMAP = {
    "SERVICE": "WMS",
    "VERSION": "1.3.0",
    "REQUEST": "GetMap",
    "CRS": "EPSG:3857",
    "BBOX": "-990000,6990000,-960000,7020000",  # inside the 2022 T29UNU product
    "TIME": "2022-10-05",
    "WIDTH": str(SIZE),
    "HEIGHT": str(SIZE),
    "FORMAT": "image/tiff",
    "STYLES": "",
}
SCRIPTED = {**GETMAP, "LAYERS": "TRUE_COLOR", "EVALSCRIPT": base64.b64encode(SCRIPT.encode()).decode()}
BUDGET = 240  # seconds: "does not hang", far above the few seconds a render takes


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def tiff_bands(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text[:500]
    assert response.headers["content-type"] == "image/tiff"
    with rasterio.open(io.BytesIO(response.content)) as dataset:
        assert (dataset.width, dataset.height) == (SIZE, SIZE)
        assert dataset.crs.to_epsg() == 3857
        return dataset.read()


def mount_tmpfs(target: Path, megabytes: int) -> None:
    """Mount a tmpfs of ``megabytes`` on ``target``, or skip the test saying why it cannot be."""
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(target)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a {megabytes} MB tmpfs (needs root or CAP_SYS_ADMIN): {result.stderr.strip()}")


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A real 16 MB tmpfs, unmounted after the test."""
    target = tmp_path / "shm"
    target.mkdir()
    mount_tmpfs(target, SHM_MB)
    yield target
    subprocess.run(["umount", "-l", str(target)], check=False)


def fill(directory: Path, leave_bytes: int) -> Path:
    """Allocate all but ``leave_bytes`` of the filesystem in one file (pages really allocated)."""
    stat = os.statvfs(directory)
    filler = directory / "filler"
    with filler.open("wb") as handle:
        os.posix_fallocate(handle.fileno(), 0, max(stat.f_bavail * stat.f_frsize - leave_bytes, 1))
    return filler


@pytest.fixture(scope="module")
def expected(client: httpx.Client) -> np.ndarray:
    """B04, B03, B02 on the same grid from the numpy expression runtime (in-process, no V8)."""
    response = client.get("/ogc/wms", params={**GETMAP, "LAYERS": "RAW_B04", "EVALSCRIPT": b64("B04;B03;B02")})
    return tiff_bands(response)[:3].astype(np.float64)


def assert_script_pixels(got: np.ndarray, expected: np.ndarray) -> None:
    """The script's bands against numpy on the reference: every strip at its place."""
    data = got[3] == 1
    assert data.mean() > 0.95, "the map covers the scene"
    b04, b03, b02 = expected
    np.testing.assert_allclose(got[0][data], np.exp(b04[data]), rtol=1e-6)
    np.testing.assert_allclose(got[1][data], b03[data], rtol=1e-6)
    np.testing.assert_allclose(got[2][data], b02[data], rtol=1e-6)


def assert_alive(url: str, process: subprocess.Popen) -> None:
    assert process.poll() is None, f"the server died (exit {process.returncode})"
    assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200


def buffer_mappings(server: subprocess.Popen) -> list[str]:
    """The files the server's V8 workers map as band buffers (``/proc/<worker>/maps``)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            maps = stat.with_name("maps").read_text() if parent == server.pid else ""
        except (OSError, IndexError, ValueError):  # a process that ended meanwhile
            continue
        found += [line.split(None, 5)[5] for line in maps.splitlines() if "eotiler-js-" in line]
    return found


def serve(config: Path, launcher: tuple[str, ...] = (), **env: str):
    return eotiler_process(
        config, env={**os.environ, "EOTILER_ACCESS_LOG": "false", "EOTILER_JS_TIMEOUT": "30", **env}, launcher=launcher
    )


def test_getmap_2048_in_v8_with_a_16mb_dev_shm(test_config: Path, expected: np.ndarray) -> None:
    # A container as Docker makes it, smaller: the server in a mount namespace of its own whose
    # /dev/shm is a 16 MB tmpfs, every setting at its default.
    mount = f"mount -t tmpfs -o size={SHM_MB}m tmpfs /dev/shm"
    launcher = ("unshare", "--mount", "--propagation", "private", "sh", "-c", f'{mount} && exec "$@"', "sh")
    probe = subprocess.run([*launcher, "df", "-m", "/dev/shm"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"cannot give a process a {SHM_MB} MB /dev/shm of its own (unshare, mount): {probe.stderr.strip()}")
    assert f" {SHM_MB} " in probe.stdout.splitlines()[-1], probe.stdout
    with serve(test_config, launcher) as (url, process):
        response = httpx.get(f"{url}/ogc/wms", params=SCRIPTED, timeout=BUDGET)
        assert_alive(url, process)
        assert_script_pixels(tiff_bands(response), expected)


def test_nearly_full_shm_dir_runs_in_smaller_strips(test_config: Path, expected: np.ndarray, small_fs: Path) -> None:
    fill(small_fs, 3 << 20)  # 3 MB left: the 8 MB buffer shrinks to 2 MB
    with serve(test_config, EOTILER_JS_SHM_DIR=str(small_fs)) as (url, process):
        response = httpx.get(f"{url}/ogc/wms", params=SCRIPTED, timeout=BUDGET)
        assert_alive(url, process)
        assert_script_pixels(tiff_bands(response), expected)
        # the worker maps its buffer from the directory; the file is unlinked once it has
        mapped = buffer_mappings(process)
        assert mapped and all(path.startswith(f"{small_fs}/") for path in mapped), mapped
        assert sorted(p.name for p in small_fs.iterdir()) == ["filler"]


def test_full_shm_dir_sends_values_through_the_socket(test_config: Path, expected: np.ndarray, small_fs: Path) -> None:
    fill(small_fs, 0)  # full before the server starts: its layers' smoke tests run in V8 too
    with serve(test_config, EOTILER_JS_SHM_DIR=str(small_fs)) as (url, process):
        response = httpx.get(f"{url}/ogc/wms", params=SCRIPTED, timeout=BUDGET)
        assert_alive(url, process)
        assert_script_pixels(tiff_bands(response), expected)
        assert buffer_mappings(process) == []  # no shared buffer anywhere
        assert sorted(p.name for p in small_fs.iterdir()) == ["filler"]


STRIPPED = """//VERSION=3
function setup() {
  return {input: ["B03", "B04"], output: {bands: 2, sampleType: "FLOAT32"}, mosaicking: "TILE"};
}
let seen = 0;  // one context runs every strip, in pixel order
function evaluatePixel(samples) {
  seen += 1;
  let total = 0;
  for (let k = 0; k < samples.length; k++) total += (k + 1) * samples[k].B04 - samples[k].B03;
  return [total, seen];
}
"""


@pytest.mark.parametrize("transport", ["shared buffer", "socket"])
def test_strips_give_the_whole_image(transport: str, tmp_path: Path) -> None:
    # 3 samples x 2 bands in, 2 bands out: 64 bytes a pixel, so a 997-pixel buffer cuts the
    # 257 x 300 image into 78 strips, the last one shorter. A directory that does not exist
    # leaves no room for any buffer: every strip goes through the socket.
    shm_dir = tmp_path if transport == "shared buffer" else tmp_path / "missing"
    js_pool.configure(1, JsLimits(buffer_bytes=64 * 997), str(shm_dir))
    try:
        rng = np.random.default_rng(16)
        b03, b04 = (rng.integers(0, 1000, (3, 257, 300)).astype(np.float64) for _ in range(2))
        scenes = [SceneInfo(datetime(2022, 10, day, tzinfo=UTC), 10.0, f"scene-{day}") for day in (1, 5, 9)]
        script = JavaScriptEvalscript(STRIPPED, "stripped", {"B03", "B04"})
        got = script.evaluate(Samples({"B03": b03, "B04": b04}, scenes))
    finally:
        js_pool.configure(2, JsLimits())
    weights = np.arange(1, 4).reshape(3, 1, 1)
    np.testing.assert_array_equal(got[0], (weights * b04 - b03).sum(axis=0))
    np.testing.assert_array_equal(got[1], np.arange(1, 257 * 300 + 1).reshape(257, 300))
    assert list(tmp_path.iterdir()) == []  # the buffer's file is gone once the worker has mapped it
