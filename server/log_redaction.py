"""Keep credentials out of every log line, whoever writes it.

Why a filter on top of never logging secrets ourselves: error texts we pass on come from GDAL
and from S3 servers, and a real S3 ``InvalidAccessKeyId`` error carries the key id in its XML.
The filter sits on the handlers (root and uvicorn's), so it sees records from every logger.
"""

from __future__ import annotations

import logging

_LOGGERS = ("", "uvicorn", "uvicorn.error", "uvicorn.access", "eotiler.access")


class RedactSecrets(logging.Filter):
    """Replace each secret in a record's final message with ``***``."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if len(s) >= 4]  # a 1-3 character "secret" would mangle everything

    def filter(self, record: logging.LogRecord) -> bool:  # noqa: D102 - logging's contract
        message = record.getMessage()
        if any(secret in message for secret in self.secrets):
            for secret in self.secrets:
                message = message.replace(secret, "***")
            record.msg, record.args = message, ()
        if record.exc_info and record.exc_text is None:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text and any(secret in record.exc_text for secret in self.secrets):
            for secret in self.secrets:
                record.exc_text = record.exc_text.replace(secret, "***")
        return True


def install(secrets: list[str]) -> None:
    """Attach the filter to the handlers of the root and uvicorn loggers (idempotent)."""
    if not any(len(s) >= 4 for s in secrets):
        return
    for name in _LOGGERS:
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, RedactSecrets) for f in handler.filters):
                handler.addFilter(RedactSecrets(secrets))
