"""Sun and viewing angle inputs against the real granule metadata of the bundled T29UNU product.

The expected values come from the test's own reading of ``MTD_TL.xml`` (the standard library's
ElementTree, ``numpy.nanmean`` over bands and detectors) and its own bilinear mix; the server
parses with lxml, unwraps azimuths and interpolates on arrays. Nodes of the 5 km grid lie at
(ULX + 5000 col, ULY - 5000 row) in EPSG:32629. Outputs are float32: 1e-4 degree tolerance.
"""

from __future__ import annotations

import base64
import io
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml
from rasterio.crs import CRS
from rasterio.warp import transform

from server.catalog.layers import LayerRegistry
from server.config import load_config
from server.errors import UpstreamUnavailable
from server.evalscript.js_script import set_vectorize
from server.models import Grid, ImageFormat, RenderRequest, parse_time
from server.pipeline import Pipeline
from server.settings import Settings
from server.sources import angles
from server.sources.angles import AngleGrids, interpolate
from server.sources.gdal_native import forget_remote_file, read_file
from tests.conftest import EODATA, write_test_config
from tests.support.s3_server import S3Server

T29UNU_TL = next(EODATA.glob("Sentinel-2/MSI/L2A/2022/10/05/*T29UNU*.SAFE/GRANULE/*/MTD_TL.xml"))
UTM29 = CRS.from_epsg(32629)
DAY = "2022-10-05"
NAMES = ("sunZenithAngles", "viewZenithMean", "sunAzimuthAngles", "viewAzimuthMean")
JS = """//VERSION=3
function setup() {
  return {input: ["sunZenithAngles", "viewZenithMean", "sunAzimuthAngles", "viewAzimuthMean", "dataMask"],
          output: {bands: 4, sampleType: "FLOAT32"}};
}
function evaluatePixel(s) { return [s.sunZenithAngles, s.viewZenithMean, s.sunAzimuthAngles, s.viewAzimuthMean]; }
"""
PYTHON = '''
def setup():
    return {"input": [{"bands": ["sunZenithAngles", "viewZenithMean", "sunAzimuthAngles", "viewAzimuthMean",
                                 "dataMask"]}],
            "output": {"bands": 4, "sampleType": "FLOAT32"}}


def evaluatePixel(samples):
    return [samples.sunZenithAngles, samples.viewZenithMean, samples.sunAzimuthAngles, samples.viewAzimuthMean]
'''


def expected_grids() -> tuple[float, float, dict[str, np.ndarray]]:
    """ULX, ULY and the four node grids, read independently of the server."""
    root = ET.parse(T29UNU_TL).getroot()

    def grid(node: ET.Element) -> np.ndarray:
        return np.array([[float(v) for v in row.text.split()] for row in node.iter("VALUES")])

    sun = root.find(".//Sun_Angles_Grid")
    views = root.findall(".//Viewing_Incidence_Angles_Grids")
    assert sun is not None and len(views) >= 13  # every band, several detectors
    view_zenith = np.stack([grid(v.find("Zenith")) for v in views])
    view_azimuth = np.stack([grid(v.find("Azimuth")) for v in views])
    assert np.isnan(view_zenith).any()  # detectors outside their footprint: the NaN case is real
    with np.errstate(invalid="ignore"):
        assert np.nanmax(view_azimuth) - np.nanmin(view_azimuth) < 180  # no wrap: a plain mean is right
    position = root.find(".//Geoposition")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nodes no detector sees: NaN, as expected
        view_means = np.nanmean(view_zenith, axis=0), np.nanmean(view_azimuth, axis=0)
    return (
        float(position.findtext("ULX")),
        float(position.findtext("ULY")),
        {
            "sunZenithAngles": grid(sun.find("Zenith")),
            "sunAzimuthAngles": grid(sun.find("Azimuth")),
            "viewZenithMean": view_means[0],
            "viewAzimuthMean": view_means[1],
        },
    )


ULX, ULY, NODES = expected_grids()


def bilinear(name: str, x: float, y: float) -> float:
    """The test's own bilinear mix of the four nodes around (x, y), in EPSG:32629."""
    col, row = (x - ULX) / 5000, (ULY - y) / 5000
    c, r = int(np.floor(col)), int(np.floor(row))
    tc, tr = col - c, row - r
    g = NODES[name]
    top = g[r, c] * (1 - tc) + g[r, c + 1] * tc
    bottom = g[r + 1, c] * (1 - tc) + g[r + 1, c + 1] * tc
    return float(top * (1 - tr) + bottom * tr)


