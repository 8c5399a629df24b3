"""WMTS 1.0.0: capabilities (every layer x TileMatrixSet), GetTile by KVP and REST, GetFeatureInfo.

Tiles are the same grids as the XYZ API (``server.grids``) and render through the same
pipeline. The REST template carries the time dimension:
``/ogc/wmts/{Layer}/{Style}/{Time}/{TileMatrixSet}/{TileMatrix}/{TileRow}/{TileCol}.png``.
"""

from __future__ import annotations

from datetime import date
from urllib.parse import urlencode

from fastapi import Response
from lxml import etree

from server.api.dates import time_dimension, utc_today
from server.api.params import RenderOptions, parse_int
from server.api.tile_request import WMTS, TileRequest
from server.api.tiles import image_response
from server.cache.documents import extent_cached
from server.catalog.layers import Layer, LayerRegistry
from server.errors import InvalidParameter, InvalidPoint, StyleNotDefined
from server.grids import get_tms
from server.models import ImageFormat
from server.ogc.kvp import KVP
from server.ogc.wms import INFO_FORMATS, feature_info, parse_format, parse_info_format, pixel_cell
from server.pipeline import Pipeline
from server.render.formats import accepted_formats

WMTS_NS = "http://www.opengis.net/wmts/1.0"
OWS_NS = "http://www.opengis.net/ows/1.1"
XLINK_NS = "http://www.w3.org/1999/xlink"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
VERSION = "1.0.0"
TILE_MATRIX_SETS = ("WebMercatorQuad", "WebMercatorQuad512", "WorldCRS84Quad")
WELL_KNOWN = {
    "WebMercatorQuad": "urn:ogc:def:wkss:OGC:1.0:GoogleMapsCompatible",
    "WorldCRS84Quad": "urn:ogc:def:wkss:OGC:1.0:GoogleCRS84Quad",
}
SUPPORTED_CRS = {
    "WebMercatorQuad": "urn:ogc:def:crs:EPSG::3857",
    "WebMercatorQuad512": "urn:ogc:def:crs:EPSG::3857",
    "WorldCRS84Quad": "urn:ogc:def:crs:OGC:1.3:CRS84",
}


def _ows(parent: etree._Element, tag: str, text: str | None = None, **attrs: str) -> etree._Element:
    element = etree.SubElement(parent, f"{{{OWS_NS}}}{tag}", **attrs)
    if text is not None:
        element.text = text
    return element


def _wmts(parent: etree._Element, tag: str, text: str | None = None, **attrs: str) -> etree._Element:
    element = etree.SubElement(parent, f"{{{WMTS_NS}}}{tag}", **attrs)
    if text is not None:
        element.text = text
    return element


def _operation(parent: etree._Element, name: str, url: str) -> None:
    op = _ows(parent, "Operation", name=name)
    # One DCP/HTTP holding a Get per encoding: OpenLayers reads a single DCP element.
    http = _ows(_ows(op, "DCP"), "HTTP")
    for encoding in ("KVP",) if name != "GetTile" else ("KVP", "RESTful"):
        get = _ows(http, "Get")
        get.set(f"{{{XLINK_NS}}}href", f"{url}?" if encoding == "KVP" else f"{url}/")
        constraint = _ows(get, "Constraint", name="GetEncoding")
        _ows(_ows(constraint, "AllowedValues"), "Value", encoding)


def _formats(layer: Layer) -> tuple[str, ...]:
    """The formats GetTile accepts for the layer (``render.formats``: the encoder's own rule)."""
    return tuple(fmt.value for fmt in accepted_formats(layer.evalscript.output))


def _layer(contents: etree._Element, layer: Layer, url: str, legend_base: str, today: date) -> None:
    element = _wmts(contents, "Layer")
    _ows(element, "Title", layer.config.title)
    if layer.config.abstract:
        _ows(element, "Abstract", layer.config.abstract)
    west, south, east, north = layer.bounds or (-180.0, -85.0, 180.0, 85.0)
    box = _ows(element, "WGS84BoundingBox")
    _ows(box, "LowerCorner", f"{west:.6f} {south:.6f}")
    _ows(box, "UpperCorner", f"{east:.6f} {north:.6f}")
    _ows(element, "Identifier", layer.id)
    style = _wmts(element, "Style", isDefault="true")
    _ows(style, "Identifier", "default")
    if layer.legend() is not None:
        legend = _wmts(style, "LegendURL", format="image/png")
        query = urlencode(
            {
                "SERVICE": "WMS",
                "REQUEST": "GetLegendGraphic",
                "VERSION": "1.3.0",
                "LAYER": layer.id,
                "FORMAT": "image/png",
            }
        )
        legend.set(f"{{{XLINK_NS}}}href", f"{legend_base}?{query}")
    for fmt in _formats(layer):
        _wmts(element, "Format", fmt)
    for fmt in INFO_FORMATS:
        _wmts(element, "InfoFormat", fmt)
    # The days with data, the newest as Default (``server.api.dates.time_dimension``); a request
    # may still send TIME=default (or none) for it.
    time = time_dimension(layer, today)
    dimension = _wmts(element, "Dimension")
    _ows(dimension, "Identifier", "Time")
    _ows(dimension, "UOM", "ISO8601")
    _wmts(dimension, "Default", time.default if time else "default")
    _wmts(dimension, "Current", "true")
    for value in time.values() if time else ["default"]:
        _wmts(dimension, "Value", value)
    for tms_id in TILE_MATRIX_SETS:
        _wmts(_wmts(element, "TileMatrixSetLink"), "TileMatrixSet", tms_id)
    for fmt in _formats(layer):
        ext = ImageFormat(fmt).extension
        _wmts(
            element,
            "ResourceURL",
            format=fmt,
            resourceType="tile",
            template=f"{url}/{layer.id}/{{Style}}/{{Time}}/{{TileMatrixSet}}/{{TileMatrix}}/{{TileRow}}/{{TileCol}}.{ext}",
        )


