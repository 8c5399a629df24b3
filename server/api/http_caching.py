"""Conditional requests and CORS for every endpoint.

Why a middleware: images come from XYZ, WMS, WMTS and WCS handlers alike; answering
``If-None-Match`` in one place means no handler can forget it. The ETag itself is set by
``server.api.tiles.image_response``. CORS is open (``*``) because the services are public maps
that web pages on other origins embed; credentials are never involved.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware

EXPOSED_HEADERS = ["ETag", "X-Cache", "X-Eotiler-Scenes", "Server-Timing", "Content-Disposition"]


def _matches(if_none_match: str, etag: str) -> bool:
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in tags or etag in tags


def install_http_caching(app: FastAPI) -> None:
    """304 for a matching ``If-None-Match`` on GET/HEAD, and CORS headers."""

    @app.middleware("http")
    async def conditional(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        etag = response.headers.get("etag")
        condition = request.headers.get("if-none-match")
        if etag and condition and request.method in ("GET", "HEAD") and response.status_code == 200:
            if _matches(condition, etag):
                keep = {k: v for k, v in response.headers.items() if k.lower() in ("etag", "cache-control", "x-cache")}
                return Response(status_code=304, headers=keep)
        return response

    app.add_middleware(
        CORSMiddleware,
        allow_origins=["*"],
        allow_methods=["GET", "HEAD", "OPTIONS"],
        allow_headers=["*"],
        expose_headers=EXPOSED_HEADERS,
        max_age=3600,
    )
