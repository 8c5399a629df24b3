"""``/collections/{layer}/tiles/{tileMatrixSetId}/{tileMatrix}/{tileRow}/{tileCol}``: a tile.

The same grid as the XYZ tile ``z/x/y`` (``server.grids.tile_grid``) rendered by the same
pipeline; OGC API names the row before the column in the path.
"""

from __future__ import annotations

from fastapi import Request, Response
from fastapi.concurrency import run_in_threadpool

from server.api.params import RenderOptions, parse_int, query_params
from server.api.tiles import image_response
from server.grids import get_tms, tile_grid
from server.models import ImageFormat, RenderRequest, TimeRange, parse_time
from server.ogcapi.documents import image_formats
from server.ogcapi.negotiation import negotiate
from server.pipeline import Pipeline


def request_time(request: Request, options: RenderOptions) -> TimeRange | None:
    """OGC API's ``datetime`` (instant or ``start/end``, ``..`` open), else the REST API's ``time``."""
    query = query_params(request)
    return parse_time(query["datetime"], "datetime") if "datetime" in query else options.time


async def render_tile(
    pipeline: Pipeline, layer_id: str, tms_id: str, matrix: str, row: str, col: str, request: Request
) -> Response:
    """Render one tile; ``datetime`` selects the scenes (``maxcc``, ``priority`` as in XYZ)."""
    layer = pipeline.registry.get(layer_id, parameter="collectionId")
    tms = get_tms(tms_id, "tileMatrixSetId")
    zoom = parse_int(matrix, "tileMatrix", tms.minzoom, tms.maxzoom)
    grid = tile_grid(
        tms,
        zoom,
        parse_int(col, "tileCol", -(10**9), 10**9),
        parse_int(row, "tileRow", -(10**9), 10**9),
        parameter="tileRow/tileCol",
    )
    fmt = ImageFormat(negotiate(request, image_formats(layer)))
    options = RenderOptions.from_request(request)
    time = request_time(request, options)
    # compiling a script may wait for V8 (setup(), a worker start): never on the event loop
    script = await run_in_threadpool(options.script, layer, "evalscript") if options.evalscript else None
    req = RenderRequest(layer.id, grid, fmt, time, options.maxcc, options.priority, script=script)
    if zoom < layer.config.minzoom:
        return image_response(await run_in_threadpool(pipeline.render_empty, req))
    result, looked = pipeline.probe_memory(req)
    if result is None:
        result = await run_in_threadpool(pipeline.render, req, looked)
    return image_response(result)
