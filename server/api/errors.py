"""Error handlers of the REST API: one JSON shape, never a traceback.

Body: ``{"detail": <public message>, "parameter": <name or null>}``. Unexpected exceptions are
logged with a traceback and answered with a generic 500 that reveals nothing.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from server.errors import EotilerError

log = logging.getLogger(__name__)


def _request_id(request: Request) -> str:
    """The id the observability middleware gave this request (log lines carry it)."""
    return str(request.scope.get("state", {}).get("request_id", "-"))


def _eotiler_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, EotilerError)
    if exc.status >= 500:
        log.error("%s %s failed [%s]: %s", request.method, request.url.path, _request_id(request), exc)
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
    return JSONResponse(
        {"detail": exc.public_message, "parameter": exc.parameter}, status_code=exc.status, headers=headers
    )


def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    parameter = str(first.get("loc", ["", "request"])[-1])
    return JSONResponse(
        {"detail": f"{parameter}: {first.get('msg', 'invalid value')}", "parameter": parameter}, status_code=400
    )


def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s [%s]", request.method, request.url.path, _request_id(request))
    return JSONResponse({"detail": "internal error", "parameter": None}, status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers on ``app``."""
    app.add_exception_handler(EotilerError, _eotiler_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
