"""Refuse oversized requests before any routing, parsing or allocation: URL length and body size.

Why a middleware of its own: every endpoint takes its parameters from the query string (an
EVALSCRIPT can make it long) and none takes a body, so both bounds are checked once, here, in
microseconds. A too-long URL is a 414 and a too-large body a 413: JSON for the REST API, an OWS
exception report under ``/ogc``.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.errors import EotilerError, RequestTooLarge

# The OGC layer sits above this one: ``create_app`` hands in how an OGC path reports an error.
OgcReport = Callable[[EotilerError], Response]


class RequestLimitsMiddleware:
    """414 beyond ``max_url_bytes`` of path + query, 413 beyond ``max_body_bytes`` of body."""

    def __init__(self, app: ASGIApp, max_url_bytes: int, max_body_bytes: int, ogc_report: OgcReport) -> None:
        self.app = app
        self.max_url_bytes = max_url_bytes
        self.max_body_bytes = max_body_bytes
        self.ogc_report = ogc_report

    def _refusal(self, scope: Scope, error: RequestTooLarge) -> Response:
        if scope["path"].startswith("/ogc"):
            return self.ogc_report(error)
        return JSONResponse({"detail": error.public_message, "parameter": error.parameter}, status_code=error.status)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:  # noqa: D102
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        url_bytes = len(scope.get("raw_path") or scope["path"].encode()) + len(scope.get("query_string", b""))
        if url_bytes > self.max_url_bytes:
            error = RequestTooLarge(f"the URL is longer than {self.max_url_bytes} bytes", status=414)
            await self._refusal(scope, error)(scope, receive, send)
            return
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body_bytes):
            error = RequestTooLarge(f"the request body is larger than {self.max_body_bytes} bytes", status=413)
            await self._refusal(scope, error)(scope, receive, send)
            return
        received = 0

        async def bounded_receive() -> Message:  # chunked bodies carry no Content-Length
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    return {"type": "http.disconnect"}
            return message

        await self.app(scope, bounded_receive, send)
