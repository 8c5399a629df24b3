"""Value types shared by every layer: time ranges, formats, scenes, render requests and results.

Why here: protocols (XYZ, WMS, WMTS, WCS) all translate their parameters into a ``RenderRequest``
and read a ``RenderResult``; keeping these types free of I/O lets every layer import them.
"""

from __future__ import annotations

import calendar
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from typing import Any

import pyproj
from pyproj import Geod
from pyproj.exceptions import ProjError
from rasterio.crs import CRS
from rasterio.warp import transform as warp_transform
from rasterio.warp import transform_bounds

from server.errors import InvalidFormat, InvalidParameter, InvalidTime

_GEOD = Geod(ellps="WGS84")
_GROUND_STEPS = 16  # pieces a grid's middle row and column are measured in


class Priority(StrEnum):
    """Scene order for mosaics, as Sentinel Hub names it."""

    MOST_RECENT = "mostRecent"
    LEAST_RECENT = "leastRecent"
    LEAST_CC = "leastCC"

    @classmethod
    def parse(cls, value: str, parameter: str = "priority") -> Priority:
        """Parse case-insensitively; raise ``InvalidParameter`` naming ``parameter``."""
        for member in cls:
            if member.value.lower() == value.strip().lower():
                return member
        choices = ", ".join(m.value for m in cls)
        raise InvalidParameter(f"{parameter} must be one of {choices}", parameter=parameter)


class ImageFormat(StrEnum):
    """Output encodings; the value is the media type."""

    PNG = "image/png"
    JPEG = "image/jpeg"
    WEBP = "image/webp"
    GTIFF = "image/tiff"

    @property
    def extension(self) -> str:
        """The file extension used in tile URLs."""
        return _EXTENSIONS[self]

    @classmethod
    def from_extension(cls, ext: str, parameter: str = "format") -> ImageFormat:
        """Map ``png``/``jpg``/``jpeg``/``webp``/``tif``/``tiff`` to a format."""
        found = _BY_EXTENSION.get(ext.lower())
        if found is None:
            raise InvalidFormat(f"{parameter} must be one of png, jpg, webp, tif", parameter=parameter)
        return found


_EXTENSIONS = {
    ImageFormat.PNG: "png",
    ImageFormat.JPEG: "jpg",
    ImageFormat.WEBP: "webp",
    ImageFormat.GTIFF: "tif",
}
_BY_EXTENSION = {
    "png": ImageFormat.PNG,
    "jpg": ImageFormat.JPEG,
    "jpeg": ImageFormat.JPEG,
    "webp": ImageFormat.WEBP,
    "tif": ImageFormat.GTIFF,
    "tiff": ImageFormat.GTIFF,
}


@dataclass(frozen=True, slots=True)
class TimeRange:
    """A closed UTC interval; ``None`` ends are open."""

    start: datetime | None
    end: datetime | None

    def contains(self, when: datetime) -> bool:
        """True when ``when`` lies inside the interval (ends included)."""
        if self.start is not None and when < self.start:
            return False
        return self.end is None or when <= self.end

    def isoformat(self) -> str:
        """``start/end`` with ``..`` for an open end (STAC API datetime syntax)."""
        left = self.start.isoformat().replace("+00:00", "Z") if self.start else ".."
        right = self.end.isoformat().replace("+00:00", "Z") if self.end else ".."
        return f"{left}/{right}"


_TIME_RE = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:[T ](?P<H>\d{2})(?::(?P<M>\d{2})(?::(?P<S>\d{2})(?:\.\d+)?)?)?"
    r"(?P<tz>Z|[+-]00:?00)?)?)?)?$"
)


