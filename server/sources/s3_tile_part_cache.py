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
