"""One circuit breaker per object store a layer reads from (remote data roots only).

Why per store and not per layer: layers of one collection (and collections on one bucket) share
the store's health; a store that keeps failing is rested for all of them at once.
"""

from __future__ import annotations

import threading

from server.settings import Settings
from server.upstream_breaker import CircuitBreaker


class StoreBreakers:
    """Breakers by data root, created on first use with the settings' thresholds."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._breakers: dict[str, CircuitBreaker] = {}
        self._lock = threading.Lock()

    def for_root(self, root: str) -> CircuitBreaker | None:
        """The breaker of ``root``; ``None`` for local folders (nothing to rest)."""
        if not root.startswith("/vsi"):
            return None
        with self._lock:
            found = self._breakers.get(root)
            if found is None:
                found = CircuitBreaker(
                    f"data store {root}",
                    self.settings.breaker_threshold,
                    self.settings.breaker_cooldown,
                    self.settings.breaker_max_cooldown,
                )
                self._breakers[root] = found
            return found

    def all(self) -> list[CircuitBreaker]:
        """Every breaker made so far."""
        with self._lock:
            return list(self._breakers.values())
