"""Scene classification (SCL) with the usual Sentinel-2 L2A palette; class 0 is transparent."""

import numpy as np

from server.evalscript.helpers import hex_rgb

PALETTE = np.array(
    [
        hex_rgb(c)
        for c in (
            "#000000",  # 0 no data
            "#ff0000",  # 1 saturated or defective
            "#2f2f2f",  # 2 dark area pixels
            "#643200",  # 3 cloud shadows
            "#00a000",  # 4 vegetation
            "#ffe65a",  # 5 not vegetated
            "#0000ff",  # 6 water
            "#808080",  # 7 unclassified
            "#c0c0c0",  # 8 cloud, medium probability
            "#ffffff",  # 9 cloud, high probability
            "#64c8ff",  # 10 thin cirrus
            "#ff96ff",  # 11 snow or ice
        )
    ],
    dtype=np.float32,
)


def setup():
    return {
        "input": [{"bands": ["SCL", "dataMask"], "units": "DN"}],
        "output": {"bands": 4},
    }


def evaluatePixel(samples):
    classes = np.clip(samples.SCL, 0, 11).astype(np.intp)
    red, green, blue = PALETTE[classes].transpose(2, 0, 1)
    return [red, green, blue, samples.dataMask * (classes > 0)]
