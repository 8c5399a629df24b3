"""AWS Signature Version 4 for the S3 gateway's GET and HEAD requests.

Why our own: the gateway re-signs what GDAL asks for with the server's credentials, and the
only signing library at hand (botocore) is a heavy dependency for about forty lines of HMAC.
Payloads are never signed (``UNSIGNED-PAYLOAD``, as S3 allows for reads).
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from urllib.parse import quote

UNSIGNED = "UNSIGNED-PAYLOAD"


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def sign_headers(
    method: str,
    host: str,
    path: str,
    access_key: str,
    secret_key: str,
    region: str,
    now: datetime | None = None,
) -> dict[str, str]:
    """The ``Authorization`` and ``x-amz-*`` headers for an S3 request to ``host`` + ``path``.

    ``path`` is the decoded object path (``/bucket/key``); it is URI-encoded here as S3 expects
    (every byte but unreserved characters and ``/``). No query string.
    """
    now = now or datetime.now(UTC)
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    day = stamp[:8]
    canonical_headers = f"host:{host}\nx-amz-content-sha256:{UNSIGNED}\nx-amz-date:{stamp}\n"
    signed = "host;x-amz-content-sha256;x-amz-date"
    canonical = "\n".join([method, quote(path, safe="/~"), "", canonical_headers, signed, UNSIGNED])
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(_hmac(_hmac(_hmac(f"AWS4{secret_key}".encode(), day), region), "s3"), "aws4_request")
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    authorization = f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={signed}, Signature={signature}"
    return {"x-amz-date": stamp, "x-amz-content-sha256": UNSIGNED, "authorization": authorization}
