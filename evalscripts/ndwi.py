"""NDWI (McFeeters) = (B03 - B08) / (B03 + B08): open water is positive, shown blue."""

from server.evalscript.helpers import colorBlend, hex_rgb, index

STOPS = [-0.8, 0.0, 0.8]
COLORS = [hex_rgb(c) for c in ("#008000", "#ffffff", "#0000cc")]


def setup():
    return {
        "input": [{"bands": ["B03", "B08", "dataMask"]}],
        "output": {"bands": 4},
    }


def evaluatePixel(samples):
    ndwi = index(samples.B03, samples.B08)
    red, green, blue = colorBlend(ndwi, STOPS, COLORS)
    return [red, green, blue, samples.dataMask]
