"""The circuit breaker probes a resting upstream after a short cooldown, backing off while it fails."""

from __future__ import annotations

import time

import pytest

from server.errors import UpstreamCircuitOpen
from server.upstream_breaker import CircuitBreaker


def refused_for(breaker: CircuitBreaker) -> int:
    """The Retry-After a refused request gets."""
    with pytest.raises(UpstreamCircuitOpen) as refused:
        breaker.check()
    return refused.value.retry_after


def test_half_open_probe_backs_off_while_it_fails_and_closes_on_success():
    breaker = CircuitBreaker("store", threshold=2, cooldown=1.0, max_cooldown=2.0)
    breaker.failure()
    breaker.check()  # one failure: still closed
    breaker.failure()
    assert breaker.is_open and refused_for(breaker) == 1
    time.sleep(1.05)
    breaker.check()  # half-open: this request is the probe
    assert refused_for(breaker) == 1  # the others wait for the probe's outcome
    breaker.failure()  # the probe failed: twice the rest
    assert refused_for(breaker) == 2
    time.sleep(2.05)
    breaker.check()
    breaker.failure()  # failed again: capped at max_cooldown
    assert refused_for(breaker) == 2
    time.sleep(2.05)
    breaker.check()
    breaker.success()  # the store answers: closed, and the next rest starts from the first cooldown
    assert not breaker.is_open
    breaker.check()
    breaker.failure()
    breaker.failure()
    assert refused_for(breaker) == 1


def test_a_probe_that_never_reports_gives_way_to_another():
    breaker = CircuitBreaker("store", threshold=1, cooldown=0.5)
    breaker.failure()
    time.sleep(0.55)
    breaker.check()  # a probe whose request ends without reaching the store
    assert breaker.is_open
    time.sleep(0.55)
    breaker.check()  # a new probe is let through
