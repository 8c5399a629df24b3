"""Conditional requests and CORS for every endpoint.

Why a middleware: images come from XYZ, WMS, WMTS and WCS handlers alike; answering
``If-None-Match`` in one place means no handler can forget it. The ETag itself is set by
``server.api.tiles.image_response``. CORS is open (``*``) because the services are public maps
that web pages on other origins embed; credentials are never involved.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

EXPOSED_HEADERS = [
    "ETag",
    "X-Cache",
    "X-Eotiler-Scenes",
    "X-Eotiler-Failed-Scenes",
    "X-Eotiler-Skipped-Scenes",
    "X-Eotiler-Notice",
    "Server-Timing",
    "Content-Disposition",
    "X-Request-ID",
]


def _matches(if_none_match: str, etag: str) -> bool:
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in tags or etag in tags


class ConditionalGetMiddleware:
    """Pure ASGI (no per-request task or body buffering): turns a 200 whose ETag matches the
    request's ``If-None-Match`` into an empty 304 with the validators."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:  # noqa: D102
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        condition = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"if-none-match"), None)
        if condition is None:
            await self.app(scope, receive, send)
            return
        replaced = False

        async def send_conditional(message: Message) -> None:
            nonlocal replaced
            if message["type"] == "http.response.start" and message["status"] == 200:
                headers = {k.lower(): v for k, v in message.get("headers", [])}
                etag = headers.get(b"etag")
                if etag and _matches(condition, etag.decode("latin-1")):
                    replaced = True
                    keep = [(k, v) for k, v in message["headers"] if k.lower() in _VALIDATORS]
                    await send({"type": "http.response.start", "status": 304, "headers": keep})
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                    return
            if replaced:
                return  # drop the original body
            await send(message)

        await self.app(scope, receive, send_conditional)


_VALIDATORS = (b"etag", b"cache-control", b"x-cache", b"access-control-allow-origin", b"vary")


def install_http_caching(app: FastAPI) -> None:
    """304 for a matching ``If-None-Match`` on GET/HEAD, and CORS headers."""
    app.add_middleware(ConditionalGetMiddleware)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=["*"],
        allow_methods=["GET", "HEAD", "OPTIONS"],
        allow_headers=["*"],
        expose_headers=EXPOSED_HEADERS,
        max_age=3600,
    )
