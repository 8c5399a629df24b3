"""XYZ tiles on any TileMatrixSet morecantile knows, and TileJSON documents for them.

A tile is only a grid (the tile's bounds in the TMS CRS and its pixel size); rendering goes
through ``Pipeline.render`` like every other protocol.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool

from server.api.params import RenderOptions, parse_int, parse_tile_name, query_params
from server.api.tile_request import XYZ, TileRequest
from server.cache.tile_cache import content_etag
from server.grids import get_tms
from server.models import ImageFormat, RenderResult
from server.pipeline import Pipeline

router = APIRouter(tags=["tiles"])


async def get_pipeline(request: Request) -> Pipeline:
    """The app's pipeline (built once in ``create_app``; async, so FastAPI makes no thread hop for it)."""
    return request.app.state.pipeline


PipelineDep = Annotated[Pipeline, Depends(get_pipeline)]


def image_response(result: RenderResult) -> Response:
    """An image response for every protocol: ``Server-Timing``, the scenes drawn, ``X-Cache``,
    ``Cache-Control`` and a strong ``ETag`` (``If-None-Match`` is answered with 304 by the app's
    conditional-request middleware)."""
    headers = {
        "Server-Timing": ", ".join(f"{k};dur={v:.1f}" for k, v in result.timings.items()),
        "ETag": result.etag or content_etag(result.content),
    }
    if result.scenes:
        headers["X-Eotiler-Scenes"] = ",".join(result.scenes)
    if result.cache:
        headers["X-Cache"] = result.cache
    if result.notice:
        headers["X-Eotiler-Notice"] = result.notice
    if result.failed:
        headers["X-Eotiler-Failed-Scenes"] = ",".join(result.failed)
    if result.skipped:
        headers["X-Eotiler-Skipped-Scenes"] = ",".join(result.skipped)
    if result.failed or result.skipped:
        headers["Warning"] = '199 eotiler "incomplete image: some scenes could not be read"'
        headers["Cache-Control"] = "no-store"
    elif result.max_age is not None:
        headers["Cache-Control"] = f"public, max-age={result.max_age}"
    return Response(result.content, media_type=result.media_type, headers=headers)


@router.get(
    "/layers/{layer}/tiles/{tms}/{z}/{x}/{y}",
    summary="A map tile of a layer",
    response_class=Response,
    responses={200: {"content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}, "image/tiff": {}}}},
)
async def tile(
    layer: str,
    tms: str,
    z: str,
    x: str,
    y: str,
    request: Request,
    pipeline: PipelineDep,
) -> Response:
    """Render tile z/x/y of ``layer`` on TileMatrixSet ``tms``.

    ``y`` carries the format and optional scale: ``12.png``, ``12@2x.webp``, ``12.tif``.
    Query: ``time`` (instant, reduced precision such as ``2022-10``, or ``start/end``),
    ``maxcc`` (0-100), ``priority`` (mostRecent, leastRecent, leastCC), ``evalscript`` (base64
    band-math expression replacing the layer's script). Tiles with no data are fully transparent
    (JPEG: black).
    """
    target = pipeline.registry.get(layer)
    matrices = get_tms(tms)
    y_text, scale, fmt = parse_tile_name(y, pipeline.settings.max_tile_scale)
    options = RenderOptions.from_request(request)
    tile = TileRequest.parse(target, matrices, z, x, y_text, fmt, options, XYZ, scale)
    # Compiling a script may wait for V8 (its setup(), a worker start): never on the event loop.
    script = await run_in_threadpool(options.script, target, "evalscript") if options.evalscript else None
    req = tile.render_request(script)
    if tile.below_minzoom:
        return image_response(await run_in_threadpool(pipeline.render_empty, req))
    # A tile in this process's memory is answered on the event loop; anything that may read
    # data, Redis or a STAC API runs in the thread pool.
    result, looked = pipeline.probe_memory(req)
    if result is None:
        result = await run_in_threadpool(pipeline.render, req, looked)
    return image_response(result)


@router.get("/layers/{layer}/tilejson.json", summary="TileJSON 3.0 for a layer")
def tilejson(layer: str, request: Request, pipeline: PipelineDep) -> dict[str, object]:
    """TileJSON for ``layer``; ``tms``, ``format`` and ``tile_scale`` pick the tile URL, and
    ``time``/``maxcc``/``priority``/``evalscript`` are carried into it."""
    target = pipeline.registry.get(layer)
    query = query_params(request)
    matrices = get_tms(query.get("tms", "WebMercatorQuad"))
    fmt = ImageFormat.from_extension(query.get("format", "png"), parameter="format")
    scale = parse_int(query.get("tile_scale", "1"), "tile_scale", 1, pipeline.settings.max_tile_scale)
    options = RenderOptions.from_request(request)  # validate before advertising a URL that would fail
    target.request_script(options.evalscript, "evalscript")
    carried = {k: query[k] for k in ("time", "maxcc", "priority", "evalscript") if query.get(k)}
    suffix = f"@{scale}x" if scale > 1 else ""
    base = str(request.base_url).rstrip("/")
    url = f"{base}/layers/{target.id}/tiles/{matrices.id}/{{z}}/{{x}}/{{y}}{suffix}.{fmt.extension}"
    if carried:
        url += "?" + urlencode(carried)
    bounds = target.bounds or (-180.0, -85.0511, 180.0, 85.0511)
    center_zoom = max(target.config.minzoom, min(target.config.maxzoom, 10))
    return {
        "tilejson": "3.0.0",
        "name": target.config.title,
        "description": target.config.abstract,
        "version": "1.0.0",
        "attribution": "Contains modified Copernicus Sentinel data",
        "scheme": "xyz",
        "tiles": [url],
        "minzoom": target.config.minzoom,
        "maxzoom": target.config.maxzoom,
        "bounds": list(bounds),
        "center": [(bounds[0] + bounds[2]) / 2, (bounds[1] + bounds[3]) / 2, center_zoom],
    }
