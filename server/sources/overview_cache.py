"""A disk cache of coarse copies of JPEG2000 bands, so zoomed-out views stop re-reading them.

Why: a JPEG2000 resolution level lives inside every tile-part, so a zoomed-out tile downloads
whole tile-parts and decodes them again on every request (a cold z9 tile of a 10980 px band
took ~5 s and 76 range requests over S3 in ``docs/eodata-performance.md``). The first request
that needs a band coarser than its file reads the source, as any reader would, and queues a
level for the cache's own thread: the file read once at the power-of-two reduction at or finer
than the request (GDAL uses the JPEG2000 resolution levels for that), or, between 1x and 2x the
file's resolution (z10 at 53 N over a 60 m file), the whole band at its own resolution. Later
requests, in any process, read the local COG and make no S3 request. The band's coarsest file
(60 m) is also queued as soon as any resolution of the band is read (``prefetch``), so zooming
out of a first view is local already. Prefetches and levels each have one thread; both read through the S3 gateway
at background priority (one connection of the quota at most). A copy of a small band at its own
resolution that a request needs before the background made it is made on that request's thread
instead (``copy_now``: a z10 view over 60 m files needs most of each band anyway).

Files are keyed by the source path and the level's resolution (``<sha>_<res>m.tif``), written
to a temporary name and renamed, so concurrent workers never see half a file. A level is built
by one process at a time: the builder holds a lock on a dot-file beside it (``_claim``), and the
other workers, which queue the same levels at the same first view, leave it to that one. The directory is
a ``DiskLru`` bounded in bytes: the least recently used files are evicted, temporaries a crashed
build left are removed. Any failure to build or store (full disk, read-only directory) is logged
once and the request reads the source instead.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from pathlib import Path
from typing import NamedTuple

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.io import MemoryFile
from rio_tiler.io import Reader

from server.cache.disk_lru import DiskLru

log = logging.getLogger(__name__)

_MIN_SIZE = 256  # never build a level smaller than this many pixels across
NATIVE_SLACK = 1.05  # the file choice takes a file up to 5 % coarser than the request: that is native
FULL_COPY_PIXELS = 6000 * 6000  # full-resolution copies of 20 m and 60 m bands (60 MB in memory at most)
# A copy of a band this small is made on the request's own thread when a request needs it
# (Sentinel-2's 60 m files: 1830 px, about a second to read, decode and write); larger ones
# are left to the background threads.
COPY_NOW_PIXELS = 2048 * 2048
COPY_NOW_WAIT = 20.0  # seconds a request waits for the copy another thread or process makes


Environment = Callable[[], AbstractContextManager[object]]


class Wanted(NamedTuple):
    """One band ``local_paths`` is asked for."""

    source: str
    native_res: float
    ground_res: float
    categorical: bool
    nodata: float | None
    environment: Environment | None  # the background build's GDAL environment (None: no build)
    now: Environment | None  # the request's own, for a copy made now (``copy_now``; None: never)


class OverviewCache:
    """Coarse local COGs of remote or local JPEG2000 bands, bounded in bytes on disk."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        # evicted down to the bound itself: a level is a few to tens of MB, so 10 % free would
        # drop a level more than the bound needs
        self._files = DiskLru(directory, max_bytes, what="overview cache", suffix=".tif", keep=1.0)
        self._lock = threading.Lock()
        self._queued: set[str] = set()
        self._too_large: set[str] = set()  # full copies a band's size rules out
        self._not_now: set[str] = set()  # copies a request's thread does not make (too large, or failed)
        self._copying: dict[str, threading.Event] = {}  # copies being made on request threads
        self._builder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="eotiler-overview")
        self._prefetcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="eotiler-prefetch")
        # copies a request waits for (copy_now), beside the one its own thread makes
        self._copiers = ThreadPoolExecutor(3, "eotiler-copy-now")
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
        """The coarsest power-of-two level of ``native_res`` still finer than ``ground_res``.

        ``None`` at native resolution or finer. Between 1x and 2x the level is the file's own
        resolution: a local copy of the whole band (z10 at 53 N is 92 m per pixel over a 60 m file).
        """
        if native_res <= 0 or ground_res <= native_res * NATIVE_SLACK:
            return None
        return native_res * 2 ** math.floor(math.log2(ground_res / native_res))

    def _file(self, source: str, res: float) -> Path:
        digest = hashlib.sha256(source.encode()).hexdigest()[:32]
        return self.directory / f"{digest}_{res:g}m.tif"

    def local_path(
        self,
        source: str,
        native_res: float,
        ground_res: float,
        categorical: bool,
        nodata: float | None,
        environment: Environment | None = None,
        now: Environment | None = None,
    ) -> str | None:
        """A local COG serving ``source`` at ``ground_res``, or None to read the source this time.

        A missing level is queued for the cache's own thread (``environment`` makes the request's
        GDAL environment again there; without it nothing is built): the request at hand reads the
        source as any reader would, and only the following ones gain from the copy. Waiting for a
        copy of the whole band would cost the first view the whole file (a z11 tile of a 10980 px
        band: tens of MB where the tile needs a few).

        Except for a copy of a small band at its own resolution (``copy_now``, in the request's
        GDAL environment ``now``): a view zoomed out that far needs most of the band anyway, and
        its tiles each decoding their part of the remote file cost more than one copy.
        """
        return self.local_paths([Wanted(source, native_res, ground_res, categorical, nodata, environment, now)])[0]

    def local_paths(self, wanted: list[Wanted]) -> list[str | None]:
        """``local_path`` of several bands (a request's), the copies made now made at once.

        Why at once: a view's first zoomed-out tile may need a copy of each of its bands, and one
        after the other they were three times one copy for the tile and the tiles waiting on it.
        """
        out: list[str | None] = []
        missing: list[int] = []
        for band in wanted:
            res = self.level(band.native_res, band.ground_res)
            out.append(None)
            if res is None or not self.applies(band.source):
                continue
            # Any finer level already on disk serves a coarser request too (the COG has overviews).
            while res >= band.native_res:
                found = self._file(band.source, res)
                if found.exists():
                    self._files.touch(found.name)  # LRU order for eviction
                    self.hits += 1
                    out[-1] = str(found)
                    break
                res /= 2
            if out[-1] is None:
                missing.append(len(out) - 1)
        # the copies to make now: all but the last on the copying threads, the last on this one
        now_ones = [i for i in missing if wanted[i].now is not None and self._at_native(wanted[i])]

        def copy(i: int) -> bool:
            band = wanted[i]
            assert band.now is not None
            return self.copy_now(band.source, band.native_res, band.categorical, band.nodata, band.now)

        started = [self._copiers.submit(copy, i) for i in now_ones[:-1]]
        made = {now_ones[-1]: copy(now_ones[-1])} if now_ones else {}
        made.update((i, future.result()) for i, future in zip(now_ones[:-1], started, strict=True))
        for i in missing:
            band = wanted[i]
            res = self.level(band.native_res, band.ground_res)
            assert res is not None
            if made.get(i):
                out[i] = str(self._file(band.source, res))
            elif band.environment is not None:
                self.build_later(band.source, res, band.native_res, band.categorical, band.nodata, band.environment)
        return out

    def _at_native(self, band: Wanted) -> bool:
        """Whether ``band`` is wanted at its file's own resolution (a full copy)."""
        return self.level(band.native_res, band.ground_res) == band.native_res

    def copy_now(
        self,
        source: str,
        res: float,
        categorical: bool,
        nodata: float | None,
        environment: Environment,
    ) -> bool:
        """Copy a band of at most ``COPY_NOW_PIXELS`` whole on this thread; True once the copy is on disk.

        Why: the coarse copies are built in the background, behind the first view's reads; a
        user who zooms out before they are done (a z10 view over Sentinel-2's 60 m files) had
        every tile decode its part of each remote band, the parts overlapping, in every worker:
        seconds per tile on a busy machine, where one copy is about one second. One thread of
        the process copies; its other requests for the band wait for it (at most
        ``COPY_NOW_WAIT``), and so do other processes' requests (``_claim``: the copy another
        worker or this process's background is making is waited for). A larger
        band is looked at once, then left to the background; a copy that fails is not tried
        again on a request's thread (the directory is unusable, or the disk too small).
        """
        target = self._file(source, res)
        key = str(target)
        with self._lock:
            if key in self._not_now or key in self._too_large:
                return False
            event = self._copying.get(key)
            if event is None:
                self._copying[key] = threading.Event()
        if event is not None:  # another request of this process copies it
            event.wait(COPY_NOW_WAIT)
            return target.exists()
        fill = 0.0 if nodata is None else nodata
        try:
            with environment():
                with rasterio.open(source) as probe:  # the header only: size before any pixel is read
                    small = probe.width * probe.height <= COPY_NOW_PIXELS
                if not small:
                    with self._lock:
                        self._not_now.add(key)
                    return False
                with self._claim(target) as claimed:
                    if not claimed:  # another process (or this one's background) makes it now
                        return self._wait_for(target, COPY_NOW_WAIT)
                    made = target.exists() or self._build(source, target, 1.0, categorical, fill, FULL_COPY_PIXELS)
                if not made:
                    with self._lock:
                        self._not_now.add(key)
                return made
        except Exception as exc:  # noqa: BLE001 - the request reads the source instead
            log.info("overview cache: no copy of %s now (%s)", source.rsplit("/", 1)[-1], exc)
            return False
        finally:
            with self._lock:
                self._copying.pop(key).set()

    def prefetch(
        self,
        source: str,
        native_res: float,
        categorical: bool,
        nodata: float | None,
        environment: Callable[[], AbstractContextManager[object]],
    ) -> None:
        """Queue a full-resolution copy of a band's coarsest file, before any view asks for it.

        Why: a map session zooms out sooner or later; the coarse files (60 m: a few MB) are cheap
        to copy while the user looks at the first view, and the zoomed-out views then read locally.
        """
        if self.applies(source):
            self.build_later(source, native_res, native_res, categorical, nodata, environment, self._prefetcher)

    def build_later(
        self,
        source: str,
        res: float,
        native_res: float,
        categorical: bool,
        nodata: float | None,
        environment: Callable[[], AbstractContextManager[object]],
        executor: ThreadPoolExecutor | None = None,
    ) -> None:
        """Queue the level of ``source`` at ``res`` (once) for one of the cache's threads.

        Prefetched coarse files have a thread of their own: they are small and wanted soon, and
        must not wait behind whole 10 or 20 m bands being copied.
        """
        target = self._file(source, res)
        factor = res / native_res
        with self._lock:
            if str(target) in self._queued or str(target) in self._too_large or target.exists():
                return
            self._queued.add(str(target))
        fill = 0.0 if nodata is None else nodata
        limit = FULL_COPY_PIXELS if factor == 1 else None

        def build() -> None:
            try:
                with self._claim(target) as claimed:
                    if claimed and not target.exists():
                        with environment():
                            self._build(source, target, factor, categorical, fill, max_pixels=limit)
            finally:
                with self._lock:
                    self._queued.discard(str(target))

        (executor or self._builder).submit(build)

    @staticmethod
    def _wait_for(target: Path, seconds: float) -> bool:
        """Whether ``target`` appears within ``seconds`` (another process's copy of it)."""
        deadline = time.monotonic() + seconds
        while not target.exists():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    @contextlib.contextmanager
    def _claim(self, target: Path) -> Iterator[bool]:
        """Whether this process builds ``target``: False while another process holds its lock.

        Why: every worker process has its own cache object and queues the same levels (the
        coarse files prefetched at a first view) within moments of the others; each building
        them read and decoded every band once per worker, on the cores the views need. The lock
        is ``flock`` on a dot-file beside the level, released by the system if a builder dies;
        the directory's counting removes dot-files left behind (``DiskLru``). A directory where
        no lock file can be made builds without one, and fails there as it would have.
        """
        lock = self.directory / f".{target.name}.build"
        try:
            fd = os.open(lock, os.O_CREAT | os.O_WRONLY, 0o644)
        except OSError:
            yield True
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # another process builds it
                yield False
                return
            except OSError:  # a file system without flock (NFS without lockd): build unshared
                yield True
                return
            try:
                yield True
            finally:
                with contextlib.suppress(OSError):
                    lock.unlink()
        finally:
            os.close(fd)

    def drain(self, timeout: float = 60.0) -> bool:
        """Wait until every queued build has ended (tests, shutdown); False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._queued:
                    return True
            time.sleep(0.02)
        return False

    def close(self) -> None:
        """Stop the builder threads (queued builds are dropped)."""
        self._builder.shutdown(wait=False, cancel_futures=True)
        self._prefetcher.shutdown(wait=False, cancel_futures=True)
        self._copiers.shutdown(wait=False, cancel_futures=True)

    def _build(
        self, source: str, target: Path, factor: float, categorical: bool, nodata: float, max_pixels: int | None = None
    ) -> bool:
        tmp = self._files.temp_path(target.name)
        method = "nearest" if categorical else "average"
        try:
            if max_pixels is not None:
                with rasterio.open(source) as probe:  # the header only: size before any pixel is read
                    if probe.width * probe.height > max_pixels:
                        with self._lock:  # never opened again for this: every tile of a view asked
                            self._too_large.add(str(target))
                        self.skipped += 1
                        return False
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
            # GDAL's COG writer converts the raster when its dataset closes, and rasterio's close
            # of a COG opened for writing holds Python's GIL meanwhile (0.2-0.5 s for a 1830 px
            # band, and seconds for a thread the system gives little CPU): every other thread of
            # the worker stopped, its event loop and the supervisor's health check included (a
            # worker that missed the check for 5 s was killed). A copy of a plain in-memory
            # GTiff into a COG releases the GIL.
            with MemoryFile() as plain:
                with plain.open(driver="GTiff", **profile) as dst:
                    dst.write(data, 1)
                rasterio.shutil.copy(plain.name, tmp, driver="COG", COMPRESS="DEFLATE", BLOCKSIZE=512, OVERVIEWS="AUTO")
            self._files.commit(tmp, target.name)  # renamed into place, then the bound kept
        except Exception as exc:  # noqa: BLE001 - a failed build must never fail the request
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            self.skipped += 1
            if not self._failing:
                cause = f" <- {exc.__cause__}" if exc.__cause__ is not None else ""  # GDAL's own message
                log.warning("overview cache: cannot build %s (%s%s); reading the source", target.name, exc, cause)
                self._failing = True
            return False
        self._failing = False
        self.builds += 1
        return True

    def stats(self) -> dict[str, int | bool]:
        """Files and bytes on disk, builds, hits and skipped builds (for /cache/stats)."""
        on_disk = self._files.stats()
        return {
            "enabled": True,
            "files": on_disk["files"],
            "bytes": on_disk["bytes"],
            "max_bytes": self.max_bytes,
            "builds": self.builds,
            "hits": self.hits,
            "skipped": self.skipped,
        }
