"""WCS 1.0.0 and 2.0.1 GetCoverage: coverage domains and request parsing.

A coverage is a layer: its values are the evalscript's output bands (float32 for index layers),
written as GeoTIFF through the same pipeline as every map (``RenderRequest(coverage=True)``).
Its native grid is EPSG:4326 at the finest resolution of the bands the script reads (a layer
spans many UTM zones, so no single UTM CRS can be native); any advertised CRS can be asked for.

Version quirks live here: 1.0.0 takes CRS/BBOX (always x/y) with WIDTH/HEIGHT or RESX/RESY and
RESPONSE_CRS; 2.0.1 takes one SUBSET per axis (by axis label, in SUBSETTINGCRS), OUTPUTCRS and
SCALESIZE / SCALEFACTOR / SCALEAXES / SCALEEXTENT, RANGESUBSET and INTERPOLATION.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from rasterio.crs import CRS
from rasterio.warp import transform_bounds

from server.api.params import RenderOptions, parse_int, parse_size
from server.cache.documents import extent_cached
from server.catalog.layers import Layer
from server.errors import EotilerError, InvalidFormat, InvalidParameter, InvalidTime, MissingParameter
from server.evalscript.contract import Evalscript, OutputSpec, SampleType
from server.models import (
    Grid,
    ImageFormat,
    Priority,
    RenderRequest,
    TimeRange,
    check_bbox,
    clamp_bbox,
    parse_time,
    request_grid,
)
from server.ogc.crs import normalise_code, parse_bbox, parse_crs
from server.ogc.kvp import KVP
from server.pipeline import Pipeline

NATIVE_CRS = "EPSG:4326"
METRES_PER_DEGREE = 111_320.0  # at the equator: the native grid's degrees per metre of resolution
FORMATS = ("image/tiff",)
_FORMAT_ALIASES = ("image/tiff", "image/geotiff", "geotiff", "gtiff", "tiff", "tif", "image/tif")
# WCS 1.0.0 names, 2.0 interpolation URIs (last path segment) -> rio-tiler resampling.
INTERPOLATIONS = {
    "nearest neighbor": "nearest",
    "nearest-neighbor": "nearest",
    "nearest": "nearest",
    "bilinear": "bilinear",
    "linear": "bilinear",
    "bicubic": "cubic",
    "cubic": "cubic",
}
X_AXES = frozenset({"long", "lon", "longitude", "x", "e", "easting"})
Y_AXES = frozenset({"lat", "latitude", "y", "n", "northing"})
T_AXES = frozenset({"time", "t", "ansi", "date", "phenomenontime"})
_SUBSET = re.compile(r"^\s*(?P<axis>[A-Za-z_][\w.-]*)\s*(?:,\s*(?P<crs>[^()]+?)\s*)?\((?P<body>[^()]*)\)\s*$")


class NoSuchCoverage(EotilerError):
    """COVERAGE / COVERAGEID names no layer."""

    status = 404
    ogc_code = "NoSuchCoverage"


class InvalidAxisLabel(EotilerError):
    """A SUBSET or scaling axis that the coverage does not have."""

    status = 404
    ogc_code = "InvalidAxisLabel"


class InvalidSubsetting(EotilerError):
    """A SUBSET that is malformed, inverted, or a slice of a spatial axis."""

    status = 404
    ogc_code = "InvalidSubsetting"


@dataclass(frozen=True, slots=True)
class Domain:
    """A coverage's native grid (EPSG:4326, x/y order) and its time positions."""

    bbox: tuple[float, float, float, float]  # west, south, east, north, snapped to whole pixels
    resolution: float  # degrees per pixel, both axes
    width: int
    height: int
    times: tuple[str, ...]  # ISO dates with data
    bands: int
    sample_type: SampleType

    @property
    def band_names(self) -> tuple[str, ...]:
        """Range field names, as RANGESUBSET and DescribeCoverage use them."""
        return band_names(self.bands)

    @property
    def data_type(self) -> str:
        """GDAL / GeoTIFF data type name of the range."""
        return {SampleType.UINT16: "UInt16", SampleType.FLOAT32: "Float32"}.get(self.sample_type, "Byte")