def script_config(directory: Path) -> Path:
    """The test configuration plus a Python-evalscript layer and an expression layer reading angles."""
    path = write_test_config(directory)
    raw = yaml.safe_load(path.read_text())
    script = directory / "angles_script.py"
    script.write_text(PYTHON)
    raw["layers"]["ANGLES_PY"] = {"title": "angles", "collection": "sentinel-2-l2a", "evalscript": str(script)}
    raw["layers"]["VIEW_ZENITH"] = {"title": "view", "collection": "sentinel-2-l2a", "expression": "viewZenithMean"}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def pipe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    config = script_config(tmp_path_factory.mktemp("angles"))
    settings = Settings(config=config, cache_memory_bytes=0)
    pipeline = Pipeline(LayerRegistry(load_config(config), settings), settings)
    yield pipeline
    pipeline.close()


def js_script(pipeline: Pipeline, vectorise: bool = True) -> object:
    set_vectorize(vectorise)
    try:
        text = JS if vectorise else JS + "// in V8\n"  # compiled scripts are reused by text
        return pipeline.registry.get("TRUE_COLOR").request_script(base64.b64encode(text.encode()).decode())
    finally:
        set_vectorize(True)


def render(pipeline: Pipeline, grid: Grid, layer: str = "TRUE_COLOR", script: object = None) -> np.ndarray:
    req = RenderRequest(layer, grid, ImageFormat.GTIFF, time=parse_time(DAY), script=script, coverage=True)
    with rasterio.open(io.BytesIO(pipeline.render(req).content)) as src:
        assert src.crs == grid.crs and (src.width, src.height) == (grid.width, grid.height)
        return src.read().astype(np.float64)


def node_grid(nodes: int, dx: float = 0.0, dy: float = 0.0) -> Grid:
    """A 1 km UTM grid over ``nodes`` x ``nodes`` angle nodes: every 5th pixel centre lies on a
    node, shifted (dx, dy) metres east/south."""
    size = (nodes - 1) * 5 + 1
    x0, y1 = ULX - 500 + dx, ULY + 500 - dy
    return Grid((x0, y1 - size * 1000, x0 + size * 1000, y1), UTM29, size, size)


def expected_on(grid: Grid, name: str) -> np.ndarray:
    """The test's bilinear value at every pixel centre of a ``node_grid``."""
    x0, _, _, y1 = grid.bbox
    xs, ys = x0 + 500 + 1000 * np.arange(grid.width), y1 - 500 - 1000 * np.arange(grid.height)
    return np.array([[bilinear(name, x, y) for x in xs] for y in ys])


@pytest.mark.parametrize("runtime", ["numpy", "v8", "python"])
def test_pixels_on_nodes_equal_the_node_values(pipe: Pipeline, runtime: str):
    grid = node_grid(7)  # the crop holds nodes 0..6 in both directions
    if runtime == "python":
        values = render(pipe, grid, "ANGLES_PY")
    else:
        script = js_script(pipe, vectorise=runtime == "numpy")
        assert (script.runtime == "numpy") == (runtime == "numpy"), script.runtime
        values = render(pipe, grid, script=script)
    for band, name in enumerate(NAMES):
        np.testing.assert_allclose(values[band, ::5, ::5], NODES[name][:7, :7], atol=1e-4, err_msg=name)
        np.testing.assert_allclose(values[band], expected_on(grid, name), atol=1e-4, err_msg=name)


def test_pixels_between_nodes_are_the_bilinear_mix(pipe: Pipeline):
    grid = node_grid(5, dx=300, dy=700)
    values = render(pipe, grid, script=js_script(pipe))
    for band, name in enumerate(NAMES):
        np.testing.assert_allclose(values[band], expected_on(grid, name), atol=1e-4, err_msg=name)
        assert not np.allclose(values[band, ::5, ::5], NODES[name][:5, :5], atol=1e-3)  # really between nodes


def test_web_mercator_pixels_are_interpolated_in_the_granule_crs(pipe: Pipeline):
    bounds = (-8.95, 53.0, -8.6, 53.2)  # inside the T29UNU crop
    xs, ys = transform("EPSG:4326", "EPSG:3857", [bounds[0], bounds[2]], [bounds[1], bounds[3]])
    grid = Grid((xs[0], ys[0], xs[1], ys[1]), CRS.from_epsg(3857), 64, 48)
    values = render(pipe, grid, "VIEW_ZENITH")
    cx = xs[0] + (np.array([3, 30, 61]) + 0.5) * (xs[1] - xs[0]) / 64
    cy = ys[1] - (np.array([2, 25, 45]) + 0.5) * (ys[1] - ys[0]) / 48
    ux, uy = transform("EPSG:3857", UTM29, list(cx), list(cy))
    for i, (col, row) in enumerate(zip([3, 30, 61], [2, 25, 45], strict=True)):
        assert values[0, row, col] == pytest.approx(bilinear("viewZenithMean", ux[i], uy[i]), abs=1e-4)


