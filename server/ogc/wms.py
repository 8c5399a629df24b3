"""WMS 1.1.1 and 1.3.0: GetMap, GetFeatureInfo and GetLegendGraphic.

Parsing turns KVP into a typed ``WmsMapRequest`` (version quirks live here: SRS vs CRS, the
1.3.0 lat/lon BBOX order, I/J vs X/Y); serving only calls the pipeline. Several LAYERS are
rendered one by one and composited bottom-up by the pipeline (``CompositeRequest``).
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass

from fastapi import Response

from server.api.params import RenderOptions, parse_format, parse_int, parse_size
from server.api.tiles import image_response
from server.errors import (
    EotilerError,
    InvalidFormat,
    InvalidParameter,
    InvalidPoint,
    LayerNotDefined,
    StyleNotDefined,
)
from server.evalscript.contract import SampleType
from server.models import (
    Grid,
    ImageFormat,
    Priority,
    RenderRequest,
    TimeRange,
    request_grid,
)
from server.ogc.crs import is_northing_first, parse_bbox, parse_crs
from server.ogc.exceptions import blank_exception, inimage_exception, wms_exception_xml
from server.ogc.kvp import KVP
from server.pipeline import Pipeline
from server.render.composite import CompositeRequest
from server.render.legend import render_legend

VERSIONS = ("1.1.1", "1.3.0")
INFO_FORMATS = ("application/json", "text/plain", "text/html", "application/vnd.ogc.gml")


@dataclass(frozen=True, slots=True)
class WmsMapRequest:
    """A parsed GetMap (also the map part of GetFeatureInfo)."""

    version: str
    layers: tuple[str, ...]
    crs_code: str
    grid: Grid
    format: ImageFormat
    transparent: bool
    bgcolor: tuple[int, int, int]
    time: TimeRange | None
    maxcc: float | None
    priority: Priority | None
    exceptions: str  # XML | INIMAGE | BLANK
    evalscript: str | None = None  # base64 EVALSCRIPT as sent

    def render_request(self, name: str, pipeline: Pipeline, fmt: ImageFormat | None = None) -> RenderRequest:
        """The pipeline request for one of the LAYERS (EVALSCRIPT compiled for that layer)."""
        script = pipeline.registry.get(name).request_script(self.evalscript)
        return RenderRequest(name, self.grid, fmt or self.format, self.time, self.maxcc, self.priority, script=script)

    def image_request(self, pipeline: Pipeline) -> RenderRequest | CompositeRequest:
        """What the pipeline draws: one layer as it is when transparent (or GeoTIFF data), else
        the LAYERS composited bottom-up on BGCOLOR (or on nothing when TRANSPARENT)."""
        parts = tuple(self.render_request(name, pipeline) for name in self.layers)
        if len(parts) == 1 and (self.transparent or self.format is ImageFormat.GTIFF):
            return parts[0]
        return CompositeRequest(parts, self.transparent, self.bgcolor)


def _version_key(text: str) -> tuple[int, ...] | None:
    """``1.3`` -> (1, 3, 0); ``None`` for anything that is not a dotted number."""
    parts = text.split(".")
    if not all(p.isascii() and p.isdigit() and len(p) < 4 for p in parts):
        return None
    return tuple(([int(p) for p in parts] + [0, 0])[:3])


def parse_version(kvp: KVP) -> str:
    """VERSION (or WMTVER) negotiated as WMS 1.3.0 section 6.2.4 has it: 1.3.0 when absent.

    The highest supported version not above the one asked for, or the lowest when every
    supported one is above it (``1.0.0`` and ``1.2.0`` get 1.1.1, ``9.9`` gets 1.3.0). Used for
    GetCapabilities and for the dialect of exception reports; the other operations also pass
    ``require_version``.
    """
    text = (kvp.get("VERSION") or kvp.get("WMTVER") or "1.3.0").strip()
    asked = _version_key(text)
    if asked is None:
        return "1.3.0"
    return "1.3.0" if asked >= (1, 3, 0) else "1.1.1"


def require_version(kvp: KVP, negotiated: str | None = None) -> str:
    """The version of a GetMap or GetFeatureInfo: VERSION must name one this server implements.

    Negotiation is for GetCapabilities only; a map request in another version would be read with
    the wrong rules (axis order, SRS vs CRS, X/Y vs I/J). An absent VERSION means 1.3.0, as some
    clients omit it on GetMap. ``negotiated`` is ``parse_version``'s answer when the caller has it.
    """
    text = (kvp.get("VERSION") or "").strip()
    if text and text not in VERSIONS:
        raise InvalidParameter(
            f"VERSION '{text[:20]}' is not supported: this server implements WMS {' and '.join(VERSIONS)}",
            parameter="VERSION",
        )
    return negotiated or parse_version(kvp)


def parse_exceptions(kvp: KVP) -> str:
    """EXCEPTIONS as XML, INIMAGE or BLANK (1.1.1 MIME types accepted)."""
    value = (kvp.get("EXCEPTIONS") or "XML").strip().lower()
    if "inimage" in value:
        return "INIMAGE"
    if "blank" in value:
        return "BLANK"
    if value in ("xml", "application/vnd.ogc.se_xml", "text/xml", "application/xml"):
        return "XML"
    raise InvalidParameter("EXCEPTIONS must be XML, INIMAGE or BLANK", parameter="EXCEPTIONS")


def _boolean(kvp: KVP, name: str) -> bool:
    """A WMS boolean: TRUE or FALSE (any case); absent means FALSE."""
    value = (kvp.get(name) or "FALSE").strip().upper()
    if value not in ("TRUE", "FALSE"):
        raise InvalidParameter(f"{name} must be TRUE or FALSE", parameter=name)
    return value == "TRUE"


def parse_bgcolor(kvp: KVP) -> tuple[int, int, int]:
    """BGCOLOR as 0xRRGGBB (default white); also used for BLANK exception images."""
    text = (kvp.get("BGCOLOR") or "0xFFFFFF").strip()
    digits = text[2:] if text.lower().startswith("0x") else text.lstrip("#")
    if len(digits) != 6 or any(c not in "0123456789abcdefABCDEF" for c in digits):
        raise InvalidParameter("BGCOLOR must be 0xRRGGBB", parameter="BGCOLOR")
    return int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16)


def _check_styles(kvp: KVP, layers: tuple[str, ...]) -> None:
    styles = kvp.get("STYLES") or ""
    names = [s.strip() for s in styles.split(",")] if styles.strip() else []
    if names and len(names) != len(layers):
        raise StyleNotDefined("STYLES must list one style per layer (or be empty)", parameter="STYLES")
    for name in names:
        if name not in ("", "default"):
            raise StyleNotDefined(f"style '{name[:40]}' is not defined (use 'default')", parameter="STYLES")


def parse_map_request(
    kvp: KVP, pipeline: Pipeline, allowed_crs: tuple[str, ...], version: str | None = None
) -> WmsMapRequest:
    """Parse GetMap parameters; every problem raises an error that names the parameter.

    ``version`` is the one ``parse_version`` negotiated for the request (parsed again if absent).
    """
    version = require_version(kvp, version)
    names = tuple(n.strip() for n in kvp.require("LAYERS").split(",") if n.strip())
    if not names:
        raise InvalidParameter("LAYERS is empty", parameter="LAYERS")
    for name in names:
        pipeline.registry.get(name, parameter="LAYERS")
    _check_styles(kvp, names)
    crs_param = "SRS" if version == "1.1.1" else "CRS"
    crs_text = kvp.get(crs_param) or kvp.get("SRS" if crs_param == "CRS" else "CRS")
    if not crs_text:
        kvp.require(crs_param)
    code, crs = parse_crs(str(crs_text), allowed_crs, crs_param, version)
    a, b, c, d = parse_bbox(kvp.require("BBOX"))
    bbox = (b, a, d, c) if version == "1.3.0" and is_northing_first(code) else (a, b, c, d)
    limit = pipeline.settings.max_image_size
    width = parse_size(kvp.require("WIDTH"), "WIDTH", limit)
    height = parse_size(kvp.require("HEIGHT"), "HEIGHT", limit)
    fmt = parse_format(kvp.require("FORMAT"))
    options = RenderOptions.from_kvp(kvp.get)
    return WmsMapRequest(
        version=version,
        layers=names,
        crs_code=code,
        grid=request_grid(bbox, crs, width, height),
        format=fmt,
        transparent=_boolean(kvp, "TRANSPARENT"),
        bgcolor=parse_bgcolor(kvp),
        time=options.time,
        maxcc=options.maxcc,
        priority=options.priority,
        exceptions=parse_exceptions(kvp),
        evalscript=options.evalscript,
    )


def get_map(req: WmsMapRequest, pipeline: Pipeline) -> Response:
    """Render the map through the pipeline's one entry point."""
    return image_response(pipeline.render(req.image_request(pipeline)))


