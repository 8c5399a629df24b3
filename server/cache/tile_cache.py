"""A two-level cache of rendered images: in-process LRU bounded in bytes, then shared Redis.

Why two levels: the memory level answers repeated tiles in microseconds inside one worker; the
Redis level is shared by every worker and replica and survives restarts. Redis is optional and
never required for serving: when it is down or slow, requests go on without it (the outage is
logged once, ``/healthz`` reports ``degraded``) and it is retried after a pause.
"""

from __future__ import annotations

import hashlib
import json
import logging
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import redis
from cachetools import LRUCache

log = logging.getLogger(__name__)
RETRY_AFTER_S = 5.0  # after a Redis failure, skip the shared level this long before trying again


@dataclass(slots=True)
class CachedImage:
    """What a cache entry holds: the encoded image and what its response headers need."""

    content: bytes
    media_type: str
    scenes: list[str]
    empty: bool = False
    etag: str = ""  # computed once when stored, not on every hit

    def pack(self) -> bytes:
        """Header length, JSON header, then the image bytes (no pickle: Redis may be shared)."""
        header = json.dumps({"m": self.media_type, "s": self.scenes, "e": self.empty, "t": self.etag}).encode()
        return struct.pack(">I", len(header)) + header + self.content

    @classmethod
    def unpack(cls, blob: bytes) -> CachedImage:
        """Inverse of ``pack`` (entries stored without an ETag get one on the way out)."""
        (size,) = struct.unpack(">I", blob[:4])
        header = json.loads(blob[4 : 4 + size])
        content = blob[4 + size :]
        etag = str(header.get("t") or content_etag(content))
        return cls(content, header["m"], list(header["s"]), bool(header["e"]), etag)


def content_etag(content: bytes) -> str:
    """The strong ETag of a response body, quoted as the header carries it."""
    return '"' + hashlib.sha256(content).hexdigest()[:32] + '"'


@dataclass(slots=True)
class LevelStats:
    """Counters of one cache level."""

    hits: int = 0
    misses: int = 0
    errors: int = 0
    writes: int = 0


@dataclass(slots=True)
class _State:
    memory: LevelStats = field(default_factory=LevelStats)
    redis: LevelStats = field(default_factory=LevelStats)


