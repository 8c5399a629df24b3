"""The parts of a Process or Statistical API body both share: bounds, input data, size, evalscript.

Why one module: the two APIs describe *what to render* identically (``input`` and the grid) and
differ only in what they do with the pixels. Each part is read defensively (a body is untrusted
JSON) and turned into the project's own types: a ``Grid`` checked by ``request_grid``, a layer
to render through, TIME/MAXCC/PRIORITY values, and a compiled request script.

Sentinel Hub renders *collections*; eotiler renders *layers*. A request for collection ``C``
renders through the first configured layer of ``C`` that accepts request scripts (its catalogue,
readers and resampling; its own script, default time, cloud cover and priority are replaced by
the request's).
"""

from __future__ import annotations

import base64
import calendar
import json
import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from rasterio.crs import CRS
from rasterio.errors import CRSError

from server.catalog.layers import Layer
from server.errors import EvalscriptError, InvalidParameter, MissingParameter
from server.evalscript.contract import Evalscript
from server.models import BBox, Grid, Priority, TimeRange, check_bbox, parse_time, request_grid
from server.ogc.crs import normalise_code, to_crs
from server.pipeline import Pipeline
from server.render import clip
from server.shapi.errors import ShApiError

CRS84_URI = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
# Sentinel Hub's legacy collection names (sentinelhub-py's older ``api_id`` values).
ALIASES = {
    "S2L2A": "sentinel-2-l2a",
    "S2L1C": "sentinel-2-l1c",
    "S1GRD": "sentinel-1-grd",
    "S3OLCI": "sentinel-3-olci",
    "S3SLSTR": "sentinel-3-slstr",
    "S5PL2": "sentinel-5p-l2",
    "DEM": "dem",
}
RESAMPLING = {"NEAREST": "nearest", "BILINEAR": "bilinear", "BICUBIC": "cubic"}
MAX_JSON_DEPTH = 32


@dataclass(frozen=True, slots=True)
class Bounds:
    """``input.bounds``: a box in ``crs`` (x/y order) and, optionally, a GeoJSON geometry in ``crs``."""

    bbox: BBox
    crs: CRS
    geometry: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class InputData:
    """One ``input.data[]`` entry, resolved to the layer that renders it."""

    layer: Layer
    collection: str
    time: TimeRange | None
    maxcc: float
    priority: Priority
    upsampling: str | None
    downsampling: str | None


def read_body(raw: bytes) -> dict[str, Any]:
    """A JSON object from a request body, or a 400."""
    try:
        body = json.loads(raw) if raw else None
    except (ValueError, RecursionError):
        raise InvalidParameter("the request body is not valid JSON", parameter="body") from None
    if not isinstance(body, dict):
        raise InvalidParameter("the request body must be a JSON object", parameter="body")
    return body


def member(parent: Any, key: str, kind: type | tuple[type, ...], where: str, required: bool = False) -> Any:
    """``parent[key]`` checked to be ``kind`` (``None`` when absent and optional)."""
    name = f"{where}.{key}" if where else key
    value = parent.get(key) if isinstance(parent, dict) else None
    if value is None:
        if required:
            raise MissingParameter(f"{name} is required", parameter=name)
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _kinds(kind)):
        raise InvalidParameter(f"{name} must be {_describe(kind)}", parameter=name)
    return value


