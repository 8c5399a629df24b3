"""No data outside a request geometry (the Process API's ``input.bounds.geometry``).

Why by pixel centre: Sentinel Hub leaves a pixel without data when its centre lies outside the
geometry, and the Statistical API selects the pixels it counts the same way. The mask is
rasterised on each grid (a strip of an image gets its own rows), so it is never larger than
what is drawn at once.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from rasterio.features import geometry_mask
from rasterio.transform import from_bounds

from server.models import Grid


def clip_text(geometry: dict[str, Any] | None) -> str | None:
    """A geometry as ``RenderRequest.clip`` holds it: canonical JSON (equal geometries, equal text)."""
    return None if geometry is None else json.dumps(geometry, sort_keys=True, separators=(",", ":"))


def inside(geometry: dict[str, Any] | str, on: Grid) -> np.ndarray:
    """Pixels of ``on`` whose centre lies in ``geometry`` (GeoJSON in ``on``'s CRS)."""
    shape = json.loads(geometry) if isinstance(geometry, str) else geometry
    transform = from_bounds(*on.bbox, on.width, on.height)
    return geometry_mask([shape], (on.height, on.width), transform, invert=True, all_touched=False)


def mask_outside(data: np.ma.MaskedArray, keep: np.ndarray) -> np.ma.MaskedArray:
    """``data`` (bands, h, w) without data where ``keep`` is False: masked, and NaN for float
    values (as the pipeline marks no data in float outputs), 0 for integer ones (what Sentinel Hub
    returns there, its samples being 0 outside the geometry, where an image has no alpha band)."""
    values = np.array(data.data, copy=True)
    values[:, ~keep] = np.nan if np.issubdtype(values.dtype, np.floating) else 0
    return np.ma.MaskedArray(values, mask=np.ma.getmaskarray(data) | ~keep[None, :, :])
