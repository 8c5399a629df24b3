"""Routes of OGC API - Tiles and OGC API - Maps, rooted at the server root.

``/`` is shared with the viewer: a request that prefers HTML without asking for ``f`` gets the
viewer (what a browser opening the server wants); ``f=json``, a JSON ``Accept`` or ``*/*`` get the
landing page, ``f=html`` its HTML form. Errors use the REST API's JSON shape
``{"detail", "parameter"}`` (``server.api.errors``), as every other non-OGC-KVP endpoint.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from morecantile import TileMatrixSet

from server.api import system
from server.api.tiles import PipelineDep
from server.errors import EotilerError
from server.grids import get_tms
from server.ogcapi import documents, maps, tiles
from server.ogcapi.documents import CONFORMANCE, HTML, JSON
from server.ogcapi.negotiation import negotiate

router = APIRouter(tags=["OGC API - Tiles and Maps"])
IMAGES = {200: {"content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}, "image/tiff": {}}}}
DOCUMENTS = {200: {"content": {JSON: {}, HTML: {}}}}


class TileMatrixSetNotFound(EotilerError):
    """A path names a TileMatrixSet the server does not tile in."""

    status = 404


def _tms(tms_id: str) -> TileMatrixSet:
    """The TileMatrixSet a path names; 404 (a resource that does not exist) otherwise."""
    try:
        return get_tms(tms_id, "tileMatrixSetId")
    except EotilerError as error:
        raise TileMatrixSetNotFound(error.public_message, parameter="tileMatrixSetId") from None


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _answer(request: Request, title: str, build: Any) -> Response:
    """``build(media)`` as JSON or HTML, whichever the request negotiates."""
    media = negotiate(request, (JSON, HTML))
    document = build(media)
    if media == HTML:
        return HTMLResponse(documents.html_page(title, document))
    return JSONResponse(document)


@router.get("/", summary="Landing page (OGC API), or the viewer for a browser", responses=DOCUMENTS)
def landing(request: Request) -> Response:
    """The OGC API landing page in JSON (``f=json`` or a JSON ``Accept``) or HTML (``f=html``);
    a browser's plain visit gets the viewer."""
    if "f" not in request.query_params and negotiate(request, (JSON, HTML)) == HTML:
        return system.viewer()
    return _answer(request, "eotiler", lambda media: documents.landing(_base(request), media))


@router.get("/conformance", summary="Conformance classes (OGC API)", responses=DOCUMENTS)
def conformance(request: Request) -> Response:
    """The OGC API conformance classes implemented."""
    return _answer(
        request,
        "Conformance",
        lambda media: {
            "conformsTo": CONFORMANCE,
            "links": documents.self_links(f"{_base(request)}/conformance", media),
        },
    )


@router.get("/collections", summary="Collections: one per layer (OGC API)", responses=DOCUMENTS)
def collections(request: Request, pipeline: PipelineDep) -> Response:
    """Every layer as a collection, with its extents and links."""
    return _answer(
        request, "Collections", lambda media: documents.collections(pipeline.registry, _base(request), media)
    )


@router.get("/collections/{collectionId}", summary="One collection (OGC API)", responses=DOCUMENTS)
def collection(collectionId: str, request: Request, pipeline: PipelineDep) -> Response:  # noqa: N803
    """A layer as a collection: spatial and temporal extent, map and tileset links."""
    layer = pipeline.registry.get(collectionId, parameter="collectionId")
    return _answer(request, layer.config.title, lambda media: documents.collection(layer, _base(request), media))


@router.get("/tileMatrixSets", summary="Tile matrix sets (OGC API - Tiles)", responses=DOCUMENTS)
def tile_matrix_sets(request: Request) -> Response:
    """Every TileMatrixSet tiles can be asked in."""
    return _answer(request, "Tile matrix sets", lambda media: documents.tile_matrix_sets(_base(request), media))


@router.get("/tileMatrixSets/{tileMatrixSetId}", summary="A tile matrix set definition", responses=DOCUMENTS)
def tile_matrix_set(tileMatrixSetId: str, request: Request) -> Response:  # noqa: N803
    """A TileMatrixSet in OGC TMS 2.0 JSON."""
    tms = _tms(tileMatrixSetId)
    return _answer(request, tms.id, lambda media: documents.tile_matrix_set(tms))


@router.get("/collections/{collectionId}/tiles", summary="A collection's map tilesets", responses=DOCUMENTS)
def tilesets(collectionId: str, request: Request, pipeline: PipelineDep) -> Response:  # noqa: N803
    """The map tilesets of a layer, one per TileMatrixSet."""
    layer = pipeline.registry.get(collectionId, parameter="collectionId")
    return _answer(
        request, f"{layer.config.title}: tilesets", lambda media: documents.tilesets(layer, _base(request), media)
    )


@router.get(
    "/collections/{collectionId}/tiles/{tileMatrixSetId}", summary="A map tileset's metadata", responses=DOCUMENTS
)
def tileset(collectionId: str, tileMatrixSetId: str, request: Request, pipeline: PipelineDep) -> Response:  # noqa: N803
    """A tileset: bounding box, limits per tile matrix and the tile URL templates."""
    layer = pipeline.registry.get(collectionId, parameter="collectionId")
    tms = _tms(tileMatrixSetId)
    return _answer(
        request, f"{layer.config.title} in {tms.id}", lambda media: documents.tileset(layer, tms, _base(request), media)
    )


@router.get(
    "/collections/{collectionId}/tiles/{tileMatrixSetId}/{tileMatrix}/{tileRow}/{tileCol}",
    summary="A map tile",
    response_class=Response,
    responses=IMAGES,
)
async def tile(
    collectionId: str,  # noqa: N803
    tileMatrixSetId: str,  # noqa: N803
    tileMatrix: str,  # noqa: N803
    tileRow: str,  # noqa: N803
    tileCol: str,  # noqa: N803
    request: Request,
    pipeline: PipelineDep,
) -> Response:
    """Tile row/column of a tile matrix; ``f`` or ``Accept`` pick the encoding, ``datetime`` the scenes."""
    return await tiles.render_tile(pipeline, collectionId, tileMatrixSetId, tileMatrix, tileRow, tileCol, request)


@router.get("/collections/{collectionId}/map", summary="A map", response_class=Response, responses=IMAGES)
async def collection_map(collectionId: str, request: Request, pipeline: PipelineDep) -> Response:  # noqa: N803
    """A map: ``bbox`` (in ``bbox-crs``'s axis order, default CRS84), ``crs``, ``width``/``height``,
    ``datetime``, ``f``."""
    return await maps.render_map(pipeline, collectionId, request)
