"""Health endpoint and the map viewer page."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

from server import __version__
from server.api.tiles import PipelineDep

STATIC_DIR = Path(__file__).resolve().parent / "static"

router = APIRouter()


@router.get("/healthz", tags=["system"], summary="Liveness")
def healthz(pipeline: PipelineDep) -> dict[str, object]:
    """``ok`` while the process serves requests (``degraded`` while a configured Redis cache is down)."""
    status = "degraded" if pipeline.cache.degraded else "ok"
    return {"status": status, "version": __version__, "layers": len(pipeline.registry.layers)}


@router.get("/cache/stats", tags=["system"], summary="Tile cache statistics")
def cache_stats(pipeline: PipelineDep) -> dict[str, object]:
    """Hits, misses, writes, errors, entries and bytes per cache level (this worker's memory, shared Redis),
    and the overview cache of zoomed-out JPEG2000 bands (files, bytes, builds, hits)."""
    overviews = pipeline.overviews.stats() if pipeline.overviews else {"enabled": False}
    return {**pipeline.cache.stats(), "overviews": overviews, "datasets": pipeline.datasets.stats()}


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
