"""Evalscripts in the forms published collections use, sent unmodified (issue 16, items 6, 8, 9).

Every script here is written for this test in the shape of a family of published scripts:

* the "simple" V3 form: a ``//VERSION=3`` header, no ``setup()``, bands as variables and a
  top-level ``return`` (Sentinel Hub runs it per pixel like a V1 script);
* multi-temporal scripts reading ``scenes`` as documented: ``dateFrom``/``dateTo``/``date`` are
  ISO strings (``.split("T")``), ``collections.from``/``to`` are Dates, and the deprecated
  ``scenes[i].date`` is a Date;
* V1 scripts that name bands in comments, strings or regular expressions they never read.

Pixels are checked against numpy on the bundled sample's band files, and where numpy runs a
script (``js_vector.py``) its output against V8's, bit for bit.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import numpy as np
import pytest
from rasterio.crs import CRS

from server.errors import EvalscriptError
from server.evalscript.contract import Samples
from server.evalscript.js_script import JavaScriptEvalscript, set_vectorize
from server.models import Grid, ImageFormat, RenderRequest, parse_time
from server.pipeline import Pipeline
from tests.test_pixels import T29UNU, band_file, native_grid, read_window
from tests.test_request_evalscript import b64

S2_BANDS = {"B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12", "SCL"}
WINDOW = (120, 140, 128)  # col, row, size on T29UNU's 60 m grid (baseline 04.00: offset -1000)
DAY = "2022-10-05"


@pytest.fixture
def vectorise_off() -> Iterator[None]:
    """Scripts compiled inside the test run in V8 even when numpy could run them."""
    set_vectorize(False)
    yield
    set_vectorize(True)


def reflectance(band: str) -> np.ndarray:
    """T29UNU's reflectance in WINDOW, read and harmonised with rasterio and numpy only.

    As the script sees it: float32 reflectance (how bands are held), computed on in float64.
    """
    dn = read_window(band_file(T29UNU, band, 60), *WINDOW).astype(np.float32)
    return np.maximum((dn - np.float32(1000)) * np.float32(1e-4), np.float32(0)).astype(np.float64)


def window_grid() -> Grid:
    return native_grid(band_file(T29UNU, "B04", 60), *WINDOW)


def render(pipeline: Pipeline, script: object, grid: Grid, day: str) -> np.ma.MaskedArray:
    """What the pipeline renders for a request script (after sample-type conversion)."""
    req = RenderRequest("RAW_B04", grid, ImageFormat.GTIFF, time=parse_time(day), script=script)
    return pipeline.render_data(req).data


def auto_uint8(values: np.ndarray) -> np.ndarray:
    """Sentinel Hub's AUTO sample type on float64 results: x 255, rounded, clamped."""
    return np.clip(np.rint(values.astype(np.float32) * np.float32(255)), 0, 255).astype(np.uint8)


def assert_runtimes_agree(source: str, bands: dict[str, np.ndarray]) -> JavaScriptEvalscript:
    """numpy runs the script and gives V8's bits; returns the numpy-run script."""
    set_vectorize(False)
    try:
        in_v8 = JavaScriptEvalscript(source, "v8", S2_BANDS)
    finally:
        set_vectorize(True)
    vectorised = JavaScriptEvalscript(source, "numpy", S2_BANDS)
    assert vectorised.runtime == "numpy", vectorised.runtime
    assert in_v8.runtime.startswith("v8")
    samples = Samples({name: bands[name] for name in vectorised.inputs.bands})
    expected, got = in_v8.evaluate(samples), vectorised.evaluate(samples)
    assert expected.shape == got.shape
    assert np.array_equal(expected.view(np.uint32), got.view(np.uint32))  # bit for bit, NaN included
    return vectorised


# ---- item 6: //VERSION=3 without setup(), a top-level return ----------------------------------

SIMPLE_V3 = """//VERSION=3
// Warm-roof highlight: a plain body run per pixel, bands as variables.
var warmth = (B04 - B02) / (B04 + B02);
var gain = 3.2;
if (warmth > WARM) {
  return [1, gain * B03, 0.4 + warmth];
}
return [gain * B04, gain * B03, gain * B02];
"""