def exception_response(error: EotilerError, kvp: KVP | None, version: str) -> Response:
    """The error as the request's EXCEPTIONS asks: an XML report, or INIMAGE / BLANK images.

    Read leniently from the raw KVP: the error may be that the strict parse of these very
    parameters failed (a bad EXCEPTIONS is itself reported, as XML; a bad size or colour falls
    back to 256 px and white).
    """
    try:
        mode = parse_exceptions(kvp) if kvp is not None else "XML"
    except InvalidParameter:
        mode = "XML"
    if mode == "XML" or kvp is None:
        return wms_exception_xml(error, version)
    width, height = ((kvp.get(name) or "256").strip() for name in ("WIDTH", "HEIGHT"))
    size = [int(v) if v.isdigit() else 256 for v in (width, height)]
    fmt = (kvp.get("FORMAT") or "image/png").split(";")[0].strip().lower()
    if mode == "INIMAGE":
        return inimage_exception(error, size[0], size[1], fmt)
    transparent = (kvp.get("TRANSPARENT") or "").upper() == "TRUE"
    try:
        background = None if transparent else parse_bgcolor(kvp)
    except EotilerError:
        background = (255, 255, 255)
    return blank_exception(size[0], size[1], fmt, background)


def _pixel(kvp: KVP, version: str, req: WmsMapRequest) -> tuple[int, int]:
    names = ("X", "Y") if version == "1.1.1" else ("I", "J")
    values = []
    for name, limit in zip(names, (req.grid.width, req.grid.height), strict=True):
        text = (kvp.get(name) or kvp.get({"X": "I", "Y": "J", "I": "X", "J": "Y"}[name]) or "").strip()
        if not text:
            kvp.require(name)
        if not (text.lstrip("-").isascii() and text.lstrip("-").isdigit() and len(text) <= 10):
            raise InvalidPoint(f"{name} must be an integer pixel index", parameter=name)
        if not 0 <= int(text) < limit:
            raise InvalidPoint(f"{name} is outside the map", parameter=name)
        values.append(int(text))
    return values[0], values[1]