def _kinds(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _describe(kind: type | tuple[type, ...]) -> str:
    names = {dict: "an object", list: "a list", str: "a string", int: "a number", float: "a number", bool: "true/false"}
    return " or ".join(dict.fromkeys(names.get(k, k.__name__) for k in _kinds(kind)))


def number(parent: Any, key: str, where: str, low: float, high: float, required: bool = False) -> float | None:
    """A finite number in ``[low, high]`` (``None`` when absent and optional)."""
    value = member(parent, key, (int, float), where, required)
    if value is None:
        return None
    name = f"{where}.{key}" if where else key
    if not math.isfinite(value) or not low <= value <= high:
        raise InvalidParameter(f"{name} must be a number from {low:g} to {high:g}", parameter=name)
    return float(value)


def parse_crs(value: Any, parameter: str) -> CRS:
    """An OGC CRS URI (``http://www.opengis.net/def/crs/EPSG/0/32633``, ``.../OGC/1.3/CRS84``)."""
    if value is None:
        return to_crs("CRS:84")
    if not isinstance(value, str) or len(value) > 200:
        raise InvalidParameter(f"{parameter} must be an OGC CRS URI", parameter=parameter)
    code = normalise_code(value)
    if code != "CRS:84" and not (code.startswith("EPSG:") and code[5:].isdigit()):
        raise InvalidParameter(f"{parameter} '{value[:80]}' is not an EPSG or CRS84 URI", parameter=parameter)
    try:
        return to_crs(code)
    except CRSError:
        raise InvalidParameter(f"{parameter} '{value[:80]}' is not a known CRS", parameter=parameter) from None


def _positions(coordinates: Any, depth: int, parameter: str, budget: list[int]) -> list[Any]:
    """Check nested coordinate lists of the given depth (1: a ring) hold finite x/y numbers."""
    if not isinstance(coordinates, list) or not coordinates:
        raise InvalidParameter(f"{parameter}: coordinates must be non-empty lists", parameter=parameter)
    if depth == 0:
        budget[0] -= 1
        if budget[0] < 0:
            raise InvalidParameter(f"{parameter}: more than 10000 positions", parameter=parameter)
        if len(coordinates) < 2 or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in coordinates[:2]
        ):
            raise InvalidParameter(f"{parameter}: a position must be [x, y] numbers", parameter=parameter)
        return [float(coordinates[0]), float(coordinates[1])]
    return [_positions(c, depth - 1, parameter, budget) for c in coordinates]


def parse_geometry(value: Any, parameter: str) -> dict[str, Any]:
    """A GeoJSON Polygon or MultiPolygon (any CRS: only checked for shape and numbers)."""
    if not isinstance(value, dict):
        raise InvalidParameter(f"{parameter} must be a GeoJSON geometry", parameter=parameter)
    depth = {"Polygon": 2, "MultiPolygon": 3}.get(value.get("type"))  # type: ignore[arg-type]
    if depth is None:
        raise InvalidParameter(f"{parameter} must be a GeoJSON Polygon or MultiPolygon", parameter=parameter)
    coordinates = _positions(value.get("coordinates"), depth, parameter, [10_000])
    return {"type": value["type"], "coordinates": coordinates}


def _geometry_bounds(geometry: dict[str, Any]) -> BBox:
    coordinates = geometry["coordinates"]
    rings = coordinates if geometry["type"] == "Polygon" else [ring for polygon in coordinates for ring in polygon]
    xs = [p[0] for ring in rings for p in ring]
    ys = [p[1] for ring in rings for p in ring]
    return (min(xs), min(ys), max(xs), max(ys))


def parse_bounds(request_input: dict[str, Any]) -> Bounds:
    """``input.bounds``: ``bbox`` and/or ``geometry`` with ``properties.crs`` (default CRS84)."""
    bounds = member(request_input, "bounds", dict, "input", required=True)
    properties = member(bounds, "properties", dict, "input.bounds") or {}
    crs = parse_crs(properties.get("crs"), "input.bounds.properties.crs")
    box = member(bounds, "bbox", list, "input.bounds")
    geometry = bounds.get("geometry")
    if box is None and geometry is None:
        raise MissingParameter("input.bounds needs bbox or geometry", parameter="input.bounds")
    shape = parse_geometry(geometry, "input.bounds.geometry") if geometry is not None else None
    if box is not None:
        if len(box) != 4 or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in box):
            raise InvalidParameter("input.bounds.bbox must be [minx, miny, maxx, maxy]", parameter="input.bounds.bbox")
        bbox: BBox = (float(box[0]), float(box[1]), float(box[2]), float(box[3]))
    else:
        assert shape is not None
        bbox = _geometry_bounds(shape)
    check_bbox(bbox, crs, "input.bounds.bbox" if box is not None else "input.bounds.geometry")
    return Bounds(bbox, crs, shape)


