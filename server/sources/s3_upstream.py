"""What the S3 gateway gets from the object store, and how it waits after a 429/503.

Shared by the gateway's request path (``s3_gateway.py``) and its JPEG2000 serving
(``jp2_tlm_serving.py``), which both pass store answers on to GDAL as they are or in part.
"""

from __future__ import annotations

import email.utils
import time
from dataclasses import dataclass

RETRYABLE = {429, 503}
MAX_BACKOFF = 8.0


@dataclass(slots=True)
class Upstream:
    """One answer of the object store, body included (range reads are bounded)."""

    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def etag(self) -> str:
        """The object's ETag as the store gave it ('' when absent)."""
        return self.headers.get("etag", "")

    def total_size(self) -> int | None:
        """The object's size from Content-Range (206) or Content-Length (200)."""
        if "content-range" in self.headers:
            total = self.headers["content-range"].rsplit("/", 1)[-1]
            return int(total) if total.isdigit() else None
        length = self.headers.get("content-length")
        return int(length) if length and length.isdigit() else None


class PassedOn(Exception):
    """An upstream answer that is given to GDAL as it is (404, 403, 503 after retries, ...)."""

    def __init__(self, answer: Upstream) -> None:
        self.answer = answer


def retry_after(value: str | None, attempt: int) -> float:
    """Seconds to wait after a 429/503: the answer's ``Retry-After`` (seconds or a date), else backoff."""
    if value:
        if value.strip().isdigit():
            return min(float(value.strip()), 60.0)
        when = email.utils.parsedate_to_datetime(value) if "," in value else None
        if when is not None:
            return max(0.0, min(when.timestamp() - time.time(), 60.0))
    return min(0.25 * 2**attempt, MAX_BACKOFF)


def slice_answer(opening: Upstream, start: int, end: int | None) -> Upstream | None:
    """The part of an answer for bytes ``0..`` that a range ``start..end`` asks for, if it has it all."""
    total = opening.total_size()
    if opening.status != 206 or total is None:
        return None
    stop = min(total - 1, end if end is not None else total - 1)
    if start > stop or stop >= len(opening.body):
        return None
    headers = {**opening.headers, "content-range": f"bytes {start}-{stop}/{total}"}
    return Upstream(206, headers, opening.body[start : stop + 1])
