"""CRS codes the OGC services accept, and their axis order.

Advertised by default: EPSG:3857, EPSG:4326, CRS:84, EPSG:3035 and every WGS84 UTM zone
(EPSG:32601-32660, 32701-32760). WMS 1.3.0 uses the CRS's own axis order, so EPSG:4326 (and any
geographic EPSG CRS) takes BBOX as lat/lon; CRS:84 and WMS 1.1.1 are always x/y.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache

import pyproj
from rasterio.crs import CRS
from rasterio.errors import CRSError

from server.errors import InvalidCRS, InvalidParameter

DEFAULT_CRS = (
    ["EPSG:3857", "EPSG:4326", "CRS:84", "EPSG:3035"]
    + [f"EPSG:{326 * 100 + zone}" for zone in range(1, 61)]
    + [f"EPSG:{327 * 100 + zone}" for zone in range(1, 61)]
)
_URN = re.compile(r"^urn:ogc:def:crs:EPSG:[^:]*:(\d+)$", re.IGNORECASE | re.ASCII)
_HTTP = re.compile(r"^https?://www\.opengis\.net/def/crs/EPSG/0/(\d+)$", re.IGNORECASE | re.ASCII)
_CRS84 = ("CRS:84", "OGC:CRS84", "URN:OGC:DEF:CRS:OGC:1.3:CRS84", "HTTP://WWW.OPENGIS.NET/DEF/CRS/OGC/1.3/CRS84")


def normalise_code(text: str) -> str:
    """``EPSG:4326``, ``urn:ogc:def:crs:EPSG::4326`` and the http form -> ``EPSG:4326``; CRS84 -> ``CRS:84``."""
    text = text.strip()
    if text.upper() in _CRS84:
        return "CRS:84"
    for pattern in (_URN, _HTTP):
        match = pattern.match(text)
        if match:
            return f"EPSG:{match.group(1)}"
    if text.upper() == "EPSG:900913":  # the old Google alias of web mercator
        return "EPSG:3857"
    if text.upper().startswith("EPSG:"):
        return "EPSG:" + text[5:]
    return text


@lru_cache(maxsize=256)
def to_crs(code: str) -> CRS:
    """A rasterio CRS for a normalised code."""
    return CRS.from_user_input("OGC:CRS84" if code == "CRS:84" else code)


def parse_crs(text: str, allowed: tuple[str, ...], parameter: str, version: str = "1.3.0") -> tuple[str, CRS]:
    """Check ``text`` is an advertised CRS; return its normalised code and CRS."""
    code = normalise_code(text)
    if code not in allowed:
        error = InvalidCRS(f"{parameter} '{text[:60]}' is not supported by this layer", parameter=parameter)
        if version == "1.1.1":
            error.ogc_code = "InvalidSRS"
        raise error
    try:
        return code, to_crs(code)
    except CRSError:
        raise InvalidCRS(f"{parameter} '{text[:60]}' is not a known CRS", parameter=parameter) from None


@lru_cache(maxsize=256)
def is_northing_first(code: str) -> bool:
    """True when the CRS's first axis is north/south (EPSG:4326, EPSG:3035 in its EPSG definition)."""
    if code == "CRS:84":
        return False
    axes = pyproj.CRS.from_user_input(code).axis_info
    return bool(axes) and axes[0].direction.lower() in ("north", "south")


def parse_bbox(text: str, parameter: str = "BBOX") -> tuple[float, float, float, float]:
    """Four finite numbers with min < max on both axes (in the order given)."""
    parts = text.split(",")
    if len(parts) != 4:
        raise InvalidParameter(f"{parameter} must be minx,miny,maxx,maxy", parameter=parameter)
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise InvalidParameter(f"{parameter} must contain 4 numbers", parameter=parameter) from None
    if not all(math.isfinite(v) for v in values):
        raise InvalidParameter(f"{parameter} must contain finite numbers", parameter=parameter)
    a, b, c, d = values
    if not (a < c and b < d):
        raise InvalidParameter(f"{parameter} minimum must be smaller than maximum on both axes", parameter=parameter)
    return a, b, c, d
