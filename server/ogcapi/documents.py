"""The JSON documents of OGC API - Common, Tiles and Maps, and their HTML rendering.

Built from the layer registry, ``server.grids`` (morecantile's TileMatrixSets) and
``server.api.dates`` (temporal extents), never from data. One layer is one collection.
"""

from __future__ import annotations

import html
import json
from typing import Any

import morecantile
from morecantile import TileMatrixSet

from server import __version__
from server.api.dates import time_dimension, utc_today
from server.catalog.layers import Layer, LayerRegistry
from server.grids import get_tms
from server.render.formats import accepted_formats

REL = "http://www.opengis.net/def/rel/ogc/1.0/"
CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
GREGORIAN = "http://www.opengis.net/def/uom/ISO-8601/0/Gregorian"
# Metres per degree along the equator and the 0.28 mm pixel of OGC scale denominators: a
# collection's ``scaleDenominator`` tells GDAL the pixel size to open it at.
METRES_PER_DEGREE = 6378137 * 3.141592653589793 / 180
OGC_PIXEL_METRES = 0.28e-3
# The CRSs a map can be asked in (``crs``, ``bbox-crs``): the ones web and desktop clients use,
# plus any EPSG code as ``http://www.opengis.net/def/crs/EPSG/0/{code}``.
MAP_CRS = (CRS84, "http://www.opengis.net/def/crs/EPSG/0/4326", "http://www.opengis.net/def/crs/EPSG/0/3857")

# The TileMatrixSets of OGC API - Tiles: morecantile's registry. ``WebMercatorQuad512`` (for
# Sentinel Hub clients of WMTS and XYZ) is left out: GDAL's OGCAPI driver matches its
# ``TILEMATRIXSET`` option as a substring of each tileset's URI, so it would take it for
# ``WebMercatorQuad``.
OGCAPI_SETS = tuple(morecantile.tms.list())

CONFORMANCE = [
    "http://www.opengis.net/spec/ogcapi-common-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-common-1/1.0/conf/landing-page",
    "http://www.opengis.net/spec/ogcapi-common-1/1.0/conf/json",
    "http://www.opengis.net/spec/ogcapi-common-1/1.0/conf/html",
    "http://www.opengis.net/spec/ogcapi-common-1/1.0/conf/oas30",
    "http://www.opengis.net/spec/ogcapi-common-2/1.0/conf/collections",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/tileset",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/tilesets-list",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/geodata-tilesets",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/datetime",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/png",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/jpeg",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/tiff",
    "http://www.opengis.net/spec/tms/2.0/conf/json-tilematrixset",
    "http://www.opengis.net/spec/ogcapi-maps-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-maps-1/1.0/conf/crs",
    "http://www.opengis.net/spec/ogcapi-maps-1/1.0/conf/spatial-subsetting",
    "http://www.opengis.net/spec/ogcapi-maps-1/1.0/conf/datetime",
    "http://www.opengis.net/spec/ogcapi-maps-1/1.0/conf/scaling",
    "http://www.opengis.net/spec/ogcapi-maps-1/1.0/conf/png",
    "http://www.opengis.net/spec/ogcapi-maps-1/1.0/conf/jpeg",
    "http://www.opengis.net/spec/ogcapi-maps-1/1.0/conf/tiff",
]

JSON = "application/json"
HTML = "text/html"
GEOTIFF = "image/tiff; application=geotiff"


def link(href: str, rel: str, media: str | None = None, title: str | None = None, **extra: Any) -> dict[str, Any]:
    """One link object; ``None`` members are left out."""
    found = {"href": href, "rel": rel, "type": media, "title": title, **extra}
    return {k: v for k, v in found.items() if v is not None}


def self_links(url: str, media: str) -> list[dict[str, Any]]:
    """``self`` in the representation answered and ``alternate`` in the other one."""
    other = HTML if media == JSON else JSON
    names = {JSON: "json", HTML: "html"}
    return [
        link(f"{url}?f={names[media]}", "self", media, f"this document ({names[media]})"),
        link(f"{url}?f={names[other]}", "alternate", other, f"this document ({names[other]})"),
    ]


def image_formats(layer: Layer) -> tuple[str, ...]:
    """The media types a layer's images come in: exactly those its output can be encoded in."""
    return tuple(fmt.value for fmt in accepted_formats(layer.evalscript.output))


def link_type(media: str) -> str:
    """The ``type`` of a link to an image: GeoTIFF names its application (what GDAL looks for)."""
    return GEOTIFF if media == "image/tiff" else media


F_OF = {"image/png": "png", "image/jpeg": "jpeg", "image/webp": "webp", "image/tiff": "tiff"}