def simple_v3_numpy(b02: np.ndarray, b03: np.ndarray, b04: np.ndarray, warm: float) -> np.ndarray:
    warmth = (b04 - b02) / (b04 + b02)
    hot = warmth > warm
    return np.stack(
        [np.where(hot, 1.0, 3.2 * b04), 3.2 * b03, np.where(hot, 0.4 + warmth, 3.2 * b02)]
    )


def test_version3_header_without_setup_runs_as_a_simple_script(pipeline: Pipeline) -> None:
    b02, b03, b04 = reflectance("B02"), reflectance("B03"), reflectance("B04")
    warmth = (b04 - b02) / (b04 + b02)
    warm = float(np.round(np.quantile(warmth, 0.8), 3))  # both branches are taken on this window
    source = SIMPLE_V3.replace("WARM", repr(warm))
    script = pipeline.registry.get("RAW_B04").request_script(b64(source))
    assert isinstance(script, JavaScriptEvalscript)
    assert script.version == 1 and script.inputs.bands == ("B02", "B03", "B04")
    assert script.output.bands == 3
    got = render(pipeline, script, window_grid(), DAY)
    expected = auto_uint8(simple_v3_numpy(b02, b03, b04, warm))
    assert got.shape == (3, 128, 128) and got.dtype == np.uint8
    assert not np.ma.getmaskarray(got).any()
    hot = warmth > warm
    assert 0.05 < hot.mean() < 0.5
    assert np.array_equal(got.data, expected)
    # numpy runs the form too, with V8's bits
    assert_runtimes_agree(source, {"B02": b02, "B03": b03, "B04": b04})


def test_simple_form_gives_the_same_image_with_or_without_the_header(client) -> None:
    body = SIMPLE_V3.replace("WARM", "0.2").split("\n", 1)[1]
    tile = "/layers/RAW_B04/tiles/WebMercatorQuad/10/486/333.png"
    with_header = client.get(tile, params={"evalscript": b64("//VERSION=3\n" + body)})
    without = client.get(tile, params={"evalscript": b64(body)})
    assert with_header.status_code == 200, with_header.text[:300]
    assert without.status_code == 200 and with_header.content == without.content


def test_a_version3_script_with_neither_form_is_refused_by_name(pipeline: Pipeline) -> None:
    with pytest.raises(EvalscriptError, match="evaluatePixel"):
        pipeline.registry.get("RAW_B04").request_script(b64("//VERSION=3\nvar gain = 2.5;\n"))


# ---- item 8: the scenes argument and preProcessScenes -----------------------------------------

# The two T35VPK crops (2017-09-24 09:30:20 and 2018-02-04 09:41:56 UTC) lie 20 km apart.
TWO_DATES = Grid((668400.0, 6953220.0, 684000.0, 6971220.0), CRS.from_epsg(32635), 260, 300)
WINDOW_2 = "2017-09-01/2018-03-01"
ACQUIRED = {"2017-09-24": (9, 30, 20), "2018-02-04": (9, 41, 56)}

ORBIT_SCRIPT = """//VERSION=3
function setup() {
  return {input: [{bands: ["B04", "dataMask"]}], output: {bands: 6, sampleType: "FLOAT32"},
          mosaicking: "ORBIT"};
}
function preProcessScenes(collections) {
  const last = collections.to.getTime();  // a Date
  collections.scenes.orbits = collections.scenes.orbits.filter(function (orbit) {
    return KEEP && new Date(orbit.dateFrom).getTime() < last;
  });
  return collections;
}
function evaluatePixel(samples, scenes) {
  for (var i = 0; i < samples.length; i++) {
    if (samples[i].dataMask !== 1) continue;
    var ymd = scenes.orbits[i].dateFrom.split("T")[0].split("-");
    var hms = scenes.orbits[i].tiles[0].date.split("T")[1].replace("Z", "").split(":");
    var nextDay = scenes.orbits[i].dateTo.split("T")[0].split("-")[2];
    var legacy = scenes[i].date.getUTCFullYear();
    return [+ymd[0] * 10000 + +ymd[1] * 100 + +ymd[2], +hms[0] * 10000 + +hms[1] * 100 + +hms[2], +nextDay,
            legacy, samples.length, samples[i].B04];
  }
  return [0, 0, 0, 0, samples.length, 0];
}
"""

