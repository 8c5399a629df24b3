"""The one parser of each request parameter every image protocol shares: TIME, MAXCC, PRIORITY,
EVALSCRIPT, FORMAT and image sizes (XYZ, WMS, WMTS and WCS all read them here).

Why not FastAPI's int/float path types: their 422 bodies differ from every other error, and the
bad-input contract is one shape (``{"detail": ..., "parameter": ...}``, status 400/404). Errors
name the parameter as the protocol spells it (``time`` in the REST API, ``TIME`` in OGC KVP).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from fastapi import Request

from server.errors import EotilerError, InvalidFormat, InvalidParameter
from server.models import ImageFormat, Priority, TimeRange, parse_maxcc, parse_priority, parse_time

if TYPE_CHECKING:
    from server.catalog.layers import Layer
    from server.evalscript.contract import Evalscript

_FORMAT_ALIASES = {"image/jpg": "image/jpeg", "image/geotiff": "image/tiff", "image/tif": "image/tiff"}

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


def parse_size(value: str, parameter: str, limit: int) -> int:
    """An image side in pixels: 1 to ``limit`` (``max_image_size``); WIDTH, HEIGHT, SCALESIZE."""
    return parse_int(value.strip(), parameter, 1, limit)


def parse_format(value: str, parameter: str = "FORMAT") -> ImageFormat:
    """A media type or extension (``image/png``, ``image/png; mode=8bit``, ``png``, ``image/jpg``)
    -> ImageFormat; which of them a layer can produce is ``render.formats``' rule."""
    base = value.split(";")[0].strip().lower()
    base = _FORMAT_ALIASES.get(base, base)
    for fmt in ImageFormat:
        if fmt.value == base:
            return fmt
    try:
        return ImageFormat.from_extension(base.split("/")[-1], parameter)
    except EotilerError:
        raise InvalidFormat(f"{parameter} '{value[:40]}' is not supported", parameter=parameter) from None


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
    """The query parameters shared by image endpoints: time, maxcc, priority, evalscript (base64).

    Parsed once per request, by ``from_request`` (REST, lower-case names) or ``from_kvp`` (OGC,
    upper-case names); the EVALSCRIPT stays text until ``script`` compiles it for a layer.
    """

    def __init__(
        self, time: TimeRange | None, maxcc: float | None, priority: Priority | None, evalscript: str | None = None
    ) -> None:
        self.time = time
        self.maxcc = maxcc
        self.priority = priority
        self.evalscript = evalscript

    @classmethod
    def parse(
        cls, get: Callable[[str], str | None], upper: bool = False, no_time: tuple[str, ...] = ()
    ) -> RenderOptions:
        """Read the four parameters through ``get`` (a query lookup by name); ``upper`` names
        them as OGC does (``TIME``) in errors, else as the REST API does (``time``). TIME values
        in ``no_time`` (lower case) mean no TIME, e.g. WMTS's ``default``."""

        def name(text: str) -> str:
            return text.upper() if upper else text

        time = get(name("time"))
        if time is not None and time.strip().lower() in no_time:
            time = None
        return cls(
            time=parse_time(time, name("time")),
            maxcc=parse_maxcc(get(name("maxcc")), name("maxcc")),
            priority=parse_priority(get(name("priority")), name("priority")),
            evalscript=get(name("evalscript")),
        )

    @classmethod
    def from_request(cls, request: Request) -> RenderOptions:
        """Read ``time``, ``maxcc``, ``priority`` and ``evalscript`` (any case) from the query string."""
        return cls.parse(query_params(request).get)

    @classmethod
    def from_kvp(cls, get: Callable[[str], str | None], no_time: tuple[str, ...] = ()) -> RenderOptions:
        """Read ``TIME``, ``MAXCC``, ``PRIORITY`` and ``EVALSCRIPT`` from OGC KVP (``KVP.get``)."""
        return cls.parse(get, upper=True, no_time=no_time)

    def script(self, layer: Layer, parameter: str = "EVALSCRIPT") -> Evalscript | None:
        """The request's EVALSCRIPT compiled for ``layer`` (``None`` when absent).

        May run V8 (a JavaScript script's ``setup()``): call it off the event loop.
        """
        return layer.request_script(self.evalscript, parameter)
