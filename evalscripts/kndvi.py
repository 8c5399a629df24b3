"""kNDVI = tanh(NDVI^2) (Camps-Valls et al. 2021), coloured white to dark green."""

import numpy as np

from server.evalscript.helpers import colorBlend, hex_rgb, index

STOPS = [0.0, 0.2, 0.4, 0.6, 0.8]
COLORS = [hex_rgb(c) for c in ("#f7fcf5", "#c7e9c0", "#74c476", "#238b45", "#00441b")]


def setup():
    return {
        "input": [{"bands": ["B04", "B08", "dataMask"]}],
        "output": {"bands": 4},
    }


def evaluatePixel(samples):
    kndvi = np.tanh(index(samples.B08, samples.B04) ** 2)
    red, green, blue = colorBlend(kndvi, STOPS, COLORS)
    return [red, green, blue, samples.dataMask]