def band_names(count: int) -> tuple[str, ...]:
    """``band_1`` ... ``band_<count>``."""
    return tuple(f"band_{i + 1}" for i in range(count))


def range_bands(output: OutputSpec) -> int:
    """Bands of a coverage's range: a visual output's alpha band becomes the no-data mask instead."""
    return output.bands - (1 if output.has_alpha else 0)


@extent_cached(maxsize=256)
def coverage_domain(layer: Layer) -> Domain:
    """The native grid of ``layer``: its catalogue extent at the finest band resolution."""
    west, south, east, north = layer.bounds or (-180.0, -90.0, 180.0, 90.0)
    resolution = layer.native_resolution / METRES_PER_DEGREE
    width = max(1, math.ceil((east - west) / resolution))
    height = max(1, math.ceil((north - south) / resolution))
    bbox = (west, north - height * resolution, west + width * resolution, north)
    output = layer.evalscript.output
    bands = range_bands(output)
    times = tuple(sorted({t.date().isoformat() for t in layer.times}))
    return Domain(bbox, resolution, width, height, times, bands, output.sample_type)


def coverage_layer(pipeline: Pipeline, name: str, parameter: str) -> Layer:
    """The layer behind a coverage id; ``NoSuchCoverage`` (CoverageNotDefined in 1.0.0) otherwise."""
    layer = pipeline.registry.find(name.strip(), parameter)  # Forbidden for another client's layer
    if layer is None:
        raise NoSuchCoverage(f"{parameter}: unknown coverage '{name.strip()[:64]}'", parameter=parameter)
    return layer


def parse_coverage_format(value: str, parameter: str = "FORMAT") -> ImageFormat:
    """GeoTIFF in any of its usual spellings (``image/tiff``, ``GeoTIFF``, ``GTiff``)."""
    if value.split(";")[0].strip().lower() not in _FORMAT_ALIASES:
        raise InvalidFormat(f"{parameter} '{value[:40]}' is not supported: use image/tiff", parameter=parameter)
    return ImageFormat.GTIFF


def parse_interpolation(value: str | None, parameter: str = "INTERPOLATION") -> str | None:
    """A WCS interpolation name or URI -> rio-tiler resampling; ``None`` keeps the layer's."""
    if value is None or not value.strip():
        return None
    key = value.strip().rstrip("/").rsplit("/", 1)[-1].lower()
    if key not in INTERPOLATIONS:
        raise InvalidParameter(
            f"{parameter} must be nearest neighbor, bilinear or bicubic (or the WCS 2.0 URIs)", parameter=parameter
        )
    return INTERPOLATIONS[key]


def _check_size(width: int, height: int, pipeline: Pipeline, hint: str, parameter: str = "SIZE") -> None:
    """Beyond ``max_image_size`` per side is an InvalidParameterValue (400) naming what asked for it.

    WCS 2.0 and its scaling extension define no code for a server's size limit; OWS Common's
    InvalidParameterValue is what the WMS WIDTH/HEIGHT limit answers too.
    """
    limit = pipeline.settings.max_image_size
    if not (1 <= width <= limit and 1 <= height <= limit):
        raise InvalidParameter(
            f"the coverage would be {width}x{height} pixels; at most {limit} per side: {hint}", parameter=parameter
        )


def _pixels(count: float) -> int:
    """A computed pixel count as an int: at least 1, and capped so that a huge factor stays a number."""
    return max(1, round(min(count, 2.0**31)))


