"""True colour: B04, B03, B02 reflectance with a 2.5x gain (Sentinel Hub's default look)."""

GAIN = 2.5


def setup():
    return {
        "input": [{"bands": ["B02", "B03", "B04", "dataMask"], "units": "REFLECTANCE"}],
        "output": {"bands": 4, "sampleType": "AUTO"},
    }


def evaluatePixel(samples):
    return [GAIN * samples.B04, GAIN * samples.B03, GAIN * samples.B02, samples.dataMask]
