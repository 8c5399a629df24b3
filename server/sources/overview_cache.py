"""A disk cache of coarse copies of JPEG2000 bands, so zoomed-out views stop re-reading them.

Why: a JPEG2000 resolution level lives inside every tile-part, so a zoomed-out tile downloads
whole tile-parts (~35 MB and ~115 range requests for one z9 tile of a 10980 px band over S3,
``../shared/notes/performance.md``) and decodes them again on every request. The first request
that needs a band much coarser than its file reads the file once at a power-of-two reduction
(GDAL uses the JPEG2000 resolution levels for that) and keeps the result as a local COG; later
requests read the COG from local disk and make no S3 request at all.

Files are keyed by the source path and the level's resolution (``<sha>_<res>m.tif``), written
to a temporary name and renamed, so concurrent workers never see half a file. The directory is
bounded in bytes; the least recently used files are evicted. Any failure to build or store
(full disk, read-only directory) is logged once and the request reads the source instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import threading
from pathlib import Path

import numpy as np
import rasterio
from rio_tiler.io import Reader

log = logging.getLogger(__name__)

_MIN_SIZE = 256  # never build a level smaller than this many pixels across


class OverviewCache:
    """Coarse local COGs of remote or local JPEG2000 bands, bounded in bytes on disk."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._building: dict[str, threading.Lock] = {}
        self._failing = False  # logged once per outage, as the tile cache does for Redis
        self.builds = 0
        self.hits = 0
        self.skipped = 0
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            log.warning("overview cache %s unusable (%s): zoomed-out views read the source", directory, exc)

    @staticmethod
    def applies(path: str) -> bool:
        """Only JPEG2000 lacks cheap overviews (COGs carry their own)."""
        return path.lower().endswith(".jp2")

    @staticmethod
    def level(native_res: float, ground_res: float) -> float | None:
        """The coarsest power-of-two level of ``native_res`` still finer than ``ground_res``; None below 2x."""
        if native_res <= 0 or ground_res < 2 * native_res:
            return None
        return native_res * 2 ** math.floor(math.log2(ground_res / native_res))

    def _file(self, source: str, res: float) -> Path:
        digest = hashlib.sha256(source.encode()).hexdigest()[:32]
        return self.directory / f"{digest}_{res:g}m.tif"

    def local_path(
        self, source: str, native_res: float, ground_res: float, categorical: bool, nodata: float | None
    ) -> str | None:
        """A local COG serving ``source`` at ``ground_res`` (built now if needed), or None to read the source.

        Call inside the request's GDAL environment: building reads ``source``.
        """
        res = self.level(native_res, ground_res)
        if res is None or not self.applies(source):
            return None
        # Any finer level already on disk serves a coarser request too (the COG has overviews).
        while res >= 2 * native_res:
            found = self._file(source, res)
            if found.exists():
                self._touch(found)
                self.hits += 1
                return str(found)
            res /= 2
        res = self.level(native_res, ground_res)
        assert res is not None
        target = self._file(source, res)
        with self._lock:
            building = self._building.setdefault(str(target), threading.Lock())
        with building:  # one build per file; the others wait and then read it
            if target.exists():
                self.hits += 1
                return str(target)
            fill = 0.0 if nodata is None else nodata
            return str(target) if self._build(source, target, res / native_res, categorical, fill) else None

    def _build(self, source: str, target: Path, factor: float, categorical: bool, nodata: float) -> bool:
        tmp = target.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        method = "nearest" if categorical else "average"
        try:
            with Reader(source, options={"nodata": nodata, "resampling_method": method}) as src:
                ds = src.dataset
                width, height = max(1, round(ds.width / factor)), max(1, round(ds.height / factor))
                if min(width, height) < _MIN_SIZE < max(ds.width, ds.height):
                    scale = _MIN_SIZE / min(width, height)
                    width, height = round(width * scale), round(height * scale)
                # rio-tiler masks ``nodata`` before averaging, so swath edges are not darkened.
                image = src.preview(max_size=None, width=width, height=height)
                data = image.array[0].filled(nodata).astype(ds.dtypes[0])
                transform = ds.transform * ds.transform.scale(ds.width / width, ds.height / height)
                profile = {
                    "driver": "COG",
                    "width": width,
                    "height": height,
                    "count": 1,
                    "dtype": data.dtype,
                    "crs": ds.crs,
                    "transform": transform,
                    "nodata": nodata,
                }
            size = int(np.asarray(data).nbytes)
            if size > self.max_bytes:
                self.skipped += 1
                return False
            with rasterio.open(tmp, "w", **profile, COMPRESS="DEFLATE", BLOCKSIZE=512, OVERVIEWS="AUTO") as dst:
                dst.write(data, 1)
            os.replace(tmp, target)
        except Exception as exc:  # noqa: BLE001 - a failed build must never fail the request
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            self.skipped += 1
            if not self._failing:
                log.warning("overview cache: cannot build %s (%s); reading the source", target.name, exc)
                self._failing = True
            return False
        self._failing = False
        self.builds += 1
        self._evict()
        return True

    def _touch(self, path: Path) -> None:
        with contextlib.suppress(OSError):
            os.utime(path)  # LRU order for eviction

    def _evict(self) -> None:
        """Delete least recently used files until the directory fits in ``max_bytes``."""
        files = []
        for path in self.directory.glob("*.tif"):
            try:
                stat = path.stat()
            except OSError:
                continue
            files.append((stat.st_mtime, stat.st_size, path))
        total = sum(size for _, size, _ in files)
        for _, size, path in sorted(files):
            if total <= self.max_bytes:
                break
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
            total -= size

    def stats(self) -> dict[str, int | bool]:
        """Files and bytes on disk, builds, hits and skipped builds (for /cache/stats)."""
        files = list(self.directory.glob("*.tif")) if self.directory.is_dir() else []
        return {
            "enabled": True,
            "files": len(files),
            "bytes": sum(p.stat().st_size for p in files if p.exists()),
            "max_bytes": self.max_bytes,
            "builds": self.builds,
            "hits": self.hits,
            "skipped": self.skipped,
        }