def _layer_for(pipeline: Pipeline, collection: str, parameter: str) -> Layer:
    """The layer a collection renders through: its first layer that accepts request scripts."""
    if collection not in pipeline.registry.catalogues:
        raise ShApiError(400, f"{parameter}: unknown collection '{collection[:64]}'", parameter=parameter)
    layers = [layer for layer in pipeline.registry.layers.values() if layer.collection_id == collection]
    for layer in layers:
        if layer.config.request_evalscript and layer.request_evalscripts:
            return layer
    raise ShApiError(
        403, f"{parameter}: collection '{collection}' has no layer accepting evalscripts", parameter=parameter
    )


def _time_range(data_filter: dict[str, Any], where: str) -> TimeRange | None:
    window = member(data_filter, "timeRange", dict, where)
    if window is None:
        return None
    name = f"{where}.timeRange"
    start = member(window, "from", str, name)
    end = member(window, "to", str, name)
    if start is None and end is None:
        return None
    return parse_time(f"{start or '..'}/{end or '..'}", name)


def parse_input_data(pipeline: Pipeline, request_input: dict[str, Any]) -> InputData:
    """``input.data``: exactly one collection (data fusion is not supported)."""
    data = member(request_input, "data", list, "input", required=True)
    if len(data) != 1:
        raise InvalidParameter("input.data must list exactly one collection", parameter="input.data")
    entry = data[0]
    if not isinstance(entry, dict):
        raise InvalidParameter("input.data[0] must be an object", parameter="input.data")
    kind = member(entry, "type", str, "input.data[0]", required=True)
    collection = ALIASES.get(kind, kind)
    layer = _layer_for(pipeline, collection, "input.data[0].type")
    data_filter = member(entry, "dataFilter", dict, "input.data[0]") or {}
    where = "input.data[0].dataFilter"
    maxcc = number(data_filter, "maxCloudCoverage", where, 0, 100)
    order = member(data_filter, "mosaickingOrder", str, where)
    processing = member(entry, "processing", dict, "input.data[0]") or {}
    sampling = []
    for key in ("upsampling", "downsampling"):
        value = member(processing, key, str, "input.data[0].processing")
        if value is not None and value.upper() not in RESAMPLING:
            name = f"input.data[0].processing.{key}"
            raise InvalidParameter(f"{name} must be NEAREST, BILINEAR or BICUBIC", parameter=name)
        sampling.append(RESAMPLING[value.upper()] if value is not None else None)
    return InputData(
        layer,
        collection,
        _time_range(data_filter, where),
        100.0 if maxcc is None else maxcc,
        Priority.parse(order, f"{where}.mosaickingOrder") if order is not None else Priority.MOST_RECENT,
        sampling[0],
        sampling[1],
    )


def resampling(data: InputData, grid: Grid) -> str | None:
    """``upsampling`` when the grid is finer than the layer's bands, else ``downsampling``."""
    finer = grid.ground_resolution() < data.layer.native_resolution
    return data.upsampling if finer else data.downsampling


def parse_size(spec: dict[str, Any], bounds: Bounds, where: str, limit: int) -> tuple[int, int]:
    """``width``/``height`` (one is enough: the other keeps the box's aspect) or ``resx``/``resy``
    in CRS units; either side above ``limit`` is a 400."""
    box = bounds.bbox
    span_x, span_y = box[2] - box[0], box[3] - box[1]
    width = number(spec, "width", where, 1, 1e9)
    height = number(spec, "height", where, 1, 1e9)
    resx = number(spec, "resx", where, 1e-12, 1e12)
    resy = number(spec, "resy", where, 1e-12, 1e12)
    if (width or height) and (resx or resy):
        raise InvalidParameter(f"{where}: give width/height or resx/resy, not both", parameter=f"{where}.width")
    if width is None and height is None:
        if resx is None and resy is None:
            raise MissingParameter(f"{where} needs width/height or resx/resy", parameter=f"{where}.width")
        resx = resx or resy
        resy = resy or resx
        assert resx is not None and resy is not None
        width, height = span_x / resx, span_y / resy
    elif width is None:
        assert height is not None
        width = height * span_x / span_y
    elif height is None:
        height = width * span_y / span_x
    columns, rows = max(1, round(width)), max(1, round(height))
    if columns > limit or rows > limit:
        raise InvalidParameter(
            f"{where}: the image would be {columns}x{rows} pixels; at most {limit} per side",
            parameter=f"{where}.width",
        )
    return columns, rows


