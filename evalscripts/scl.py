"""Scene classification (SCL) with the usual Sentinel-2 L2A palette; class 0 is transparent."""

from pathlib import Path

import numpy as np

from server.evalscript.colour_ramp import js_palette

# The palette (class -> colour) lives in the JavaScript twin (scl.js), the script Sentinel Hub
# can run as it is; the layer's legend takes its colours from there too.
PALETTE = np.array(js_palette(Path(__file__).with_suffix(".js")), dtype=np.float32)


def setup():
    return {
        "input": [{"bands": ["SCL", "dataMask"], "units": "DN"}],
        "output": {"bands": 4},
    }


def evaluatePixel(samples):
    classes = np.clip(samples.SCL, 0, 11).astype(np.intp)
    red, green, blue = PALETTE[classes].transpose(2, 0, 1)
    return [red, green, blue, samples.dataMask * (classes > 0)]
