"""NDVI, coloured with a brown-to-green ramp (the stops of ndvi.js and of the layer's legend)."""

from pathlib import Path

from server.evalscript.colour_ramp import js_colour_ramp
from server.evalscript.helpers import colorBlend, index

# The ramp lives in the JavaScript twin (ndvi.js), the script Sentinel Hub can run as it is.
STOPS, COLORS = js_colour_ramp(Path(__file__).with_suffix(".js"))


def setup():
    return {
        "input": [{"bands": ["B04", "B08", "dataMask"]}],
        "output": {"bands": 4},
    }


def evaluatePixel(samples):
    ndvi = index(samples.B08, samples.B04)
    red, green, blue = colorBlend(ndvi, STOPS, COLORS)
    return [red, green, blue, samples.dataMask]