def grid(bounds: Bounds, size: tuple[int, int]) -> Grid:
    """The output grid of a request (checked as every protocol's grids are)."""
    return request_grid(bounds.bbox, bounds.crs, size[0], size[1], "input.bounds.bbox")


def inside(bounds: Bounds, on: Grid) -> np.ndarray | None:
    """Pixels of ``on`` whose centre lies in the request geometry (``None``: no geometry, all of them)."""
    return None if bounds.geometry is None else clip.inside(bounds.geometry, on)


def compile_script(layer: Layer, text: Any, parameter: str) -> Evalscript:
    """Compile a request evalscript (plain text, as Sentinel Hub takes it) for ``layer``'s collection:
    JavaScript V3/V1 or the project's expression forms, through the same path as EVALSCRIPT."""
    if not isinstance(text, str) or not text.strip():
        raise MissingParameter(f"{parameter} is required (the script as text)", parameter=parameter)
    encoded = base64.b64encode(text.encode("utf-8", "replace")).decode("ascii")
    script = layer.request_script(encoded, parameter, require_default=False)
    assert script is not None
    return script


def outputs(script: Evalscript) -> tuple[str, ...]:
    """The output ids a script declares (``default`` for single-output scripts)."""
    return tuple(getattr(script, "output_ids", (script.output.id,)))


def for_output(script: Evalscript, output_id: str, parameter: str) -> Evalscript:
    """The script rendering its output ``output_id``, or a 400 naming the outputs it has."""
    declared = outputs(script)
    if output_id not in declared:
        raise EvalscriptError(
            f"{parameter}: the evalscript has no output '{output_id[:64]}' (it declares {', '.join(declared)})",
            parameter=parameter,
        )
    view = getattr(script, "for_output", None)
    return view(output_id) if view is not None else script


def period(text: Any, parameter: str) -> tuple[int, timedelta]:
    """An ISO 8601 period as (months, days/time): ``P1D``, ``P10D``, ``P2W``, ``P1M``, ``P1Y``, ``PT12H``."""
    if not isinstance(text, str):
        raise InvalidParameter(f"{parameter} must be an ISO 8601 period such as P1D", parameter=parameter)
    match = re.fullmatch(
        r"P(?:(\d{1,4})Y)?(?:(\d{1,5})M)?(?:(\d{1,5})W)?(?:(\d{1,6})D)?(?:T(?:(\d{1,6})H)?(?:(\d{1,6})M)?(?:(\d{1,8})S)?)?",
        text.strip().upper(),
    )
    if not match or not any(match.groups()):
        raise InvalidParameter(f"{parameter} must be an ISO 8601 period such as P1D", parameter=parameter)
    years, months, weeks, days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    span = timedelta(weeks=weeks, days=days, hours=hours, minutes=minutes, seconds=seconds)
    total_months = years * 12 + months
    if total_months == 0 and span < timedelta(hours=1):
        raise InvalidParameter(f"{parameter} must be at least one hour", parameter=parameter)
    return total_months, span


def add_period(start: datetime, step: tuple[int, timedelta]) -> datetime:
    """``start`` plus a period (months first, clamped to the month's last day, as ISO 8601 does)."""
    months, span = step
    if months:
        index = start.month - 1 + months
        year, month = start.year + index // 12, index % 12 + 1
        day = min(start.day, calendar.monthrange(year, month)[1])
        start = start.replace(year=year, month=month, day=day)
    return start + span
