"""WMS 1.1.1 and 1.3.0 capabilities documents, built from the layer registry (never from data).

Built with lxml so documents are always well-formed; element order follows the WMS 1.1.1 DTD
and the 1.3.0 schema (tests validate both). Documents are cached per version and base URL.

Every advertised CRS is listed once, on the root layer (layers inherit it). Per layer, a
BoundingBox is given only in ``BOUNDING_BOX_CRS`` and the layer's native CRSs: the standard
makes the others optional (WMS 1.3.0 7.2.4.6.8, "should provide BoundingBox information for at
least the native CRS"), and one box in each of the 124 default CRSs made the 1.3.0 document
313 KB, which QGIS downloads and parses on every connection.
"""

from __future__ import annotations

import math
from datetime import date
from functools import lru_cache
from urllib.parse import urlencode

from lxml import etree
from rasterio.warp import transform_bounds

from server.api.dates import time_dimension, utc_today
from server.cache.documents import extent_cached
from server.catalog.layers import Layer, LayerRegistry
from server.ogc.crs import is_northing_first, normalise_code, to_crs

WMS_NS = "http://www.opengis.net/wms"
XLINK_NS = "http://www.w3.org/1999/xlink"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
MAP_FORMATS = ("image/png", "image/jpeg", "image/webp", "image/tiff")
INFO_FORMATS = ("application/json", "text/plain", "text/html", "application/vnd.ogc.gml")
# The CRSs of every layer's BoundingBoxes, besides its native ones: what web and desktop clients
# open a layer in (CRS:84 and EPSG:4326 lon/lat and lat/lon, EPSG:3857 web mercator).
BOUNDING_BOX_CRS = ("CRS:84", "EPSG:4326", "EPSG:3857")


class _Builder:
    """Small helper that writes elements in the right namespace for the version."""

    def __init__(self, version: str) -> None:
        self.version = version
        self.ns = WMS_NS if version == "1.3.0" else None

    def tag(self, name: str) -> str:
        return f"{{{self.ns}}}{name}" if self.ns else name

    def sub(self, parent: etree._Element, tag_name: str, text: str | None = None, **attrs: str) -> etree._Element:
        element = etree.SubElement(parent, self.tag(tag_name), **attrs)
        if text is not None:
            element.text = text
        return element

    def link(self, parent: etree._Element, href: str) -> etree._Element:
        nsmap = None if self.ns else {"xlink": XLINK_NS}  # 1.1.1: declared per element, as the DTD has it
        element = etree.SubElement(parent, self.tag("OnlineResource"), nsmap=nsmap)
        element.set(f"{{{XLINK_NS}}}type", "simple")
        element.set(f"{{{XLINK_NS}}}href", href)
        return element


@lru_cache(maxsize=4096)
def _bounds_in(code: str, west: float, south: float, east: float, north: float) -> tuple[float, ...] | None:
    try:
        bounds = transform_bounds("EPSG:4326", to_crs(code), west, south, east, north, densify_pts=21)
    except Exception:  # noqa: BLE001 - a CRS that cannot hold the area is simply not listed
        return None
    return bounds if all(math.isfinite(v) for v in bounds) else None


def native_crs_codes(layer: Layer) -> frozenset[str]:
    """The CRSs the layer's scenes are stored in: each item's ``proj:code`` (or ``proj:epsg``).

    Known without I/O for a static catalogue only (Sentinel-2 granules: their UTM zones); a
    STAC API collection's scenes are never listed, and GCP-only rasters (Sentinel-1 GRD) have none.
    """
    if not layer.catalogue.enumerable:
        return frozenset()
    codes = set()
    for scene in layer.catalogue.scenes:
        code = scene.properties.get("proj:code")
        epsg = scene.properties.get("proj:epsg")
        if isinstance(code, str) and code.strip():
            codes.add(normalise_code(code))
        elif isinstance(epsg, int) and not isinstance(epsg, bool):
            codes.add(f"EPSG:{epsg}")
    return frozenset(codes)


def bounding_box_codes(layer: Layer, crs_codes: tuple[str, ...]) -> tuple[str, ...]:
    """The advertised CRSs (in advertised order) in which ``layer`` gets a BoundingBox."""
    native = native_crs_codes(layer)
    return tuple(code for code in crs_codes if code in BOUNDING_BOX_CRS or code in native)


def _operation(b: _Builder, parent: etree._Element, name: str, formats: tuple[str, ...], url: str) -> None:
    op = b.sub(parent, name)
    for fmt in formats:
        b.sub(op, "Format", fmt)
    http = b.sub(b.sub(op, "DCPType"), "HTTP")
    b.link(b.sub(http, "Get"), url)


def _time_dimension(b: _Builder, element: etree._Element, layer: Layer, today: date) -> None:
    """The days the layer has data on (``server.api.dates.time_dimension``), its newest as the
    default; ``current="1"``: ``TIME=current`` draws the newest scenes."""
    dimension = time_dimension(layer, today)
    if dimension is None:
        return
    if b.version == "1.3.0":
        b.sub(
            element,
            "Dimension",
            dimension.extent(),
            name="time",
            units="ISO8601",
            default=dimension.default,
            nearestValue="0",
            multipleValues="0",
            current="1",
        )
    else:
        b.sub(element, "Dimension", name="time", units="ISO8601")
        b.sub(element, "Extent", dimension.extent(), name="time", default=dimension.default, nearestValue="0")


