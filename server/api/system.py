"""Health endpoint and the map viewer page."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from server import __version__
from server.api.tiles import PipelineDep

STATIC_DIR = Path(__file__).resolve().parent / "static"

router = APIRouter()


@router.get("/healthz", tags=["system"], summary="Liveness")
def healthz(pipeline: PipelineDep) -> dict[str, object]:
    """``ok`` while the process serves requests, with the number of layers loaded."""
    return {"status": "ok", "version": __version__, "layers": len(pipeline.registry.layers)}


@router.get("/", include_in_schema=False)
def viewer() -> FileResponse:
    """The Leaflet map viewer (all assets served locally, no CDN)."""
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html")
