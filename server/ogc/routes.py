"""HTTP entry points of the OGC services: ``/ogc/wms`` and the SERVICE-dispatched ``/ogc``.

Everything that goes wrong becomes an OGC exception (XML, INIMAGE or BLANK as asked), never a
JSON body or a 500 page.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request, Response

from server.access.middleware import service_url
from server.api.tiles import PipelineDep, image_response
from server.errors import EotilerError, InvalidParameter, OperationNotSupported
from server.ogc import wcs, wcs_201, wcs_documents, wfs, wms, wmts
from server.ogc.capabilities import build_capabilities
from server.ogc.crs import DEFAULT_CRS, normalise_code
from server.ogc.exceptions import (
    ows_exception_xml,
    wcs_exception_xml,
)
from server.ogc.kvp import KVP
from server.pipeline import Pipeline

log = logging.getLogger(__name__)
router = APIRouter(tags=["ogc"])


def allowed_crs(pipeline: Pipeline) -> tuple[str, ...]:
    """Advertised CRS codes: the defaults plus ``EOTILER_EXTRA_CRS``."""
    extra = [normalise_code(c) for c in pipeline.settings.extra_crs]
    return tuple(dict.fromkeys([*DEFAULT_CRS, *extra]))


def _service_url(request: Request) -> str:
    return service_url(request)  # under the caller's instance id, when it has one


def _check_service(kvp: KVP, endpoint: str) -> None:
    """A SERVICE other than the endpoint's own is refused, never served as this service.

    InvalidParameterValue with locator SERVICE, as OWS Common defines it for a parameter value
    the server does not offer (OperationNotSupported names an operation, REQUEST).
    """
    asked = (kvp.get("SERVICE") or "").strip()
    if asked and asked.upper() != endpoint:
        message = f"SERVICE '{asked[:20]}' is not offered here: this endpoint is {endpoint}"
        raise InvalidParameter(message, parameter="SERVICE")


def handle_wms(kvp: KVP, request: Request, pipeline: Pipeline, version: str) -> Response:
    """Dispatch a WMS request by REQUEST (``version``: negotiated once, by ``wms.parse_version``)."""
    _check_service(kvp, "WMS")
    operation = (kvp.get("REQUEST") or "").strip().lower()
    if operation in ("getcapabilities", "capabilities"):
        body = build_capabilities(
            pipeline.registry, version, _service_url(request), allowed_crs(pipeline), pipeline.settings.max_image_size
        )
        media = "text/xml" if version == "1.3.0" else "application/vnd.ogc.wms_xml"
        return Response(body, media_type=media)
    if operation in ("getmap", "map"):
        return wms.get_map(wms.parse_map_request(kvp, pipeline, allowed_crs(pipeline), version), pipeline)
    if operation == "getfeatureinfo":
        return wms.get_feature_info(kvp, pipeline, allowed_crs(pipeline), version)
    if operation == "getlegendgraphic":
        return wms.get_legend_graphic(kvp, pipeline)
    if not operation:
        kvp.require("REQUEST")
    raise OperationNotSupported(f"REQUEST '{operation[:40]}' is not supported by WMS", parameter="REQUEST")


def handle_wmts(kvp: KVP, request: Request, pipeline: Pipeline) -> Response:
    """Dispatch a WMTS KVP request by REQUEST."""
    _check_service(kvp, "WMTS")
    operation = (kvp.get("REQUEST") or "").strip().lower()
    if operation == "getcapabilities":
        wmts.check_accept_versions(kvp)
        url = str(request.url_for("wmts_endpoint"))
        body = wmts.build_capabilities(pipeline.registry, url, str(request.url_for("wms_endpoint")))
        return Response(body, media_type="application/xml")
    if operation == "gettile":
        return wmts.get_tile_kvp(kvp, pipeline)
    if operation == "getfeatureinfo":
        return wmts.get_feature_info_kvp(kvp, pipeline)
    if not operation:
        kvp.require("REQUEST")
    raise OperationNotSupported(f"REQUEST '{operation[:40]}' is not supported by WMTS", parameter="REQUEST")


def wcs_version(kvp: KVP) -> str:
    """VERSION or ACCEPTVERSIONS -> ``2.0.1`` (default, also for 2.0.0) or ``1.0.0`` (any 1.x)."""
    text = kvp.get("VERSION") or kvp.get("ACCEPTVERSIONS") or "2.0.1"
    for candidate in text.split(","):
        candidate = candidate.strip()
        if candidate.startswith("2."):
            return "2.0.1"
        if candidate.startswith("1."):
            return "1.0.0"
    error = InvalidParameter("VERSION must be 2.0.1 or 1.0.0", parameter="VERSION")
    error.ogc_code = "VersionNegotiationFailed"
    raise error


def handle_wcs(kvp: KVP, request: Request, pipeline: Pipeline, version: str) -> Response:
    """Dispatch a WCS request by REQUEST."""
    _check_service(kvp, "WCS")
    operation = (kvp.get("REQUEST") or "").strip().lower()
    url = _service_url(request)
    registry = pipeline.registry
    if operation == "getcapabilities":
        if version == "1.0.0":
            return Response(wcs_documents.capabilities_100(registry, url), media_type="application/xml")
        body = wcs_documents.capabilities_201(registry, url, allowed_crs(pipeline))
        return Response(body, media_type="application/xml")
    if operation == "describecoverage":
        parameter = "COVERAGE" if version == "1.0.0" else "COVERAGEID"
        text = kvp.get(parameter) if version == "1.0.0" else kvp.require(parameter)
        names = [n for n in (text or ",".join(registry.layers)).split(",") if n.strip()]
        ids = tuple(wcs.coverage_layer(pipeline, n, parameter).id for n in names)
        if version == "1.0.0":
            body = wcs_documents.describe_coverage_100(registry, ids, allowed_crs(pipeline))
        else:
            body = wcs_documents.describe_coverage_201(registry, ids)
        return Response(body, media_type="application/xml")
    if operation == "getcoverage":
        parse = wcs.parse_get_coverage_100 if version == "1.0.0" else wcs_201.parse_get_coverage_201
        render = parse(kvp, pipeline, allowed_crs(pipeline))
        response = image_response(pipeline.render(render))
        response.headers["Content-Disposition"] = f'inline; filename="{render.layer}.tif"'
        return response
    if not operation:
        kvp.require("REQUEST")
    raise OperationNotSupported(f"REQUEST '{operation[:40]}' is not supported by WCS", parameter="REQUEST")


def _retry_after(response: Response, error: EotilerError) -> Response:
    """An overloaded server (or a resting upstream) says when to come back, in OGC reports too."""
    if error.retry_after is not None:
        response.headers["Retry-After"] = str(error.retry_after)
    return response


def _ogc_error(error: EotilerError, name: str, kvp: KVP | None, version: str) -> Response:
    if name == "WMTS":
        return ows_exception_xml(error)
    if name == "WFS":
        return ows_exception_xml(error, "2.0.0")
    if name == "WCS":
        return wcs_exception_xml(error, version)
    return wms.exception_response(error, kvp, version)


def _run(request: Request, pipeline: Pipeline, service: str | None) -> Response:
    kvp: KVP | None = None
    version = "2.0.1" if service == "WCS" else "1.3.0"
    name = (service or "WMS").upper()
    try:
        kvp = KVP(request.query_params.multi_items())
        name = (service or kvp.get("SERVICE") or "WMS").strip().upper()
        if name == "WCS":
            version = wcs_version(kvp)
            return handle_wcs(kvp, request, pipeline, version)
        if name == "WFS":
            _check_service(kvp, "WFS")
            return wfs.handle_wfs(kvp, pipeline, allowed_crs(pipeline), _service_url(request))
        version = wms.parse_version(kvp)
        if name == "WMTS":
            return handle_wmts(kvp, request, pipeline)
        if name != "WMS":
            asked, name = name, "WMS"
            message = f"SERVICE '{asked[:20]}' is not offered here (WMS, WMTS, WCS, WFS)"
            raise InvalidParameter(message, parameter="SERVICE")
        return handle_wms(kvp, request, pipeline, version)
    except EotilerError as error:
        return _retry_after(_ogc_error(error, name, kvp, version), error)
    except Exception:  # noqa: BLE001 - an OGC endpoint answers with an OGC report, never a 500 page
        log.exception("unhandled error on %s", request.url.path)
        return _ogc_error(EotilerError("internal error while processing the request"), name, None, version)


@router.get("/ogc/wms", summary="WMS 1.1.1 / 1.3.0 (KVP)", response_class=Response)
def wms_endpoint(request: Request, pipeline: PipelineDep) -> Response:
    """WMS: GetCapabilities, GetMap, GetFeatureInfo, GetLegendGraphic."""
    return _run(request, pipeline, "WMS")


@router.get("/ogc", summary="OGC services dispatched by SERVICE", response_class=Response)
def ogc_endpoint(request: Request, pipeline: PipelineDep) -> Response:
    """Any OGC service by its SERVICE parameter (WMS when absent, WMTS, WCS, WFS)."""
    return _run(request, pipeline, None)


@router.get("/ogc/wcs", summary="WCS 2.0.1 / 1.0.0 (KVP)", response_class=Response)
def wcs_endpoint(request: Request, pipeline: PipelineDep) -> Response:
    """WCS: GetCapabilities, DescribeCoverage, GetCoverage (GeoTIFF)."""
    return _run(request, pipeline, "WCS")


@router.get("/ogc/wfs", summary="WFS 2.0.0 (KVP): scene footprints", response_class=Response)
def wfs_endpoint(request: Request, pipeline: PipelineDep) -> Response:
    """WFS: GetCapabilities, DescribeFeatureType, GetFeature."""
    return _run(request, pipeline, "WFS")


@router.get("/ogc/wfs/{instance_id}", summary="WFS 2.0.0 under a Sentinel Hub instance id", response_class=Response)
def wfs_instance_endpoint(instance_id: str, request: Request, pipeline: PipelineDep) -> Response:
    """sentinelhub-py's form: ``/ogc/wfs/<instance id>`` (any id while access control is off)."""
    return _run(request, pipeline, "WFS")


