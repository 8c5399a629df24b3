"""NDVI, coloured with a brown-to-green ramp (the same stops as the layer's legend)."""

from server.evalscript.helpers import colorBlend, hex_rgb, index

STOPS = [-0.5, 0.0, 0.2, 0.4, 0.6, 1.0]
COLORS = [hex_rgb(c) for c in ("#0c0c0c", "#eaeaea", "#91bf51", "#4f892d", "#0f540a", "#004400")]


def setup():
    return {
        "input": [{"bands": ["B04", "B08", "dataMask"]}],
        "output": {"bands": 4},
    }


def evaluatePixel(samples):
    ndvi = index(samples.B08, samples.B04)
    red, green, blue = colorBlend(ndvi, STOPS, COLORS)
    return [red, green, blue, samples.dataMask]
