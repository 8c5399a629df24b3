"""WCS GetCoverage: coverage domains, what both versions share, and the 1.0.0 request.

A coverage is a layer: its values are the evalscript's output bands (float32 for index layers),
written as GeoTIFF through the same pipeline as every map (``RenderRequest(coverage=True)``).
Its native grid is EPSG:4326 at the finest resolution of the bands the script reads (a layer
spans many UTM zones, so no single UTM CRS can be native); any advertised CRS can be asked for.

Each version parses once, straight into the ``RenderRequest``: 1.0.0 here (CRS/BBOX, always x/y,
with WIDTH/HEIGHT or RESX/RESY and RESPONSE_CRS); 2.0.1 in ``wcs_201.py`` (one SUBSET per axis
by axis label in SUBSETTINGCRS, OUTPUTCRS, SCALESIZE / SCALEFACTOR / SCALEAXES / SCALEEXTENT,
RANGESUBSET and INTERPOLATION).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rasterio.crs import CRS
from rasterio.warp import transform_bounds

from server.api.params import RenderOptions, parse_int, parse_size
from server.cache.documents import extent_cached
from server.catalog.layers import Layer
from server.errors import EotilerError, InvalidFormat, InvalidParameter, MissingParameter
from server.evalscript.contract import Evalscript, OutputSpec, SampleType
from server.models import (
    Grid,
    ImageFormat,
    Priority,
    RenderRequest,
    TimeRange,
    check_bbox,
    clamp_bbox,
    request_grid,
)
from server.ogc.crs import parse_bbox, parse_crs
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


def check_size(width: int, height: int, pipeline: Pipeline, hint: str, parameter: str = "SIZE") -> None:
    """Beyond ``max_image_size`` per side is an InvalidParameterValue (400) naming what asked for it.

    WCS 2.0 and its scaling extension define no code for a server's size limit; OWS Common's
    InvalidParameterValue is what the WMS WIDTH/HEIGHT limit answers too.
    """
    limit = pipeline.settings.max_image_size
    if not (1 <= width <= limit and 1 <= height <= limit):
        raise InvalidParameter(
            f"the coverage would be {width}x{height} pixels; at most {limit} per side: {hint}", parameter=parameter
        )


def pixel_count(count: float) -> int:
    """A computed pixel count as an int: at least 1, and capped so that a huge factor stays a number."""
    return max(1, round(min(count, 2.0**31)))


def native_size(bbox: tuple[float, float, float, float], crs: CRS, domain: Domain, layer: Layer) -> tuple[int, int]:
    """Pixels the bbox spans at native resolution (exact on the native grid, geodesic otherwise)."""
    if crs == CRS.from_user_input(NATIVE_CRS) or crs == CRS.from_user_input("OGC:CRS84"):
        return (
            max(1, round((bbox[2] - bbox[0]) / domain.resolution)),
            max(1, round((bbox[3] - bbox[1]) / domain.resolution)),
        )
    across, down = Grid(bbox, crs, 1, 1).ground_size()
    return max(1, round(across / layer.native_resolution)), max(1, round(down / layer.native_resolution))


@dataclass(frozen=True, slots=True)
class CommonOptions:
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


def common_options(kvp: KVP, layer: Layer) -> CommonOptions:
    """TIME, MAXCC, PRIORITY and EVALSCRIPT (compiled for ``layer``), read once for either version."""
    options = RenderOptions.from_kvp(kvp.get)
    script = options.script(layer)
    output = (script or layer.evalscript).output
    return CommonOptions(
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
    common = common_options(kvp, layer)
    fmt = parse_coverage_format(kvp.require("FORMAT"))
    _, crs = parse_crs(kvp.require("CRS"), allowed_crs, "CRS")
    response_crs = crs
    if kvp.get("RESPONSE_CRS"):
        _, response_crs = parse_crs(str(kvp.get("RESPONSE_CRS")), allowed_crs, "RESPONSE_CRS")
    # 1.0.0 predates the axis-order rules: BBOX is x/y (lon/lat for EPSG:4326) in CRS.
    bbox = _parse_bbox(kvp.require("BBOX"), "BBOX")
    check_bbox(bbox, crs, "BBOX")
    if response_crs != crs:
        bbox = transform_box(crs, response_crs, bbox, "BBOX")
    if kvp.get("WIDTH") or kvp.get("HEIGHT"):
        limit = pipeline.settings.max_image_size
        width = parse_size(kvp.require("WIDTH"), "WIDTH", limit)
        height = parse_size(kvp.require("HEIGHT"), "HEIGHT", limit)
    elif kvp.get("RESX") or kvp.get("RESY"):
        resx = positive(kvp.require("RESX"), "RESX")
        resy = positive(kvp.require("RESY"), "RESY")
        width = pixel_count((bbox[2] - bbox[0]) / resx)
        height = pixel_count((bbox[3] - bbox[1]) / resy)
        check_size(width, height, pipeline, "raise RESX/RESY", "RESX")
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


def positive(text: str, parameter: str) -> float:
    """A finite number above 0 (RESX, SCALEFACTOR), or a 400 naming the parameter."""
    try:
        value = float(text)
    except ValueError:
        raise InvalidParameter(f"{parameter} must be a positive number", parameter=parameter) from None
    if not math.isfinite(value) or value <= 0:
        raise InvalidParameter(f"{parameter} must be a positive number", parameter=parameter)
    return value


def transform_box(src: CRS, dst: CRS, bbox: tuple[float, float, float, float], parameter: str) -> tuple[float, ...]:
    """``bbox`` in ``dst``: only its part in the area of use of ``src`` is transformed, and the result
    is kept to the area of use of ``dst`` (far outside it a projection's numbers mean nothing)."""
    try:
        out = transform_bounds(src, dst, *clamp_bbox(bbox, src.to_wkt()), densify_pts=21)
    except Exception:  # noqa: BLE001 - e.g. an area outside a UTM zone's valid range
        raise InvalidParameter(f"{parameter} cannot be expressed in the output CRS", parameter=parameter) from None
    if not all(math.isfinite(v) for v in out) or out[0] >= out[2] or out[1] >= out[3]:
        raise InvalidParameter(f"{parameter} cannot be expressed in the output CRS", parameter=parameter)
    return clamp_bbox(out, dst.to_wkt())


def parse_band_axis(value: str | None, count: int) -> tuple[int, ...] | None:
    """WCS 1.0.0 range subsetting through the ``Band`` axis of DescribeCoverage: ``BAND=1,3`` (1-based)."""
    if value is None or not value.strip():
        return None
    picked = []
    for item in value.split(","):
        picked.append(parse_int(item.strip(), "BAND", 1, count) - 1)
    return tuple(picked)
