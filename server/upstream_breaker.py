"""Circuit breakers per upstream (an S3 endpoint + bucket, a STAC API): stop hammering a failing one.

Why: when the bucket or the catalogue is down, every tile request would otherwise spend its
full timeout and retries on it, multiplying the load on a service that is already struggling
and keeping render slots busy. After ``threshold`` consecutive failed requests the breaker
opens: requests fail at once with a 503 and ``Retry-After`` for ``cooldown`` seconds. Then it
lets requests through again (half-open); the first success closes it, a failure reopens it.
"""

from __future__ import annotations

import logging
import math
import threading
import time

from server.errors import UpstreamCircuitOpen

log = logging.getLogger(__name__)


class CircuitBreaker:
    """Counts consecutive failures of one upstream."""

    def __init__(self, name: str, threshold: int = 5, cooldown: float = 30.0) -> None:
        self.name = name
        self.threshold = threshold
        self.cooldown = cooldown
        self._failures = 0
        self._opened_at: float | None = None
        self._lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        """True while requests are refused."""
        with self._lock:
            return self._opened_at is not None and time.monotonic() - self._opened_at < self.cooldown

    def check(self) -> None:
        """Raise ``UpstreamCircuitOpen`` while the breaker is open."""
        with self._lock:
            if self._opened_at is None:
                return
            left = self.cooldown - (time.monotonic() - self._opened_at)
        if left > 0:
            raise UpstreamCircuitOpen(
                f"the {self.name} failed repeatedly and is left alone for {math.ceil(left)} s",
                retry_after=math.ceil(left),
            )

    def success(self) -> None:
        """A request got through: close."""
        with self._lock:
            if self._opened_at is not None:
                log.warning("circuit for %s closed: the upstream answers again", self.name)
            self._failures = 0
            self._opened_at = None

    def failure(self) -> None:
        """A request failed because of the upstream: open after ``threshold`` in a row (or at once when half-open)."""
        with self._lock:
            self._failures += 1
            half_open = self._opened_at is not None
            if half_open or self._failures >= self.threshold:
                if not half_open:
                    log.warning("circuit for %s opened after %d failures", self.name, self._failures)
                self._opened_at = time.monotonic()