TILE_SCRIPT = """//VERSION=3
function setup() {
  return {input: [{bands: ["B04", "dataMask"]}], output: {bands: 4, sampleType: "FLOAT32"},
          mosaicking: Mosaicking.TILE};
}
function evaluatePixel(samples, scenes) {
  var found = samples.findIndex(function (s) { return s.dataMask === 1; });
  if (found < 0) return [0, 0, 0, 0];
  var tile = scenes.tiles[found];
  var day = tile.date.split("T")[0].replace(/-/g, "");
  var iso = typeof tile.date === "string" && /^\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\dZ$/.test(tile.date);
  return [+day, iso ? 1 : 0, scenes[found].date.getUTCMonth() + 1, samples[found].B04];
}
"""


def orbit_day(value: float) -> str:
    text = f"{int(value):08d}"
    return f"{text[:4]}-{text[4:6]}-{text[6:]}"


def test_orbit_scenes_carry_iso_strings_and_legacy_dates(pipeline: Pipeline) -> None:
    reference = render(pipeline, None, TWO_DATES, WINDOW_2)[0]  # B04 from the expression layer
    script = pipeline.registry.get("RAW_B04").request_script(b64(ORBIT_SCRIPT.replace("KEEP", "true")))
    got = render(pipeline, script, TWO_DATES, WINDOW_2)
    valid = ~np.ma.getmaskarray(got[0])
    assert valid.sum() == (~np.ma.getmaskarray(reference)).sum() > 500
    days = {orbit_day(v) for v in np.unique(got[0][valid])}
    assert days == set(ACQUIRED)
    for day, (h, m, s) in ACQUIRED.items():
        here = valid & (got[0].filled(0) == float(day.replace("-", "")))
        assert here.sum() > 100
        assert set(np.unique(got[1][here])) == {h * 10000 + m * 100 + s}  # the tile's acquisition time
        assert set(np.unique(got[2][here])) == {int(day[-2:]) + 1}  # dateTo: the next day, 00:00
        assert set(np.unique(got[3][here])) == {int(day[:4])}  # deprecated scenes[i].date: a Date
    assert set(np.unique(got[4][valid])) == {2.0}
    np.testing.assert_allclose(got[5][valid], reference[valid], rtol=1e-6)


def test_pre_process_scenes_splits_date_from_strings(pipeline: Pipeline) -> None:
    keep_2017 = 'orbit.dateFrom.split("T")[0] < "2018-01-01"'
    script = pipeline.registry.get("RAW_B04").request_script(b64(ORBIT_SCRIPT.replace("KEEP", keep_2017)))
    got = render(pipeline, script, TWO_DATES, WINDOW_2)
    kept = ~np.ma.getmaskarray(got[0])
    assert kept.sum() > 100
    assert {orbit_day(v) for v in np.unique(got[0][kept])} == {"2017-09-24"}
    assert set(np.unique(got[4][kept])) == {1.0}  # the 2018 orbit was dropped before reading


def test_tile_scenes_carry_iso_strings(pipeline: Pipeline) -> None:
    reference = render(pipeline, None, TWO_DATES, WINDOW_2)[0]
    script = pipeline.registry.get("RAW_B04").request_script(b64(TILE_SCRIPT))
    got = render(pipeline, script, TWO_DATES, WINDOW_2)
    valid = ~np.ma.getmaskarray(got[0])
    assert valid.sum() > 500
    assert {orbit_day(v) for v in np.unique(got[0][valid])} == set(ACQUIRED)
    assert set(np.unique(got[1][valid])) == {1.0}
    for day in ACQUIRED:
        here = valid & (got[0].filled(0) == float(day.replace("-", "")))
        assert set(np.unique(got[2][here])) == {int(day[5:7])}
    np.testing.assert_allclose(got[3][valid], reference[valid], rtol=1e-6)


# ---- item 9: bands are what the code reads, not what its comments mention ---------------------

COMMENTED_V1 = """// Bare-soil brightness. An earlier draft also blended in B08 here.
/* B11 and B12 were tried as well, see the notes */
var note = "B05 is not read", pattern = /B06|B07/;
var table = {B8A: 1}; var unused = table.B09;
var label = `B01 ${B03 > 0.5 ? "bright" : "dark"}`;
var brightness = (B02 + B03 + B04) / 3; // B08 would go here
return [2.5 * brightness, 2.5 * brightness, 2.5 * B04];
"""