def _tile_matrix_set(contents: etree._Element, tms_id: str, maxzoom: int) -> None:
    tms = get_tms(tms_id)
    element = _wmts(contents, "TileMatrixSet")
    _ows(element, "Identifier", tms_id)
    _ows(element, "SupportedCRS", SUPPORTED_CRS[tms_id])
    if tms_id in WELL_KNOWN:
        _wmts(element, "WellKnownScaleSet", WELL_KNOWN[tms_id])
    for zoom in range(tms.minzoom, min(maxzoom, tms.maxzoom) + 1):
        matrix = tms.matrix(zoom)
        tm = _wmts(element, "TileMatrix")
        _ows(tm, "Identifier", str(zoom))
        _wmts(tm, "ScaleDenominator", repr(matrix.scaleDenominator))
        x, y = matrix.pointOfOrigin  # already in the CRS's axis order (lon lat for CRS84, x y for 3857)
        _wmts(tm, "TopLeftCorner", f"{x!r} {y!r}")
        _wmts(tm, "TileWidth", str(matrix.tileWidth))
        _wmts(tm, "TileHeight", str(matrix.tileHeight))
        _wmts(tm, "MatrixWidth", str(matrix.matrixWidth))
        _wmts(tm, "MatrixHeight", str(matrix.matrixHeight))


def build_capabilities(registry: LayerRegistry, url: str, legend_base: str) -> bytes:
    """The WMTS 1.0.0 capabilities document; ``url`` is the service endpoint (``.../ogc/wmts``)."""
    return _build_capabilities(registry, url, legend_base, utc_today())


@extent_cached(maxsize=32)
def _build_capabilities(registry: LayerRegistry, url: str, legend_base: str, today: date) -> bytes:
    """Cached like the WMS one: per arguments (``today`` ends a STAC API layer's time extent) and
    per catalogue extent of the layers (``server/cache/documents.py``)."""
    nsmap = {None: WMTS_NS, "ows": OWS_NS, "xlink": XLINK_NS, "xsi": XSI_NS}
    root = etree.Element(f"{{{WMTS_NS}}}Capabilities", nsmap=nsmap, version="1.0.0")
    root.set(
        f"{{{XSI_NS}}}schemaLocation", f"{WMTS_NS} http://schemas.opengis.net/wmts/1.0/wmtsGetCapabilities_response.xsd"
    )
    ident = _ows(root, "ServiceIdentification")
    _ows(ident, "Title", "eotiler")
    _ows(
        ident,
        "Abstract",
        "Copernicus Sentinel data rendered by evalscripts. Contains modified Copernicus Sentinel data.",
    )
    _ows(ident, "ServiceType", "OGC WMTS")
    _ows(ident, "ServiceTypeVersion", "1.0.0")
    ops = _ows(root, "OperationsMetadata")
    for name in ("GetCapabilities", "GetTile", "GetFeatureInfo"):
        _operation(ops, name, url)
    contents = _wmts(root, "Contents")
    for layer in registry.layers.values():
        _layer(contents, layer, url, legend_base, today)
    maxzoom = max((layer.config.maxzoom for layer in registry.layers.values()), default=18)
    for tms_id in TILE_MATRIX_SETS:
        _tile_matrix_set(contents, tms_id, maxzoom)
    meta = _wmts(root, "ServiceMetadataURL")
    meta.set(f"{{{XLINK_NS}}}href", f"{url}?SERVICE=WMTS&REQUEST=GetCapabilities&VERSION=1.0.0")
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def check_version(kvp: KVP) -> None:
    """GetTile and GetFeatureInfo: a VERSION other than 1.0.0 is refused (absent is taken as 1.0.0).

    OWS Common negotiates versions in GetCapabilities only; any other request names the version
    it is written in, and this server implements one.
    """
    text = (kvp.get("VERSION") or "").strip()
    if text and text != VERSION:
        raise InvalidParameter(f"VERSION '{text[:20]}' is not supported: use {VERSION}", parameter="VERSION")