def get_feature_info(
    kvp: KVP, pipeline: Pipeline, allowed_crs: tuple[str, ...], version: str | None = None
) -> Response:
    """Evalscript output and raw band values at one pixel, with the scene that supplied it."""
    req = parse_map_request(kvp, pipeline, allowed_crs, version)
    # Mandatory in both versions: which of the map's layers to query is the client's choice.
    query = tuple(n.strip() for n in kvp.require("QUERY_LAYERS").split(",") if n.strip())
    if not query:
        raise InvalidParameter("QUERY_LAYERS names no layer", parameter="QUERY_LAYERS")
    outside = [name for name in query if name not in req.layers]
    if outside:
        raise LayerNotDefined(
            f"QUERY_LAYERS names {outside[0][:64]!r}, which is not in LAYERS", parameter="QUERY_LAYERS"
        )
    for name in query:
        pipeline.registry.get(name, parameter="QUERY_LAYERS")
    info_format = parse_info_format(kvp)
    col, row = _pixel(kvp, req.version, req)
    cell = pixel_cell(req.grid, col, row)
    return feature_info(pipeline, query, cell, req.time, req.maxcc, req.priority, info_format, req.evalscript)


def parse_info_format(kvp: KVP, default: str = "text/plain", parameter: str = "INFO_FORMAT") -> str:
    """INFO_FORMAT (WMS; ``INFOFORMAT`` in WMTS), one of ``INFO_FORMATS``."""
    info_format = (kvp.get(parameter) or default).split(";")[0].strip().lower()
    if info_format not in INFO_FORMATS:
        raise InvalidFormat(f"{parameter} must be one of {', '.join(INFO_FORMATS)}", parameter=parameter)
    return info_format


def pixel_cell(grid: Grid, col: int, row: int) -> Grid:
    """The 1x1 grid covering pixel (col, row) of ``grid``."""
    x0, y0, x1, y1 = grid.bbox
    dx, dy = (x1 - x0) / grid.width, (y1 - y0) / grid.height
    left, top = x0 + col * dx, y1 - row * dy
    return Grid((left, top - dy, left + dx, top), grid.crs, 1, 1)


def feature_info(
    pipeline: Pipeline,
    layers: tuple[str, ...],
    cell: Grid,
    time: TimeRange | None,
    maxcc: float | None,
    priority: Priority | None,
    info_format: str,
    evalscript: str | None = None,
) -> Response:
    """Query ``layers`` at ``cell`` and format the answer (shared by WMS and WMTS).

    ``evalscript`` is the request's base64 EVALSCRIPT: the value reported is what that script
    computes, as in the map the client shows, not the layer's own script.
    """
    features = []
    for name in layers:
        script = pipeline.registry.get(name).request_script(evalscript)
        req = RenderRequest(name, cell, ImageFormat.GTIFF, time, maxcc, priority, script=script)
        features.append(_query_layer(pipeline, req))
    return _format_info(features, info_format, cell)


