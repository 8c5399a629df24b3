"""WFS 2.0.0 (KVP): the scene footprints behind each layer and collection.

Why: Sentinel Hub serves the same list (which acquisitions cover an area, when, how cloudy) as
WFS, and sentinelhub-py's ``WebFeatureService`` reads it with Sentinel Hub's type names
(``DSS2`` for Sentinel-2 L2A, ...), a lat/lon ``BBOX`` and ``FEATURE_OFFSET``. A feature type is a
layer (its collection, capped by the layer's ``maxcc``) or a collection; the scenes come from
``server/shapi/scenes.py``, as the Catalog API's do. Documents are built in ``wfs_documents.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC
from functools import lru_cache
from typing import Any

import pyproj
from fastapi import Response

from server.catalog.layers import LayerRegistry
from server.errors import InvalidParameter, OperationNotSupported
from server.models import Scene, check_bbox, clamp_bbox, parse_maxcc, parse_time
from server.ogc import wfs_documents
from server.ogc.crs import is_northing_first, normalise_code, parse_bbox, parse_crs
from server.ogc.kvp import KVP
from server.pipeline import Pipeline
from server.shapi import geometry
from server.shapi.scenes import SceneQuery, find_scenes, product_path

MAX_COUNT = 1000  # features per response (CountDefault): a larger COUNT is answered page by page
_MAX_INDEX = 10**7
# Sentinel Hub's WFS type names -> catalogue collection ids (sentinelhub-py's DataCollection.wfs_id)
SH_TYPE_NAMES = {
    "DSS1": "sentinel-2-l1c",
    "DSS2": "sentinel-2-l2a",
    "DSS3": "sentinel-1-grd",
    "DSS5": "modis",
    "DSS7": "sentinel-5p-l2",
    "DSS9": "sentinel-3-olci",
    "DSS10": "sentinel-3-slstr",
    "DSS13": "landsat-ot-l2",
}
JSON_FORMATS = {"application/json", "json", "geojson", "application/geo+json", "application/vnd.geo+json"}
GML_FORMATS = {
    "application/gml+xml; version=3.2",
    "application/gml+xml",
    "text/xml; subtype=gml/3.2",
    "text/xml; subtype=gml/3.2.1",
    "gml32",
    "gml3",
}


@dataclass(frozen=True, slots=True)
class FeatureType:
    """A published type: its name, the collection behind it, and the layer's cloud cover cap."""

    name: str
    title: str
    collection_id: str
    maxcc: float | None


def feature_types(registry: LayerRegistry) -> dict[str, FeatureType]:
    """Every layer, then every collection no layer shares a name with."""
    types = {
        lid: FeatureType(lid, f"{layer.config.title}: scene footprints", layer.collection_id, layer.config.maxcc)
        for lid, layer in registry.layers.items()
    }
    for cid, collection in registry.config.collections.items():
        types.setdefault(cid, FeatureType(cid, f"{collection.title}: scene footprints", cid, None))
    return types


