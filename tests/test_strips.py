"""Large maps are drawn in strips (``server/render/strips.py``) with the pixels of the whole image.

A 2048 px true-colour GetMap from the test server (drawn in strips) is compared with the same
request from a second server whose pipeline draws every image whole, byte for byte after
decoding; and the strips' grids are checked to tile the image's grid exactly.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from PIL import Image
from rasterio.crs import CRS
from rasterio.warp import transform

from server.app import create_app
from server.grids import get_tms, tile_grid
from server.models import Grid, ImageFormat, RenderRequest, parse_time
from server.pipeline import Pipeline
from server.render import floor
from server.render.strips import STRIP_PIXELS, strips
from server.settings import Settings
from tests.conftest import serve_app

SIZE = 2048
# A band's coarsest file at most 1.05 x the map's ground resolution is read: the sample's
# scene classification (SCL) has 20 m and 60 m files, so a map coarser than 60 / 1.05 m reads
# the 60 m file, a finer one the 20 m file.
SWITCH = 60 / 1.05


def square_at(resolution: float) -> tuple[float, float, float, float]:
    """A Web Mercator square of SIZE pixels at ``resolution`` metres per pixel on the ground,
    centred on the sample's 29UNU scene of 2022-10-05 (31 km across: the map covers most of it)."""
    xs, ys = transform("EPSG:4326", "EPSG:3857", [-8.77], [53.11])
    half = 20000.0
    for _ in range(4):
        box = (xs[0] - half, ys[0] - half, xs[0] + half, ys[0] + half)
        half *= resolution / Grid(box, CRS.from_epsg(3857), SIZE, SIZE).ground_resolution()
    return (xs[0] - half, ys[0] - half, xs[0] + half, ys[0] + half)


# ~39 km: the map covers most of the scene.
BOX_3857 = square_at(19.0)
# Just past the switch: Web Mercator's scale changes with latitude, so the strips north of the
# middle, measured on their own, are finer than the switch and would read the 20 m file.
SWITCH_BOX = square_at(SWITCH * 1.001)


@pytest.fixture(scope="module")
def whole_url(settings: Settings) -> Iterator[str]:
    """A second server of the same configuration whose pipeline never cuts an image in strips."""
    app = create_app(settings)
    app.state.pipeline.strip_pixels = 1 << 40
    with serve_app(app) as url:
        yield url


def getmap(base_url: str, box: tuple[float, float, float, float], **extra: str) -> np.ndarray:
    params = {
        "SERVICE": "WMS",
        "VERSION": "1.3.0",
        "REQUEST": "GetMap",
        "LAYERS": "TRUE_COLOR",
        "STYLES": "",
        "CRS": "EPSG:3857",
        "BBOX": ",".join(f"{v:.6f}" for v in box),
        "WIDTH": str(SIZE),
        "HEIGHT": str(SIZE),
        "FORMAT": "image/png",
        "TIME": "2022-10-05",
        **extra,
    }
    response = httpx.get(f"{base_url}/ogc/wms", params=params, timeout=120)
    assert response.status_code == 200, response.text[:300]
    assert response.headers.get("X-Cache") != "HIT"
    return np.asarray(Image.open(io.BytesIO(response.content)).convert("RGBA"))


def test_strips_tile_the_grid_exactly():
    grid = Grid(SWITCH_BOX, CRS.from_epsg(3857), SIZE, SIZE)
    parts = strips(grid)
    assert len(parts) > 1 and all(p.width * p.height <= STRIP_PIXELS for p in parts)
    assert sum(p.height for p in parts) == SIZE
    assert parts[0].bbox[3] == grid.bbox[3] and parts[-1].bbox[1] == grid.bbox[1]
    for upper, lower in zip(parts, parts[1:], strict=False):
        assert upper.bbox[1] == lower.bbox[3]  # no gap, no overlap
    step = (grid.bbox[3] - grid.bbox[1]) / SIZE
    for part in parts:  # every strip has the image's pixel size and its ground resolution
        assert (part.bbox[3] - part.bbox[1]) / part.height == pytest.approx(step, rel=1e-12)
        assert part.ground_resolution() == grid.ground_resolution()
    # what makes the pixel test below a test: unpinned, a strip would choose other files
    alone = [Grid(part.bbox, part.crs, part.width, part.height).ground_resolution() for part in parts]
    assert grid.ground_resolution() > SWITCH and min(alone) < SWITCH


def test_an_image_measures_its_ground_resolution_once_for_its_floor_and_its_reads(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    # about 0.35 ms of geodesics per new grid: a share of an uncached 256 px tile worth saving
    measured: list[Grid] = []
    ground_size = Grid.ground_size

    def counted(grid: Grid) -> tuple[float, float]:
        measured.append(grid)
        return ground_size(grid)

    monkeypatch.setattr(Grid, "ground_size", counted)
    floor._metres_per_pixel.cache_clear()
    grid = tile_grid(get_tms("WebMercatorQuad"), 11, 973, 667)  # over the sample's T29UNU
    result = pipeline.render(RenderRequest("TRUE_COLOR", grid, ImageFormat.PNG, time=parse_time("2022-10-05")))
    assert result.scenes, "the tile reads a scene"
    assert len(measured) == 1


# The scene classification, which the sample has as 20 m and 60 m files: the map reads the 20 m
# file, and so must every strip of it.
SCL = """//VERSION=3
function setup() { return {input: ["SCL", "dataMask"], output: {bands: 4}}; }
function evaluatePixel(s) { return [s.SCL / 11, s.SCL / 11, s.SCL / 11, s.dataMask]; }
"""


@pytest.mark.parametrize(
    ("transparent", "script", "box", "covered"),
    [("FALSE", None, BOX_3857, 0.4), ("TRUE", None, BOX_3857, 0.4), ("TRUE", SCL, SWITCH_BOX, 0.03)],
    ids=["opaque", "transparent", "scl-at-the-switch"],
)
def test_a_2048_px_getmap_in_strips_equals_the_whole_image(
    live_url: str, whole_url: str, transparent: str, script: str | None, box: tuple, covered: float
):
    """Opaque (a composite on BGCOLOR) and transparent (one layer) GetMaps: both paths strip."""
    extra = {"TRANSPARENT": transparent}
    if script is not None:
        extra["EVALSCRIPT"] = base64.b64encode(script.encode()).decode()
    stripped = getmap(live_url, box, **extra)
    whole = getmap(whole_url, box, **extra)
    assert stripped.shape == (SIZE, SIZE, 4)
    drawn = stripped[..., 3] > 0
    assert drawn.mean() > covered and stripped[drawn][:, :3].std() > 5  # a real picture, not a blank
    assert np.array_equal(stripped, whole)
