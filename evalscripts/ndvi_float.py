"""NDVI as raw float32 values, for analysis downloads (GeoTIFF)."""

from server.evalscript.helpers import index


def setup():
    return {
        "input": [{"bands": ["B04", "B08", "dataMask"]}],
        "output": {"bands": 1, "sampleType": "FLOAT32"},
    }


def evaluatePixel(samples):
    return [index(samples.B08, samples.B04)]