def _native_size(bbox: tuple[float, float, float, float], crs: CRS, domain: Domain, layer: Layer) -> tuple[int, int]:
    """Pixels the bbox spans at native resolution (exact on the native grid, geodesic otherwise)."""
    if crs == CRS.from_user_input(NATIVE_CRS) or crs == CRS.from_user_input("OGC:CRS84"):
        return (
            max(1, round((bbox[2] - bbox[0]) / domain.resolution)),
            max(1, round((bbox[3] - bbox[1]) / domain.resolution)),
        )
    across, down = Grid(bbox, crs, 1, 1).ground_size()
    return max(1, round(across / layer.native_resolution)), max(1, round(down / layer.native_resolution))


@dataclass(frozen=True, slots=True)
class _Common:
    """TIME, MAXCC, PRIORITY and EVALSCRIPT, shared by both versions, and the range they produce."""

    time: TimeRange | None
    maxcc: float | None
    priority: Priority | None
    script: Evalscript | None
    bands: int  # range size of the script that will run (the request's EVALSCRIPT or the layer's)
    has_alpha: bool

    def band_subset(self, picked: tuple[int, ...] | None) -> tuple[int, ...] | None:
        """The requested bands, else all range bands when an alpha band must be dropped."""
        return picked or (tuple(range(self.bands)) if self.has_alpha else None)


def _common(kvp: KVP, layer: Layer) -> _Common:
    options = RenderOptions.from_kvp(kvp.get)
    script = options.script(layer)
    output = (script or layer.evalscript).output
    return _Common(
        options.time,
        options.maxcc,
        options.priority,
        script,
        range_bands(output),
        output.has_alpha,
    )


def parse_get_coverage_100(kvp: KVP, pipeline: Pipeline, allowed_crs: tuple[str, ...]) -> RenderRequest:
    """WCS 1.0.0 GetCoverage: COVERAGE, CRS, BBOX, WIDTH/HEIGHT or RESX/RESY, FORMAT, RESPONSE_CRS, TIME."""
    layer = coverage_layer(pipeline, kvp.require("COVERAGE"), "COVERAGE")
    common = _common(kvp, layer)
    fmt = parse_coverage_format(kvp.require("FORMAT"))
    _, crs = parse_crs(kvp.require("CRS"), allowed_crs, "CRS")
    response_crs = crs
    if kvp.get("RESPONSE_CRS"):
        _, response_crs = parse_crs(str(kvp.get("RESPONSE_CRS")), allowed_crs, "RESPONSE_CRS")
    # 1.0.0 predates the axis-order rules: BBOX is x/y (lon/lat for EPSG:4326) in CRS.
    bbox = _parse_bbox(kvp.require("BBOX"), "BBOX")
    check_bbox(bbox, crs, "BBOX")
    if response_crs != crs:
        bbox = _transform(crs, response_crs, bbox, "BBOX")
    if kvp.get("WIDTH") or kvp.get("HEIGHT"):
        limit = pipeline.settings.max_image_size
        width = parse_size(kvp.require("WIDTH"), "WIDTH", limit)
        height = parse_size(kvp.require("HEIGHT"), "HEIGHT", limit)
    elif kvp.get("RESX") or kvp.get("RESY"):
        resx = _positive(kvp.require("RESX"), "RESX")
        resy = _positive(kvp.require("RESY"), "RESY")
        width = _pixels((bbox[2] - bbox[0]) / resx)
        height = _pixels((bbox[3] - bbox[1]) / resy)
        _check_size(width, height, pipeline, "raise RESX/RESY", "RESX")
    else:
        raise MissingParameter("give WIDTH and HEIGHT, or RESX and RESY", parameter="WIDTH")
    return RenderRequest(
        layer.id,
        request_grid(bbox, response_crs, width, height, "BBOX"),
        fmt,
        common.time,
        maxcc=common.maxcc,
        priority=common.priority,
        script=common.script,
        coverage=True,
        bands=common.band_subset(parse_band_axis(kvp.get("BAND"), common.bands)),
        resampling=parse_interpolation(kvp.get("INTERPOLATION")),
    )


def _parse_bbox(text: str, parameter: str) -> tuple[float, float, float, float]:
    parts = text.split(",")
    if len(parts) == 6:  # minx,miny,maxx,maxy,minz,maxz: the vertical range does not apply
        text = ",".join(parts[:4])
    return parse_bbox(text, parameter)


