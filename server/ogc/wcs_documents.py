"""WCS 1.0.0 and 2.0.1 GetCapabilities and DescribeCoverage documents (lxml), cached per URL.

Element order follows the WCS 1.0.0 schemas (``wcsCapabilities.xsd``, ``describeCoverage.xsd``)
and WCS 2.0.1 with GML 3.2.1, GMLCOV 1.0 and SWE Common 2.0. The coverage domain comes from
``server/ogc/wcs.py`` so documents and GetCoverage agree on one grid.
"""

from __future__ import annotations

from lxml import etree

from server.cache.documents import extent_cached
from server.catalog.layers import Layer, LayerRegistry
from server.evalscript.contract import SampleType
from server.ogc.wcs import FORMATS, NATIVE_CRS, coverage_domain

WCS10_NS = "http://www.opengis.net/wcs"
GML_NS = "http://www.opengis.net/gml"
WCS20_NS = "http://www.opengis.net/wcs/2.0"
OWS20_NS = "http://www.opengis.net/ows/2.0"
GML32_NS = "http://www.opengis.net/gml/3.2"
GMLCOV_NS = "http://www.opengis.net/gmlcov/1.0"
SWE_NS = "http://www.opengis.net/swe/2.0"
CRS_EXT_NS = "http://www.opengis.net/wcs/crs/1.0"
INT_EXT_NS = "http://www.opengis.net/WCS_service-extension_interpolation/1.0"
EOT_NS = "https://github.com/eotiler/eotiler/wcs"
XLINK_NS = "http://www.w3.org/1999/xlink"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
CRS84_URN = "urn:ogc:def:crs:OGC:1.3:CRS84"
ABSTRACT = "Copernicus Sentinel data as evalscript outputs. Contains modified Copernicus Sentinel data."
_INTERPOLATION_100 = {"nearest": "nearest neighbor", "bilinear": "bilinear", "cubic": "bicubic"}
_INTERPOLATION_URI = "http://www.opengis.net/def/interpolation/OGC/1/"
_INTERPOLATION_201 = {"nearest": "nearest-neighbor", "bilinear": "linear", "cubic": "cubic"}


def _el(parent: etree._Element, ns: str, tag: str, text: str | None = None, **attrs: str) -> etree._Element:
    element = etree.SubElement(parent, f"{{{ns}}}{tag}", **attrs)
    if text is not None:
        element.text = text
    return element


def crs_uri(code: str) -> str:
    """``EPSG:4326`` -> ``http://www.opengis.net/def/crs/EPSG/0/4326`` (CRS:84 -> the OGC CRS84 URI)."""
    if code == "CRS:84":
        return "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
    return f"http://www.opengis.net/def/crs/EPSG/0/{code.split(':', 1)[1]}"


def _fmt(value: float) -> str:
    return f"{value:.10g}"


def _label(layer: Layer) -> str:
    return layer.config.title


# ---------------------------------------------------------------------------------------- 1.0.0


def _dcp(parent: etree._Element, url: str) -> None:
    get = _el(_el(_el(parent, WCS10_NS, "DCPType"), WCS10_NS, "HTTP"), WCS10_NS, "Get")
    link = _el(get, WCS10_NS, "OnlineResource")
    link.set(f"{{{XLINK_NS}}}type", "simple")
    link.set(f"{{{XLINK_NS}}}href", url)


def _lonlat_envelope(parent: etree._Element, layer: Layer) -> None:
    domain = coverage_domain(layer)
    west, south, east, north = domain.bbox
    envelope = _el(parent, WCS10_NS, "lonLatEnvelope", srsName=CRS84_URN)
    _el(envelope, GML_NS, "pos", f"{_fmt(west)} {_fmt(south)}")
    _el(envelope, GML_NS, "pos", f"{_fmt(east)} {_fmt(north)}")
    if domain.times:
        _el(envelope, GML_NS, "timePosition", domain.times[0])
        _el(envelope, GML_NS, "timePosition", domain.times[-1])


def _coverage_header(element: etree._Element, layer: Layer) -> etree._Element:
    """description, name, label and lonLatEnvelope: shared by CoverageOfferingBrief and CoverageOffering."""
    if layer.config.abstract:
        _el(element, WCS10_NS, "description", layer.config.abstract)
    _el(element, WCS10_NS, "name", layer.id)
    _el(element, WCS10_NS, "label", _label(layer))
    _lonlat_envelope(element, layer)
    return element


def _root_100(name: str, schema: str) -> etree._Element:
    root = etree.Element(
        f"{{{WCS10_NS}}}{name}",
        nsmap={None: WCS10_NS, "gml": GML_NS, "xlink": XLINK_NS, "xsi": XSI_NS},
        version="1.0.0",
    )
    root.set(f"{{{XSI_NS}}}schemaLocation", f"{WCS10_NS} http://schemas.opengis.net/wcs/1.0.0/{schema}")
    return root