@router.get("/ogc/wmts", summary="WMTS 1.0.0 (KVP)", response_class=Response)
def wmts_endpoint(request: Request, pipeline: PipelineDep) -> Response:
    """WMTS: GetCapabilities, GetTile, GetFeatureInfo."""
    return _run(request, pipeline, "WMTS")


@router.get(
    "/ogc/wmts/{layer}/{style}/{time}/{tms}/{matrix}/{row}/{tile}",
    summary="WMTS GetTile (RESTful)",
    response_class=Response,
)
def wmts_rest_tile(
    layer: str,
    style: str,
    time: str,
    tms: str,
    matrix: str,
    row: str,
    tile: str,
    request: Request,
    pipeline: PipelineDep,
) -> Response:
    """The ResourceURL template of the capabilities: ``.../{TileRow}/{TileCol}.{ext}``."""
    try:
        col, _, ext = tile.partition(".")
        fmt = wms.parse_format(ext or "png", "FORMAT")
        query = {k.upper(): v for k, v in request.query_params.items()}
        return wmts.get_tile(
            pipeline,
            layer,
            style,
            tms,
            matrix,
            row,
            col,
            fmt,
            time,
            query.get("MAXCC"),
            query.get("PRIORITY"),
            query.get("EVALSCRIPT"),
        )
    except EotilerError as error:
        return _retry_after(ows_exception_xml(error), error)
    except Exception:  # noqa: BLE001
        log.exception("unhandled error on %s", request.url.path)
        return ows_exception_xml(EotilerError("internal error while processing the request"))
