"""Where the S3 gateway keeps JPEG2000 tile-part indexes: memory, then a directory, then Redis.

An index (``jp2_index.py``, a few KB) is built once per object by walking its tile-part chain;
kept on disk it serves a restarted gateway, kept in Redis every replica. Each level is optional
and a failure at one only costs a rebuild. The directory is a ``DiskLru`` bounded by
``INDEX_DISK_BYTES`` (shared by every gateway that uses it, written atomically).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from pathlib import Path

from server.cache.disk_lru import DiskLru
from server.redis_client import RestedRedis
from server.sources.jp2_index import TilePartIndex

INDEX_MEMORY = 4096  # indexes (a few KB each) kept in memory
INDEX_DISK_BYTES = 512 * 1024**2  # indexes kept on disk: ~100,000 band files, least recently used removed


class IndexStore:
    """Tile-part indexes: memory, then a directory, then Redis (shared by replicas)."""

    def __init__(self, directory: Path | None, redis_url: str | None) -> None:
        self.directory = directory
        self._files = DiskLru(directory, INDEX_DISK_BYTES, what="tile-part index store") if directory else None
        self._memory: OrderedDict[str, TilePartIndex | None] = OrderedDict()
        self._redis = RestedRedis(
            redis_url or None, rest_seconds=30.0, what="tile-part index store", asynchronous=False
        )

    @staticmethod
    def _name(path: str) -> str:
        return hashlib.sha256(path.encode()).hexdigest()

    def get(self, path: str) -> TilePartIndex | None | bool:
        """From memory only (no I/O): the index, ``None`` when it needs none, ``False`` when not there."""
        if path not in self._memory:
            return False
        self._memory.move_to_end(path)
        return self._memory[path]

    def load(self, path: str) -> TilePartIndex | bool:
        """From the directory or Redis (blocking I/O: call off the event loop); ``False`` when absent."""
        name = self._name(path)
        data = self._files.read(name) if self._files is not None else None
        client = self._redis.client() if data is None else None
        if client is not None:
            try:
                data = client.get(f"eotiler:jp2idx:{name}")
            except Exception as exc:  # noqa: BLE001 - Redis is an optional level
                self._redis.failed(exc)
        if not data:
            return False
        try:
            index = TilePartIndex.from_bytes(data)
        except ValueError:
            return False
        self.remember(path, index)
        return index

    def remember(self, path: str, index: TilePartIndex | None) -> None:
        """Keep ``index`` (``None``: the object needs none) in memory."""
        self._memory[path] = index
        self._memory.move_to_end(path)
        while len(self._memory) > INDEX_MEMORY:
            self._memory.popitem(last=False)

    def store(self, path: str, index: TilePartIndex) -> None:
        """Write ``index`` to the directory and Redis (blocking I/O); failures only cost a rebuild later."""
        data, name = index.to_bytes(), self._name(path)
        if self._files is not None:
            self._files.write(name, data)
        client = self._redis.client()
        if client is not None:
            try:
                client.set(f"eotiler:jp2idx:{name}", data, ex=30 * 24 * 3600)
            except Exception as exc:  # noqa: BLE001 - Redis is an optional level
                self._redis.failed(exc)

    def forget(self, path: str) -> None:
        """Drop ``path`` everywhere (its object changed)."""
        self._memory.pop(path, None)
        if self._files is not None:
            self._files.remove(self._name(path))
