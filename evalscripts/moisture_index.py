"""Moisture index (NDMI) = (B8A - B11) / (B8A + B11), red (dry) to blue (wet)."""

from pathlib import Path

from server.evalscript.colour_ramp import js_colour_ramp
from server.evalscript.helpers import colorBlend, index

# The ramp lives in the JavaScript twin (moisture_index.js), the script Sentinel Hub can run as it is.
STOPS, COLORS = js_colour_ramp(Path(__file__).with_suffix(".js"))


def setup():
    return {
        "input": [{"bands": ["B8A", "B11", "dataMask"]}],
        "output": {"bands": 4},
    }


def evaluatePixel(samples):
    moisture = index(samples.B8A, samples.B11)
    red, green, blue = colorBlend(moisture, STOPS, COLORS)
    return [red, green, blue, samples.dataMask]