def check_accept_versions(kvp: KVP) -> None:
    """GetCapabilities: ACCEPTVERSIONS without 1.0.0 fails negotiation (OWS Common 1.1, 7.3.2)."""
    text = kvp.get("ACCEPTVERSIONS")
    if text and text.strip() and VERSION not in (v.strip() for v in text.split(",")):
        error = InvalidParameter(f"ACCEPTVERSIONS does not include {VERSION}", parameter="ACCEPTVERSIONS")
        error.ogc_code = "VersionNegotiationFailed"
        raise error


def _index(value: str, name: str) -> int:
    return parse_int(value.strip(), name, -(10**9), 10**9)


# TIME values that mean the dimension's default (no TIME): the capabilities advertise "default".
DEFAULT_TIME = ("default",)


def get_tile(
    pipeline: Pipeline,
    layer_id: str,
    style: str,
    tms_id: str,
    matrix: str,
    row: str,
    col: str,
    fmt: ImageFormat,
    time: str | None,
    maxcc: str | None,
    priority: str | None,
    evalscript: str | None = None,
) -> Response:
    """Render one WMTS tile (shared by KVP and REST)."""
    layer = pipeline.registry.get(layer_id, parameter="LAYER")
    if style.strip() not in ("", "default"):
        raise StyleNotDefined(f"style '{style[:40]}' is not defined (use 'default')", parameter="STYLE")
    if tms_id not in TILE_MATRIX_SETS:
        raise InvalidParameter(f"TILEMATRIXSET must be one of {', '.join(TILE_MATRIX_SETS)}", parameter="TILEMATRIXSET")
    tms = get_tms(tms_id, "TILEMATRIXSET")
    values = {"TIME": time, "MAXCC": maxcc, "PRIORITY": priority, "EVALSCRIPT": evalscript}
    options = RenderOptions.from_kvp(values.get, DEFAULT_TIME)
    tile = TileRequest.parse(layer, tms, matrix.strip(), col.strip(), row.strip(), fmt, options, WMTS)
    req = tile.render_request(options.script(layer))
    return image_response(pipeline.render_empty(req) if tile.below_minzoom else pipeline.render(req))


def get_tile_kvp(kvp: KVP, pipeline: Pipeline) -> Response:
    """GetTile with KVP encoding."""
    check_version(kvp)
    return get_tile(
        pipeline,
        kvp.require("LAYER"),
        kvp.get("STYLE") or "",
        kvp.require("TILEMATRIXSET"),
        kvp.require("TILEMATRIX"),
        kvp.require("TILEROW"),
        kvp.require("TILECOL"),
        parse_format(kvp.require("FORMAT")),
        kvp.get("TIME"),
        kvp.get("MAXCC"),
        kvp.get("PRIORITY"),
        kvp.get("EVALSCRIPT"),
    )


def get_feature_info_kvp(kvp: KVP, pipeline: Pipeline) -> Response:
    """GetFeatureInfo: the values at pixel I/J of a tile."""
    check_version(kvp)
    layer = pipeline.registry.get(kvp.require("LAYER"), parameter="LAYER")
    tms_id = kvp.require("TILEMATRIXSET")
    if tms_id not in TILE_MATRIX_SETS:
        raise InvalidParameter("unknown TILEMATRIXSET", parameter="TILEMATRIXSET")
    tms = get_tms(tms_id, "TILEMATRIXSET")
    position = [kvp.require(name).strip() for name in ("TILEMATRIX", "TILECOL", "TILEROW")]
    options = RenderOptions.from_kvp(kvp.get, DEFAULT_TIME)
    grid = TileRequest.parse(layer, tms, *position, ImageFormat.GTIFF, options, WMTS).grid
    i, j = _index(kvp.require("I"), "I"), _index(kvp.require("J"), "J")
    # WMTS names it INFOFORMAT; the WMS spelling INFO_FORMAT is read when INFOFORMAT is absent.
    info_parameter = "INFOFORMAT" if "INFOFORMAT" in kvp else "INFO_FORMAT"
    if not (0 <= i < grid.width and 0 <= j < grid.height):
        raise InvalidPoint("I/J is outside the tile", parameter="I")
    return feature_info(
        pipeline,
        (layer.id,),
        pixel_cell(grid, i, j),
        options.time,
        options.maxcc,
        options.priority,
        parse_info_format(kvp, "application/json", info_parameter),
        options.evalscript,
    )