def _query_layer(pipeline: Pipeline, req: RenderRequest) -> dict[str, object]:
    rendered = pipeline.render_data(req)
    script = pipeline.script(req)
    index = int(rendered.mosaic.scene_index[0, 0])
    has_data = index >= 0
    output = script.output
    values = rendered.values[:, 0, 0]
    if output.sample_type is not SampleType.FLOAT32:
        values = rendered.data.data[:, 0, 0]
    scene = rendered.mosaic.scenes[index] if has_data else None
    return {
        "layer": req.layer,
        "has_data": has_data,
        "value": [None if not has_data else float(v) for v in values],
        "bands": {b: (float(a[0, 0]) if has_data else None) for b, a in rendered.mosaic.bands.items()},
        "units": script.inputs.units,
        "scene": None
        if scene is None
        else {
            "id": scene.id,
            "datetime": scene.datetime.isoformat().replace("+00:00", "Z"),
            "cloud_cover": scene.cloud_cover,
        },
    }


def _format_info(features: list[dict[str, object]], info_format: str, cell: Grid) -> Response:
    x = (cell.bbox[0] + cell.bbox[2]) / 2
    y = (cell.bbox[1] + cell.bbox[3]) / 2
    if info_format == "application/json":
        body = {
            "type": "FeatureCollection",
            "features": [{"type": "Feature", "id": f["layer"], "geometry": None, "properties": f} for f in features],
            "crs": cell.crs.to_string(),
            "point": [x, y],
        }
        return Response(json.dumps(body), media_type="application/json")
    if info_format == "text/html":
        rows = "".join(
            f"<tr><td>{html.escape(str(f['layer']))}</td><td>{html.escape(json.dumps(f['value']))}</td>"
            f"<td>{html.escape(json.dumps(f['bands']))}</td><td>{html.escape(json.dumps(f['scene']))}</td></tr>"
            for f in features
        )
        page = (
            "<!doctype html><html><body><table><tr><th>layer</th><th>value</th><th>bands</th><th>scene</th>"
            f"</tr>{rows}</table></body></html>"
        )
        return Response(page, media_type="text/html")
    if info_format == "application/vnd.ogc.gml":
        return Response(_gml(features), media_type="application/vnd.ogc.gml")
    lines = []
    for f in features:
        lines.append(f"Layer '{f['layer']}'")
        lines.append(f"  value = {json.dumps(f['value'])}")
        for band, value in dict(f["bands"]).items():  # type: ignore[call-overload]
            lines.append(f"  {band} = {value}")
        lines.append(f"  scene = {json.dumps(f['scene'])}")
    return Response("\n".join(lines) + "\n", media_type="text/plain")


def _gml(features: list[dict[str, object]]) -> bytes:
    from lxml import etree

    root = etree.Element("msGMLOutput")
    for f in features:
        layer = etree.SubElement(root, f"{f['layer']}_layer")
        feature = etree.SubElement(layer, f"{f['layer']}_feature")
        for i, value in enumerate(f["value"]):  # type: ignore[arg-type]
            etree.SubElement(feature, f"value_{i}").text = "" if value is None else str(value)
        for band, value in dict(f["bands"]).items():  # type: ignore[call-overload]
            etree.SubElement(feature, band).text = "" if value is None else str(value)
        scene = f["scene"]
        if isinstance(scene, dict):
            etree.SubElement(feature, "scene_id").text = str(scene["id"])
            etree.SubElement(feature, "scene_datetime").text = str(scene["datetime"])
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def get_legend_graphic(kvp: KVP, pipeline: Pipeline) -> Response:
    """GetLegendGraphic: the layer's legend as PNG."""
    name = kvp.get("LAYER") or kvp.require("LAYERS")
    layer = pipeline.registry.get(name, parameter="LAYER")
    style = (kvp.get("STYLE") or "").strip()
    if style not in ("", "default"):
        raise StyleNotDefined(f"style '{style[:40]}' is not defined", parameter="STYLE")
    fmt = (kvp.get("FORMAT") or "image/png").split(";")[0].strip().lower()
    if fmt != "image/png":
        raise InvalidFormat("GetLegendGraphic returns image/png only", parameter="FORMAT")
    for size in ("WIDTH", "HEIGHT"):  # the legend has its own size, but a given value must make sense
        if kvp.get(size):
            parse_int(kvp.get(size, "").strip(), size, 1, 2048)
    legend = layer.legend()
    if legend is None:
        raise InvalidParameter(f"layer '{name}' has no legend", parameter="LAYER")
    return Response(render_legend(legend), media_type="image/png")