class TileCache:
    """Get and put rendered images by key, memory first, then Redis."""

    def __init__(self, memory_bytes: int, redis_url: str | None = None, ttl: int = 7 * 24 * 3600) -> None:
        self._memory: LRUCache[str, CachedImage] | None = (
            LRUCache(maxsize=memory_bytes, getsizeof=lambda item: len(item.content) + 256) if memory_bytes else None
        )
        self._lock = threading.Lock()
        self._stats = _State()
        self._ttl = ttl
        self.redis_url = redis_url
        self._redis = (
            redis.Redis.from_url(redis_url, socket_timeout=0.5, socket_connect_timeout=0.5, health_check_interval=30)
            if redis_url
            else None
        )
        self._down_since: float | None = None
        self._retry_at = 0.0

    # -- shared level -------------------------------------------------------------------------

    def _redis_usable(self) -> bool:
        return self._redis is not None and time.monotonic() >= self._retry_at

    def _redis_failed(self, exc: Exception) -> None:
        self._stats.redis.errors += 1
        self._retry_at = time.monotonic() + RETRY_AFTER_S
        if self._down_since is None:
            self._down_since = time.time()
            log.warning("redis cache level unavailable (%s); serving without it", type(exc).__name__)

    def _redis_ok(self) -> None:
        if self._down_since is not None:
            log.warning("redis cache level is back after %.0f s", time.time() - self._down_since)
            self._down_since = None

    @property
    def degraded(self) -> bool:
        """True while a configured Redis level is failing."""
        return self._redis is not None and self._down_since is not None

    # -- get / put ----------------------------------------------------------------------------

    def get(self, key: str, *, memory_only: bool = False) -> tuple[CachedImage, str] | None:
        """The entry and the level that had it (``memory`` or ``redis``), or ``None``.

        ``memory_only`` never does I/O (safe on the event loop) and counts no miss: the caller
        asks again with I/O allowed.
        """
        if self._memory is not None:
            with self._lock:
                item = self._memory.get(key)
            if item is not None:
                self._stats.memory.hits += 1
                return item, "memory"
            if memory_only:
                return None
            self._stats.memory.misses += 1
        if memory_only:
            return None
        if self._redis_usable():
            try:
                blob = self._redis.get(key)  # type: ignore[union-attr]
                self._redis_ok()
            except redis.RedisError as exc:
                self._redis_failed(exc)
                return None
            if blob is None:
                self._stats.redis.misses += 1
                return None
            self._stats.redis.hits += 1
            item = CachedImage.unpack(blob)
            self._remember(key, item)
            return item, "redis"
        return None

    def ping(self) -> bool | None:
        """Whether Redis answers now (``None`` when no Redis is configured): for ``/readyz``."""
        if self._redis is None:
            return None
        try:
            return bool(self._redis.ping())
        except redis.RedisError:
            return False

    def contains(self, key: str) -> bool:
        """Whether any level holds ``key`` (seeding skips those)."""
        if self._memory is not None and key in self._memory:
            return True
        if self._redis_usable():
            try:
                found = bool(self._redis.exists(key))  # type: ignore[union-attr]
                self._redis_ok()
                return found
            except redis.RedisError as exc:
                self._redis_failed(exc)
        return False

    def put(self, key: str, item: CachedImage) -> None:
        """Store in both levels; a Redis failure only costs the shared copy."""
        self._remember(key, item)
        if self._redis_usable():
            try:
                self._redis.set(key, item.pack(), ex=self._ttl)  # type: ignore[union-attr]
                self._stats.redis.writes += 1
                self._redis_ok()
            except redis.RedisError as exc:
                self._redis_failed(exc)

    def _remember(self, key: str, item: CachedImage) -> None:
        if self._memory is None or len(item.content) + 256 > self._memory.maxsize:
            return
        with self._lock:
            self._memory[key] = item
        self._stats.memory.writes += 1

    # -- maintenance --------------------------------------------------------------------------

    def _redis_keys(self, pattern: str) -> Iterator[bytes]:
        yield from self._redis.scan_iter(match=pattern, count=500)  # type: ignore[union-attr]

    def clear(self, layer: str | None = None) -> int:
        """Drop every entry (or one layer's) from both levels; returns the Redis keys deleted."""
        from server.cache.keys import KEY_PREFIX

        prefix = f"{KEY_PREFIX}:{layer}:" if layer else f"{KEY_PREFIX}:"
        if self._memory is not None:
            with self._lock:
                for key in [k for k in self._memory if k.startswith(prefix)]:
                    del self._memory[key]
        deleted = 0
        if self._redis is not None:
            batch: list[bytes] = []
            for key in self._redis_keys(prefix + "*"):
                batch.append(key)
                if len(batch) >= 500:
                    deleted += int(self._redis.delete(*batch))
                    batch = []
            if batch:
                deleted += int(self._redis.delete(*batch))
        return deleted

    def stats(self) -> dict[str, object]:
        """Hits, misses, entries and bytes per level (Redis entries counted by key scan when small)."""
        memory: dict[str, object] = {"enabled": self._memory is not None}
        if self._memory is not None:
            memory.update(
                vars_of(self._stats.memory),
                entries=len(self._memory),
                bytes=int(self._memory.currsize),
                max_bytes=int(self._memory.maxsize),
            )
        shared: dict[str, object] = {"enabled": self._redis is not None, "degraded": self.degraded}
        if self._redis is not None:
            shared.update(vars_of(self._stats.redis))
            if self._redis_usable():
                try:
                    from server.cache.keys import KEY_PREFIX

                    info = self._redis.info("memory")
                    shared["entries"] = sum(1 for _ in self._redis_keys(f"{KEY_PREFIX}:*"))
                    shared["bytes"] = int(info.get("used_memory", 0))
                    self._redis_ok()
                except redis.RedisError as exc:
                    self._redis_failed(exc)
                    shared["degraded"] = True
        return {"memory": memory, "redis": shared}


def vars_of(stats: LevelStats) -> dict[str, int]:
    """A level's counters as a dict."""
    return {"hits": stats.hits, "misses": stats.misses, "errors": stats.errors, "writes": stats.writes}
