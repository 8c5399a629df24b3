"""``/collections/{layer}/map``: a map of any box, size and CRS (OGC API - Maps core, crs,
spatial subsetting, datetime, scaling).

Parameters become a ``Grid`` through ``server.models.request_grid`` (the one gate for request
boxes) and a ``RenderRequest`` like every other protocol's.
"""

from __future__ import annotations

import math

from fastapi import Request, Response
from fastapi.concurrency import run_in_threadpool
from pyproj.exceptions import CRSError as ProjCRSError
from rasterio.crs import CRS
from rasterio.errors import CRSError
from rasterio.warp import transform_bounds

from server.api.params import RenderOptions, parse_int, query_params
from server.api.tiles import image_response
from server.errors import InvalidCRS, InvalidParameter
from server.models import ImageFormat, RenderRequest, request_grid
from server.ogc.crs import is_northing_first, normalise_code, parse_bbox, to_crs
from server.ogcapi.documents import CRS84, image_formats
from server.ogcapi.negotiation import negotiate
from server.ogcapi.tiles import request_time
from server.pipeline import Pipeline

# The longer side of a map when neither ``width`` nor ``height`` is given.
DEFAULT_SIZE = 1024


def parse_map_crs(text: str | None, parameter: str) -> tuple[str, CRS]:
    """A CRS given as a URI (``http://www.opengis.net/def/crs/EPSG/0/3857``), a URN or ``EPSG:3857``;
    CRS84 when absent. Returns the normalised code and the CRS."""
    code = normalise_code(text) if text and text.strip() else "CRS:84"
    if code != "CRS:84" and not code.startswith("EPSG:"):
        raise InvalidCRS(f"{parameter} '{text[:60]}' is not a supported CRS (CRS84 or EPSG)", parameter=parameter)
    try:
        return code, to_crs(code)
    except (CRSError, ProjCRSError):
        raise InvalidCRS(f"{parameter} '{text[:60]}' is not a known CRS", parameter=parameter) from None


def crs_uri(code: str) -> str:
    """The OGC URI of a normalised code (``Content-Crs``)."""
    if code == "CRS:84":
        return CRS84
    return f"http://www.opengis.net/def/crs/EPSG/0/{code.split(':', 1)[1]}"


def _size(query: dict[str, str], bbox: tuple[float, float, float, float], crs: CRS, limit: int) -> tuple[int, int]:
    """``width``/``height``; a missing one follows the box's aspect (in ground units for degrees)."""
    x0, y0, x1, y1 = bbox
    across, down = x1 - x0, y1 - y0
    if crs.is_geographic:  # a degree of longitude shrinks with latitude
        across *= max(math.cos(math.radians((y0 + y1) / 2)), 0.01)
    aspect = across / down
    width = parse_int(query["width"], "width", 1, limit) if "width" in query else None
    height = parse_int(query["height"], "height", 1, limit) if "height" in query else None
    if width is None and height is None:
        if aspect >= 1:
            width = DEFAULT_SIZE
        else:
            height = DEFAULT_SIZE
    if width is None:
        width = max(1, min(limit, round(height * aspect)))
    if height is None:
        height = max(1, min(limit, round(width / aspect)))
    return width, height


async def render_map(pipeline: Pipeline, layer_id: str, request: Request) -> Response:
    """Render the map a request describes (defaults: the layer's bounds, CRS84, 1024 px)."""
    layer = pipeline.registry.get(layer_id, parameter="collectionId")
    query = query_params(request)
    fmt = ImageFormat(negotiate(request, image_formats(layer)))
    out_code, out_crs = parse_map_crs(query.get("crs"), "crs")
    if "bbox" in query:
        box_code, box_crs = parse_map_crs(query.get("bbox-crs"), "bbox-crs")
        a, b, c, d = parse_bbox(query["bbox"], "bbox")
        bbox = (b, a, d, c) if is_northing_first(box_code) else (a, b, c, d)
    else:
        box_code, box_crs = "CRS:84", to_crs("CRS:84")
        bbox = layer.bounds or (-180.0, -90.0, 180.0, 90.0)
    if box_code != out_code:
        request_grid(bbox, box_crs, 1, 1, "bbox")  # checked where it was given, before PROJ sees it
        try:
            bbox = transform_bounds(box_crs, out_crs, *bbox, densify_pts=21)
        except Exception:  # noqa: BLE001 - PROJ refuses some pairs of CRS and box
            raise InvalidParameter("bbox cannot be expressed in crs", parameter="bbox") from None
    width, height = _size(query, bbox, out_crs, pipeline.settings.max_image_size)
    grid = request_grid(bbox, out_crs, width, height, "bbox")
    options = RenderOptions.from_request(request)
    # compiling a script may wait for V8 (setup(), a worker start): never on the event loop
    script = await run_in_threadpool(options.script, layer, "evalscript") if options.evalscript else None
    req = RenderRequest(
        layer.id, grid, fmt, request_time(request, options), options.maxcc, options.priority, script=script
    )
    response = image_response(await run_in_threadpool(pipeline.render, req))
    response.headers["Content-Crs"] = f"<{crs_uri(out_code)}>"
    response.headers["Content-Bbox"] = ",".join(f"{v:.10g}" for v in grid.bbox)
    return response