def test_v1_bands_come_from_code_not_comments_strings_or_regexps(vectorise_off: None) -> None:
    script = JavaScriptEvalscript(COMMENTED_V1, "commented", S2_BANDS)
    assert script.version == 1
    assert script.inputs.bands == ("B02", "B03", "B04")


def test_a_band_named_only_in_a_comment_is_not_read(pipeline: Pipeline) -> None:
    """T29UNU has no B08 file: reading it would blank the tile (the band is missing)."""
    assert not list(T29UNU.glob("R*m/*_B08_*.jp2"))
    script = pipeline.registry.get("RAW_B04").request_script(b64(COMMENTED_V1))
    assert isinstance(script, JavaScriptEvalscript) and "B08" not in script.inputs.bands
    got = render(pipeline, script, window_grid(), DAY)
    b02, b03, b04 = reflectance("B02"), reflectance("B03"), reflectance("B04")
    brightness = (b02 + b03 + b04) / 3
    expected = auto_uint8(np.stack([2.5 * brightness, 2.5 * brightness, 2.5 * b04]))
    assert not np.ma.getmaskarray(got).any()
    assert np.array_equal(got.data, expected)


def test_v1_band_detection_reads_code_inside_templates_and_nested_functions(vectorise_off: None) -> None:
    source = (
        "function boost(v) { return v * B8A; } // B12\n"
        "var s = `${B11 * 2} B05`;\n"
        "return [boost(B02), s.length > 0 ? 1 : 0];\n"
    )
    script = JavaScriptEvalscript(source, "nested", S2_BANDS)
    assert script.inputs.bands == ("B02", "B11", "B8A")
    bands = {"B02": np.full((2, 2), 0.5), "B11": np.zeros((2, 2)), "B8A": np.full((2, 2), 4.0)}
    values = script.evaluate(Samples(bands))
    assert np.all(values[0] == 2.0) and np.all(values[1] == 1.0)


def test_a_v1_syntax_error_is_reported_as_one(vectorise_off: None) -> None:
    """acorn cannot outline it, so no band is known: V8 still reports the syntax error."""
    with pytest.raises(EvalscriptError, match="SyntaxError"):
        JavaScriptEvalscript("var a = B04;\nreturn [a;\n", "broken", S2_BANDS)


HELPERS_V1 = """//VERSION=3
// Contrast-stretched natural colour, helpers declared below the return as some published scripts do.
return [stretch(B04, MIN, MAX), stretch(B03, MIN, MAX), stretch(B02, MIN, MAX)];

function stretch(value, low, high) {
  var x = (value - low) / (high - low);
  return clamp(x);
}
function clamp(x) { return x < 0 ? 0 : x > 1 ? 1 : x; }
"""


def test_simple_form_with_helper_functions_runs_in_numpy_with_v8s_bits(pipeline: Pipeline) -> None:
    b02, b03, b04 = reflectance("B02"), reflectance("B03"), reflectance("B04")
    low, high = float(np.quantile(b02, 0.05)), float(np.quantile(b04, 0.95))
    source = HELPERS_V1.replace("MIN", repr(low)).replace("MAX", repr(high))
    assert_runtimes_agree(source, {"B02": b02, "B03": b03, "B04": b04})
    script = pipeline.registry.get("RAW_B04").request_script(b64(source))
    assert isinstance(script, JavaScriptEvalscript) and script.runtime == "numpy"
    got = render(pipeline, script, window_grid(), DAY)
    expected = auto_uint8(np.stack([np.clip((b - low) / (high - low), 0, 1) for b in (b04, b03, b02)]))
    assert np.array_equal(got.data, expected)
    assert (expected == 0).any() and (expected == 255).any()  # both clamps are exercised


def test_errors_in_simple_form_scripts_name_the_line_as_written(vectorise_off: None) -> None:
    for header in ("", "//VERSION=3\n"):
        source = header + "var a = B04;\nreturn [undefinedHelper(a)];\n"
        line = 3 if header else 2
        with pytest.raises(EvalscriptError, match=re.escape(f"undefinedHelper is not defined (line {line})")):
            JavaScriptEvalscript(source, "wrong-line", S2_BANDS)
