"""Parsing of REST parameters into typed values, raising errors that name the parameter.

Why not FastAPI's int/float path types: their 422 bodies differ from every other error, and the
bad-input contract is one shape (``{"detail": ..., "parameter": ...}``, status 400/404).
"""

from __future__ import annotations

import re

from fastapi import Request

from server.errors import InvalidParameter
from server.models import ImageFormat, Priority, TimeRange, parse_maxcc, parse_priority, parse_time

_TILE_Y = re.compile(r"^(?P<y>-?[0-9]{1,10})(?:@(?P<scale>[0-9]{1,2})x)?\.(?P<ext>[A-Za-z]{3,4})$")


def query_params(request: Request) -> dict[str, str]:
    """Query parameters by lower-cased name; one given twice with different values is ambiguous: 400."""
    found: dict[str, str] = {}
    for key, value in request.query_params.multi_items():
        name = key.lower()
        if name in found and found[name] != value:
            raise InvalidParameter(f"{name} is given twice with different values", parameter=name)
        found[name] = value
    return found


def parse_int(value: str, parameter: str, low: int, high: int) -> int:
    """An integer in [low, high]."""
    if not re.fullmatch(r"-?[0-9]{1,10}", value or ""):  # ASCII digits only: \d also takes "１"
        raise InvalidParameter(f"{parameter} must be an integer", parameter=parameter)
    number = int(value)
    if not low <= number <= high:
        raise InvalidParameter(f"{parameter} must be between {low} and {high}", parameter=parameter)
    return number


def parse_tile_name(name: str, max_scale: int) -> tuple[str, int, ImageFormat]:
    """Split ``12.png`` / ``12@2x.webp`` into the y index text, the scale and the format."""
    match = _TILE_Y.match(name)
    if not match:
        raise InvalidParameter("y must look like '<row>.<png|jpg|webp|tif>' or '<row>@2x.png'", parameter="y")
    fmt = ImageFormat.from_extension(match["ext"], parameter="format")
    scale = int(match["scale"] or 1)
    if not 1 <= scale <= max_scale:
        raise InvalidParameter(f"scale must be between 1 and {max_scale}", parameter="scale")
    return match["y"], scale, fmt


class RenderOptions:
    """The query parameters shared by image endpoints: time, maxcc, priority, evalscript (base64)."""

    def __init__(
        self, time: TimeRange | None, maxcc: float | None, priority: Priority | None, evalscript: str | None = None
    ) -> None:
        self.time = time
        self.maxcc = maxcc
        self.priority = priority
        self.evalscript = evalscript

    @classmethod
    def from_request(cls, request: Request) -> RenderOptions:
        """Read ``time``, ``maxcc`` and ``priority`` (any case) from the query string."""
        query = query_params(request)
        return cls(
            time=parse_time(query.get("time"), "time"),
            maxcc=parse_maxcc(query.get("maxcc"), "maxcc"),
            priority=parse_priority(query.get("priority"), "priority"),
            evalscript=query.get("evalscript"),
        )