def resolve_type(registry: LayerRegistry, text: str, parameter: str = "TYPENAMES") -> FeatureType:
    """A type name (with or without a namespace prefix), a collection id or a Sentinel Hub DSS name."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if len(names) != 1:
        raise InvalidParameter(f"{parameter}: give one feature type per request", parameter=parameter)
    name = names[0].strip("()").rpartition(":")[2]
    types = feature_types(registry)
    found = types.get(name) or types.get(SH_TYPE_NAMES.get(name.upper(), ""))
    if found is None:
        registry.find(name, parameter)  # Forbidden for a layer the caller may not use
        raise InvalidParameter(f"{parameter}: unknown feature type '{name[:64]}'", parameter=parameter)
    return found


def check_version(kvp: KVP, operation: str) -> None:
    """GetCapabilities negotiates (ACCEPTVERSIONS); other operations must name 2.0.x when they name one."""
    if operation == "getcapabilities":
        accepted = kvp.get("ACCEPTVERSIONS")
        if accepted and not any(v.strip().startswith("2.0") for v in accepted.split(",")):
            error = InvalidParameter("ACCEPTVERSIONS: this server implements WFS 2.0.0", parameter="ACCEPTVERSIONS")
            error.ogc_code = "VersionNegotiationFailed"
            raise error
        return
    version = (kvp.get("VERSION") or "").strip()
    if version and not version.startswith("2.0"):
        raise InvalidParameter("VERSION: this server implements WFS 2.0.0", parameter="VERSION")


def _integer(kvp: KVP, names: tuple[str, ...], default: int, low: int) -> int:
    for name in names:
        text = (kvp.get(name) or "").strip()
        if not text:
            continue
        if not text.isascii() or not text.isdigit() or len(text) > 10 or not low <= int(text) <= _MAX_INDEX:
            raise InvalidParameter(f"{name} must be an integer from {low} to {_MAX_INDEX}", parameter=name)
        return int(text)
    return default


@lru_cache(maxsize=64)
def _transformer(source: str, target: str) -> pyproj.Transformer:
    def crs(code: str) -> str:
        return "OGC:CRS84" if code == "CRS:84" else code

    return pyproj.Transformer.from_crs(crs(source), crs(target), always_xy=True)


def _lonlat(code: str) -> bool:
    return code in ("EPSG:4326", "CRS:84")


def _area(kvp: KVP, default_code: str, allowed: tuple[str, ...]) -> list[geometry.Polygon] | None:
    """BBOX (``a,b,c,d[,crs]`` in the CRS's own axis order) as lon/lat polygons."""
    text = kvp.get("BBOX")
    if not text:
        return None
    parts = text.split(",")
    code = default_code
    if len(parts) == 5:
        code, _ = parse_crs(parts.pop(), allowed, "BBOX")
    a, b, c, d = parse_bbox(",".join(parts), "BBOX")
    x0, y0, x1, y1 = (b, a, d, c) if is_northing_first(code) else (a, b, c, d)
    if _lonlat(code):
        check_bbox((x0, y0, x1, y1), parse_crs("EPSG:4326", ("EPSG:4326",), "BBOX")[1], "BBOX")
        return geometry.box((max(x0, -180.0), max(y0, -90.0), min(x1, 180.0), min(y1, 90.0)))
    crs = parse_crs(code, allowed, "BBOX")[1]
    check_bbox((x0, y0, x1, y1), crs, "BBOX")
    x0, y0, x1, y1 = clamp_bbox((x0, y0, x1, y1), crs.to_wkt())
    steps = [i / 20 for i in range(20)]
    ring = (
        [(x0 + (x1 - x0) * t, y0) for t in steps]
        + [(x1, y0 + (y1 - y0) * t) for t in steps]
        + [(x1 - (x1 - x0) * t, y1) for t in steps]
        + [(x0, y1 - (y1 - y0) * t) for t in steps]
    )
    lons, lats = _transformer(code, "EPSG:4326").transform([p[0] for p in ring], [p[1] for p in ring])
    points = [(lon, lat) for lon, lat in zip(lons, lats, strict=True) if abs(lon) <= 360 and abs(lat) <= 90]
    if len(points) < 3:
        raise InvalidParameter("BBOX cannot be expressed in longitude and latitude", parameter="BBOX")
    return [[points]]


def _output_format(kvp: KVP) -> str:
    text = (kvp.get("OUTPUTFORMAT") or "application/gml+xml; version=3.2").strip()
    key = " ".join(text.lower().replace(";", "; ").split()).replace(" ;", ";")
    if key in JSON_FORMATS:
        return "json"
    if key in GML_FORMATS or key.replace('"', "") in GML_FORMATS:
        return "gml"
    message = f"OUTPUTFORMAT '{text[:60]}' is not offered (GML 3.2, application/json)"
    raise InvalidParameter(message, parameter="OUTPUTFORMAT")


def _multipolygon(scene: Scene, code: str) -> list[list[list[tuple[float, float]]]]:
    """The footprint as MultiPolygon coordinates (closed rings, x/y) in the CRS ``code``."""
    out = []
    for polygon in geometry.footprint(scene.geometry, scene.bbox):
        rings = []
        for ring in polygon:
            closed = [*ring, ring[0]]
            if not _lonlat(code):
                xs, ys = _transformer("EPSG:4326", code).transform([p[0] for p in closed], [p[1] for p in closed])
                closed = list(zip(xs, ys, strict=True))
            rings.append(closed)
        out.append(rings)
    return out


def get_feature(kvp: KVP, pipeline: Pipeline, allowed: tuple[str, ...], describe_url: str) -> Response:
    """GetFeature: footprints of the type's scenes in BBOX, TIME and MAXCC, newest first, paged."""
    kind = resolve_type(pipeline.registry, kvp.get("TYPENAMES") or kvp.get("TYPENAME") or kvp.require("TYPENAMES"))
    srs_text = kvp.get("SRSNAME") or "EPSG:4326"
    code = parse_crs(srs_text, allowed, "SRSNAME")[0]
    fmt = _output_format(kvp)
    hits = (kvp.get("RESULTTYPE") or "results").strip().lower()
    if hits not in ("results", "hits"):
        raise InvalidParameter("RESULTTYPE must be results or hits", parameter="RESULTTYPE")
    start = _integer(kvp, ("STARTINDEX", "FEATURE_OFFSET"), 0, 0)
    count = min(_integer(kvp, ("COUNT", "MAXFEATURES"), MAX_COUNT, 1), MAX_COUNT)
    maxcc = parse_maxcc(kvp.get("MAXCC"), "MAXCC")
    if kind.maxcc is not None:
        maxcc = kind.maxcc if maxcc is None else min(maxcc, kind.maxcc)
    query = SceneQuery(
        area=_area(kvp, normalise_code(srs_text), allowed),
        time_range=parse_time(kvp.get("TIME"), "TIME"),
        maxcc=maxcc,
    )
    scenes = find_scenes(pipeline.registry.catalogues[kind.collection_id], query, newest_first=True)
    page = [] if hits == "hits" else scenes[start : start + count]
    features = []
    for offset, scene in enumerate(page):
        moment = scene.datetime.astimezone(UTC)
        properties: dict[str, Any] = {
            "id": scene.id,
            "date": moment.date().isoformat(),
            "time": moment.strftime("%H:%M:%S"),
            "cloudCoverage": scene.cloud_cover,
            "path": product_path(scene),
        }
        orbit = scene.properties.get("sat:orbit_state")
        if isinstance(orbit, str):
            properties["orbitDirection"] = orbit.upper()
        fid = f"{kind.name}.{start + offset + 1}"
        features.append((fid, properties, _multipolygon(scene, code)))
    if fmt == "json":
        body = wfs_documents.feature_collection_json(features, len(scenes), code)
        return Response(body, media_type="application/json")
    body = wfs_documents.feature_collection_gml(kind.name, features, len(scenes), code, describe_url)
    return Response(body, media_type="application/gml+xml; version=3.2")


def handle_wfs(kvp: KVP, pipeline: Pipeline, allowed: tuple[str, ...], url: str) -> Response:
    """Dispatch a WFS request by REQUEST."""
    operation = (kvp.get("REQUEST") or "").strip().lower()
    if not operation:
        kvp.require("REQUEST")
    check_version(kvp, operation)
    registry = pipeline.registry
    if operation == "getcapabilities":
        body = wfs_documents.capabilities(registry, feature_types(registry).values(), url, allowed)
        return Response(body, media_type="application/xml")
    if operation == "describefeaturetype":
        text = kvp.get("TYPENAMES") or kvp.get("TYPENAME")
        names = [n for n in (text or "").split(",") if n.strip()] or list(feature_types(registry))
        kinds = list({resolve_type(registry, n).name: None for n in names})
        return Response(wfs_documents.describe(kinds), media_type="application/gml+xml; version=3.2")
    if operation == "getfeature":
        describe = f"{url}?SERVICE=WFS&VERSION=2.0.0&REQUEST=DescribeFeatureType"
        return get_feature(kvp, pipeline, allowed, describe)
    raise OperationNotSupported(f"REQUEST '{operation[:40]}' is not supported by WFS", parameter="REQUEST")

