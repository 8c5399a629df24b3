"""The S3 gateway's memory of whole JPEG2000 tile-parts, bounded by their total size.

GDAL reads one tile-part in growing chunks, and neighbouring map tiles read the same tile-parts
again; a tile-part fetched once (``jp2_tlm_serving.py``) answers all of them from here.
"""

from __future__ import annotations

from collections import OrderedDict


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
