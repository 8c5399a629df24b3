"""The S3 gateway's copies of whole JPEG2000 tile-parts: in memory, and on disk.

GDAL reads one tile-part in growing chunks, and neighbouring map tiles read the same tile-parts
again; a tile-part fetched once (``jp2_tlm_serving.py``) answers all of them from memory. On disk
it also answers a gateway started again (a server restart, a new release), which would otherwise
fetch every tile-part of a view once more. Both are keyed on the object's path and ETag, so a
replaced object is never answered from an old copy, and both are bounded by their total size.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path

log = logging.getLogger(__name__)


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
    """Tile-parts as files in one directory, the least recently used removed beyond ``max_bytes``.

    Blocking I/O: the gateway calls it off its event loop. A failure (disk full, unreadable file)
    only costs a fetch from the store.
    """

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._size: int | None = None  # bytes on disk, counted at the first write
        self._lock = threading.Lock()

    def _file(self, key: tuple[str, str, int, int]) -> Path:
        return self.directory / hashlib.sha256(repr(key).encode()).hexdigest()

    def get(self, key: tuple[str, str, int, int]) -> bytes | None:
        """The tile-part, marked as recently used; ``None`` when not there (or not whole)."""
        path = self._file(key)
        try:
            data = path.read_bytes()
            os.utime(path)
        except OSError:
            return None
        return data if len(data) == key[3] else None

    def put(self, key: tuple[str, str, int, int], value: bytes) -> None:
        """Keep ``value`` (written whole, then renamed), then stay within the bound."""
        if len(value) > self.max_bytes // 4:
            return
        path = self._file(key)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(value)
            tmp.replace(path)
        except OSError as exc:
            log.warning("tile-part not kept on disk: %s", exc)
            tmp.unlink(missing_ok=True)
            return
        with self._lock:
            if self._size is None:
                self._size = sum(f.stat().st_size for f in self.directory.iterdir() if not f.name.startswith("."))
            else:
                self._size += len(value)
            if self._size > self.max_bytes:
                self._evict()

    def _evict(self) -> None:
        """Remove the least recently used files down to 90 % of the bound."""
        files = []
        for f in self.directory.iterdir():
            try:
                if not f.name.startswith("."):
                    stat = f.stat()
                    files.append((stat.st_mtime, stat.st_size, f))
            except OSError:
                continue
        self._size = sum(size for _, size, _ in files)
        for _, size, f in sorted(files):
            if self._size <= self.max_bytes * 0.9:
                break
            try:
                f.unlink()
                self._size -= size
            except OSError:
                continue
