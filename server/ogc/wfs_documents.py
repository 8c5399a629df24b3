"""WFS 2.0.0 documents: capabilities, the feature type schema, and feature collections (GML 3.2, GeoJSON).

Built with lxml from the published feature types; axis order follows the CRS (EPSG:4326 is
latitude first in GML, as its EPSG definition says; GeoJSON is always x/y, longitude first).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from lxml import etree

from server.catalog.layers import LayerRegistry
from server.ogc.crs import is_northing_first

if TYPE_CHECKING:
    from server.ogc.wfs import FeatureType

WFS_NS = "http://www.opengis.net/wfs/2.0"
OWS_NS = "http://www.opengis.net/ows/1.1"
FES_NS = "http://www.opengis.net/fes/2.0"
GML_NS = "http://www.opengis.net/gml/3.2"
XLINK_NS = "http://www.w3.org/1999/xlink"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
XSD_NS = "http://www.w3.org/2001/XMLSchema"
FEATURE_NS = "urn:x-eotiler:wfs"
PREFIX = "eotiler"
GML_FORMAT = "application/gml+xml; version=3.2"
# CRSs listed per feature type (every advertised CRS is accepted; the UTM zones are not listed).
LISTED_CRS = ("EPSG:3857", "CRS:84", "EPSG:3035")
PROPERTIES = (  # name, XML Schema type
    ("id", "xsd:string"),
    ("date", "xsd:date"),
    ("time", "xsd:string"),
    ("cloudCoverage", "xsd:double"),
    ("path", "xsd:string"),
    ("orbitDirection", "xsd:string"),
)
Features = list[tuple[str, dict[str, Any], list[list[list[tuple[float, float]]]]]]


def crs_uri(code: str) -> str:
    """``EPSG:n`` -> ``urn:ogc:def:crs:EPSG::n``; ``CRS:84`` -> the OGC CRS84 URI."""
    if code == "CRS:84":
        return "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
    return f"urn:ogc:def:crs:EPSG::{code.partition(':')[2]}"


def _ows(parent: etree._Element, tag: str, text: str | None = None, **attrs: str) -> etree._Element:
    element = etree.SubElement(parent, f"{{{OWS_NS}}}{tag}", **attrs)
    if text is not None:
        element.text = text
    return element


def _constraint(parent: etree._Element, name: str, value: str, ns: str = OWS_NS) -> None:
    constraint = etree.SubElement(parent, f"{{{ns}}}Constraint", name=name)
    _ows(constraint, "NoValues")
    _ows(constraint, "DefaultValue", value)


def _operation(parent: etree._Element, name: str, url: str, parameters: dict[str, Iterable[str]]) -> None:
    operation = _ows(parent, "Operation", name=name)
    http = _ows(_ows(operation, "DCP"), "HTTP")
    _ows(http, "Get", **{f"{{{XLINK_NS}}}href": f"{url}?"})
    for pname, values in parameters.items():
        allowed = _ows(_ows(operation, "Parameter", name=pname), "AllowedValues")
        for value in values:
            _ows(allowed, "Value", value)


def capabilities(registry: LayerRegistry, types: Iterable[FeatureType], url: str, allowed: tuple[str, ...]) -> bytes:
    """The WFS_Capabilities document (Basic WFS, KVP, result paging)."""
    nsmap = {"wfs": WFS_NS, "ows": OWS_NS, "fes": FES_NS, "gml": GML_NS, "xlink": XLINK_NS, "xsi": XSI_NS}
    nsmap[PREFIX] = FEATURE_NS
    root = etree.Element(f"{{{WFS_NS}}}WFS_Capabilities", nsmap=nsmap, version="2.0.0")
    root.set(f"{{{XSI_NS}}}schemaLocation", f"{WFS_NS} http://schemas.opengis.net/wfs/2.0/wfs.xsd")
    ident = _ows(root, "ServiceIdentification")
    _ows(ident, "Title", "eotiler scene footprints")
    _ows(ident, "Abstract", "Footprints, dates and cloud cover of the scenes behind each layer and collection.")
    _ows(ident, "ServiceType", "WFS", codeSpace="OGC")
    _ows(ident, "ServiceTypeVersion", "2.0.0")
    _ows(ident, "Fees", "NONE")
    _ows(ident, "AccessConstraints", "NONE")
    meta = _ows(root, "OperationsMetadata")
    _operation(meta, "GetCapabilities", url, {"AcceptVersions": ["2.0.0"], "AcceptFormats": ["text/xml"]})
    _operation(meta, "DescribeFeatureType", url, {"outputFormat": [GML_FORMAT]})
    get_feature = {"outputFormat": [GML_FORMAT, "application/json"], "resultType": ["results", "hits"]}
    _operation(meta, "GetFeature", url, get_feature)
    for name, value in (
        ("ImplementsBasicWFS", "TRUE"),
        ("ImplementsTransactionalWFS", "FALSE"),
        ("ImplementsLockingWFS", "FALSE"),
        ("KVPEncoding", "TRUE"),
        ("XMLEncoding", "FALSE"),
        ("SOAPEncoding", "FALSE"),
        ("ImplementsInheritance", "FALSE"),
        ("ImplementsRemoteResolve", "FALSE"),
        ("ImplementsResultPaging", "TRUE"),
        ("ImplementsStandardJoins", "FALSE"),
        ("ImplementsSpatialJoins", "FALSE"),
        ("ImplementsTemporalJoins", "FALSE"),
        ("ImplementsFeatureVersioning", "FALSE"),
        ("ManageStoredQueries", "FALSE"),
        ("CountDefault", "1000"),
    ):
        _constraint(meta, name, value)
    listed = [c for c in LISTED_CRS if c in allowed]
    type_list = etree.SubElement(root, f"{{{WFS_NS}}}FeatureTypeList")
    for kind in types:
        feature = etree.SubElement(type_list, f"{{{WFS_NS}}}FeatureType")
        etree.SubElement(feature, f"{{{WFS_NS}}}Name").text = f"{PREFIX}:{kind.name}"
        etree.SubElement(feature, f"{{{WFS_NS}}}Title").text = kind.title
        etree.SubElement(feature, f"{{{WFS_NS}}}DefaultCRS").text = crs_uri("EPSG:4326")
        for code in listed:
            etree.SubElement(feature, f"{{{WFS_NS}}}OtherCRS").text = crs_uri(code)
        formats = etree.SubElement(feature, f"{{{WFS_NS}}}OutputFormats")
        for fmt in (GML_FORMAT, "application/json"):
            etree.SubElement(formats, f"{{{WFS_NS}}}Format").text = fmt
        extent = registry.catalogues[kind.collection_id].extent()[0]
        west, south, east, north = extent or (-180.0, -90.0, 180.0, 90.0)
        box = _ows(feature, "WGS84BoundingBox")
        _ows(box, "LowerCorner", f"{west:.7g} {south:.7g}")
        _ows(box, "UpperCorner", f"{east:.7g} {north:.7g}")
    filters = etree.SubElement(root, f"{{{FES_NS}}}Filter_Capabilities")
    conformance = etree.SubElement(filters, f"{{{FES_NS}}}Conformance")
    for name in (
        "ImplementsQuery",
        "ImplementsAdHocQuery",
        "ImplementsFunctions",
        "ImplementsResourceId",
        "ImplementsMinStandardFilter",
        "ImplementsStandardFilter",
        "ImplementsMinSpatialFilter",
        "ImplementsSpatialFilter",
        "ImplementsMinTemporalFilter",
        "ImplementsTemporalFilter",
        "ImplementsVersionNav",
        "ImplementsSorting",
        "ImplementsExtendedOperators",
        "ImplementsMinimumXPath",
        "ImplementsSchemaElementFunc",
    ):
        _constraint(conformance, name, "FALSE", FES_NS)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def describe(names: list[str]) -> bytes:
    """An XML Schema with one GML 3.2 feature type per name (the same properties for all)."""
    nsmap = {"xsd": XSD_NS, "gml": GML_NS, PREFIX: FEATURE_NS}
    root = etree.Element(
        f"{{{XSD_NS}}}schema",
        nsmap=nsmap,
        targetNamespace=FEATURE_NS,
        elementFormDefault="qualified",
        version="1.0",
    )
    etree.SubElement(
        root, f"{{{XSD_NS}}}import", namespace=GML_NS, schemaLocation="http://schemas.opengis.net/gml/3.2.1/gml.xsd"
    )
    for name in names:
        complex_type = etree.SubElement(root, f"{{{XSD_NS}}}complexType", name=f"{name}Type")
        content = etree.SubElement(complex_type, f"{{{XSD_NS}}}complexContent")
        extension = etree.SubElement(content, f"{{{XSD_NS}}}extension", base="gml:AbstractFeatureType")
        sequence = etree.SubElement(extension, f"{{{XSD_NS}}}sequence")
        for prop, xsd_type in PROPERTIES:
            optional = prop in ("cloudCoverage", "orbitDirection")
            attrs = {"minOccurs": "0", "nillable": "true"} if optional else {}
            etree.SubElement(sequence, f"{{{XSD_NS}}}element", name=prop, type=xsd_type, **attrs)
        etree.SubElement(sequence, f"{{{XSD_NS}}}element", name="geometry", type="gml:MultiSurfacePropertyType")
        etree.SubElement(
            root,
            f"{{{XSD_NS}}}element",
            name=name,
            type=f"{PREFIX}:{name}Type",
            substitutionGroup="gml:AbstractFeature",
        )
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def _gml(tag: str) -> str:
    return f"{{{GML_NS}}}{tag}"


def _pos_list(ring: list[tuple[float, float]], northing_first: bool) -> str:
    return " ".join(f"{y!r} {x!r}" if northing_first else f"{x!r} {y!r}" for x, y in ring)


def feature_collection_gml(type_name: str, features: Features, matched: int, code: str, describe_url: str) -> bytes:
    """A wfs:FeatureCollection of GML 3.2 features, one MultiSurface footprint each."""
    nsmap = {"wfs": WFS_NS, "gml": GML_NS, "xsi": XSI_NS, PREFIX: FEATURE_NS}
    root = etree.Element(
        f"{{{WFS_NS}}}FeatureCollection",
        nsmap=nsmap,
        numberMatched=str(matched),
        numberReturned=str(len(features)),
        timeStamp=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    root.set(
        f"{{{XSI_NS}}}schemaLocation",
        f"{FEATURE_NS} {describe_url}&TYPENAMES={PREFIX}:{type_name} "
        f"{WFS_NS} http://schemas.opengis.net/wfs/2.0/wfs.xsd {GML_NS} http://schemas.opengis.net/gml/3.2.1/gml.xsd",
    )
    srs, swap = crs_uri(code), is_northing_first(code)
    for fid, properties, polygons in features:
        member = etree.SubElement(root, f"{{{WFS_NS}}}member")
        feature = etree.SubElement(member, f"{{{FEATURE_NS}}}{type_name}", {_gml("id"): fid})
        for prop, _ in PROPERTIES:
            value = properties.get(prop)
            if value is None:
                continue
            text = repr(value) if isinstance(value, float) else str(value)
            etree.SubElement(feature, f"{{{FEATURE_NS}}}{prop}").text = text
        geometry = etree.SubElement(feature, f"{{{FEATURE_NS}}}geometry")
        attrs = {_gml("id"): f"{fid}.geom", "srsName": srs, "srsDimension": "2"}
        surface = etree.SubElement(geometry, _gml("MultiSurface"), attrs)
        for index, polygon in enumerate(polygons):
            element = etree.SubElement(etree.SubElement(surface, _gml("surfaceMember")), _gml("Polygon"))
            element.set(_gml("id"), f"{fid}.geom.{index}")
            for number, ring in enumerate(polygon):
                boundary = etree.SubElement(element, _gml("exterior" if number == 0 else "interior"))
                linear = etree.SubElement(boundary, _gml("LinearRing"))
                etree.SubElement(linear, _gml("posList")).text = _pos_list(ring, swap)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def feature_collection_json(features: Features, matched: int, code: str) -> bytes:
    """A GeoJSON FeatureCollection (x/y order; a ``crs`` member names a CRS other than lon/lat)."""
    doc: dict[str, Any] = {
        "type": "FeatureCollection",
        "numberMatched": matched,
        "numberReturned": len(features),
        "features": [
            {
                "type": "Feature",
                "id": fid,
                "geometry": {
                    "type": "MultiPolygon",
                    "coordinates": [[[list(p) for p in ring] for ring in polygon] for polygon in polygons],
                },
                "properties": properties,
            }
            for fid, properties, polygons in features
        ],
    }
    if code not in ("EPSG:4326", "CRS:84"):
        doc["crs"] = {"type": "name", "properties": {"name": crs_uri(code)}}
    return json.dumps(doc).encode()
