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
        valid &= np.nan_to_num(values[3], nan=0.0) > 0
        values = values[:3]
    if output.sample_type is SampleType.FLOAT32:
        data = values.astype(np.float32)
        data[:, ~valid] = np.nan
    else:
        scaled = values * 255.0 if output.sample_type is SampleType.AUTO else values
        low, high, dtype = _LIMITS.get(output.sample_type, _LIMITS[SampleType.UINT8])
        data = np.clip(np.rint(np.nan_to_num(scaled, nan=0.0)), low, high).astype(dtype)
    mask = np.broadcast_to(~valid, data.shape)
    return np.ma.MaskedArray(data, mask=mask)