@extent_cached(maxsize=16)
def capabilities_100(registry: LayerRegistry, url: str) -> bytes:
    """WCS 1.0.0 ``WCS_Capabilities``."""
    root = _root_100("WCS_Capabilities", "wcsCapabilities.xsd")
    service = _el(root, WCS10_NS, "Service")
    _el(service, WCS10_NS, "description", ABSTRACT)
    _el(service, WCS10_NS, "name", "eotiler")
    _el(service, WCS10_NS, "label", "eotiler WCS")
    _el(service, WCS10_NS, "fees", "NONE")
    _el(service, WCS10_NS, "accessConstraints", "NONE")
    capability = _el(root, WCS10_NS, "Capability")
    request = _el(capability, WCS10_NS, "Request")
    for operation in ("GetCapabilities", "DescribeCoverage", "GetCoverage"):
        _dcp(_el(request, WCS10_NS, operation), f"{url}?")
    _el(_el(capability, WCS10_NS, "Exception"), WCS10_NS, "Format", "application/vnd.ogc.se_xml")
    content = _el(root, WCS10_NS, "ContentMetadata")
    for layer in registry.layers.values():
        _coverage_header(_el(content, WCS10_NS, "CoverageOfferingBrief"), layer)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def _offering_100(parent: etree._Element, layer: Layer, crs_codes: tuple[str, ...]) -> None:
    domain = coverage_domain(layer)
    offering = _coverage_header(_el(parent, WCS10_NS, "CoverageOffering"), layer)
    domain_set = _el(offering, WCS10_NS, "domainSet")
    spatial = _el(domain_set, WCS10_NS, "spatialDomain")
    west, south, east, north = domain.bbox
    envelope = _el(spatial, GML_NS, "Envelope", srsName=NATIVE_CRS)
    _el(envelope, GML_NS, "pos", f"{_fmt(west)} {_fmt(south)}")
    _el(envelope, GML_NS, "pos", f"{_fmt(east)} {_fmt(north)}")
    grid = _el(spatial, GML_NS, "RectifiedGrid", dimension="2", srsName=NATIVE_CRS)
    limits = _el(_el(grid, GML_NS, "limits"), GML_NS, "GridEnvelope")
    _el(limits, GML_NS, "low", "0 0")
    _el(limits, GML_NS, "high", f"{domain.width - 1} {domain.height - 1}")
    _el(grid, GML_NS, "axisName", "x")
    _el(grid, GML_NS, "axisName", "y")
    half = domain.resolution / 2  # GML grid origins are pixel centres
    _el(_el(grid, GML_NS, "origin"), GML_NS, "pos", f"{_fmt(west + half)} {_fmt(north - half)}")
    _el(grid, GML_NS, "offsetVector", f"{_fmt(domain.resolution)} 0")
    _el(grid, GML_NS, "offsetVector", f"0 {_fmt(-domain.resolution)}")
    if domain.times:
        temporal = _el(domain_set, WCS10_NS, "temporalDomain")
        for day in domain.times:
            _el(temporal, GML_NS, "timePosition", day)
    range_set = _el(_el(offering, WCS10_NS, "rangeSet"), WCS10_NS, "RangeSet")
    _el(range_set, WCS10_NS, "name", "bands")
    _el(range_set, WCS10_NS, "label", f"{domain.bands} band(s), {domain.data_type}")
    axis = _el(_el(range_set, WCS10_NS, "axisDescription"), WCS10_NS, "AxisDescription")
    _el(axis, WCS10_NS, "name", "Band")
    _el(axis, WCS10_NS, "label", "Band")
    values = _el(axis, WCS10_NS, "values")
    for i in range(domain.bands):
        _el(values, WCS10_NS, "singleValue", str(i + 1))
    if domain.sample_type is SampleType.FLOAT32:
        _el(_el(range_set, WCS10_NS, "nullValues"), WCS10_NS, "singleValue", "nan")
    crs_element = _el(offering, WCS10_NS, "supportedCRSs")
    _el(crs_element, WCS10_NS, "requestResponseCRSs", " ".join(crs_codes))
    _el(crs_element, WCS10_NS, "nativeCRSs", NATIVE_CRS)
    formats = _el(offering, WCS10_NS, "supportedFormats", nativeFormat="GeoTIFF")
    _el(formats, WCS10_NS, "formats", "GeoTIFF")
    default = _INTERPOLATION_100[layer.config.resampling]
    interpolations = _el(offering, WCS10_NS, "supportedInterpolations", default=default)
    for method in _INTERPOLATION_100.values():
        _el(interpolations, WCS10_NS, "interpolationMethod", method)


