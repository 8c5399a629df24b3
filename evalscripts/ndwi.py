"""NDWI (McFeeters) = (B03 - B08) / (B03 + B08): open water is positive, shown blue."""

from pathlib import Path

from server.evalscript.colour_ramp import js_colour_ramp
from server.evalscript.helpers import colorBlend, index

# The ramp lives in the JavaScript twin (ndwi.js), the script Sentinel Hub can run as it is.
STOPS, COLORS = js_colour_ramp(Path(__file__).with_suffix(".js"))


def setup():
    return {
        "input": [{"bands": ["B03", "B08", "dataMask"]}],
        "output": {"bands": 4},
    }


def evaluatePixel(samples):
    ndwi = index(samples.B03, samples.B08)
    red, green, blue = colorBlend(ndwi, STOPS, COLORS)
    return [red, green, blue, samples.dataMask]
