"""Sentinel Hub Catalog API 1.0.0 (``/api/v1/catalog/1.0.0``): STAC search over the configured catalogues.

Why here and not a proxy of the upstream STAC API: a static folder has no API to forward to, and
answering both kinds from ``Catalogue`` objects keeps the listed scenes identical to the ones
the renderers read. Paging is by offset: ``context.next`` is the index of the next item, which a
client sends back as ``next`` (sentinelhub-py does exactly that).
"""

from __future__ import annotations

import json
import math
from datetime import UTC
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from server.api.tiles import PipelineDep
from server.catalog.catalogue import Catalogue
from server.errors import EotilerError, InvalidParameter
from server.models import parse_time
from server.pipeline import Pipeline
from server.shapi import geometry
from server.shapi.cql2 import parse_filter
from server.shapi.errors import ShApiError, sh_error_response, unexpected_error
from server.shapi.scenes import SceneQuery, find_scenes, iso, stac_item

PREFIX = "/api/v1/catalog/1.0.0"
MAX_LIMIT = 100
DEFAULT_LIMIT = 10
MAX_IDS = 100
_CRS84 = ("http://www.opengis.net/def/crs/OGC/1.3/CRS84", "OGC:CRS84", "CRS:84", "EPSG:4326")
_CONFORMANCE = [
    "https://api.stacspec.org/v1.0.0/core",
    "https://api.stacspec.org/v1.0.0/item-search",
    "https://api.stacspec.org/v1.0.0/item-search#fields",
    "https://api.stacspec.org/v1.0.0-rc.2/item-search#filter",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-cql2",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-text",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-json",
]

router = APIRouter(prefix=PREFIX, tags=["sentinel-hub"])


def _base(request: Request) -> str:
    return str(request.url_for("catalog_landing")).rstrip("/")


def catalogue(pipeline: Pipeline, collection_id: Any, parameter: str, status: int = 400) -> Catalogue:
    """The catalogue of a configured collection, else a 4xx naming ``parameter``."""
    catalogues = pipeline.registry.catalogues
    if not isinstance(collection_id, str) or collection_id not in catalogues:
        shown = str(collection_id)[:64]
        raise ShApiError(status, f"{parameter}: unknown collection '{shown}'", parameter=parameter)
    return catalogues[collection_id]


def _collection(pipeline: Pipeline, cid: str, base: str) -> dict[str, Any]:
    config = pipeline.registry.config.collections[cid]
    bbox, times = pipeline.registry.catalogues[cid].extent()
    interval = [[iso(times[0]), iso(times[-1])]] if times else [[None, None]]
    return {
        "type": "Collection",
        "stac_version": "1.0.0",
        "id": cid,
        "title": config.title,
        "description": config.title,
        "license": "proprietary",
        "extent": {
            "spatial": {"bbox": [list(bbox or (-180.0, -90.0, 180.0, 90.0))]},
            "temporal": {"interval": interval},
        },
        "links": [
            {"rel": "self", "href": f"{base}/collections/{cid}", "type": "application/json"},
            {"rel": "root", "href": base, "type": "application/json"},
        ],
    }


def _integer(body: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value != int(value):
        raise InvalidParameter(f"{name} must be an integer", parameter=name)
    if not low <= value <= high:
        raise InvalidParameter(f"{name} must be from {low} to {high}", parameter=name)
    return int(value)


def _bbox_area(value: Any) -> list[geometry.Polygon]:
    if not isinstance(value, list) or len(value) not in (4, 6):
        raise InvalidParameter("bbox must be [west, south, east, north]", parameter="bbox")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in value):
        raise InvalidParameter("bbox must contain finite numbers", parameter="bbox")
    west, south, east, north = (value[0], value[1], value[3], value[4]) if len(value) == 6 else value
    if not (-180 <= west <= 180 and -180 <= east <= 180 and -90 <= south <= north <= 90):
        raise InvalidParameter("bbox must be lon/lat degrees with south <= north", parameter="bbox")
    if west <= east:
        return geometry.box((west, south, east, north))
    return geometry.box((west, south, 180.0, north)) + geometry.box((-180.0, south, east, north))  # antimeridian


