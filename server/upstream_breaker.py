"""Circuit breakers per upstream (an S3 endpoint + bucket, a STAC API): stop hammering a failing one.

Why: when the bucket or the catalogue is down, every tile request would otherwise spend its
full timeout and retries on it, multiplying the load on a service that is already struggling
and keeping render slots busy. After ``threshold`` consecutive failed requests the breaker
opens: requests fail at once with a 503 and ``Retry-After``. After a short first ``cooldown``
(a few seconds, so that a recovered store shows quickly) it is half-open: one request goes
through as a probe while the others are still refused. The probe's success closes the breaker;
its failure reopens it for twice the previous cooldown, up to ``max_cooldown``, so a store that
stays down is probed ever more rarely.
"""

from __future__ import annotations

import logging
import math
import threading
import time

from server.errors import UpstreamCircuitOpen

log = logging.getLogger(__name__)


class CircuitBreaker:
    """Counts consecutive failures of one upstream; closed, open, or half-open with one probe."""

    def __init__(self, name: str, threshold: int = 5, cooldown: float = 2.0, max_cooldown: float = 60.0) -> None:
        self.name = name
        self.threshold = threshold
        self.cooldown = cooldown
        self.max_cooldown = max(max_cooldown, cooldown)
        self._failures = 0
        self._opened_at: float | None = None  # None: closed
        self._resting = cooldown  # the current cooldown: doubles while probes fail
        self._probe_at: float | None = None  # when the half-open probe was let through
        self._lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        """True while requests are refused (open, or half-open with a probe under way)."""
        with self._lock:
            return self._refusal(time.monotonic()) > 0

    def _refusal(self, now: float) -> float:
        """Seconds until a request may go through (0: now); call with the lock held."""
        if self._opened_at is None:
            return 0.0
        left = self._resting - (now - self._opened_at)
        if left > 0:
            return left
        if self._probe_at is not None:
            # A probe that never reports (its request ended without reaching the store) gives
            # way to another one after a cooldown.
            return max(0.0, self._resting - (now - self._probe_at))
        return 0.0

    def check(self) -> None:
        """Raise ``UpstreamCircuitOpen`` while the breaker refuses; half-open, let one probe through."""
        with self._lock:
            now = time.monotonic()
            left = self._refusal(now)
            if left <= 0:
                if self._opened_at is not None:
                    self._probe_at = now  # this request is the probe
                return
        raise UpstreamCircuitOpen(
            f"the {self.name} failed repeatedly and is left alone for {math.ceil(left)} s",
            retry_after=max(1, math.ceil(left)),
        )

    def success(self) -> None:
        """A request got through: close, and start again from the first cooldown."""
        with self._lock:
            if self._opened_at is not None:
                log.warning("circuit for %s closed: the upstream answers again", self.name)
            self._failures = 0
            self._opened_at = None
            self._probe_at = None
            self._resting = self.cooldown

    def failure(self) -> None:
        """A request failed because of the upstream: open after ``threshold`` in a row.

        A failed probe reopens the breaker for twice the previous cooldown (at most
        ``max_cooldown``); a failure reported by a request that started before the breaker
        opened only restarts the current cooldown.
        """
        with self._lock:
            self._failures += 1
            now = time.monotonic()
            if self._opened_at is not None:
                if self._probe_at is not None:
                    self._resting = min(self._resting * 2, self.max_cooldown)
                    log.warning("circuit for %s: probe failed, next in %.0f s", self.name, self._resting)
                self._opened_at, self._probe_at = now, None
            elif self._failures >= self.threshold:
                log.warning("circuit for %s opened after %d failures", self.name, self._failures)
                self._opened_at = now