def landing(base: str, media: str) -> dict[str, Any]:
    """The landing page: what the API offers and where."""
    return {
        "title": "eotiler",
        "description": "Copernicus Sentinel data rendered by evalscripts: OGC API - Tiles and OGC API - Maps "
        "(also WMS, WMTS and WCS under /ogc). Contains modified Copernicus Sentinel data.",
        "version": __version__,
        "links": [
            *self_links(f"{base}/", media),
            link(
                f"{base}/openapi.json", "service-desc", "application/vnd.oai.openapi+json;version=3.0", "API definition"
            ),
            link(f"{base}/docs", "service-doc", HTML, "API documentation"),
            link(f"{base}/conformance", "conformance", JSON, "conformance classes"),
            link(f"{base}/conformance", f"{REL}conformance", JSON, "conformance classes"),
            link(f"{base}/collections", "data", JSON, "collections (one per layer)"),
            link(f"{base}/collections", f"{REL}data", JSON, "collections (one per layer)"),
            link(f"{base}/tileMatrixSets", f"{REL}tiling-schemes", JSON, "tile matrix sets"),
        ],
    }


def temporal_extent(layer: Layer) -> dict[str, Any]:
    """The first and last days with data (``server.api.dates.time_dimension``), or open."""
    dimension = time_dimension(layer, utc_today())
    if dimension is None:
        interval: list[str | None] = [None, None]
    elif dimension.interval:
        interval = [f"{dimension.interval[0]}T00:00:00Z", None]
    else:
        interval = [f"{dimension.days[0]}T00:00:00Z", f"{dimension.days[-1]}T23:59:59Z"]
    return {"interval": [interval], "trs": GREGORIAN}


def collection(layer: Layer, base: str, media: str = JSON) -> dict[str, Any]:
    """One layer as a collection: extents, the map and tilesets links, the map CRSs."""
    url = f"{base}/collections/{layer.id}"
    bounds = list(layer.bounds or (-180.0, -90.0, 180.0, 90.0))
    degrees = layer.native_resolution / METRES_PER_DEGREE
    maps = [link(f"{url}/map?f={F_OF[m]}", f"{REL}map", link_type(m), f"map ({F_OF[m]})") for m in image_formats(layer)]
    return {
        "id": layer.id,
        "title": layer.config.title,
        "description": layer.config.abstract or layer.config.title,
        "dataType": "map",
        "extent": {"spatial": {"bbox": [bounds], "crs": CRS84}, "temporal": temporal_extent(layer)},
        "crs": [*MAP_CRS, "http://www.opengis.net/def/crs/EPSG/0/*"],
        "storageCrs": CRS84,
        "scaleDenominator": layer.native_resolution / OGC_PIXEL_METRES,
        "minScaleDenominator": layer.native_resolution / OGC_PIXEL_METRES,
        "minCellSize": degrees,
        "links": [
            *self_links(url, media),
            link(f"{url}/tiles", f"{REL}tilesets-map", JSON, "map tilesets"),
            link(f"{url}/tiles?f=html", f"{REL}tilesets-map", HTML, "map tilesets (html)"),
            *maps,
        ],
    }


def collections(registry: LayerRegistry, base: str, media: str) -> dict[str, Any]:
    """Every layer as a collection."""
    return {
        "links": self_links(f"{base}/collections", media),
        "collections": [collection(layer, base) for layer in registry.layers.values()],
    }


def crs_uri(tms: TileMatrixSet) -> Any:
    """The set's CRS as its definition writes it (a URI for every set morecantile ships)."""
    return tms.model_dump(mode="json", include={"crs"})["crs"]


def tms_uri(tms: TileMatrixSet, base: str) -> str:
    """The set's registered OGC URI, or its definition here when it has none of its own
    (morecantile gives ``WGS1984Quad`` the URI of ``WorldCRS84Quad``: clients choosing a set by
    URI would take one for the other)."""
    if tms.uri and tms.uri.rstrip("/").rsplit("/", 1)[-1] == tms.id:
        return tms.uri
    return f"{base}/tileMatrixSets/{tms.id}"


def tms_summary(tms: TileMatrixSet, base: str) -> dict[str, Any]:
    """A tile matrix set in a list: id, title, URI and its definition's link."""
    return {
        "id": tms.id,
        "title": tms.title or tms.id,
        "uri": tms_uri(tms, base),
        "crs": crs_uri(tms),
        "links": [link(f"{base}/tileMatrixSets/{tms.id}", f"{REL}tiling-scheme", JSON, tms.id)],
    }


def tile_matrix_sets(base: str, media: str) -> dict[str, Any]:
    """Every TileMatrixSet the server tiles in (morecantile's, plus WebMercatorQuad512)."""
    return {
        "links": self_links(f"{base}/tileMatrixSets", media),
        "tileMatrixSets": [tms_summary(get_tms(tms_id), base) for tms_id in OGCAPI_SETS],
    }


def tile_matrix_set(tms: TileMatrixSet) -> dict[str, Any]:
    """A TileMatrixSet definition: OGC TMS 2.0 JSON as morecantile writes it, plus the TMS 1.0
    members (``type``, ``identifier``, ``supportedCRS``, ``boundingBox``, per matrix
    ``identifier`` and ``topLeftCorner``) that GDAL before 3.7 parses instead."""
    document = tms.model_dump(exclude_none=True, mode="json")
    west, south, east, north = tms.xy_bbox
    document |= {
        "type": "TileMatrixSetType",
        "identifier": tms.id,
        "supportedCRS": document["crs"],
        "boundingBox": {
            "type": "BoundingBoxType",
            "crs": document["crs"],
            "lowerCorner": [west, south],
            "upperCorner": [east, north],
        },
    }
    for matrix in document["tileMatrices"]:
        matrix |= {"type": "TileMatrixType", "identifier": matrix["id"], "topLeftCorner": matrix["pointOfOrigin"]}
    return document