def _fields(value: Any) -> tuple[list[str], list[str]]:
    if value is None:
        return [], []
    if not isinstance(value, dict) or set(value) - {"include", "exclude"}:
        raise InvalidParameter("fields must be {include: [...], exclude: [...]}", parameter="fields")
    lists = [value.get("include") or [], value.get("exclude") or []]
    for paths in lists:
        if not isinstance(paths, list) or len(paths) > 100 or not all(isinstance(p, str) and p for p in paths):
            raise InvalidParameter("fields lists must be lists of property paths", parameter="fields")
    return lists[0], lists[1]


def _pick(item: dict[str, Any], include: list[str], exclude: list[str]) -> dict[str, Any]:
    """The STAC fields extension: dotted paths kept (``id`` and ``type`` always) or removed."""
    if include:
        out: dict[str, Any] = {"type": item["type"], "id": item["id"]}
        for path in include:
            source, target, keys = item, out, path.split(".")
            for key in keys[:-1]:
                if not isinstance(source.get(key), dict):
                    break
                source = source[key]
                target = target.setdefault(key, {})
            else:
                if keys[-1] in source:
                    target[keys[-1]] = source[keys[-1]]
    else:
        out = json.loads(json.dumps(item))
    for path in exclude:
        keys, node = path.split("."), out
        for key in keys[:-1]:
            node = node.get(key) if isinstance(node.get(key), dict) else {}
        if path not in ("id", "type"):
            node.pop(keys[-1], None)
    return out


def _query(body: dict[str, Any]) -> SceneQuery:
    if body.get("bbox") is not None and body.get("intersects") is not None:
        raise InvalidParameter("give bbox or intersects, not both", parameter="bbox")
    area = None
    if body.get("bbox") is not None:
        area = _bbox_area(body["bbox"])
    elif body.get("intersects") is not None:
        area = geometry.polygons(body["intersects"], "intersects")
    when = body.get("datetime")
    if when is not None and not isinstance(when, str):
        raise InvalidParameter("datetime must be a string (instant or start/end)", parameter="datetime")
    crs = body.get("filter-crs")
    if crs is not None and crs not in _CRS84:
        raise InvalidParameter("filter-crs must be CRS84", parameter="filter-crs")
    ids = body.get("ids")
    if ids is not None and not (
        isinstance(ids, list) and len(ids) <= MAX_IDS and all(isinstance(i, str) and len(i) <= 256 for i in ids)
    ):
        raise InvalidParameter(f"ids must be a list of at most {MAX_IDS} strings", parameter="ids")
    return SceneQuery(
        area=area,
        time_range=parse_time(when, "datetime"),
        cql=parse_filter(body.get("filter"), body.get("filter-lang")),
        ids=frozenset(ids) if ids is not None else None,
    )


