"""True colour with clouds, cirrus and cloud shadows (from SCL) made transparent."""

import numpy as np

GAIN = 2.5
MASKED_CLASSES = [3, 8, 9, 10]  # cloud shadows, cloud medium/high probability, thin cirrus


def setup():
    return {
        "input": [{"bands": ["B02", "B03", "B04", "SCL", "dataMask"]}],
        "output": {"bands": 4},
    }


def evaluatePixel(samples):
    clear = ~np.isin(samples.SCL, MASKED_CLASSES)
    return [GAIN * samples.B04, GAIN * samples.B03, GAIN * samples.B02, samples.dataMask * clear]
