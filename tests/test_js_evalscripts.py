"""JavaScript evalscripts (Sentinel Hub V3 and V1) against their numpy twins and their contract.

Every ``evalscripts/<name>.py`` has a ``<name>.js`` twin; rendered through the same pipeline on
the bundled sample, both must give the same image after sample-type conversion: identical bytes
for integer outputs, float32 within 1e-6 for FLOAT32.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from lxml import etree
from PIL import Image
from rasterio.crs import CRS

from server.catalog.layers import LayerRegistry, compile_evalscript
from server.errors import EvalscriptError, InvalidParameter
from server.evalscript import js_pool
from server.evalscript.contract import Samples
from server.evalscript.js_pool import GRACE_SECONDS, JsLimits, pool
from server.evalscript.js_script import JavaScriptEvalscript, set_vectorize
from server.models import Grid, ImageFormat, RenderRequest, parse_time
from server.pipeline import Pipeline
from tests.test_pixels import T29UNU, T29UPU, WEB_MERCATOR, band_file, native_grid
from tests.test_request_evalscript import b64, tif, wmts_tile

TWINS = {
    "TRUE_COLOR": "true_color",
    "TRUE_COLOR_CLOUDMASKED": "true_color_cloudmasked",
    "FALSE_COLOR": "false_color",
    "SWIR": "swir",
    "NDVI": "ndvi",
    "KNDVI": "kndvi",
    "MOISTURE_INDEX": "moisture_index",
    "NDWI": "ndwi",
    "SCL": "scl",
    "NDVI_FLOAT": "ndvi_float",
}


# Twins the vectoriser runs with numpy (js_vector.py); the others use ** or a visualizer object.
VECTORISED = set(TWINS) - {"KNDVI"}
B08_LAYERS = {"FALSE_COLOR", "NDVI", "KNDVI", "NDWI", "NDVI_FLOAT"}


def grid_on_sample(layer_id: str) -> tuple[Grid, str]:
    """A native grid and day with every band the layer reads.

    The baseline-04.00 product T29UNU (512 px at 60 m, SCL included, no B08); B08 layers use
    the 120 px 10 m crop of T29UPU (baseline 02.05).
    """
    if layer_id in B08_LAYERS:
        return native_grid(band_file(T29UPU, "B08", 10), 0, 0, 120), "2017-06-17"
    return native_grid(band_file(T29UNU, "B04", 60), 0, 0, 512), "2022-10-05"


@pytest.fixture
def v8_only() -> Iterator[None]:
    """Scripts compiled inside the test run in V8 even when numpy could run them."""
    set_vectorize(False)
    yield
    set_vectorize(True)


def js_twin(pipeline: Pipeline, layer_id: str, stem: str) -> JavaScriptEvalscript:
    layer = pipeline.registry.get(layer_id)
    config = layer.config.model_copy(update={"evalscript": f"{stem}.js", "expression": None})
    script = compile_evalscript(layer_id, config, layer.collection, pipeline.registry.config.evalscripts_dir)
    assert isinstance(script, JavaScriptEvalscript)
    return script


@pytest.mark.parametrize("runtime", ["numpy", "v8"])
@pytest.mark.parametrize("layer_id", sorted(TWINS))
def test_js_twin_renders_what_the_numpy_script_renders(pipeline: Pipeline, layer_id: str, runtime: str) -> None:
    set_vectorize(runtime == "numpy")
    try:
        js = js_twin(pipeline, layer_id, TWINS[layer_id])
    finally:
        set_vectorize(True)
    assert (js.runtime == "numpy") == (runtime == "numpy" and layer_id in VECTORISED), js.runtime
    grid, day = grid_on_sample(layer_id)
    py_req = RenderRequest(layer_id, grid, ImageFormat.GTIFF, time=parse_time(day))
    js_req = RenderRequest(layer_id, grid, ImageFormat.GTIFF, time=parse_time(day), script=js)
    assert js.output == pipeline.output(py_req)
    expected = pipeline.render_data(py_req).data
    got = pipeline.render_data(js_req).data
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert np.array_equal(np.ma.getmaskarray(got), np.ma.getmaskarray(expected))
    valid = ~np.ma.getmaskarray(expected)
    assert valid.sum() > 0.5 * valid.size
    if expected.dtype.kind == "f":
        np.testing.assert_allclose(got.data[valid], expected.data[valid], atol=1e-6)
    else:
        assert np.array_equal(got.data[valid], expected.data[valid])


# ---- request scripts over HTTP: every endpoint that takes EVALSCRIPT --------------------------

TILE = "/layers/{layer}/tiles/WebMercatorQuad/10/486/333.{ext}"  # over T29UNU (2022-10-05)
_B = WEB_MERCATOR.xy_bounds(486, 333, 10)
TILE_BBOX = f"{_B.left},{_B.bottom},{_B.right},{_B.top}"
EVALSCRIPTS = Path(__file__).resolve().parent.parent / "evalscripts"


def rgba(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text[:300]
    return np.asarray(Image.open(io.BytesIO(response.content)).convert("RGBA"))


@pytest.mark.parametrize(("layer_id", "stem"), [("TRUE_COLOR", "true_color"), ("SCL", "scl"), ("SWIR", "swir")])
def test_xyz_tile_with_a_js_evalscript_equals_the_configured_layer(
    client: httpx.Client, layer_id: str, stem: str
) -> None:
    expected = rgba(client.get(TILE.format(layer=layer_id, ext="png")))
    script = b64((EVALSCRIPTS / f"{stem}.js").read_text())
    got = rgba(client.get(TILE.format(layer=layer_id, ext="png"), params={"evalscript": script}))
    assert expected.shape == (256, 256, 4)
    assert (expected[..., 3] > 0).mean() > 0.3
    assert np.array_equal(got, expected)


def test_wms_wmts_and_wcs_accept_js_evalscripts(client: httpx.Client) -> None:
    script = b64(
        "//VERSION=3\nfunction setup() { return {input: ['B04'], output: {bands: 1, sampleType: 'FLOAT32'}}; }\n"
        "function evaluatePixel(s) { return [s.B04 * 2]; }"
    )
    b = WEB_MERCATOR.xy_bounds(486, 333, 10)  # the tile over T29UNU
    bbox = f"{b.left},{b.bottom},{b.right},{b.top}"
    common = {
        "SERVICE": "WMS",
        "VERSION": "1.3.0",
        "REQUEST": "GetMap",
        "CRS": "EPSG:3857",
        "BBOX": bbox,
        "WIDTH": 64,
        "HEIGHT": 64,
        "STYLES": "",
        "FORMAT": "image/tiff",
        "TIME": "2022-10-05",
    }
    doubled = tif(client.get("/ogc/wms", params={**common, "LAYERS": "RAW_B04", "EVALSCRIPT": script}))
    plain = tif(client.get("/ogc/wms", params={**common, "LAYERS": "RAW_B04"}))
    assert (~np.isnan(plain)).mean() > 0.3
    np.testing.assert_allclose(doubled, plain * 2, rtol=1e-6, equal_nan=True)
    wmts = wmts_tile("RAW_B04")
    np.testing.assert_allclose(
        tif(client.get("/ogc/wmts", params={**wmts, "EVALSCRIPT": script})),
        tif(client.get("/ogc/wmts", params=wmts)) * 2,
        rtol=1e-6,
        equal_nan=True,
    )
    wcs = {
        "SERVICE": "WCS",
        "VERSION": "2.0.1",
        "REQUEST": "GetCoverage",
        "COVERAGEID": "RAW_B04",
        "FORMAT": "image/tiff",
        "SUBSETTINGCRS": "http://www.opengis.net/def/crs/EPSG/0/3857",
        "OUTPUTCRS": "http://www.opengis.net/def/crs/EPSG/0/3857",
        "SCALESIZE": "x(64),y(64)",
    }
    subsets = [("SUBSET", f"x({b.left},{b.right})"), ("SUBSET", f"y({b.bottom},{b.top})")]
    got = tif(client.get("/ogc/wcs", params=[*wcs.items(), *subsets, ("EVALSCRIPT", script)]))
    ref = tif(client.get("/ogc/wcs", params=[*wcs.items(), *subsets]))
    np.testing.assert_allclose(got, ref * 2, rtol=1e-6, equal_nan=True)


def test_v1_script_and_multi_output_script(client: httpx.Client) -> None:
    v1 = b64("var gain = 2.5;\nreturn [B04 * gain, B03 * gain, B02 * gain];")
    true_color = rgba(client.get(TILE.format(layer="TRUE_COLOR", ext="png")))
    got = rgba(client.get(TILE.format(layer="TRUE_COLOR", ext="png"), params={"evalscript": v1}))
    valid = true_color[..., 3] > 0
    assert np.array_equal(got[..., :3][valid], true_color[..., :3][valid])
    multi = b64(
        "//VERSION=3\nfunction setup() { return {input: [{bands: ['B02', 'B03', 'B04', 'dataMask']}],\n"
        "  output: [{id: 'default', bands: 4}, {id: 'ndvi', bands: 1, sampleType: 'FLOAT32'}]}; }\n"
        "function evaluatePixel(s) {\n"
        "  return {ndvi: [0.5], default: [2.5 * s.B04, 2.5 * s.B03, 2.5 * s.B02, s.dataMask]};\n}"
    )
    assert np.array_equal(
        rgba(client.get(TILE.format(layer="TRUE_COLOR", ext="png"), params={"evalscript": multi})), true_color
    )


# ---- safety: every failure is a clean 400 and the server stays healthy -------------------------

SETUP = "//VERSION=3\nfunction setup() { return {input: ['B04'], output: {bands: 1}}; }\n"
BAD_SCRIPTS = {
    "infinite loop": (SETUP + "function evaluatePixel(s) { while (true) {} }", "time limit"),
    "heap exhaustion": (
        SETUP + "const keep = [];\nfunction evaluatePixel(s) { while (true) keep.push(new Array(1e6).fill(s.B04)); }",
        "memory limit",
    ),
    "require": (
        SETUP + "function evaluatePixel(s) {\n  const fs = require('fs');\n  return [1]; }",
        "require is not defined (line 4)",
    ),
    "fetch": (
        SETUP + "function evaluatePixel(s) {\n  fetch('http://127.0.0.1/');\n  return [1]; }",
        "fetch is not defined (line 4)",
    ),
    "process.env": (
        SETUP + "function evaluatePixel(s) { return [process.env.AWS_SECRET_ACCESS_KEY]; }",
        "process is not defined",
    ),
    "syntax error": (SETUP + "function evaluatePixel(s) {\n  return [s.B04;\n}", "SyntaxError"),
    "throw": (
        SETUP + "function evaluatePixel(s) {\n\n  throw new Error('no clouds today');\n}",
        "no clouds today (line 5)",
    ),
    "wrong band count": (SETUP + "function evaluatePixel(s) { return [1, 2, 3]; }", "returned 3 values"),
    "non-numeric output": (SETUP + "function evaluatePixel(s) { return ['red']; }", "non-numeric"),
    "setup throws": (
        "//VERSION=3\nfunction setup() { throw new Error('broken setup'); }\nfunction evaluatePixel(s) { return [1]; }",
        "broken setup",
    ),
    "unknown band": (
        "//VERSION=3\nfunction setup() { return {input: ['B99'], output: {bands: 1}}; }\n"
        "function evaluatePixel(s) { return [1]; }",
        "B99",
    ),
    "no default output": (
        "//VERSION=3\nfunction setup() { return {input: ['B04'], output: {id: 'x', bands: 1}}; }\n"
        "function evaluatePixel(s) { return [1]; }",
        "default",
    ),
    "setup loops": (
        "//VERSION=3\nfunction setup() { for (;;) {} }\nfunction evaluatePixel(s) { return [1]; }",
        "time limit",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_SCRIPTS))
def test_bad_js_is_a_clean_400_and_the_server_stays_healthy(client: httpx.Client, case: str) -> None:
    source, fragment = BAD_SCRIPTS[case]
    started = time.monotonic()
    response = client.get(TILE.format(layer="TRUE_COLOR", ext="png"), params={"evalscript": b64(source)})
    assert response.status_code == 400, response.text[:300]
    body = response.json()
    assert body["parameter"].upper() == "EVALSCRIPT"
    assert fragment.lower() in body["detail"].lower(), body["detail"]
    assert "Traceback" not in response.text and "py_mini_racer" not in response.text
    assert time.monotonic() - started < 15
    healthy = client.get(
        TILE.format(layer="TRUE_COLOR", ext="png"),
        params={"evalscript": b64((EVALSCRIPTS / "true_color.js").read_text())},
    )
    assert healthy.status_code == 200 and healthy.headers["content-type"] == "image/png"


def test_wms_js_error_is_an_ogc_exception_with_the_line(client: httpx.Client) -> None:
    script = SETUP + "function evaluatePixel(s) {\n  return [undefinedHelper(s.B04)];\n}"
    params = {
        "SERVICE": "WMS",
        "VERSION": "1.3.0",
        "REQUEST": "GetMap",
        "LAYERS": "TRUE_COLOR",
        "STYLES": "",
        "CRS": "EPSG:3857",
        "BBOX": TILE_BBOX,
        "WIDTH": 64,
        "HEIGHT": 64,
        "FORMAT": "image/png",
        "EVALSCRIPT": b64(script),
    }
    response = client.get("/ogc/wms", params=params)
    assert response.status_code == 400
    report = etree.fromstring(response.content)
    exception = report.find("{http://www.opengis.net/ogc}ServiceException")
    assert exception.get("code") == "InvalidParameterValue"
    assert "undefinedHelper is not defined (line 4)" in exception.text


def test_oversized_script_is_refused_before_it_runs(client: httpx.Client) -> None:
    script = SETUP + "function evaluatePixel(s) { return [1]; }\n" + "// padding\n" * 4000
    response = client.get(TILE.format(layer="TRUE_COLOR", ext="png"), params={"evalscript": b64(script)})
    assert response.status_code in (400, 414)
    if response.status_code == 400:
        assert response.json()["parameter"].upper() == "EVALSCRIPT"


def test_a_killed_worker_is_replaced(v8_only: None) -> None:
    runtime = pool()
    script = JavaScriptEvalscript(SETUP + "function evaluatePixel(s) { return [s.B04]; }", "kill-test", {"B04"})
    idle = list(runtime._idle.queue)
    assert idle, "compiling the script started a worker"
    for worker in idle:
        worker.process.kill()
        worker.process.wait()
    restarts = runtime.restarts
    values = script.evaluate(Samples({"B04": np.full((4, 4), 0.25)}))
    assert np.all(values == 0.25)
    assert runtime.restarts > restarts


# ---- units and multi-temporal scripts (through the pipeline) ----------------------------------


def js_request(pipeline: Pipeline, layer_id: str, source: str) -> JavaScriptEvalscript:
    script = pipeline.registry.get(layer_id).request_script(b64(source))
    assert isinstance(script, JavaScriptEvalscript)
    return script


def float_render(pipeline: Pipeline, layer_id: str, grid: Grid, day: str, script=None) -> np.ma.MaskedArray:
    req = RenderRequest(layer_id, grid, ImageFormat.GTIFF, time=parse_time(day), script=script)
    return pipeline.render_data(req).data


def test_units_reflectance_dn_and_scl(pipeline: Pipeline) -> None:
    grid, day = native_grid(band_file(T29UNU, "B04", 60), 0, 0, 128), "2022-10-05"
    source = (
        "//VERSION=3\nfunction setup() { return {input: [{bands: ['B04', 'SCL'], units: ['DN', 'DN']},"
        "], output: {bands: 2, sampleType: 'FLOAT32'}}; }\nfunction evaluatePixel(s) { return [s.B04, s.SCL]; }"
    )
    got = float_render(pipeline, "RAW_B04", grid, day, js_request(pipeline, "RAW_B04", source))
    dn = float_render(pipeline, "RAW_B04_DN", grid, day)
    reflectance = float_render(pipeline, "RAW_B04", grid, day)
    valid = ~np.ma.getmaskarray(dn[0])
    assert valid.mean() > 0.5
    np.testing.assert_allclose(got[0][valid], dn[0][valid], rtol=1e-6)
    np.testing.assert_allclose(got[0][valid], reflectance[0][valid] * 10000, rtol=1e-5)
    # SCL is categorical: its stored class, whatever the unit
    assert set(np.unique(got[1][valid])) <= set(range(12)) and len(np.unique(got[1][valid])) > 2
    default = js_request(pipeline, "RAW_B04", source.replace("units: ['DN', 'DN']", "units: 'REFLECTANCE'"))
    np.testing.assert_allclose(
        float_render(pipeline, "RAW_B04", grid, day, default)[0][valid], reflectance[0][valid], rtol=1e-6
    )


def test_sentinel1_linear_power_is_the_default_unit(pipeline: Pipeline) -> None:
    layer = pipeline.registry.get("RAW_S1_VH_DB")
    scene = layer.catalogue.scenes[0]
    grid = Grid(scene.bbox, CRS.from_epsg(4326), 256, 256)  # finer than the layer's max_meters_per_pixel
    source = (
        "//VERSION=3\nfunction setup() { return {input: ['VH'], output: {bands: 1, sampleType: 'FLOAT32'}}; }\n"
        "function evaluatePixel(s) { return [10 * Math.log(s.VH) / Math.LN10]; }"
    )
    day = scene.datetime.date().isoformat()
    got = float_render(pipeline, "RAW_S1_VH_DB", grid, day, js_request(pipeline, "RAW_S1_VH_DB", source))[0]
    uncalibrated = float_render(pipeline, "RAW_S1_VH_DB", grid, day)[0]  # 10 log10(DN^2)
    valid = ~np.ma.getmaskarray(uncalibrated) & np.isfinite(uncalibrated.filled(np.nan)) & ~np.ma.getmaskarray(got)
    assert valid.mean() > 0.2
    power_scale = layer.collection.bands["VH"].power_scale
    np.testing.assert_allclose(got[valid], uncalibrated[valid] + 10 * np.log10(power_scale), atol=1e-3)


TEMPORAL = """//VERSION=3
function setup() {
  return {input: [{bands: ["B04", "dataMask"]}], output: {bands: 3, sampleType: "FLOAT32"},
          mosaicking: Mosaicking.MODE};
}
function preProcessScenes(collections) {
  KEEP
  return collections;
}
function evaluatePixel(samples, scenes) {
  const list = scenes.tiles || scenes.orbits;
  const i = samples.findIndex((s) => s.dataMask === 1);
  const when = i < 0 ? null : new Date(scenes.tiles ? list[i].date : list[i].dateFrom);
  return [samples.length, when ? when.getUTCFullYear() : -1, i < 0 ? 0 : samples[i].B04];
}
"""
# The two T35VPK crops (2017-09-24 and 2018-02-04) lie 20 km apart: one grid over both.
TWO_DATES = Grid((668400.0, 6953220.0, 684000.0, 6971220.0), CRS.from_epsg(32635), 260, 300)


@pytest.mark.parametrize("mode", ["TILE", "ORBIT"])
def test_multi_temporal_samples_scenes_and_pre_processing(pipeline: Pipeline, mode: str) -> None:
    window = "2017-09-01/2018-03-01"
    reference = float_render(pipeline, "RAW_B04", TWO_DATES, window)[0]
    source = TEMPORAL.replace("MODE", mode).replace("KEEP", "")
    got = float_render(pipeline, "RAW_B04", TWO_DATES, window, js_request(pipeline, "RAW_B04", source))
    valid = ~np.ma.getmaskarray(got[0])
    assert valid.sum() == (~np.ma.getmaskarray(reference)).sum() > 500
    assert set(np.unique(got[0][valid])) == {2.0}  # one sample per scene (or day): two
    years = got[1][valid]
    assert set(np.unique(years)) == {2017.0, 2018.0}
    np.testing.assert_allclose(got[2][valid], reference[valid], rtol=1e-6)
    # preProcessScenes drops the 2018 scene before anything is read
    keep_2017 = (
        "const list = collections.scenes.tiles || collections.scenes.orbits;\n"
        "  const kept = list.filter((t) => new Date(t.date || t.dateFrom).getUTCFullYear() === 2017);\n"
        "  if (collections.scenes.tiles) collections.scenes.tiles = kept; else collections.scenes.orbits = kept;"
    )
    filtered = float_render(
        pipeline,
        "RAW_B04",
        TWO_DATES,
        window,
        js_request(pipeline, "RAW_B04", TEMPORAL.replace("MODE", mode).replace("KEEP", keep_2017)),
    )
    kept = ~np.ma.getmaskarray(filtered[0])
    assert 0 < kept.sum() < valid.sum()
    assert set(np.unique(filtered[0][kept])) == {1.0} and set(np.unique(filtered[1][kept])) == {2017.0}


# ---- the JavaScript layers of the bundled configuration ---------------------------------------


def ramp_floor(values: np.ndarray, stops: list[float], colors: list[int]) -> np.ndarray:
    """ColorRampVisualizer in numpy: interpolate 0..255 components, floor, clamp at the ends."""
    rgb = np.array([[(c >> 16) & 255, (c >> 8) & 255, c & 255] for c in colors], dtype=np.float64)
    out = np.stack([np.floor(np.interp(values, stops, rgb[:, k])) for k in range(3)])
    for k in range(3):  # the end stops are exact colours, not floored interpolations
        out[k][values <= stops[0]] = rgb[0, k]
        out[k][values >= stops[-1]] = rgb[-1, k]
    return out


def test_max_ndvi_layer_takes_the_greenest_day(pipeline: Pipeline) -> None:
    window = "2017-09-01/2018-03-01"
    got = pipeline.render_data(RenderRequest("MAX_NDVI", TWO_DATES, ImageFormat.PNG, time=parse_time(window))).data
    ndvi_script = pipeline.registry.get("RAW_B04").request_script(b64("(B08 - B04) / (B08 + B04)"))
    ndvi = float_render(pipeline, "RAW_B04", TWO_DATES, window, ndvi_script)[0]
    valid = ~np.ma.getmaskarray(ndvi)
    assert valid.sum() > 500 and np.array_equal(~np.ma.getmaskarray(got[0]), valid)
    expected = ramp_floor(
        ndvi.filled(0).astype(np.float64),
        [-0.2, 0.0, 0.2, 0.4, 0.6, 1.0],
        [0x0C0C0C, 0xEAEAEA, 0x91BF51, 0x4F892D, 0x0F540A, 0x004400],
    )
    diff = np.abs(got.data.astype(np.int16) - expected.astype(np.int16))[:, valid]
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01


def test_highlight_true_color_layer(pipeline: Pipeline) -> None:
    grid, day = native_grid(band_file(T29UNU, "B04", 60), 0, 0, 512), "2022-10-05"
    got = pipeline.render_data(RenderRequest("TRUE_COLOR_HIGHLIGHT", grid, ImageFormat.PNG, time=parse_time(day))).data
    b04 = float_render(pipeline, "RAW_B04", grid, day)[0]
    valid = ~np.ma.getmaskarray(b04)
    x = b04.filled(0).astype(np.float64) / 0.4
    compressed = np.where(x <= 0, 0, np.where(x <= 0.92, x, np.minimum(1, 0.92 + (x - 0.92) * 0.08 / 1.08)))
    expected = np.clip(np.rint(compressed * 255), 0, 255)
    assert valid.mean() > 0.5 and (x[valid] > 0.92).any()  # bright pixels exercise the compression
    assert np.abs(got[0].data[valid].astype(int) - expected[valid]).max() <= 1


def test_the_configuration_can_switch_request_scripts_off(pipeline: Pipeline) -> None:
    config = pipeline.registry.config.model_copy(update={"request_evalscripts": False})
    registry = LayerRegistry(config, pipeline.settings)
    with pytest.raises(InvalidParameter) as refused:
        registry.get("TRUE_COLOR").request_script(b64((EVALSCRIPTS / "true_color.js").read_text()))
    assert refused.value.parameter == "EVALSCRIPT"
    assert pipeline.registry.get("TRUE_COLOR").request_script(b64((EVALSCRIPTS / "true_color.js").read_text()))


def test_large_images_get_a_proportional_time_limit(v8_only: None) -> None:
    """The limit is per 512 x 512 pixels: an image 9x that size may run 9x as long, no longer.

    The long-running script waits on the clock (its first pixel spins 2 s of wall time), not on
    an amount of arithmetic: its run time is then the same on a fast or a busy machine, twice
    one block's limit and well inside the image's nine.
    """
    busy = SETUP + (
        "let started;\n"
        "function evaluatePixel(s) {\n"
        "  if (started === undefined) { started = Date.now(); while (Date.now() - started < 2000) {} }\n"
        "  return [s.B04 + 1];\n"
        "}"
    )
    js_pool.configure(1, JsLimits(timeout=1.0))
    try:
        script = JavaScriptEvalscript(busy, "busy", {"B04"})
        started = time.monotonic()
        values = script.evaluate(Samples({"B04": np.zeros((1536, 1536))}))
        assert time.monotonic() - started >= 2.0  # twice as long as one 512 x 512 block may take
        assert values.shape == (1, 1536, 1536) and np.all(values == 1)
        endless = JavaScriptEvalscript(SETUP + "function evaluatePixel(s) { for (;;) {} }", "endless", {"B04"})
        started = time.monotonic()
        with pytest.raises(EvalscriptError, match="time limit"):
            endless.evaluate(Samples({"B04": np.zeros((1024, 1024))}))
        assert 4.0 <= time.monotonic() - started < 4.0 + GRACE_SECONDS
    finally:
        js_pool.configure(2, JsLimits())