def test_scene_without_tile_metadata_has_no_angles(pipe: Pipeline):
    """29RKH has every band but no MTD_TL.xml: angles there are absent, never invented."""
    utm = Grid((240000.0, 2730000.0, 260000.0, 2750000.0), UTM29, 20, 20)
    req = RenderRequest("VIEW_ZENITH", utm, ImageFormat.GTIFF, time=parse_time("2020-02-19"), coverage=True)
    mosaic = pipe.render_data(req).mosaic
    assert not mosaic.filled.any()
    assert all(entry.endswith(":viewZenithMean") for entry in mosaic.failed)  # named as a band it lacks
    bands = RenderRequest("RAW_B04", utm, ImageFormat.GTIFF, time=parse_time("2020-02-19"), coverage=True)
    assert pipe.render_data(bands).mosaic.filled.all()  # the scene itself is there


def test_azimuths_crossing_north_interpolate_through_north():
    """Unit check of the wrap handling: nodes at 359 and 1 degrees mix to 0, never to 180."""
    nodes = np.array([[359.0, 1.0], [359.0, 1.0]])
    grids = AngleGrids(UTM29, 0.0, 10000.0, 5000.0, 5000.0, {"sunAzimuthAngles": nodes})
    grid = Grid((1250.0, 5000.0, 3750.0, 10000.0), UTM29, 1, 2)  # centres at x = 2500: halfway
    values = interpolate(grids, "sunAzimuthAngles", grid)
    assert np.allclose(np.minimum(values, 360 - values), 0.0, atol=1e-9)


def test_view_means_equal_nanmean_over_bands_and_detectors():
    parsed = angles.parse_tile_metadata(T29UNU_TL.read_bytes())
    assert parsed is not None and parsed.crs == UTM29 and (parsed.ulx, parsed.uly) == (ULX, ULY)
    for name in NAMES:
        np.testing.assert_allclose(parsed.grids[name], NODES[name], atol=1e-9, equal_nan=True, err_msg=name)


@pytest.fixture(scope="module")
def s3_pipe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Pipeline, S3Server]]:
    """The sample behind a real S3 server (/vsis3/eodata), no tile cache, no GDAL retries."""
    config = script_config(tmp_path_factory.mktemp("angles-s3"))
    raw = yaml.safe_load(config.read_text())
    raw["collections"]["sentinel-2-l2a"]["data_root"] = "/vsis3/eodata"
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    server = S3Server(EODATA)
    settings = Settings(
        config=config,
        s3_endpoint=server.endpoint,
        s3_https=False,
        s3_virtual_hosting=False,
        s3_region="us-east-1",
        s3_access_key_id="test-key",
        s3_secret_access_key="test-secret",
        s3_retries=0,
        cache_memory_bytes=0,
        overview_cache_bytes=0,
    )
    pipeline = Pipeline(LayerRegistry(load_config(config), settings), settings)
    yield pipeline, server
    pipeline.close()
    server.stop()


def metadata_requests(server: S3Server) -> list[dict]:
    return [r for r in server.requests() if r["path"].endswith("/MTD_TL.xml")]


def test_angles_over_s3_equal_the_nodes_and_fetch_the_metadata_once(s3_pipe: tuple[Pipeline, S3Server]):
    pipeline, server = s3_pipe
    angles.DEFAULT_CACHE.clear()
    server.reset()
    first = render(pipeline, node_grid(7), script=js_script(pipeline))
    fetched = metadata_requests(server)
    assert fetched and all(r["method"] == "GET" and r["status"] in (200, 206) for r in fetched)
    server.reset()
    second = render(pipeline, node_grid(5, dx=300, dy=700), script=js_script(pipeline))
    assert not metadata_requests(server)  # the parsed grids are reused
    for band, name in enumerate(NAMES):
        np.testing.assert_allclose(first[band, ::5, ::5], NODES[name][:7, :7], atol=1e-4, err_msg=name)
    assert second.shape == (4, 21, 21) and np.isfinite(second).all()


def test_missing_and_failing_metadata_over_s3(s3_pipe: tuple[Pipeline, S3Server]):
    """A missing object is "no angles"; an S3 error is a failed read (502), never cached as missing."""
    pipeline, server = s3_pipe
    key = str(T29UNU_TL.relative_to(EODATA))
    with pipeline.gdal.env("/vsis3/eodata/x"):
        assert read_file(f"/vsis3/eodata/{key}", 1 << 20) == T29UNU_TL.read_bytes()
        assert read_file(f"/vsis3/eodata/{key.replace('MTD_TL', 'MTD_XX')}", 1 << 20) is None
        forget_remote_file(f"/vsis3/eodata/{key}")  # GDAL's own cache of the object, as after a restart
    angles.DEFAULT_CACHE.clear()
    server.set_fault("500")
    try:
        with pytest.raises(UpstreamUnavailable):
            render(pipeline, node_grid(3), "VIEW_ZENITH")
    finally:
        server.set_fault("none")
    values = render(pipeline, node_grid(3), "VIEW_ZENITH")  # S3 is back: read, not remembered as absent
    np.testing.assert_allclose(values[0, ::5, ::5], NODES["viewZenithMean"][:3, :3], atol=1e-4)
