"""Value types shared by every layer: time ranges, formats, scenes, render requests and results.

Why here: protocols (XYZ, WMS, WMTS, WCS) all translate their parameters into a ``RenderRequest``
and read a ``RenderResult``; keeping these types free of I/O lets every layer import them.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from typing import Any

from pyproj import Geod
from rasterio.crs import CRS
from rasterio.warp import transform as warp_transform
from rasterio.warp import transform_bounds

from server.errors import InvalidFormat, InvalidParameter, InvalidTime

_GEOD = Geod(ellps="WGS84")


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


@lru_cache(maxsize=4096)
def _bbox_wgs84(bbox: tuple[float, float, float, float], crs_wkt: str) -> tuple[float, float, float, float]:
    crs = _crs_from_wkt(crs_wkt)
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

    def bbox_wgs84(self) -> tuple[float, float, float, float]:
        """The grid's bounds in lon/lat, densified so curved edges are covered (memoised: every
        request, cached or not, asks the catalogue with it)."""
        return _bbox_wgs84(self.bbox, self.crs_wkt or self.crs.to_wkt())

    def ground_resolution(self) -> float:
        """Metres per pixel on the ground along the grid's middle row and column.

        Measured geodesically so that it holds for any CRS (UTM, Web Mercator, lon/lat); used to
        choose between 10, 20 and 60 m files.
        """
        across, down = self.ground_size()
        return max(min(across / self.width, down / self.height), 1e-6)

    def ground_size(self) -> tuple[float, float]:
        """Geodesic length in metres of the bbox's middle row and middle column."""
        x0, y0, x1, y1 = self.bbox
        xm, ym = (x0 + x1) / 2, (y0 + y1) / 2
        lons, lats = warp_transform(self.crs, "EPSG:4326", [x0, x1, xm, xm], [ym, ym, y0, y1])
        _, _, across = _GEOD.inv(lons[0], lats[0], lons[1], lats[1])
        _, _, down = _GEOD.inv(lons[2], lats[2], lons[3], lats[3])
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
