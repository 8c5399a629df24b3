"""Open raster datasets kept between requests, each lent to one thread at a time.

Why: opening a band costs a header parse (and, over S3, a header GET once GDAL's /vsicurl cache
has dropped it); tiles of one area read the same few files again and again. GDAL datasets are
not thread-safe, so a handle is *lent*: taken out of the idle pool, used by one thread, and put
back. The pool holds at most ``max_open`` idle handles (least recently used closed first), and
each handle's GDAL read cache is bounded by ``VSI_CACHE_SIZE``, so memory stays bounded however
many files are read. Files under ``eodata`` never change, so a kept handle is never stale; a
handle that failed a read is closed, never returned.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

import rasterio
import rasterio.errors
from rasterio.io import DatasetReader


class DatasetPool:
    """An LRU of idle open datasets keyed by path and GDAL environment identity."""

    def __init__(self, max_open: int) -> None:
        self.max_open = max_open
        self._idle: OrderedDict[tuple[str, str], list[DatasetReader]] = OrderedDict()
        self._count = 0
        self._lock = threading.Lock()
        self.opened = 0
        self.reused = 0

    @contextmanager
    def lend(self, path: str, environment: str = "") -> Iterator[DatasetReader]:
        """An open dataset for ``path``, exclusively this thread's until the block ends.

        ``environment`` separates handles opened with different endpoints or credentials. Call
        inside the request's ``rasterio.Env``: a new handle is opened with it.
        """
        key = (path, environment)
        dataset = self._take(key)
        if dataset is None:
            dataset = rasterio.open(path)
            with self._lock:
                self.opened += 1
        try:
            yield dataset
        except (rasterio.errors.RasterioError, OSError):
            dataset.close()  # an I/O failure may leave the handle in any state
            raise
        except BaseException:
            self._give_back(key, dataset)  # e.g. "tile outside bounds": the handle is fine
            raise
        self._give_back(key, dataset)

    def _take(self, key: tuple[str, str]) -> DatasetReader | None:
        with self._lock:
            handles = self._idle.get(key)
            if not handles:
                return None
            dataset = handles.pop()
            self._count -= 1
            self.reused += 1
            if not handles:
                del self._idle[key]
            return dataset

    def _give_back(self, key: tuple[str, str], dataset: DatasetReader) -> None:
        if self.max_open <= 0:
            dataset.close()
            return
        evicted: list[DatasetReader] = []
        with self._lock:
            self._idle.setdefault(key, []).append(dataset)
            self._idle.move_to_end(key)
            self._count += 1
            while self._count > self.max_open:
                oldest, handles = next(iter(self._idle.items()))
                evicted.append(handles.pop(0))
                self._count -= 1
                if not handles:
                    del self._idle[oldest]
        for old in evicted:  # closing may flush caches: outside the lock
            old.close()

    def stats(self) -> dict[str, int]:
        """Idle handles now, and how many reads opened a file or reused a handle."""
        with self._lock:
            return {"idle": self._count, "max_open": self.max_open, "opened": self.opened, "reused": self.reused}

    def close(self) -> None:
        """Close every idle handle."""
        with self._lock:
            handles = [d for group in self._idle.values() for d in group]
            self._idle.clear()
            self._count = 0
        for dataset in handles:
            dataset.close()
