"""Legends drawn with the colours of the layer's own script: colours are written once.

``config/eotiler.yaml`` gives NDVI, kNDVI, NDWI and the moisture index a legend with only a
title; the legend's stops and colours come from ``STOPS``/``COLORS`` of the layer's ``.js``
script (which the ``.py`` twin reads too). SCL's classes give their value and label; their
colours are ``PALETTE[value]`` of ``scl.js``. The scripts' colours are parsed here on their
own (``tests/support/script_ramps.py``) and compared with what the server draws, over HTTP.
"""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from lxml import etree
from PIL import Image

from server.catalog.layers import LayerRegistry
from server.config.loader import load_config
from server.errors import ConfigError
from server.resources import default_config_path
from tests.support.script_ramps import layer_script, script_palette, script_ramp

ROOT = Path(__file__).resolve().parent.parent
RAMP_LAYERS = {"NDVI", "KNDVI", "NDWI", "MOISTURE_INDEX", "MOSAIC_NDVI"}
OUTLINE = (60, 60, 60, 255)  # the frame render/legend.py draws around the colour bar
WMS = "http://www.opengis.net/wms"
XLINK = "http://www.w3.org/1999/xlink"


def expected_bar(stops: list[float], colours: list[tuple[int, int, int]], rows: int) -> np.ndarray:
    """(rows, 3) colours of a bar from the highest stop (top) to the lowest (bottom row)."""
    values = stops[-1] - (stops[-1] - stops[0]) * np.arange(rows) / (rows - 1)
    return np.stack([np.interp(values, stops, [c[k] for c in colours]) for k in range(3)], axis=1)


def bar_column(png: bytes) -> np.ndarray:
    """The colour bar's middle column, between its top and bottom frame lines (RGB rows)."""
    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))
    column = image[:, 15]
    frame = [row for row in range(column.shape[0]) if tuple(column[row]) == OUTLINE]
    assert len(frame) >= 2, "no frame around the colour bar"
    return column[frame[0] : frame[-1] + 1, :3].astype(float)


def test_the_configuration_copies_no_stops():
    layers = yaml.safe_load(default_config_path().read_text())["layers"]
    ramps = {lid for lid, layer in layers.items() if "legend" in layer and "items" not in layer["legend"]}
    assert ramps == RAMP_LAYERS
    for lid in RAMP_LAYERS:
        assert set(layers[lid]["legend"]) == {"title"}, lid
    assert all("color" not in item for item in layers["SCL"]["legend"]["items"])


@pytest.mark.parametrize("layer", sorted(RAMP_LAYERS))
def test_legend_image_is_the_ramp_of_the_script(client: httpx.Client, layer: str):
    stops, colours = script_ramp(layer_script(layer))
    assert len(stops) == len(colours) >= 3
    rest = client.get(f"/layers/{layer}/legend.png")
    assert rest.status_code == 200 and rest.headers["content-type"] == "image/png"
    got = bar_column(rest.content)
    # the frame's rows are the bar's first and last: compare the rows in between, where each
    # row's value is interpolated between the stops (the server truncates to integers)
    want = expected_bar(stops, colours, got.shape[0])
    assert np.abs(got[1:-1] - want[1:-1]).max() <= 1.0, layer

    # WMS capabilities advertise a LegendURL, and it answers the same image
    caps = client.get("/ogc/wms", params={"SERVICE": "WMS", "REQUEST": "GetCapabilities", "VERSION": "1.3.0"})
    doc = etree.fromstring(caps.content)
    hrefs = doc.xpath(
        f"//w:Layer[w:Name='{layer}']/w:Style/w:LegendURL/w:OnlineResource/@xlink:href",
        namespaces={"w": WMS, "xlink": XLINK},
    )
    assert len(hrefs) == 1
    wms = client.get(hrefs[0])
    assert wms.status_code == 200 and wms.content == rest.content


def test_class_legend_colours_are_the_palette_of_the_script(client: httpx.Client):
    palette = script_palette(layer_script("SCL"))
    assert len(palette) == 12
    png = client.get("/layers/SCL/legend.png").content
    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))
    swatches: list[tuple[int, int, int]] = []  # opaque colours down the swatch column, in order
    for pixel in image[:, 14]:
        rgba = tuple(int(v) for v in pixel)
        if rgba[3] == 255 and rgba != OUTLINE and (not swatches or swatches[-1] != rgba[:3]):
            swatches.append(rgba[:3])
    assert swatches == palette[1:]  # classes 1-11 (0 is no data, never drawn)


