"""The one post-processing step shared by every script kind: sample-type conversion and alpha.

Rules (Sentinel Hub evalscript V3): AUTO = x 255, rounded and clamped to 0..255 as uint8;
UINT8/UINT16 rounded and clamped to the type; FLOAT32 as is; NaN -> 0 for integer types; the
4th band of a visual output is alpha. Pixels without source data are always masked, so tiles
are transparent where nothing was observed (a documented departure: Sentinel Hub draws them
black unless the script returns dataMask as alpha).
"""

from __future__ import annotations

import numpy as np

from server.evalscript.contract import OutputSpec, SampleType

_LIMITS = {
    SampleType.UINT8: (0, 255, np.uint8),
    SampleType.UINT16: (0, 65535, np.uint16),
    SampleType.INT8: (-128, 127, np.int8),
    SampleType.INT16: (-32768, 32767, np.int16),
}


def to_sample_type(values: np.ndarray, output: OutputSpec, data_mask: np.ndarray) -> np.ma.MaskedArray:
    """Convert evaluated bands to the declared sample type and mask no-data pixels.

    Args:
        values: (bands, h, w) float array from the script.
        output: the script's declared output.
        data_mask: (h, w) bool, True where at least one scene had data.

    Returns:
        A masked array without the alpha band; the mask is True where the pixel is transparent.
    """
    valid = data_mask.copy()
    if output.has_alpha:
        valid &= values[3] > 0  # NaN compares False: transparent
        values = values[:3]
    if output.sample_type is SampleType.FLOAT32:
        data = values.astype(np.float32)
        data[:, ~valid] = np.nan
    else:
        # One scratch copy, then in place: a 1024 px GetMap is 4 x 8 MB per pass, and every
        # extra temporary costs time and resident memory.
        low, high, dtype = _LIMITS.get(output.sample_type, _LIMITS[SampleType.UINT8])
        # float32 from here on: scripts compute in double, the 8-bit/16-bit rounding does not need it.
        scratch = values.astype(np.float32)
        if output.sample_type is SampleType.AUTO:
            scratch *= np.float32(255.0)
        # rint keeps NaN and infinities, clip takes the infinities to the type's ends; NaN is the
        # one value left to set (0), which a single isnan pass finds.
        np.rint(scratch, out=scratch)
        np.clip(scratch, low, high, out=scratch)
        nan = np.isnan(scratch)
        if nan.any():
            scratch[nan] = 0.0
        data = scratch.astype(dtype)
    mask = np.broadcast_to(~valid, data.shape)
    return np.ma.MaskedArray(data, mask=mask)
