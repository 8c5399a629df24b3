"""Read a GCP-georeferenced raster (Sentinel-1 GRD measurement TIFF) onto an output grid.

Why not rio-tiler's reader: it turns GCPs into one affine transform, which for a GRD scene
(slant geometry, terrain, a 250 km swath) is kilometres off away from the scene centre. Here the
warp goes through a thin-plate spline fitted to all GCPs (GDAL ``SRC_METHOD=GCP_TPS``), which
passes through every GCP.

Only the source window under the output grid is read, decimated to about the output's
resolution, so a zoomed-out tile does not decode the whole 25,000 px wide image at full size.
"""

from __future__ import annotations

import numpy as np
import rasterio
from rasterio.control import GroundControlPoint
from rasterio.enums import Resampling
from rasterio.transform import GCPTransformer, from_bounds
from rasterio.warp import reproject
from rasterio.warp import transform as warp_transform
from rasterio.windows import Window

from server.models import Grid

_EDGE_SAMPLES = 9  # points per grid edge when finding the source window
_MARGIN = 8  # source pixels added around the window (resampling kernels, spline curvature)


def _grid_outline(grid: Grid) -> tuple[list[float], list[float]]:
    x0, y0, x1, y1 = grid.bbox
    steps = np.linspace(0.0, 1.0, _EDGE_SAMPLES)
    xs = np.concatenate(
        [x0 + (x1 - x0) * steps, np.full(_EDGE_SAMPLES, x1), x1 - (x1 - x0) * steps, np.full(_EDGE_SAMPLES, x0)]
    )
    ys = np.concatenate(
        [np.full(_EDGE_SAMPLES, y0), y0 + (y1 - y0) * steps, np.full(_EDGE_SAMPLES, y1), y1 - (y1 - y0) * steps]
    )
    return xs.tolist(), ys.tolist()


def source_window(src: rasterio.DatasetReader, grid: Grid) -> tuple[Window, float] | None:
    """The source pixel window under ``grid`` (via the GCP spline) and the source pixels per
    output pixel inside it, or ``None`` when disjoint."""
    gcps, gcp_crs = src.gcps
    xs, ys = _grid_outline(grid)
    if grid.crs != gcp_crs:
        xs, ys = warp_transform(grid.crs, gcp_crs, xs, ys)
    with GCPTransformer(gcps, tps=True) as transformer:
        rows, cols = transformer.rowcol(xs, ys, op=float)
    r0, r1 = int(np.floor(min(rows))), int(np.ceil(max(rows)))
    c0, c1 = int(np.floor(min(cols))), int(np.ceil(max(cols)))
    if r1 < 0 or c1 < 0 or r0 > src.height or c0 > src.width:
        return None
    # Source pixels per output pixel, before the margin: how much a read may be decimated.
    density = min((c1 - c0) / grid.width, (r1 - r0) / grid.height)
    r0, c0 = max(r0 - _MARGIN, 0), max(c0 - _MARGIN, 0)
    r1, c1 = min(r1 + _MARGIN, src.height), min(c1 + _MARGIN, src.width)
    if r0 >= r1 or c0 >= c1:
        return None
    return Window(c0, r0, c1 - c0, r1 - r0), density


def read_gcp_part(path: str, grid: Grid, resampling: str, nodata: float | None) -> np.ma.MaskedArray | None:
    """Band 1 of ``path`` warped onto ``grid`` through a GCP thin-plate spline; masked where no data."""
    with rasterio.open(path) as src:
        gcps, gcp_crs = src.gcps
        if not gcps:
            raise ValueError("the raster has no ground control points")
        found = source_window(src, grid)
        if found is None:
            return None
        window, density = found
        # Decimate to about two source pixels per output pixel (never upsample).
        factor = max(1.0, density / 2)
        shape = (max(1, round(window.height / factor)), max(1, round(window.width / factor)))
        data = src.read(
            1, window=window, out_shape=shape, resampling=Resampling.average if factor > 1 else Resampling.nearest
        )
    sy, sx = shape[0] / window.height, shape[1] / window.width
    moved = [
        GroundControlPoint(row=(g.row - window.row_off) * sy, col=(g.col - window.col_off) * sx, x=g.x, y=g.y, z=g.z)
        for g in gcps
    ]
    fill = 0 if nodata is None else nodata
    out = np.full((grid.height, grid.width), fill, dtype=data.dtype)
    reproject(
        data,
        out,
        gcps=moved,
        src_crs=gcp_crs,
        src_nodata=fill,
        dst_transform=from_bounds(*grid.bbox, grid.width, grid.height),
        dst_crs=grid.crs,
        dst_nodata=fill,
        resampling=Resampling[resampling],
        SRC_METHOD="GCP_TPS",
    )
    return np.ma.masked_equal(out, fill) if nodata is not None else np.ma.MaskedArray(out)
