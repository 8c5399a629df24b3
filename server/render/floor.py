"""A layer's floor: the coarsest ground resolution it is drawn at (``max_meters_per_pixel``).

Why a floor: a zoomed-out view covers hundreds of scenes (only ``max_scenes`` of which would be
read, so the image is wrong anyway) and makes GDAL transform a world-sized grid into each
scene's UTM zone, which took minutes per tile. Measured geodesically
(``Grid.ground_resolution``), so it means the same in every CRS.
"""

from __future__ import annotations

from functools import lru_cache

from rasterio.crs import CRS

from server.models import Grid


@lru_cache(maxsize=4096)
def _metres_per_pixel(bbox: tuple[float, float, float, float], crs_wkt: str, width: int, height: int) -> float:
    return Grid(bbox, CRS.from_wkt(crs_wkt), width, height, crs_wkt).ground_resolution()


def metres_per_pixel(grid: Grid) -> float:
    """``grid.ground_resolution()`` memoised (about 0.35 ms of geodesics per new grid): every
    request, cached or not, is checked against its layer's floor, and the image drawn takes the
    same value to its reads (``render/strips.py``)."""
    if grid.ground is not None:
        return grid.ground
    return _metres_per_pixel(grid.bbox, grid.crs_wkt or grid.crs.to_wkt(), grid.width, grid.height)


def coarser_than(grid: Grid, limit: float | None) -> float | None:
    """``grid``'s metres per pixel when it is coarser than ``limit`` (None: no floor), else None."""
    if limit is None:
        return None
    resolution = metres_per_pixel(grid)
    return resolution if resolution > limit else None
