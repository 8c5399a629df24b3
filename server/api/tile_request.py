"""A tile of a layer on a TileMatrixSet: what XYZ and WMTS (GetTile, GetFeatureInfo) parse into.

Why one type: both protocols address the same grids (``server.grids``); the zoom range, the
tile's grid, the layer's ``minzoom`` and the step to a ``RenderRequest`` are written once.
Parameter names differ per protocol (``z``/``x``/``y``, ``TILEMATRIX``/``TILECOL``/``TILEROW``),
so errors name the parameter as the client wrote it.
"""

from __future__ import annotations

from dataclasses import dataclass

from morecantile import TileMatrixSet

from server.api.params import RenderOptions, parse_int
from server.catalog.layers import Layer
from server.evalscript.contract import Evalscript
from server.grids import tile_grid
from server.models import Grid, ImageFormat, RenderRequest

INDEX_LIMIT = 10**9  # tile indices beyond this are not numbers a client means


@dataclass(frozen=True, slots=True)
class TileNames:
    """How a protocol names the tile parameters."""

    zoom: str
    col: str
    row: str
    position: str  # the locator of a tile outside its matrix


XYZ = TileNames("z", "x", "y", "x/y")
WMTS = TileNames("TILEMATRIX", "TILECOL", "TILEROW", "TILECOL/TILEROW")


@dataclass(frozen=True, slots=True)
class TileRequest:
    """One parsed tile request: the layer, the zoom, the tile's grid, the format and the options."""

    layer: Layer
    zoom: int
    grid: Grid
    format: ImageFormat
    options: RenderOptions

    @classmethod
    def parse(
        cls,
        layer: Layer,
        tms: TileMatrixSet,
        zoom: str,
        col: str,
        row: str,
        fmt: ImageFormat,
        options: RenderOptions,
        names: TileNames,
        scale: int = 1,
    ) -> TileRequest:
        """Check zoom, column and row against the TileMatrixSet and build the tile's grid."""
        level = parse_int(zoom, names.zoom, tms.minzoom, tms.maxzoom)
        column = parse_int(col, names.col, -INDEX_LIMIT, INDEX_LIMIT)
        line = parse_int(row, names.row, -INDEX_LIMIT, INDEX_LIMIT)
        return cls(layer, level, tile_grid(tms, level, column, line, scale, names.position), fmt, options)

    @property
    def below_minzoom(self) -> bool:
        """Below the layer's ``minzoom`` a tile would read too much data: it is drawn empty."""
        return self.zoom < self.layer.config.minzoom

    def render_request(self, script: Evalscript | None) -> RenderRequest:
        """The pipeline request, with the request's EVALSCRIPT compiled for the layer (``script``)."""
        options = self.options
        return RenderRequest(
            self.layer.id, self.grid, self.format, options.time, options.maxcc, options.priority, script=script
        )
