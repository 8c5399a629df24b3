"""Which representation a request wants: ``f`` first, then the ``Accept`` header.

Why not 406 on an ``Accept`` nothing matches: clients send ``*/*`` or long browser lists; the
resource's default representation serves them. An explicit ``f`` that is not offered is an error
(400, naming ``f``), like every other bad parameter.
"""

from __future__ import annotations

from fastapi import Request

from server.errors import InvalidFormat

# ``f`` values and the media types they stand for.
F_VALUES = {
    "json": "application/json",
    "html": "text/html",
    "png": "image/png",
    "jpeg": "image/jpeg",
    "jpg": "image/jpeg",
    "webp": "image/webp",
    "tiff": "image/tiff",
    "tif": "image/tiff",
    "geotiff": "image/tiff",
}
F_NAMES = {
    "application/json": "json",
    "text/html": "html",
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/webp": "webp",
    "image/tiff": "tiff",
}


def _accepted(header: str) -> list[tuple[float, str]]:
    """Media ranges of an ``Accept`` header with their q-values, best first (stable for ties)."""
    ranges = []
    for position, part in enumerate(header.split(",")):
        pieces = [p.strip() for p in part.split(";")]
        media = pieces[0].lower()
        if not media:
            continue
        quality = 1.0
        for param in pieces[1:]:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        ranges.append((-quality, position, media))
    return [(-q, media) for q, _, media in sorted(ranges) if q < 0]


def negotiate(request: Request, offered: tuple[str, ...]) -> str:
    """The media type to answer with, among ``offered`` (the first one is the default)."""
    f = request.query_params.get("f")
    if f is not None:
        wanted = F_VALUES.get(f.strip().lower())
        if wanted not in offered:
            names = ", ".join(dict.fromkeys(F_NAMES[m] for m in offered))
            raise InvalidFormat(f"f must be one of {names}", parameter="f")
        return wanted
    for _, media in _accepted(request.headers.get("accept", "")):
        if media in offered:
            return media
        if media in ("application/geo+json", "application/schema+json") and "application/json" in offered:
            return "application/json"
        if media == "*/*" or (media.endswith("/*") and any(m.startswith(media[:-1]) for m in offered)):
            return next((m for m in offered if media == "*/*" or m.startswith(media[:-1])), offered[0])
    return offered[0]
