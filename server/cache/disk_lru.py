"""A directory of cache files bounded in bytes, shared without locks by several processes.

Why one module: the S3 gateway's tile-parts, its tile-part indexes and the overview COGs all
keep files in a directory that several processes (gateways, workers, the next start) use at
once. Each process then only *estimates* the directory's size, files vanish under it when
another process evicts, and a crash leaves half-written temporaries behind. Here:

- a file is written to a dot-temporary (``.<name>.<pid>.<thread>.tmp``) and renamed, so no
  reader ever sees half a file;
- the directory is counted again from disk after every ``RESCAN_FRACTION`` of the budget this
  process writes, so processes sharing it see each other's files;
- a count that finds more than ``keep`` of the budget removes the least recently used files
  (modification time, set on every read) down to ``keep``. Each process adds less than
  ``RESCAN_FRACTION`` of the budget between its counts, so with ``keep`` 0.9 two processes
  never exceed the budget, and each further one may exceed it by ``RESCAN_FRACTION`` at most;
- temporaries (dot-files, ``*.tmp``) older than ``STALE_SECONDS`` (a crashed writer's) are
  removed while counting;
- every ``stat``, ``scandir`` and ``unlink`` tolerates a file another process removed;
- a failure (full or read-only disk) is logged once per kind until that kind succeeds again,
  and only costs the caller its copy: reads still work from a read-only directory.

Blocking I/O: call it off an event loop.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat as stat_module
import threading
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

RESCAN_FRACTION = 0.05  # of the budget written by this process between two counts of the directory
STALE_SECONDS = 600.0  # a temporary this old belongs to a writer that died


class DiskLru:
    """Files ``root/<name>`` bounded by ``max_bytes`` in total (names without a leading dot)."""

    def __init__(
        self, root: Path, max_bytes: int, *, what: str = "disk cache", suffix: str = "", keep: float = 0.9
    ) -> None:
        """``what`` names the cache in log lines; only files ending in ``suffix`` are counted and
        evicted; a count finding more than ``keep`` times ``max_bytes`` evicts down to that."""
        self.root = root
        self.max_bytes = max_bytes
        self.what = what
        self.suffix = suffix
        self.keep = keep
        self._lock = threading.Lock()
        self._estimate: int | None = None  # bytes believed on disk; None until first counted
        self._written = 0  # bytes written since the last count
        self._warned: set[str] = set()
        self.evicted = 0
        self.stale_removed = 0

    # -- names ----------------------------------------------------------------------------
    def path_for(self, name: str) -> Path:
        """Where ``name`` lives (it may not exist)."""
        return self.root / name

    def temp_path(self, name: str) -> Path:
        """A temporary for ``name`` unique to this process and thread: write it, then ``commit``."""
        return self.root / f".{name}.{os.getpid()}.{threading.get_ident()}.tmp"

    # -- reads ----------------------------------------------------------------------------
    def read(self, name: str) -> bytes | None:
        """The file's bytes, marked as recently used; ``None`` when absent or unreadable."""
        path = self.path_for(name)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            self._warn("read", f"cannot read {name}: {exc}")
            return None
        self.touch(name)
        return data

    def touch(self, name: str) -> bool:
        """Mark ``name`` as recently used; ``False`` when it is not there (or not writable)."""
        try:
            os.utime(self.path_for(name))
        except FileNotFoundError:
            return False
        except OSError as exc:  # a read-only directory: still read, never reordered
            self._warn("touch", f"cannot mark files as used ({exc}): eviction order is by age")
            return False
        self._ok("touch")
        return True

    # -- writes ---------------------------------------------------------------------------
    def write(self, name: str, data: bytes) -> bool:
        """Keep ``data`` as ``name`` (written whole, then renamed) and stay within the budget.

        ``False`` when it was not kept (too large, disk full, read-only); never raises ``OSError``.
        """
        if len(data) > self.max_bytes:
            return False
        tmp = self.temp_path(name)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(data)
            self.commit(tmp, name)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            self._warn("write", f"not kept on disk: {exc}")
            return False
        return True

    def commit(self, tmp: Path, name: str) -> None:
        """Rename a finished temporary to ``name`` and account for it (``OSError`` if the rename fails).

        For writers that produce the file themselves (``rasterio`` writing a COG at ``temp_path``).
        """
        size = tmp.stat().st_size
        os.replace(tmp, self.path_for(name))
        self._ok("write")
        with self._lock:
            self._written += size
            if self._estimate is not None:
                self._estimate += size
            count = (
                self._estimate is None
                or self._estimate > self.max_bytes
                or self._written >= self.max_bytes * RESCAN_FRACTION
            )
        if count:
            self.evict()

    def remove(self, name: str) -> None:
        """Drop ``name`` (its object changed)."""
        with contextlib.suppress(OSError):
            self.path_for(name).unlink(missing_ok=True)

    # -- counting and eviction ------------------------------------------------------------
    def _entries(self) -> Iterator[tuple[float, int, Path]]:
        """``(mtime, size, path)`` of the cache's files; stale temporaries are removed on the way."""
        try:
            listing = list(os.scandir(self.root))
        except FileNotFoundError:
            return
        except OSError as exc:
            self._warn("list", f"cannot list {self.root}: {exc}")
            return
        now = time.time()
        for entry in listing:
            try:
                stat = entry.stat(follow_symlinks=False)
            except OSError:  # removed by another process since listed
                continue
            if entry.name.startswith(".") or entry.name.endswith(".tmp"):
                if now - stat.st_mtime > STALE_SECONDS:
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)
                        self.stale_removed += 1
                continue
            if entry.name.endswith(self.suffix) and stat_module.S_ISREG(stat.st_mode):
                yield stat.st_mtime, stat.st_size, Path(entry.path)

    def evict(self) -> int:
        """Count the directory again and remove the least recently used files beyond the budget.

        Returns the bytes on disk afterwards.
        """
        files = sorted(self._entries())
        total = sum(size for _, size, _ in files)
        target = self.max_bytes * self.keep
        if total > target:
            for _, size, path in files:
                if total <= target:
                    break
                try:
                    path.unlink()
                except FileNotFoundError:  # another process evicted it first
                    pass
                except OSError as exc:
                    self._warn("evict", f"cannot remove {path.name}: {exc}")
                    continue
                else:
                    self.evicted += 1
                total -= size
        with self._lock:
            self._estimate = total
            self._written = 0
        return total

    def stats(self) -> dict[str, int]:
        """Files and bytes on disk now (counted), the budget, and files evicted by this process."""
        files = list(self._entries())
        return {
            "files": len(files),
            "bytes": sum(size for _, size, _ in files),
            "max_bytes": self.max_bytes,
            "evicted": self.evicted,
        }

    # -- logging --------------------------------------------------------------------------
    def _warn(self, kind: str, message: str) -> None:
        """Log ``message`` once until ``kind`` succeeds again (a full disk fails every write)."""
        with self._lock:
            if kind in self._warned:
                return
            self._warned.add(kind)
        log.warning("%s %s: %s", self.what, self.root, message)

    def _ok(self, kind: str) -> None:
        if self._warned:
            with self._lock:
                self._warned.discard(kind)
