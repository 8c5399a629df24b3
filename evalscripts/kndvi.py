"""kNDVI = tanh(NDVI^2) (Camps-Valls et al. 2021), coloured white to dark green."""

from pathlib import Path

import numpy as np

from server.evalscript.colour_ramp import js_colour_ramp
from server.evalscript.helpers import colorBlend, index

# The ramp lives in the JavaScript twin (kndvi.js), the script Sentinel Hub can run as it is.
STOPS, COLORS = js_colour_ramp(Path(__file__).with_suffix(".js"))


def setup():
    return {
        "input": [{"bands": ["B04", "B08", "dataMask"]}],
        "output": {"bands": 4},
    }


def evaluatePixel(samples):
    kndvi = np.tanh(index(samples.B08, samples.B04) ** 2)
    red, green, blue = colorBlend(kndvi, STOPS, COLORS)
    return [red, green, blue, samples.dataMask]