def _parse_instant(text: str, parameter: str) -> tuple[datetime, datetime]:
    """Parse one ISO 8601 instant of any precision into the interval it covers.

    Reduced accuracy widens the interval, as WMS 1.3.0 annex D asks: ``2022-10`` is the month.
    """
    match = _TIME_RE.match(text.strip())
    if not match:
        raise InvalidTime(f"{parameter} '{text[:40]}' is not an ISO 8601 date or time", parameter=parameter)
    parts = {k: (int(v) if v and k != "tz" else None) for k, v in match.groupdict().items()}
    year, month, day = parts["y"], parts["m"], parts["d"]
    hour, minute, second = parts["H"], parts["M"], parts["S"]
    try:
        if month is None:
            start = datetime(year, 1, 1, tzinfo=UTC)
            return start, datetime(year, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
        if day is None:
            last = calendar.monthrange(year, month)[1]
            start = datetime(year, month, 1, tzinfo=UTC)
            return start, datetime(year, month, last, 23, 59, 59, 999999, tzinfo=UTC)
        if hour is None:
            start = datetime(year, month, day, tzinfo=UTC)
            return start, start + timedelta(days=1, microseconds=-1)
        start = datetime(year, month, day, hour, minute or 0, second or 0, tzinfo=UTC)
        span = timedelta(seconds=1) if second is not None else timedelta(minutes=1 if minute is not None else 60)
        return start, start + span - timedelta(microseconds=1)
    except ValueError as exc:  # e.g. month 13, day 31 in a 30-day month
        raise InvalidTime(f"{parameter} '{text[:40]}' is not a valid date", parameter=parameter) from exc


_ISO_PERIOD = re.compile(r"P(?=\d|T\d)(\d+Y)?(\d+M)?(\d+W)?(\d+D)?(T(\d+H)?(\d+M)?(\d+(\.\d+)?S)?)?")


def parse_time(value: str | None, parameter: str = "time") -> TimeRange | None:
    """Parse a TIME value: an instant, ``start/end`` (either end may be empty or ``..``).

    ``None``, an empty string and ``latest`` mean no constraint (the newest scene wins under the
    default priority). A ``start/end/period`` triple keeps start and end and ignores the period.
    """
    if value is None or value.strip() == "" or value.strip().lower() in ("latest", "current"):
        return None
    if "\x00" in value or len(value) > 100:
        raise InvalidTime(f"{parameter} is not a valid time", parameter=parameter)
    pieces = value.split("/")
    if len(pieces) == 1:
        start, end = _parse_instant(pieces[0], parameter)
        return TimeRange(start, end)
    if len(pieces) not in (2, 3):
        raise InvalidTime(f"{parameter} must be an instant or start/end", parameter=parameter)
    if len(pieces) == 3 and not _ISO_PERIOD.fullmatch(pieces[2].strip()):
        raise InvalidTime(
            f"{parameter}: the third part of start/end/period must be a period like P1D", parameter=parameter
        )
    left, right = pieces[0].strip(), pieces[1].strip()
    start = _parse_instant(left, parameter)[0] if left not in ("", "..") else None
    end = _parse_instant(right, parameter)[1] if right not in ("", "..") else None
    if start and end and start > end:
        raise InvalidTime(f"{parameter} starts after it ends", parameter=parameter)
    return TimeRange(start, end)


def parse_maxcc(value: str | float | None, parameter: str = "maxcc") -> float | None:
    """Parse a maximum cloud cover in percent (0-100)."""
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidParameter(f"{parameter} must be a number from 0 to 100", parameter=parameter) from None
    if not 0 <= number <= 100:
        raise InvalidParameter(f"{parameter} must be a number from 0 to 100", parameter=parameter)
    return number


def parse_priority(value: str | None, parameter: str = "priority") -> Priority | None:
    """Parse an optional PRIORITY; ``None`` or empty means the layer's default."""
    return Priority.parse(value, parameter) if value else None


@dataclass(frozen=True, slots=True)
class Scene:
    """One catalogue item: a product (or mosaic tile) with its band assets."""

    id: str
    datetime: datetime
    cloud_cover: float | None
    bbox: tuple[float, float, float, float]  # WGS84 lon/lat
    assets: dict[str, str]  # asset key -> href as the catalogue gives it (s3://eodata/...)
    properties: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    geometry: dict[str, Any] | None = field(default=None, hash=False, compare=False)  # GeoJSON footprint, lon/lat


BBox = tuple[float, float, float, float]

# Degrees added around a CRS's area of use: requests legitimately reach a little past it (a UTM
# map of a Sentinel-2 tile that overlaps the next zone, Web Mercator up to the poles), and the
# projections stay exact there.
AREA_MARGIN_DEGREES = 3.0
# How far a box may reach past the area of use, in multiples of the area's own width (height) on
# each side: OpenLayers asks for several wrapped worlds at low zoom. Beyond it the numbers only
# make PROJ and GDAL slow or wrong (a 1e308 box kept PROJ busy for minutes, holding the GIL).
MAX_OVERREACH = 10.0


@lru_cache(maxsize=256)
def area_of_use(crs_wkt: str) -> BBox | None:
    """Where the CRS is defined, widened by ``AREA_MARGIN_DEGREES``, in its own x/y coordinates.

    From the EPSG database (pyproj's ``area_of_use``); a CRS without one is taken as valid on the
    whole globe. ``None`` when that area has no finite bounds in the CRS (nothing can be checked).
    Cached per CRS: every request asks.
    """
    crs = pyproj.CRS.from_wkt(crs_wkt)
    area = crs.area_of_use
    if area is None:  # rasterio's WKT drops the usage; the EPSG code still knows it
        code = crs.to_epsg()
        area = pyproj.CRS.from_epsg(code).area_of_use if code is not None else None
    west, south, east, north = area.bounds if area is not None else (-180.0, -90.0, 180.0, 90.0)
    if west > east:  # an area across the antimeridian: all longitudes
        west, east = -180.0, 180.0
    margin = AREA_MARGIN_DEGREES
    west, east = max(-180.0, west - margin), min(180.0, east + margin)
    south, north = max(-90.0, south - margin), min(90.0, north + margin)
    if crs.is_geographic:
        return west, south, east, north
    try:
        to_crs = pyproj.Transformer.from_crs("EPSG:4326", crs, always_xy=True)
        bounds = to_crs.transform_bounds(west, south, east, north, densify_pts=21)
    except ProjError:
        return None
    if not all(math.isfinite(v) for v in bounds) or bounds[0] >= bounds[2] or bounds[1] >= bounds[3]:
        return None
    return bounds


def _crs_name(crs: CRS) -> str:
    code = crs.to_epsg()
    return f"EPSG:{code}" if code is not None else "the CRS"


def check_bbox(bbox: BBox, crs: CRS, parameter: str = "BBOX") -> None:
    """Refuse a box PROJ and GDAL must not see: not finite, inverted or empty, entirely outside the
    CRS's area of use, or reaching more than ``MAX_OVERREACH`` area sizes past it.

    A box partly inside is accepted: transformations only see its part inside the area of use
    (``Grid.usable_bbox``) and pixels outside it stay empty. Every protocol builds its grids with
    ``request_grid`` (or checks here first), so this is the one gate for numbers from a request.
    """
    x0, y0, x1, y1 = bbox
    if not all(math.isfinite(v) for v in bbox):
        raise InvalidParameter(f"{parameter} must contain finite numbers", parameter=parameter)
    if not (x0 < x1 and y0 < y1):
        raise InvalidParameter(f"{parameter} minimum must be smaller than maximum on both axes", parameter=parameter)
    area = area_of_use(crs.to_wkt())
    if area is None:
        return
    ax0, ay0, ax1, ay1 = area
    described = f"{_crs_name(crs)} is defined on x {ax0:.6g} to {ax1:.6g}, y {ay0:.6g} to {ay1:.6g}"
    if x1 <= ax0 or x0 >= ax1 or y1 <= ay0 or y0 >= ay1:
        raise InvalidParameter(f"{parameter} lies outside the area of use: {described}", parameter=parameter)
    reach_x, reach_y = MAX_OVERREACH * (ax1 - ax0), MAX_OVERREACH * (ay1 - ay0)
    if x0 < ax0 - reach_x or x1 > ax1 + reach_x or y0 < ay0 - reach_y or y1 > ay1 + reach_y:
        raise InvalidParameter(f"{parameter} reaches too far past the area of use: {described}", parameter=parameter)


def request_grid(bbox: BBox, crs: CRS, width: int, height: int, parameter: str = "BBOX") -> Grid:
    """A grid from numbers a client sent, checked by ``check_bbox`` (errors name ``parameter``)."""
    check_bbox(bbox, crs, parameter)
    return Grid(bbox, crs, width, height)


def clamp_bbox(bbox: BBox, crs_wkt: str) -> BBox:
    """The part of ``bbox`` inside the CRS's area of use (all of it when the area is unknown or the
    box lies outside: ``check_bbox`` refuses those before a grid exists)."""
    area = area_of_use(crs_wkt)
    if area is None:
        return bbox
    clamped = (max(bbox[0], area[0]), max(bbox[1], area[1]), min(bbox[2], area[2]), min(bbox[3], area[3]))
    return clamped if clamped[0] < clamped[2] and clamped[1] < clamped[3] else bbox


@lru_cache(maxsize=4096)
def _bbox_wgs84(bbox: BBox, crs_wkt: str) -> BBox:
    crs = _crs_from_wkt(crs_wkt)
    bbox = clamp_bbox(bbox, crs_wkt)
    if crs.to_epsg() == 4326 or crs == CRS.from_user_input("OGC:CRS84"):
        return bbox
    west, south, east, north = transform_bounds(crs, "EPSG:4326", *bbox, densify_pts=21)
    return (west, south, east, north)


@lru_cache(maxsize=64)
def _crs_from_wkt(wkt: str) -> CRS:
    return CRS.from_wkt(wkt)


@dataclass(frozen=True, slots=True)
class Grid:
    """An output raster grid: bounds in ``crs`` (always x/y, east/north order) and a size."""

    bbox: tuple[float, float, float, float]
    crs: CRS
    width: int
    height: int
    # ``crs`` as WKT when the caller already has it (tile grids: one per TileMatrixSet); rasterio's
    # ``to_wkt`` costs ~0.1 ms, a visible share of a cached tile.
    crs_wkt: str = field(default="", compare=False)
    # The ground resolution of the whole image a strip of it belongs to (``render/strips.py``):
    # a strip reads the same band files as the whole image, so its pixels are the same.
    ground: float | None = field(default=None, compare=False)

    def bbox_wgs84(self) -> tuple[float, float, float, float]:
        """The grid's bounds in lon/lat, densified so curved edges are covered (memoised: every
        request, cached or not, asks the catalogue with it)."""
        return _bbox_wgs84(self.bbox, self.crs_wkt or self.crs.to_wkt())

    def usable_bbox(self) -> BBox:
        """The part of the bounds inside the CRS's area of use: what transformations are given."""
        return clamp_bbox(self.bbox, self.crs_wkt or self.crs.to_wkt())

    def ground_resolution(self) -> float:
        """Metres per pixel on the ground along the grid's middle row and column.

        Measured geodesically so that it holds for any CRS (UTM, Web Mercator, lon/lat); used to
        choose between 10, 20 and 60 m files. Only the part in the area of use is measured, over
        the pixels that part covers. A strip answers its whole image's resolution (``ground``).
        """
        if self.ground is not None:
            return self.ground
        across, down = self.ground_size()
        x0, y0, x1, y1 = self.bbox
        u0, v0, u1, v1 = self.usable_bbox()
        columns = self.width * (u1 - u0) / (x1 - x0)
        rows = self.height * (v1 - v0) / (y1 - y0)
        return max(min(across / columns, down / rows), 1e-6)

    def ground_size(self) -> tuple[float, float]:
        """Geodesic length in metres of the middle row and middle column of ``usable_bbox``."""
        x0, y0, x1, y1 = self.usable_bbox()
        xm, ym = (x0 + x1) / 2, (y0 + y1) / 2
        # Measured in _GROUND_STEPS pieces: one geodesic between the ends of a row that spans the
        # globe (a zoom-0 tile, a world map) is a few metres or zero, not 40,000 km.
        steps = [i / _GROUND_STEPS for i in range(_GROUND_STEPS + 1)]
        xs = [x0 + (x1 - x0) * t for t in steps] + [xm] * len(steps)
        ys = [ym] * len(steps) + [y0 + (y1 - y0) * t for t in steps]
        lons, lats = warp_transform(self.crs, "EPSG:4326", xs, ys)
        n = len(steps)
        across = _GEOD.line_length(lons[:n], lats[:n])
        down = _GEOD.line_length(lons[n:], lats[n:])
        return abs(across), abs(down)


@dataclass(frozen=True, slots=True)
class RenderRequest:
    """What every protocol produces: one image of one layer on one grid."""

    layer: str
    grid: Grid
    format: ImageFormat
    time: TimeRange | None = None
    maxcc: float | None = None
    priority: Priority | None = None
    # An EVALSCRIPT sent with the request, compiled for this layer (replaces the layer's script).
    script: Any = None
    # Keep only these output bands (0-based), e.g. a WCS RANGESUBSET.
    bands: tuple[int, ...] | None = None
    # GeoTIFF as data (WCS): no alpha band, no-data in an internal mask or NaN.
    coverage: bool = False
    # Resampling for continuous bands (WCS INTERPOLATION); ``None`` is the layer's own.
    resampling: str | None = None
    # A GeoJSON geometry in the grid's CRS (canonical JSON text, so the request stays hashable):
    # pixels whose centre lies outside it are no data (the Process API's ``input.bounds.geometry``).
    clip: str | None = None


@dataclass(slots=True)
class RenderResult:
    """Encoded image plus what a response needs to describe it."""

    content: bytes
    media_type: str
    scenes: list[str]
    timings: dict[str, float]  # stage -> milliseconds
    empty: bool = False
    cache: str | None = None  # "HIT" (from the tile cache) or "MISS"; None when not cacheable
    max_age: int | None = None  # Cache-Control max-age in seconds (0: not storable)
    failed: list[str] = field(default_factory=list)  # scenes that could not be read
    skipped: list[str] = field(default_factory=list)  # scenes left out: the time budget was spent
    etag: str = ""  # the strong ETag, when known without hashing the content again
    notice: str = ""  # a note for the client (X-Eotiler-Notice), e.g. why nothing is drawn