def search(pipeline: Pipeline, body: Any, base: str) -> dict[str, Any]:
    """Answer one POST /search body."""
    if not isinstance(body, dict):
        raise InvalidParameter("the request body must be a JSON object", parameter="body")
    collections = body.get("collections")
    if not isinstance(collections, list) or not collections or len(collections) > 10:
        raise InvalidParameter("collections must list the collection to search", parameter="collections")
    catalogues = [(cid, catalogue(pipeline, cid, "collections")) for cid in collections]
    limit = _integer(body, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    start = _integer(body, "next", 0, 0, 10**9)
    distinct = body.get("distinct")
    if distinct is not None and distinct != "date":
        raise InvalidParameter("distinct: only 'date' is supported", parameter="distinct")
    include, exclude = _fields(body.get("fields"))
    query = _query(body)
    found = [(cid, scene) for cid, cat in catalogues for scene in find_scenes(cat, query)]
    found.sort(key=lambda pair: (pair[1].datetime, pair[1].id))
    if distinct == "date":
        results: list[Any] = sorted({scene.datetime.astimezone(UTC).date().isoformat() for _, scene in found})
    else:
        results = found
    page = results[start : start + limit]
    if distinct != "date":
        page = [_pick(stac_item(scene, cid, base), include, exclude) for cid, scene in page]
    context: dict[str, Any] = {"limit": limit, "returned": len(page)}
    if start + limit < len(results):
        context["next"] = start + limit
    return {
        "type": "FeatureCollection",
        "features": page,
        "links": [{"rel": "self", "href": f"{base}/search", "type": "application/geo+json"}],
        "context": context,
    }


async def _answer(request: Request, work: Any, *args: Any) -> JSONResponse:
    try:
        return JSONResponse(await run_in_threadpool(work, *args))
    except EotilerError as error:
        return sh_error_response(error)
    except Exception:  # noqa: BLE001 - an API answers in its own error shape, never a bare 500 page
        return unexpected_error(request)


@router.get("", name="catalog_landing", summary="Catalog API landing page")
async def landing(request: Request) -> JSONResponse:
    """The STAC API root: links to conformance, collections and search."""
    base = _base(request)
    return JSONResponse(
        {
            "type": "Catalog",
            "stac_version": "1.0.0",
            "id": "eotiler",
            "description": "eotiler scene catalogue (Sentinel Hub Catalog API 1.0.0)",
            "conformsTo": _CONFORMANCE,
            "links": [
                {"rel": "self", "href": base, "type": "application/json"},
                {"rel": "conformance", "href": f"{base}/conformance", "type": "application/json"},
                {"rel": "data", "href": f"{base}/collections", "type": "application/json"},
                {"rel": "search", "href": f"{base}/search", "type": "application/geo+json", "method": "POST"},
            ],
        }
    )


@router.get("/conformance", summary="Catalog API conformance classes")
async def conformance() -> JSONResponse:
    """The STAC API and CQL2 classes implemented (the CQL2 subset: docs/sentinelhub.md)."""
    return JSONResponse({"conformsTo": _CONFORMANCE})


@router.get("/collections", summary="Catalog API collections")
async def collections(request: Request, pipeline: PipelineDep) -> JSONResponse:
    """Every configured collection, with its extent."""
    base = _base(request)

    def work() -> dict[str, Any]:
        docs = [_collection(pipeline, cid, base) for cid in pipeline.registry.config.collections]
        return {"collections": docs, "links": [{"rel": "self", "href": f"{base}/collections"}]}

    return await _answer(request, work)


@router.get("/collections/{collection_id}", summary="Catalog API collection")
async def collection(collection_id: str, request: Request, pipeline: PipelineDep) -> JSONResponse:
    """One collection (404 when not configured)."""
    base = _base(request)

    def work() -> dict[str, Any]:
        catalogue(pipeline, collection_id, "collection", 404)
        return _collection(pipeline, collection_id, base)

    return await _answer(request, work)


@router.get("/collections/{collection_id}/items/{item_id}", summary="Catalog API item")
async def item(collection_id: str, item_id: str, request: Request, pipeline: PipelineDep) -> JSONResponse:
    """One item by id (searched by id: a STAC API catalogue is asked for the whole globe)."""
    base = _base(request)

    def work() -> dict[str, Any]:
        cat = catalogue(pipeline, collection_id, "collection", 404)
        found = find_scenes(cat, SceneQuery(ids=frozenset([item_id])))
        if not found:
            raise ShApiError(404, f"item '{item_id[:128]}' not found in '{collection_id}'", parameter="item")
        return stac_item(found[0], collection_id, base)

    return await _answer(request, work)


@router.post("/search", summary="Catalog API search (STAC item search)")
async def search_endpoint(request: Request, pipeline: PipelineDep) -> JSONResponse:
    """STAC item search: bbox/intersects, datetime, collections, ids, CQL2 filter, limit/next, distinct, fields."""
    base = _base(request)
    raw = await request.body()
    try:
        body = json.loads(raw) if raw else None
    except (ValueError, RecursionError):
        return sh_error_response(InvalidParameter("the request body is not valid JSON", parameter="body"))
    return await _answer(request, search, pipeline, body, base)