def write_config(tmp_path: Path, layer: dict, script: str | None = None) -> Path:
    """A small configuration: one sample collection with B04, one layer ``L``."""
    scripts = tmp_path / "scripts"
    scripts.mkdir(exist_ok=True)
    if script is not None:
        (scripts / "ramp.js").write_text(script)
    config = {
        "evalscripts_dir": str(scripts),
        "collections": {
            "s2": {
                "title": "S2",
                "catalogue": {"type": "static", "path": str(ROOT / "sample" / "stac" / "sentinel-2-l2a")},
                "data_root": str(ROOT / "sample" / "eodata"),
                "bands": {"B04": {"asset": "B04_{res}m", "resolutions": [10, 20]}},
            }
        },
        "layers": {"L": {"title": "L", "collection": "s2", **layer}},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


RAMP_SCRIPT = """//VERSION=3
const STOPS = [0, 0.125, 0.5];
const COLORS = [0x102030, 0xff8000, 0xfafbfc].map((c) => normalizeRGB(int2rgb(c)));
function setup() { return { input: ["B04", "dataMask"], output: { bands: 4 } }; }
function evaluatePixel(s) { const c = colorBlend(s.B04, STOPS, COLORS); return [c[0], c[1], c[2], s.dataMask]; }
"""


def test_a_new_layer_with_a_ramp_is_one_script_and_one_entry(tmp_path: Path):
    path = write_config(tmp_path, {"evalscript": "ramp.js", "legend": {"title": "Ramp"}}, RAMP_SCRIPT)
    legend = LayerRegistry(load_config(path)).get("L").legend()
    assert legend is not None and legend.type == "gradient" and legend.title == "Ramp"
    assert [(item.value, item.color) for item in legend.items or []] == [
        (0.0, "#102030"),
        (0.125, "#ff8000"),
        (0.5, "#fafbfc"),
    ]


def test_a_legend_without_items_needs_a_script_with_a_ramp(tmp_path: Path):
    no_ramp = RAMP_SCRIPT.replace("const STOPS = [0, 0.125, 0.5];\n", "const LEVELS = [0, 0.125, 0.5];\n")
    path = write_config(tmp_path, {"evalscript": "ramp.js", "legend": {"title": "Ramp"}}, no_ramp)
    with pytest.raises(ConfigError, match=r"layers\.L\.legend: colours left out, and .*STOPS"):
        LayerRegistry(load_config(path))
    path = write_config(tmp_path, {"expression": "B04", "legend": {"title": "B04"}})
    with pytest.raises(ConfigError, match=r"layers\.L\.legend: an expression layer's legend needs items with colours"):
        LayerRegistry(load_config(path))
    path = write_config(tmp_path, {"expression": "B04", "legend": {"type": "discrete", "title": "B04"}})
    with pytest.raises(ConfigError, match=r"layers\.L\.legend: .*discrete legend needs its items"):
        load_config(path)


PALETTE_SCRIPT = """//VERSION=3
const PALETTE = [
  0x000000, // 0 nothing
  0x123456, // 1 first, with a comma
  0xabcdef, // 2 second
].map((c) => normalizeRGB(int2rgb(c)));
function setup() { return { input: [{ bands: ["B04"], units: "DN" }], output: { bands: 3 } }; }
function evaluatePixel(s) { return PALETTE[Math.min(Math.max(Math.trunc(s.B04), 0), 2)]; }
"""


def test_class_items_name_their_value_and_take_the_palette_colour(tmp_path: Path):
    items = [{"value": 2, "label": "Two"}, {"color": "#ff0000", "label": "Own colour"}, {"value": 1, "label": "One"}]
    path = write_config(
        tmp_path, {"evalscript": "ramp.js", "legend": {"type": "discrete", "items": items}}, PALETTE_SCRIPT
    )
    legend = LayerRegistry(load_config(path)).get("L").legend()
    assert legend is not None
    assert [(item.label, item.color) for item in legend.items or []] == [
        ("Two", "#abcdef"),
        ("Own colour", "#ff0000"),
        ("One", "#123456"),
    ]
    items[0] = {"value": 3, "label": "Three"}
    path = write_config(
        tmp_path, {"evalscript": "ramp.js", "legend": {"type": "discrete", "items": items}}, PALETTE_SCRIPT
    )
    with pytest.raises(ConfigError, match=r"layers\.L\.legend\.items\[0\]: class 3.0 is not in the script's PALETTE"):
        LayerRegistry(load_config(path))
    path = write_config(
        tmp_path, {"evalscript": "ramp.js", "legend": {"items": [{"value": 0}, {"value": 1}]}}, PALETTE_SCRIPT
    )
    with pytest.raises(ConfigError, match="every item of a gradient legend needs a color"):
        load_config(path)
