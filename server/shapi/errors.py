"""Errors of the ``/api/v1`` endpoints in Sentinel Hub's shape.

Why a shape of its own: sentinelhub-py and other Sentinel Hub clients read ``error.message`` and
``error.code`` from a failed call. The body also carries the project's ``detail`` and
``parameter`` keys, so one check covers every JSON endpoint of the server.
"""

from __future__ import annotations

import logging
from http import HTTPStatus

from fastapi import Request
from fastapi.responses import JSONResponse

from server.errors import EotilerError

log = logging.getLogger(__name__)

_CODES = {
    400: "COMMON_BAD_PAYLOAD",
    401: "COMMON_UNAUTHORIZED",
    403: "COMMON_INSUFFICIENT_PERMISSIONS",
    404: "COMMON_NOT_FOUND",
    405: "COMMON_METHOD_NOT_ALLOWED",
    413: "COMMON_PAYLOAD_TOO_LARGE",
    429: "COMMON_RATE_LIMIT_EXCEEDED",
}


class ShApiError(EotilerError):
    """A refused ``/api/v1`` request with the HTTP status it is answered with."""

    def __init__(self, status: int, message: str, *, parameter: str | None = None) -> None:
        super().__init__(message, parameter=parameter)
        self.status = status


def sh_error_body(status: int, message: str, parameter: str | None) -> dict:
    """``{"error": {status, reason, message, code}, "detail", "parameter"}``."""
    reason = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    code = _CODES.get(status, "COMMON_EXCEPTION" if status >= 500 else "COMMON_BAD_PAYLOAD")
    return {
        "error": {"status": status, "reason": reason, "message": message, "code": code},
        "detail": message,
        "parameter": parameter,
    }


def sh_error_response(error: EotilerError, headers: dict[str, str] | None = None) -> JSONResponse:
    """The response for ``error`` (its status, its public message, Retry-After when it has one)."""
    extra = dict(headers or {})
    if error.retry_after is not None:
        extra["Retry-After"] = str(error.retry_after)
    body = sh_error_body(error.status, error.public_message, error.parameter)
    return JSONResponse(body, status_code=error.status, headers=extra or None)


def unexpected_error(request: Request) -> JSONResponse:
    """A bug: logged with its traceback (the caller is in an ``except``), answered without details."""
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse(sh_error_body(500, "internal error", None), status_code=500)
