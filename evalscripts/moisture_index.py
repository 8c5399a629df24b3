"""Moisture index (NDMI) = (B8A - B11) / (B8A + B11), red (dry) to blue (wet)."""

from server.evalscript.helpers import colorBlend, hex_rgb, index

STOPS = [-0.8, -0.24, -0.032, 0.032, 0.24, 0.8]
COLORS = [hex_rgb(c) for c in ("#800000", "#ff0000", "#ffff00", "#00ffff", "#0000ff", "#000080")]


def setup():
    return {
        "input": [{"bands": ["B8A", "B11", "dataMask"]}],
        "output": {"bands": 4},
    }


def evaluatePixel(samples):
    moisture = index(samples.B8A, samples.B11)
    red, green, blue = colorBlend(moisture, STOPS, COLORS)
    return [red, green, blue, samples.dataMask]
