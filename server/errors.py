"""The error hierarchy every layer raises, and how library exceptions map onto it.

Why one hierarchy: each protocol (REST JSON, WMS XML, ...) renders errors its own way, but what
went wrong, the HTTP status and the public message are decided once, here. ``public_message`` is
the only text a client ever sees; internal details (paths, URLs, tracebacks) go to the log.
"""

from __future__ import annotations

import re

# Characters XML 1.0 cannot carry (C0 controls but tab/LF/CR, surrogates, U+FFFE/U+FFFF). Messages
# quote request values, and OGC exception reports are XML: a form feed in a layer name must
# not turn an exception report into a 500.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def client_text(text: str) -> str:
    """``text`` with every character XML (and a terminal) cannot show replaced by U+FFFD."""
    return _NOT_XML.sub("\ufffd", text)


class EotilerError(Exception):
    """Base error: carries an HTTP status, an OGC exception code and a client-safe message."""

    status: int = 500
    ogc_code: str = "NoApplicableCode"
    retry_after: int | None = None  # seconds, sent as Retry-After when set

    def __init__(self, message: str, *, parameter: str | None = None) -> None:
        message = client_text(message)
        super().__init__(message)
        self.public_message = message
        self.parameter = parameter


class MissingParameter(EotilerError):
    """A required request parameter is absent."""

    status = 400
    ogc_code = "MissingParameterValue"


class InvalidParameter(EotilerError):
    """A request parameter is present but malformed or out of range."""

    status = 400
    ogc_code = "InvalidParameterValue"


class LayerNotDefined(EotilerError):
    """The requested layer is not in the configuration."""

    status = 404
    ogc_code = "LayerNotDefined"


class InvalidFormat(EotilerError):
    """The requested output format is unknown or not available for this layer."""

    status = 400
    ogc_code = "InvalidFormat"


class InvalidCRS(EotilerError):
    """The requested CRS or TileMatrixSet is unknown."""

    status = 400
    ogc_code = "InvalidCRS"


class TileOutOfRange(EotilerError):
    """Tile indices outside the tile matrix."""

    status = 404
    ogc_code = "TileOutOfRange"


class InvalidTime(EotilerError):
    """A TIME value that cannot be parsed."""

    status = 400
    ogc_code = "InvalidDimensionValue"


class EvalscriptError(EotilerError):
    """An evalscript failed or returned output that does not match its declaration."""

    status = 400
    ogc_code = "InvalidParameterValue"


class UpstreamUnavailable(EotilerError):
    """The data store or catalogue could not be read."""

    status = 502
    ogc_code = "NoApplicableCode"


class Overloaded(EotilerError):
    """Every render slot is busy and the waiting line is full: come back shortly."""

    status = 503
    ogc_code = "NoApplicableCode"
    retry_after = 2  # seconds, sent as Retry-After


class RequestTooLarge(EotilerError):
    """The URL (414) or the body (413) is beyond the server's bounds."""

    ogc_code = "NoApplicableCode"

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class UpstreamCircuitOpen(EotilerError):
    """An upstream failed repeatedly: it is left alone for a while instead of being hammered."""

    status = 503
    ogc_code = "NoApplicableCode"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UpstreamTimeout(UpstreamUnavailable):
    """The data store or catalogue did not answer in time (GDAL/HTTP timeouts)."""

    status = 504


class ConfigError(EotilerError):
    """The configuration is invalid; the message names the file, the key path and the problem."""

    status = 500


class StyleNotDefined(EotilerError):
    """A STYLES value that the layer does not offer."""

    status = 400
    ogc_code = "StyleNotDefined"


class OperationNotSupported(EotilerError):
    """An OGC REQUEST this server does not implement."""

    status = 400
    ogc_code = "OperationNotSupported"


class InvalidPoint(EotilerError):
    """GetFeatureInfo I/J (X/Y) outside the map."""

    status = 400
    ogc_code = "InvalidPoint"


class NotAuthenticated(EotilerError):
    """Clients are configured and the request names none (or a credential that is not valid)."""

    status = 401
    ogc_code = "NoApplicableCode"


class Forbidden(EotilerError):
    """The caller is known but may not use this layer, or may not send its own evalscript."""

    status = 403
    ogc_code = "NoApplicableCode"


class RateLimited(EotilerError):
    """The caller has used its request-rate limit: come back after ``retry_after`` seconds."""

    status = 429
    ogc_code = "NoApplicableCode"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after
