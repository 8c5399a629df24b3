"""Tile matrix sets and tile -> grid, shared by the XYZ API and WMTS.

Every TileMatrixSet morecantile knows is offered, plus ``WebMercatorQuad512``: the web-mercator
quadtree with 512 px tiles that Sentinel Hub clients (``PopularWebMercator512``) expect.
"""

from __future__ import annotations

import morecantile
import pyproj
from morecantile import TileMatrixSet
from rasterio.crs import CRS

from server.errors import InvalidCRS, TileOutOfRange
from server.models import Grid

_WEB_MERCATOR = morecantile.tms.get("WebMercatorQuad")
_WEB_MERCATOR_512 = TileMatrixSet.custom(
    list(_WEB_MERCATOR.xy_bbox),
    pyproj.CRS.from_epsg(3857),
    tile_width=512,
    tile_height=512,
    maxzoom=23,
    id="WebMercatorQuad512",
    title="Web Mercator quadtree, 512 px tiles",
)
TILE_MATRIX_SETS = morecantile.tms.register({"WebMercatorQuad512": _WEB_MERCATOR_512})


# morecantile's ``TileMatrixSets.get`` deep-copies the pydantic model on every call (15 % of a
# cached tile's CPU when profiled); the sets are immutable here, so each is built once.
_BY_ID: dict[str, TileMatrixSet] = {tms_id: TILE_MATRIX_SETS.get(tms_id) for tms_id in TILE_MATRIX_SETS.list()}
_CRS: dict[str, tuple[CRS, str]] = {}  # TileMatrixSet id -> its CRS for rasterio, and as WKT


def get_tms(tms_id: str, parameter: str = "tms") -> TileMatrixSet:
    """A TileMatrixSet by id, or ``InvalidCRS`` naming the parameter and listing the known ones."""
    try:
        return _BY_ID[tms_id]
    except KeyError:
        known = ", ".join(_BY_ID)
        raise InvalidCRS(
            f"{parameter}: unknown TileMatrixSet '{tms_id[:64]}' (known: {known})", parameter=parameter
        ) from None


def tile_grid(tms: TileMatrixSet, zoom: int, col: int, row: int, scale: int = 1, parameter: str = "x/y") -> Grid:
    """The grid of tile ``zoom/col/row`` (``scale`` multiplies its pixel size); raises ``TileOutOfRange``."""
    matrix = tms.matrix(zoom)
    if not (0 <= col < matrix.matrixWidth and 0 <= row < matrix.matrixHeight):
        raise TileOutOfRange(
            f"tile {zoom}/{col}/{row} is outside the {tms.id} matrix ({matrix.matrixWidth}x{matrix.matrixHeight})",
            parameter=parameter,
        )
    bounds = tms.xy_bounds(col, row, zoom)
    if tms.id not in _CRS:
        wkt = tms.crs.to_wkt()
        _CRS[tms.id] = (CRS.from_user_input(wkt), wkt)
    crs, wkt = _CRS[tms.id]
    return Grid(
        (bounds.left, bounds.bottom, bounds.right, bounds.top),
        crs,
        matrix.tileWidth * scale,
        matrix.tileHeight * scale,
        crs_wkt=wkt,
    )
