"""Health, readiness, metrics and cache statistics, the API docs and the map viewer page."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
from fastapi import APIRouter, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from server import __version__
from server.api.tiles import PipelineDep
from server.catalog.stac_api import StacApiCatalogue
from server.sources.gdal_env import S3Settings

STATIC_DIR = Path(__file__).resolve().parent / "static"


def s3_reachable(s3: S3Settings) -> bool:
    """Any HTTP answer from the S3 endpoint within 2 s (a 403 for an unsigned probe counts)."""
    scheme = "https" if s3.https else "http"
    try:
        httpx.get(f"{scheme}://{s3.endpoint}/", timeout=2.0)
    except httpx.HTTPError:
        return False
    return True


router = APIRouter()


@router.get("/healthz", tags=["system"], summary="Liveness")
def healthz(pipeline: PipelineDep) -> dict[str, object]:
    """``ok`` while the process serves requests (``degraded`` while a configured Redis cache is down)."""
    status = "degraded" if pipeline.cache.degraded else "ok"
    return {"status": status, "version": __version__, "layers": len(pipeline.registry.layers)}


@router.get("/readyz", tags=["system"], summary="Readiness: catalogues, S3 and Redis reachable")
def readyz(pipeline: PipelineDep) -> JSONResponse:
    """200 when every catalogue answers, every S3 endpoint the layers read from accepts a
    connection, and Redis (if configured) answers; 503 naming what is not ready otherwise."""
    checks: dict[str, bool] = {}
    for cid, layer in {layer.collection_id: layer for layer in pipeline.registry.layers.values()}.items():
        checks[f"catalogue:{cid}"] = layer.catalogue.ready()
    if any(layer.collection.data_root.startswith("/vsis3") for layer in pipeline.registry.layers.values()):
        checks["s3"] = s3_reachable(pipeline.settings.s3())
    redis_ok = pipeline.cache.ping()
    if redis_ok is not None:
        checks["redis"] = redis_ok
    ready = all(checks.values())
    body = {"status": "ready" if ready else "not ready", "checks": checks}
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics", tags=["system"], summary="Prometheus metrics (summed over all workers)")
def metrics(request: Request) -> Response:
    """Requests by endpoint and status, latency histograms, tile-cache outcomes, incomplete images,
    S3 requests and bytes, scene read failures, render queue depth and open circuit breakers."""
    return Response(request.app.state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


@router.get("/cache/stats", tags=["system"], summary="Tile cache statistics")
def cache_stats(pipeline: PipelineDep) -> dict[str, object]:
    """Hits, misses, writes, errors, entries and bytes per cache level (this worker's memory, shared Redis),
    the overview cache of zoomed-out JPEG2000 bands, the dataset handle pool and STAC API searches."""
    overviews = pipeline.overviews.stats() if pipeline.overviews else {"enabled": False}
    searches = {
        layer.collection_id: layer.catalogue.searches
        for layer in pipeline.registry.layers.values()
        if isinstance(layer.catalogue, StacApiCatalogue)
    }
    return {
        **pipeline.cache.stats(),
        "overviews": overviews,
        "datasets": pipeline.datasets.stats(),
        "stac_searches": searches,  # API calls made, i.e. misses of the search TTL cache
        "pid": os.getpid(),  # these statistics are per worker process
    }


@router.get("/", include_in_schema=False)
def viewer() -> FileResponse:
    """The Leaflet map viewer (all assets served locally, no CDN)."""
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html")


@router.get("/docs", include_in_schema=False)
def docs() -> HTMLResponse:
    """Swagger UI for the OpenAPI document, with its assets served locally (vendored from npm)."""
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="eotiler API",
        swagger_js_url="/static/vendor/swagger-ui/swagger-ui-bundle.js",
        swagger_css_url="/static/vendor/swagger-ui/swagger-ui.css",
        swagger_favicon_url="data:,",
    )
