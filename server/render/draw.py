"""From a mosaic to post-processed images: the steps between reading and encoding.

Why apart from the pipeline: they are pure (arrays in, arrays out), shared by one image, a
composite's parts, and the several outputs of one read, and each strip of a large image runs
them on its own thread.
"""

from __future__ import annotations

import json

import numpy as np

from server.evalscript.contract import Evalscript, OutputSpec, Samples, user_data
from server.evalscript.postprocess import to_sample_type
from server.models import RenderRequest, RenderResult
from server.render.clip import inside, mask_outside
from server.render.mosaic import Mosaic, scene_info
from server.render.outputs import USERDATA_MEDIA
from server.render.strips import Drawn


def output_of(script: Evalscript, bands: tuple[int, ...] | None) -> OutputSpec:
    """The output ``script`` produces after the band subset ``bands`` (None: all of them)."""
    output = script.output
    return output if bands is None else OutputSpec(len(bands), output.sample_type, output.id)


def samples_of(mosaic: Mosaic) -> Samples:
    """A SIMPLE mosaic as a script's samples: its bands and ``dataMask``."""
    return Samples({**mosaic.bands, "dataMask": mosaic.filled.astype(np.float32)})


def evaluated(
    req: RenderRequest, script: Evalscript, mosaic: Mosaic, samples: Samples
) -> tuple[np.ma.MaskedArray, np.ndarray, np.ndarray]:
    """Run ``script`` on ``samples``: post-processed data (clipped to ``req.clip``), raw values and
    which pixels are drawn."""
    values = script.evaluate(samples)
    filled = mosaic.filled
    if req.bands is not None:
        if script.output.has_alpha:  # keep transparency although the alpha band is not selected
            filled = filled & (values[-1] > 0)
        values = values[list(req.bands)]
    data = to_sample_type(values, output_of(script, req.bands), filled)
    if req.clip is not None:
        data = mask_outside(data, inside(req.clip, req.grid))
    return data, values, filled


def user_data_result(script: Evalscript, drawn: Drawn) -> RenderResult:
    """The ``userdata`` response: what ``updateOutputMetadata`` sets for the scenes that drew."""
    found = user_data(script, [scene_info(scene) for scene in drawn.scenes])
    content = json.dumps(found, separators=(",", ":")).encode()
    ids = [scene.id for scene in drawn.scenes]
    return RenderResult(content, USERDATA_MEDIA, ids, drawn.timings, failed=drawn.failed, skipped=drawn.skipped)