def _limits(layer: Layer, tms: TileMatrixSet) -> list[dict[str, Any]]:
    """Rows and columns over the layer's bounds for each zoom the layer is drawn at."""
    west, south, east, north = layer.bounds or (-180.0, -90.0, 180.0, 90.0)
    g_west, g_south, g_east, g_north = tms.bbox  # the set's own extent in lon/lat
    west, south = max(west, g_west), max(south, g_south)
    east, north = min(east, g_east), min(north, g_north)
    if west >= east or south >= north:
        return []
    found = []
    low = max(layer.config.minzoom, tms.minzoom)
    high = min(layer.config.maxzoom, tms.maxzoom)
    for zoom in range(low, high + 1):
        matrix = tms.matrix(zoom)
        nudge = 1e-9  # a bound on a tile edge belongs to the tile inside the box
        upper_left = tms.tile(west + nudge, north - nudge, zoom)
        lower_right = tms.tile(east - nudge, south + nudge, zoom)
        found.append(
            {
                "tileMatrix": str(matrix.id),
                "minTileRow": max(0, min(upper_left.y, lower_right.y)),
                "maxTileRow": min(matrix.matrixHeight - 1, max(upper_left.y, lower_right.y)),
                "minTileCol": max(0, min(upper_left.x, lower_right.x)),
                "maxTileCol": min(matrix.matrixWidth - 1, max(upper_left.x, lower_right.x)),
            }
        )
    return found


def tileset_summary(layer: Layer, tms: TileMatrixSet, base: str) -> dict[str, Any]:
    """One entry of ``/collections/{layer}/tiles``."""
    url = f"{base}/collections/{layer.id}/tiles/{tms.id}"
    return {
        "title": f"{layer.config.title} in {tms.id}",
        "dataType": "map",
        "crs": crs_uri(tms),
        "tileMatrixSetURI": tms_uri(tms, base),
        "links": [
            link(url, "self", JSON, f"{tms.id} tileset"),
            link(f"{base}/tileMatrixSets/{tms.id}", f"{REL}tiling-scheme", JSON, tms.id),
        ],
    }


def tilesets(layer: Layer, base: str, media: str) -> dict[str, Any]:
    """The map tilesets of a layer: one per TileMatrixSet."""
    return {
        "links": self_links(f"{base}/collections/{layer.id}/tiles", media),
        "tilesets": [tileset_summary(layer, get_tms(tms_id), base) for tms_id in OGCAPI_SETS],
    }


def tileset(layer: Layer, tms: TileMatrixSet, base: str, media: str) -> dict[str, Any]:
    """A tileset's metadata: its set, bounding box, limits per zoom and the tile URL templates."""
    url = f"{base}/collections/{layer.id}/tiles/{tms.id}"
    west, south, east, north = layer.bounds or (-180.0, -90.0, 180.0, 90.0)
    template = f"{url}/{{tileMatrix}}/{{tileRow}}/{{tileCol}}"
    items = [
        link(f"{template}?f={F_OF[m]}", "item", link_type(m), f"tiles ({F_OF[m]})", templated=True)
        for m in image_formats(layer)
    ]
    return {
        "title": f"{layer.config.title} in {tms.id}",
        "dataType": "map",
        "crs": crs_uri(tms),
        "tileMatrixSetURI": tms_uri(tms, base),
        "boundingBox": {"lowerLeft": [west, south], "upperRight": [east, north], "crs": CRS84},
        "tileMatrixSetLimits": _limits(layer, tms),
        "links": [
            *self_links(url, media),
            link(f"{base}/tileMatrixSets/{tms.id}", f"{REL}tiling-scheme", JSON, tms.id),
            link(f"{base}/collections/{layer.id}", f"{REL}geodata", JSON, layer.config.title),
            *items,
        ],
    }


def html_page(title: str, document: dict[str, Any]) -> str:
    """A document as HTML: its links as anchors (templates as text), then the whole JSON."""
    rows = []
    for item in document.get("links", []):
        text = html.escape(item.get("title") or item["rel"])
        href = html.escape(item["href"])
        rel = html.escape(item["rel"])
        target = f"<code>{href}</code>" if item.get("templated") else f'<a href="{href}">{href}</a>'
        rows.append(f"<li>{text} <small>({rel})</small>: {target}</li>")
    for child in document.get("collections", []):
        own = next((x["href"] for x in child["links"] if x["rel"] == "self"), "")
        rows.append(
            f'<li>collection <a href="{html.escape(own.replace("?f=json", "?f=html"))}">'
            f"{html.escape(child['id'])}</a>: {html.escape(child['title'])}</li>"
        )
    body = html.escape(json.dumps(document, indent=2))
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title></head><body>"
        f"<h1>{html.escape(title)}</h1><ul>{''.join(rows)}</ul><h2>JSON</h2><pre>{body}</pre></body></html>"
    )
