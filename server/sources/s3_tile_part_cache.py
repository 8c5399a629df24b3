"""The S3 gateway's copies of whole JPEG2000 tile-parts: in memory, and on disk.

GDAL reads one tile-part in growing chunks, and neighbouring map tiles read the same tile-parts
again; a tile-part fetched once (``jp2_tlm_serving.py``) answers all of them from memory. On disk
it also answers a gateway started again (a server restart, a new release), which would otherwise
fetch every tile-part of a view once more. Both are keyed on the object's path and ETag, so a
replaced object is never answered from an old copy, and both are bounded by their total size.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from pathlib import Path

from server.cache.disk_lru import DiskLru


class BytesLru:
    """An LRU of byte strings bounded by their total size."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._items: OrderedDict[object, bytes] = OrderedDict()

    def get(self, key: object) -> bytes | None:
        """The value, marked as recently used."""
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: object, value: bytes) -> None:
        """Keep ``value``, dropping the least recently used beyond the bound."""
        if len(value) > self.max_bytes // 4:
            return
        old = self._items.pop(key, None)
        self.size += len(value) - (len(old) if old is not None else 0)
        self._items[key] = value
        while self.size > self.max_bytes:
            _, dropped = self._items.popitem(last=False)
            self.size -= len(dropped)


class EdgeBytes:
    """Bytes just before and after fetched runs of tile-parts, per object version, bounded.

    GDAL reads in chunks aligned on its own boundaries, so its read of a tile-part starts a few
    KB inside the tile-part before it and ends a few KB into the next one. A prefetch fetches
    those edges in the same request as the tile-parts (``TlmServing.prefetch``), so that such a
    read is answered without fetching the neighbours, which the window does not need, whole.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._objects: OrderedDict[tuple[str, str], list[tuple[int, bytes]]] = OrderedDict()

    def put(self, path: str, etag: str, start: int, blob: bytes) -> None:
        """Keep ``blob``, the object's bytes from ``start``; the oldest objects' edges go first."""
        if not blob or self.get(path, etag, start, start + len(blob) - 1) is not None:
            return  # nothing new: a window prefetched again
        key = (path, etag)
        self._objects.setdefault(key, []).append((start, blob))
        self._objects.move_to_end(key)
        self.size += len(blob)
        while self.size > self.max_bytes and self._objects:
            _, dropped = self._objects.popitem(last=False)
            self.size -= sum(len(b) for _, b in dropped)

    def get(self, path: str, etag: str, first: int, last: int) -> bytes | None:
        """Bytes ``first..last`` (inclusive) when one kept edge holds them all."""
        for start, blob in self._objects.get((path, etag), ()):
            if start <= first and last < start + len(blob):
                return blob[first - start : last - start + 1]
        return None


class DiskTileParts:
    """Tile-parts as files in one directory shared by every gateway, bounded by ``max_bytes``.

    The directory's bound, atomic writes and tolerance of other processes evicting at the same
    time are ``DiskLru``'s. Blocking I/O: the gateway calls it off its event loop. A failure
    (disk full, unreadable file) only costs a fetch from the store.
    """

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.files = DiskLru(directory, max_bytes, what="tile-part cache")

    @staticmethod
    def _name(key: tuple[str, str, int, int]) -> str:
        return hashlib.sha256(repr(key).encode()).hexdigest()

    def get(self, key: tuple[str, str, int, int]) -> bytes | None:
        """The tile-part, marked as recently used; ``None`` when not there (or not whole)."""
        data = self.files.read(self._name(key))
        return data if data is not None and len(data) == key[3] else None

    def put(self, key: tuple[str, str, int, int], value: bytes) -> None:
        """Keep ``value`` (written whole, then renamed), then stay within the bound."""
        if len(value) <= self.max_bytes // 4:
            self.files.write(self._name(key), value)