def _layer(
    b: _Builder, parent: etree._Element, layer: Layer, crs_codes: tuple[str, ...], url: str, today: date
) -> None:
    element = b.sub(parent, "Layer", queryable="1", opaque="0")
    b.sub(element, "Name", layer.id)
    b.sub(element, "Title", layer.config.title)
    if layer.config.abstract:
        b.sub(element, "Abstract", layer.config.abstract)
    west, south, east, north = layer.bounds or (-180.0, -90.0, 180.0, 90.0)
    if b.version == "1.3.0":
        geo = b.sub(element, "EX_GeographicBoundingBox")
        for name, value in (
            ("westBoundLongitude", west),
            ("eastBoundLongitude", east),
            ("southBoundLatitude", south),
            ("northBoundLatitude", north),
        ):
            b.sub(geo, name, f"{value:.6f}")
    else:
        b.sub(
            element,
            "LatLonBoundingBox",
            minx=f"{west:.6f}",
            miny=f"{south:.6f}",
            maxx=f"{east:.6f}",
            maxy=f"{north:.6f}",
        )
    for code in bounding_box_codes(layer, crs_codes):
        bounds = _bounds_in(code, west, south, east, north)
        if bounds is None:
            continue
        x0, y0, x1, y1 = bounds
        if b.version == "1.3.0" and is_northing_first(code):
            x0, y0, x1, y1 = y0, x0, y1, x1
        attrs = {
            ("CRS" if b.version == "1.3.0" else "SRS"): code,
            "minx": f"{x0:.6f}",
            "miny": f"{y0:.6f}",
            "maxx": f"{x1:.6f}",
            "maxy": f"{y1:.6f}",
        }
        b.sub(element, "BoundingBox", **attrs)
    _time_dimension(b, element, layer, today)
    style = b.sub(element, "Style")
    b.sub(style, "Name", "default")
    b.sub(style, "Title", "default")
    if layer.legend() is not None:
        legend = b.sub(style, "LegendURL", width="200", height="200")
        b.sub(legend, "Format", "image/png")
        query = urlencode(
            {
                "SERVICE": "WMS",
                "REQUEST": "GetLegendGraphic",
                "VERSION": b.version,
                "LAYER": layer.id,
                "FORMAT": "image/png",
                "STYLE": "default",
            }
        )
        b.link(legend, f"{url}?{query}")


def build_capabilities(
    registry: LayerRegistry, version: str, url: str, crs_codes: tuple[str, ...], max_size: int
) -> bytes:
    """The capabilities document for ``version`` with operations pointing at ``url``."""
    return _build_capabilities(registry, version, url, crs_codes, max_size, utc_today())


@extent_cached(maxsize=32)
def _build_capabilities(
    registry: LayerRegistry, version: str, url: str, crs_codes: tuple[str, ...], max_size: int, today: date
) -> bytes:
    """Cached per arguments (the registry by identity, ``today`` ends a STAC API layer's time extent)
    and per catalogue extent of its layers (``server/cache/documents.py``): a changed extent, or the
    real one after a catalogue outage's whole-globe stand-in, builds a new document.
    """
    b = _Builder(version)
    if version == "1.3.0":
        root = etree.Element(
            b.tag("WMS_Capabilities"), nsmap={None: WMS_NS, "xlink": XLINK_NS, "xsi": XSI_NS}, version="1.3.0"
        )
        root.set(f"{{{XSI_NS}}}schemaLocation", f"{WMS_NS} http://schemas.opengis.net/wms/1.3.0/capabilities_1_3_0.xsd")
    else:
        # The 1.1.1 DTD declares xmlns:xlink on each OnlineResource, not on the root.
        root = etree.Element("WMT_MS_Capabilities", version="1.1.1")
    service = b.sub(root, "Service")
    b.sub(service, "Name", "WMS" if version == "1.3.0" else "OGC:WMS")
    b.sub(service, "Title", "eotiler")
    b.sub(
        service,
        "Abstract",
        "Copernicus Sentinel data rendered by evalscripts. Contains modified Copernicus Sentinel data.",
    )
    b.link(service, url)
    b.sub(service, "Fees", "none")
    b.sub(service, "AccessConstraints", "none")
    if version == "1.3.0":
        b.sub(service, "MaxWidth", str(max_size))
        b.sub(service, "MaxHeight", str(max_size))
    capability = b.sub(root, "Capability")
    request = b.sub(capability, "Request")
    query_url = f"{url}?"
    caps_format = "text/xml" if version == "1.3.0" else "application/vnd.ogc.wms_xml"
    _operation(b, request, "GetCapabilities", (caps_format,), query_url)
    _operation(b, request, "GetMap", MAP_FORMATS, query_url)
    _operation(b, request, "GetFeatureInfo", INFO_FORMATS, query_url)
    if version == "1.1.1":
        _operation(b, request, "GetLegendGraphic", ("image/png",), query_url)
    exception = b.sub(capability, "Exception")
    formats = (
        ("XML", "INIMAGE", "BLANK")
        if version == "1.3.0"
        else ("application/vnd.ogc.se_xml", "application/vnd.ogc.se_inimage", "application/vnd.ogc.se_blank")
    )
    for fmt in formats:
        b.sub(exception, "Format", fmt)
    root_layer = b.sub(capability, "Layer")
    b.sub(root_layer, "Title", "eotiler layers")
    for code in crs_codes:
        b.sub(root_layer, "CRS" if version == "1.3.0" else "SRS", code)
    for layer in registry.layers.values():
        _layer(b, root_layer, layer, crs_codes, url, today)
    doctype = None
    if version == "1.1.1":
        doctype = '<!DOCTYPE WMT_MS_Capabilities SYSTEM "http://schemas.opengis.net/wms/1.1.1/WMS_MS_Capabilities.dtd">'
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", doctype=doctype, pretty_print=True)