def _positive(text: str, parameter: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InvalidParameter(f"{parameter} must be a positive number", parameter=parameter) from None
    if not math.isfinite(value) or value <= 0:
        raise InvalidParameter(f"{parameter} must be a positive number", parameter=parameter)
    return value


def _transform(src: CRS, dst: CRS, bbox: tuple[float, float, float, float], parameter: str) -> tuple[float, ...]:
    """``bbox`` in ``dst``: only its part in the area of use of ``src`` is transformed, and the result
    is kept to the area of use of ``dst`` (far outside it a projection's numbers mean nothing)."""
    try:
        out = transform_bounds(src, dst, *clamp_bbox(bbox, src.to_wkt()), densify_pts=21)
    except Exception:  # noqa: BLE001 - e.g. an area outside a UTM zone's valid range
        raise InvalidParameter(f"{parameter} cannot be expressed in the output CRS", parameter=parameter) from None
    if not all(math.isfinite(v) for v in out) or out[0] >= out[2] or out[1] >= out[3]:
        raise InvalidParameter(f"{parameter} cannot be expressed in the output CRS", parameter=parameter)
    return clamp_bbox(out, dst.to_wkt())


@dataclass(slots=True)
class _Subsets:
    x: tuple[float | None, float | None] = (None, None)
    y: tuple[float | None, float | None] = (None, None)
    time: TimeRange | None = None
    crs_text: str | None = None


def _number(text: str, axis: str) -> float | None:
    text = text.strip().strip('"')
    if text == "*":
        return None
    try:
        value = float(text)
    except ValueError:
        raise InvalidSubsetting(f"SUBSET {axis}: '{text[:30]}' is not a number", parameter="SUBSET") from None
    if not math.isfinite(value):
        raise InvalidSubsetting(f"SUBSET {axis}: bounds must be finite", parameter="SUBSET")
    return value


def parse_subsets(values: list[str]) -> _Subsets:
    """``SUBSET=Long(5,6)``, ``SUBSET=Lat(45,46)``, ``SUBSET=time("2022-10-01","2022-10-31")``."""
    result = _Subsets()
    seen: set[str] = set()
    for value in values:
        match = _SUBSET.match(value)
        if not match:
            raise InvalidSubsetting(f"SUBSET '{value[:60]}' must look like axis(low,high)", parameter="SUBSET")
        label = match["axis"].lower()
        kind = "x" if label in X_AXES else "y" if label in Y_AXES else "time" if label in T_AXES else None
        if kind is None:
            raise InvalidAxisLabel(
                f"SUBSET axis '{match['axis'][:20]}' is not an axis of the coverage (Lat, Long, time)",
                parameter="SUBSET",
            )
        if kind in seen:
            raise InvalidSubsetting(f"SUBSET gives axis {match['axis']} twice", parameter="SUBSET")
        seen.add(kind)
        if match["crs"]:
            result.crs_text = match["crs"]
        parts = [p.strip() for p in match["body"].split(",")]
        if kind == "time":
            texts = ["" if p.strip('"') == "*" else p.strip('"') for p in parts]
            if len(texts) not in (1, 2) or not any(texts):
                raise InvalidSubsetting("SUBSET time takes (instant) or (start,end)", parameter="SUBSET")
            try:
                result.time = parse_time("/".join(texts), "SUBSET")
            except InvalidTime as exc:
                raise InvalidSubsetting(exc.public_message, parameter="SUBSET") from None
            continue
        if len(parts) != 2:
            raise InvalidSubsetting(
                f"SUBSET {match['axis']}: slicing a spatial axis is not supported; give (low,high)",
                parameter="SUBSET",
            )
        low, high = _number(parts[0], label), _number(parts[1], label)
        if low is not None and high is not None and low > high:
            raise InvalidSubsetting(f"SUBSET {match['axis']}: low must be below high", parameter="SUBSET")
        if kind == "x":
            result.x = (low, high)
        else:
            result.y = (low, high)
    return result


def _axis_values(text: str, parameter: str) -> dict[str, str]:
    """``x(256),y(128)`` or ``Long(0:10)`` -> {"x": "256", ...} keyed by x/y."""
    found: dict[str, str] = {}
    for item in re.findall(r"[^,()]+\([^()]*\)", text) or [text]:
        match = re.fullmatch(r"\s*([A-Za-z_][\w.-]*)\s*\(([^()]*)\)\s*", item)
        if not match:
            raise InvalidParameter(f"{parameter} must look like axis(value),axis(value)", parameter=parameter)
        label = match[1].lower()
        kind = "x" if label in X_AXES | {"i"} else "y" if label in Y_AXES | {"j"} else None
        if kind is None:
            raise InvalidAxisLabel(f"{parameter}: unknown axis '{match[1][:20]}'", parameter=parameter)
        found[kind] = match[2]
    return found


def _scaled_size(kvp: KVP, native: tuple[int, int], pipeline: Pipeline) -> tuple[int, int]:
    """Output size from SCALESIZE / SCALEFACTOR / SCALEAXES / SCALEEXTENT, else the native size."""
    width, height = native
    given = [name for name in ("SCALESIZE", "SCALEFACTOR", "SCALEAXES", "SCALEEXTENT") if kvp.get(name)]
    if len(given) > 1:
        raise InvalidParameter(f"give only one of {', '.join(given)}", parameter=given[1])
    limit = pipeline.settings.max_image_size
    if kvp.get("SCALESIZE"):
        sizes = _axis_values(str(kvp.get("SCALESIZE")), "SCALESIZE")
        width = parse_size(sizes.get("x", str(width)), "SCALESIZE", limit)
        height = parse_size(sizes.get("y", str(height)), "SCALESIZE", limit)
    elif kvp.get("SCALEFACTOR"):
        # The scaling extension multiplies the grid (MapServer does the same): 2 doubles each
        # side, 0.5 halves it.
        factor = _positive(str(kvp.get("SCALEFACTOR")), "SCALEFACTOR")
        width, height = _pixels(width * factor), _pixels(height * factor)
    elif kvp.get("SCALEAXES"):
        factors = _axis_values(str(kvp.get("SCALEAXES")), "SCALEAXES")
        width = _pixels(width * _positive(factors.get("x", "1"), "SCALEAXES"))
        height = _pixels(height * _positive(factors.get("y", "1"), "SCALEAXES"))
    elif kvp.get("SCALEEXTENT"):
        extents = _axis_values(str(kvp.get("SCALEEXTENT")), "SCALEEXTENT")
        for kind, text in extents.items():
            low, _, high = text.partition(":")
            size = parse_int(high.strip(), "SCALEEXTENT", 0, 10**9) - parse_int(low.strip(), "SCALEEXTENT", 0, 10**9)
            if kind == "x":
                width = size + 1
            else:
                height = size + 1
    hint = "use SCALESIZE or a SCALEFACTOR below 1, or a smaller SUBSET"
    _check_size(width, height, pipeline, hint, given[0] if given else "SUBSET")
    return width, height


def parse_get_coverage_201(kvp: KVP, pipeline: Pipeline, allowed_crs: tuple[str, ...]) -> RenderRequest:
    """WCS 2.0.1 GetCoverage (core + CRS, scaling, range subsetting and interpolation extensions)."""
    layer = coverage_layer(pipeline, kvp.require("COVERAGEID"), "COVERAGEID")
    domain = coverage_domain(layer)
    common = _common(kvp, layer)
    fmt = parse_coverage_format(kvp.get("FORMAT") or "image/tiff")
    media = (kvp.get("MEDIATYPE") or "").strip().lower()
    if media and media != "image/tiff":
        raise InvalidParameter(
            "MEDIATYPE multipart/related is not offered; omit it for image/tiff", parameter="MEDIATYPE"
        )
    subsets = parse_subsets(kvp.get_all("SUBSET"))
    subsetting_text = kvp.get("SUBSETTINGCRS") or subsets.crs_text or NATIVE_CRS
    _, subsetting_crs = parse_crs(subsetting_text, (*allowed_crs, NATIVE_CRS), "SUBSETTINGCRS")
    output_code = normalise_code(kvp.get("OUTPUTCRS") or NATIVE_CRS)
    _, output_crs = parse_crs(output_code, (*allowed_crs, NATIVE_CRS), "OUTPUTCRS")
    full = domain.bbox
    if subsetting_crs != CRS.from_user_input(NATIVE_CRS):
        full = _transform(CRS.from_user_input(NATIVE_CRS), subsetting_crs, full, "SUBSET")
    x0 = subsets.x[0] if subsets.x[0] is not None else full[0]
    x1 = subsets.x[1] if subsets.x[1] is not None else full[2]
    y0 = subsets.y[0] if subsets.y[0] is not None else full[1]
    y1 = subsets.y[1] if subsets.y[1] is not None else full[3]
    # A trim with low == high (GDAL probes the service that way) covers the one native pixel there.
    half = (domain.resolution if subsetting_crs.is_geographic else layer.native_resolution) / 2
    if x0 == x1:
        x0, x1 = x0 - half, x1 + half
    if y0 == y1:
        y0, y1 = y0 - half, y1 + half
    if x0 >= x1 or y0 >= y1:
        raise InvalidSubsetting("SUBSET leaves an empty area", parameter="SUBSET")
    bbox = (x0, y0, x1, y1)
    try:
        check_bbox(bbox, subsetting_crs, "SUBSET")
    except InvalidParameter as exc:  # WCS 2.0.1's code for a trim outside the coverage's space
        raise InvalidSubsetting(exc.public_message, parameter="SUBSET") from None
    if subsetting_crs != output_crs:
        bbox = _transform(subsetting_crs, output_crs, bbox, "SUBSET")
    native = _native_size(bbox, output_crs, domain, layer)
    width, height = _scaled_size(kvp, native, pipeline)
    time = subsets.time if subsets.time is not None else common.time
    return RenderRequest(
        layer.id,
        request_grid(bbox, output_crs, width, height, "SUBSET"),
        fmt,
        time,
        maxcc=common.maxcc,
        priority=common.priority,
        script=common.script,
        coverage=True,
        bands=common.band_subset(parse_range_subset(kvp.get("RANGESUBSET"), common.bands)),
        resampling=parse_interpolation(kvp.get("INTERPOLATION")),
    )


def parse_band_axis(value: str | None, count: int) -> tuple[int, ...] | None:
    """WCS 1.0.0 range subsetting through the ``Band`` axis of DescribeCoverage: ``BAND=1,3`` (1-based)."""
    if value is None or not value.strip():
        return None
    picked = []
    for item in value.split(","):
        picked.append(parse_int(item.strip(), "BAND", 1, count) - 1)
    return tuple(picked)


def parse_range_subset(value: str | None, count: int) -> tuple[int, ...] | None:
    """``band_1,band_3`` or ``band_1:band_2`` (WCS 2.0 range subsetting) -> 0-based band indices."""
    if value is None or not value.strip():
        return None
    names = [n.lower() for n in band_names(count)]
    picked: list[int] = []
    for item in value.split(","):
        low, sep, high = item.strip().partition(":")
        try:
            first = names.index(low.strip().lower())
            last = names.index(high.strip().lower()) if sep else first
        except ValueError:
            raise InvalidParameter(
                f"RANGESUBSET names unknown bands; the coverage has {', '.join(band_names(count))}",
                parameter="RANGESUBSET",
            ) from None
        if last < first:
            raise InvalidParameter("RANGESUBSET range runs backwards", parameter="RANGESUBSET")
        picked.extend(range(first, last + 1))
    return tuple(picked)
