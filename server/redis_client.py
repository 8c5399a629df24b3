"""A Redis client for optional shared state: built on first use, rested after a failure.

The request-rate limits (``access/rate_limit.py``), the S3 quota (``sources/s3_governor.py``)
and the JPEG2000 tile-part index store (``sources/jp2_index_store.py``) share state across
processes and replicas through Redis when ``EOTILER_REDIS_URL`` is set, and each keeps working
alone without it. What they need from a client is the same: nothing imported or connected until
Redis is first used, and after a failure a rest (no client at all) so that every request does
not pay a connection timeout while Redis is down, with one warning per rest.
"""

from __future__ import annotations

import logging
import time
from typing import Any

log = logging.getLogger(__name__)

TIMEOUT_SECONDS = 1.0  # connecting and each command: Redis is a local, optional level


class RestedRedis:
    """One lazily built Redis client (``redis.asyncio`` or synchronous) that rests after a failure."""

    def __init__(self, url: str | None, *, rest_seconds: float, what: str, asynchronous: bool = True) -> None:
        """``what`` names the state in the warning (e.g. "S3 quota store, using local limits")."""
        self.url = url
        self.rest_seconds = rest_seconds
        self.what = what
        self.asynchronous = asynchronous
        self._client: Any = None
        self._resting_until = 0.0

    def client(self) -> Any | None:
        """The client; ``None`` when no URL is configured or during a rest after a failure."""
        if self.url is None or time.monotonic() < self._resting_until:
            return None
        if self._client is None:
            if self.asynchronous:
                import redis.asyncio as redis  # only servers with Redis configured need it
            else:
                import redis
            self._client = redis.Redis.from_url(
                self.url, socket_timeout=TIMEOUT_SECONDS, socket_connect_timeout=TIMEOUT_SECONDS
            )
        return self._client

    def failed(self, exc: Exception) -> None:
        """A command failed: no client for ``rest_seconds`` (callers use their local fallback)."""
        log.warning("%s unreachable for %g s: %s", self.what, self.rest_seconds, type(exc).__name__)
        self._resting_until = time.monotonic() + self.rest_seconds