@extent_cached(maxsize=64)
def describe_coverage_100(registry: LayerRegistry, layer_ids: tuple[str, ...], crs_codes: tuple[str, ...]) -> bytes:
    """WCS 1.0.0 ``CoverageDescription`` for the named coverages."""
    root = _root_100("CoverageDescription", "describeCoverage.xsd")
    for layer_id in layer_ids:
        _offering_100(root, registry.layers[layer_id], crs_codes)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


# ---------------------------------------------------------------------------------------- 2.0.1


def _ows_operation(parent: etree._Element, name: str, url: str) -> None:
    operation = _el(parent, OWS20_NS, "Operation", name=name)
    get = _el(_el(_el(operation, OWS20_NS, "DCP"), OWS20_NS, "HTTP"), OWS20_NS, "Get")
    get.set(f"{{{XLINK_NS}}}href", f"{url}?")


@extent_cached(maxsize=16)
def capabilities_201(registry: LayerRegistry, url: str, crs_codes: tuple[str, ...]) -> bytes:
    """WCS 2.0.1 ``wcs:Capabilities`` (core, KVP, GeoTIFF, CRS, scaling, range subsetting, interpolation)."""
    nsmap = {
        "wcs": WCS20_NS,
        "ows": OWS20_NS,
        "gml": GML32_NS,
        "crs": CRS_EXT_NS,
        "int": INT_EXT_NS,
        "xlink": XLINK_NS,
        "xsi": XSI_NS,
    }
    root = etree.Element(f"{{{WCS20_NS}}}Capabilities", nsmap=nsmap, version="2.0.1")
    root.set(f"{{{XSI_NS}}}schemaLocation", f"{WCS20_NS} http://schemas.opengis.net/wcs/2.0/wcsAll.xsd")
    ident = _el(root, OWS20_NS, "ServiceIdentification")
    _el(ident, OWS20_NS, "Title", "eotiler WCS")
    _el(ident, OWS20_NS, "Abstract", ABSTRACT)
    _el(ident, OWS20_NS, "ServiceType", "OGC WCS", codeSpace="OGC")
    _el(ident, OWS20_NS, "ServiceTypeVersion", "2.0.1")
    _el(ident, OWS20_NS, "ServiceTypeVersion", "1.0.0")
    for profile in (
        "http://www.opengis.net/spec/WCS/2.0/conf/core",
        "http://www.opengis.net/spec/WCS_protocol-binding_get-kvp/1.0/conf/get-kvp",
        "http://www.opengis.net/spec/GMLCOV_geotiff-coverages/1.0/conf/geotiff-coverage",
        "http://www.opengis.net/spec/WCS_service-extension_crs/1.0/conf/crs",
        "http://www.opengis.net/spec/WCS_service-extension_scaling/1.0/conf/scaling",
        "http://www.opengis.net/spec/WCS_service-extension_range-subsetting/1.0/conf/record-subsetting",
        "http://www.opengis.net/spec/WCS_service-extension_interpolation/1.0/conf/interpolation",
    ):
        _el(ident, OWS20_NS, "Profile", profile)
    _el(ident, OWS20_NS, "Fees", "NONE")
    _el(ident, OWS20_NS, "AccessConstraints", "NONE")
    provider = _el(root, OWS20_NS, "ServiceProvider")
    _el(provider, OWS20_NS, "ProviderName", "eotiler")
    _el(provider, OWS20_NS, "ServiceContact")
    operations = _el(root, OWS20_NS, "OperationsMetadata")
    for name in ("GetCapabilities", "DescribeCoverage", "GetCoverage"):
        _ows_operation(operations, name, url)
    metadata = _el(root, WCS20_NS, "ServiceMetadata")
    for fmt in FORMATS:
        _el(metadata, WCS20_NS, "formatSupported", fmt)
    extension = _el(metadata, WCS20_NS, "Extension")
    crs_metadata = _el(extension, CRS_EXT_NS, "CrsMetadata")
    for code in dict.fromkeys((NATIVE_CRS, *crs_codes)):
        _el(crs_metadata, CRS_EXT_NS, "crsSupported", crs_uri(code))
    interpolations = _el(extension, INT_EXT_NS, "InterpolationMetadata")
    for method in _INTERPOLATION_201.values():
        _el(interpolations, INT_EXT_NS, "InterpolationSupported", _INTERPOLATION_URI + method)
    contents = _el(root, WCS20_NS, "Contents")
    for layer in registry.layers.values():
        domain = coverage_domain(layer)
        summary = _el(contents, WCS20_NS, "CoverageSummary")
        _el(summary, OWS20_NS, "Title", _label(layer))
        if layer.config.abstract:
            _el(summary, OWS20_NS, "Abstract", layer.config.abstract)
        _el(summary, WCS20_NS, "CoverageId", layer.id)
        _el(summary, WCS20_NS, "CoverageSubtype", "RectifiedGridCoverage")
        west, south, east, north = domain.bbox
        box = _el(summary, OWS20_NS, "WGS84BoundingBox")
        _el(box, OWS20_NS, "LowerCorner", f"{_fmt(west)} {_fmt(south)}")
        _el(box, OWS20_NS, "UpperCorner", f"{_fmt(east)} {_fmt(north)}")
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def _description_201(parent: etree._Element, layer: Layer) -> None:
    domain = coverage_domain(layer)
    gml_id = f"{{{GML32_NS}}}id"
    description = _el(parent, WCS20_NS, "CoverageDescription")
    description.set(gml_id, layer.id)
    west, south, east, north = domain.bbox
    srs = crs_uri(NATIVE_CRS)
    # EPSG:4326 is latitude first: every coordinate tuple below is (lat, long).
    envelope = _el(
        _el(description, GML32_NS, "boundedBy"),
        GML32_NS,
        "Envelope",
        srsName=srs,
        axisLabels="Lat Long",
        uomLabels="deg deg",
        srsDimension="2",
    )
    _el(envelope, GML32_NS, "lowerCorner", f"{_fmt(south)} {_fmt(west)}")
    _el(envelope, GML32_NS, "upperCorner", f"{_fmt(north)} {_fmt(east)}")
    _el(description, WCS20_NS, "CoverageId", layer.id)
    if domain.times:
        extension = _el(_el(description, GMLCOV_NS, "metadata"), GMLCOV_NS, "Extension")
        times = _el(extension, EOT_NS, "timeDomain")
        for day in domain.times:
            _el(times, GML32_NS, "timePosition", day)
    grid = _el(_el(description, GML32_NS, "domainSet"), GML32_NS, "RectifiedGrid", dimension="2")
    grid.set(gml_id, f"{layer.id}_grid")
    limits = _el(_el(grid, GML32_NS, "limits"), GML32_NS, "GridEnvelope")
    _el(limits, GML32_NS, "low", "0 0")
    # Grid axes are image axes (columns, then rows); offset vectors and the origin are CRS
    # coordinates, so (lat, long). This is how MapServer writes it and what GDAL's driver reads.
    _el(limits, GML32_NS, "high", f"{domain.width - 1} {domain.height - 1}")
    _el(grid, GML32_NS, "axisLabels", "Long Lat")
    point = _el(_el(grid, GML32_NS, "origin"), GML32_NS, "Point", srsName=srs)
    point.set(gml_id, f"{layer.id}_origin")
    half = domain.resolution / 2
    _el(point, GML32_NS, "pos", f"{_fmt(north - half)} {_fmt(west + half)}")
    _el(grid, GML32_NS, "offsetVector", f"0 {_fmt(domain.resolution)}", srsName=srs)
    _el(grid, GML32_NS, "offsetVector", f"{_fmt(-domain.resolution)} 0", srsName=srs)
    record = _el(_el(description, GMLCOV_NS, "rangeType"), SWE_NS, "DataRecord")
    for name in domain.band_names:
        quantity = _el(_el(record, SWE_NS, "field", name=name), SWE_NS, "Quantity")
        _el(quantity, SWE_NS, "description", f"{layer.id} output {name} ({domain.data_type})")
        if domain.sample_type is SampleType.FLOAT32:
            _el(
                _el(_el(quantity, SWE_NS, "nilValues"), SWE_NS, "NilValues"), SWE_NS, "nilValue", "NaN", reason="nodata"
            )
        _el(quantity, SWE_NS, "uom", code="1")
    parameters = _el(description, WCS20_NS, "ServiceParameters")
    _el(parameters, WCS20_NS, "CoverageSubtype", "RectifiedGridCoverage")
    _el(parameters, WCS20_NS, "nativeFormat", "image/tiff")


@extent_cached(maxsize=64)
def describe_coverage_201(registry: LayerRegistry, layer_ids: tuple[str, ...]) -> bytes:
    """WCS 2.0.1 ``wcs:CoverageDescriptions``."""
    nsmap = {
        "wcs": WCS20_NS,
        "gml": GML32_NS,
        "gmlcov": GMLCOV_NS,
        "swe": SWE_NS,
        "eot": EOT_NS,
        "xlink": XLINK_NS,
        "xsi": XSI_NS,
    }
    root = etree.Element(f"{{{WCS20_NS}}}CoverageDescriptions", nsmap=nsmap)
    root.set(f"{{{XSI_NS}}}schemaLocation", f"{WCS20_NS} http://schemas.opengis.net/wcs/2.0/wcsAll.xsd")
    for layer_id in layer_ids:
        _description_201(root, registry.layers[layer_id])
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)
