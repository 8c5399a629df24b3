"""Several layers drawn as one image: the request and the compositing arithmetic.

Why in the pipeline and not in a protocol: any endpoint that draws layers over each other (WMS
``LAYERS=a,b``, an opaque map on a background colour, the map APIs to come) asks
``Pipeline.render`` for a ``CompositeRequest`` and gets one cached image back, as for one layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from server.models import Grid, ImageFormat, RenderRequest


@dataclass(frozen=True, slots=True)
class CompositeRequest:
    """Layers drawn bottom-up on one grid, on ``bgcolor`` unless ``transparent``.

    Every part has the composite's grid; the format the parts are checked against is the
    composite's, except GeoTIFF, which here carries 8-bit RGB(A) like PNG.
    """

    parts: tuple[RenderRequest, ...]
    transparent: bool
    bgcolor: tuple[int, int, int]

    @property
    def first(self) -> RenderRequest:
        """The bottom layer: its grid, format and cache lifetime stand for the composite."""
        return self.parts[0]

    @property
    def grid(self) -> Grid:
        """The composite's grid (every part's)."""
        return self.first.grid

    @property
    def format(self) -> ImageFormat:
        """The composite's output format."""
        return self.first.format

    @property
    def part_format(self) -> ImageFormat:
        """The format each layer must be able to produce: the composite's, PNG for GeoTIFF."""
        return ImageFormat.PNG if self.format is ImageFormat.GTIFF else self.format


def as_rgba(data: np.ma.MaskedArray) -> np.ndarray:
    """Post-processed uint8 bands (1 or 3) -> float RGBA in 0..1."""
    bands = data.data.astype(np.float32) / 255.0
    rgb = np.repeat(bands[:1], 3, axis=0) if bands.shape[0] == 1 else bands[:3]
    alpha = (~np.ma.getmaskarray(data)[0]).astype(np.float32)
    return np.concatenate([rgb, alpha[None]])


def blend(layers: list[np.ma.MaskedArray], transparent: bool, bgcolor: tuple[int, int, int]) -> np.ma.MaskedArray:
    """Alpha-composite post-processed layers bottom-up into 8-bit RGB, masked where nothing is drawn
    (``transparent``) or filled with ``bgcolor``."""
    height, width = layers[0].shape[1:]
    canvas = np.zeros((4, height, width), dtype=np.float32)
    for data in layers:
        rgba = as_rgba(data)
        alpha = rgba[3]
        canvas[:3] = rgba[:3] * alpha + canvas[:3] * (1 - alpha)
        canvas[3] = np.maximum(canvas[3], alpha)
    rgb = np.rint(canvas[:3] * 255).astype(np.uint8)
    if transparent:
        return np.ma.MaskedArray(rgb, mask=np.broadcast_to(canvas[3] == 0, rgb.shape))
    background = np.array(bgcolor, dtype=np.uint8)[:, None, None]
    rgb = np.where(canvas[3] > 0, rgb, background).astype(np.uint8)
    return np.ma.MaskedArray(rgb, mask=np.zeros(rgb.shape, dtype=bool))


def on_background(data: np.ma.MaskedArray, bgcolor: tuple[int, int, int]) -> np.ma.MaskedArray:
    """One layer on ``bgcolor``: its 8-bit bands as they are, the background where it is transparent.

    The image ``blend`` gives for a single layer (alpha is 0 or 1 there), without its four float
    passes over the whole map.
    """
    bands = data.data if data.shape[0] == 3 else np.repeat(data.data[:1], 3, axis=0)
    transparent = np.ma.getmaskarray(data)[0]
    rgb = np.where(transparent, np.array(bgcolor, dtype=np.uint8)[:, None, None], bands).astype(np.uint8)
    return np.ma.MaskedArray(rgb, mask=False)
