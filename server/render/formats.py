"""Which image formats a script's output can be encoded in: the one rule used both to advertise
formats (WMTS capabilities, the map APIs) and to accept them (``encode.check_format``)."""

from __future__ import annotations

from server.errors import InvalidFormat
from server.evalscript.contract import OutputSpec
from server.models import ImageFormat
from server.render.encode import check_format


def accepted_formats(output: OutputSpec) -> tuple[ImageFormat, ...]:
    """Every format ``check_format`` lets through for ``output``, in ``ImageFormat`` order."""
    found = []
    for fmt in ImageFormat:
        try:
            check_format(output, fmt)
        except InvalidFormat:
            continue
        found.append(fmt)
    return tuple(found)
