"""Decoded JPEG2000 blocks kept in memory and on disk, decoded once for every thread and process.

Why: a Sentinel-2 JPEG2000 band is coded in 1024 px tiles, and decoding one costs 100-170 ms of
CPU. GDAL caches decoded blocks per dataset *handle*, but the dataset pool lends one handle per
thread, so six concurrent tiles over one block decoded it up to six times, the z14 tiles decoded
again what the z13 tiles had, and every restart or other worker process decoded everything
again. Here a block is decoded once and then served to any reader:

- memory: an LRU bounded in bytes, shared by the threads of a process;
- single flight: a thread that wants a block another thread is decoding waits for that decode;
- disk: one raw ``.npy`` per block under a directory bounded in bytes, written to a temporary
  name and renamed, so worker processes (and the next start) share it. A process decoding a
  block holds an advisory lock (``flock``) on the block's ``.lock`` file there, and another
  process that wants the block waits for that lock and loads the file instead of decoding the
  block again: with two workers, the tiles of one map view land on both, and each decoded the
  blocks they shared (a first view and a pan at z13 over three 10 m bands: 42 decodes counted
  where 30 blocks were needed). Raw, not compressed: a 1024 px block of the real B04 band
  shrinks only 1.19x with zlib, and inflating it took 40-55 ms where loading the raw 2 MB file
  took under 1 ms (zstd and lz4 are not dependencies).

A block is keyed on the object's identity: its path, a version (size and modification time;
see ``block_read.object_version``), the band and the block's column and row. A changed object
has another version, so it is never served from an old block.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from server.settings import Settings

log = logging.getLogger(__name__)

RESCAN_STORES = 64  # blocks written between two counts of the shared directory
# Longest wait for another process's decode before decoding here: a decode takes ~0.15 s and its
# tile-parts a few round trips; a process slower than this is stuck behind its store, and the
# reader still decodes well within its request budget (20 s by default).
OTHER_PROCESS_WAIT_S = 5.0
_POLL_S = 0.005


@dataclass(frozen=True, slots=True)
class BlockKey:
    """One block of one band of one version of an object."""

    path: str
    version: str
    band: int
    column: int
    row: int

    def file_name(self) -> str:
        """A flat, fixed-length name: paths may be long and hold any character."""
        digest = hashlib.sha256(f"{self.path}\0{self.version}".encode()).hexdigest()[:32]
        return f"{digest}_{self.band}_{self.column}_{self.row}.npy"


class BlockUnavailable(Exception):
    """Another thread's decode of a block this thread waited for failed (its error is the cause)."""


class _Flight:
    """A decode in progress that other threads wait for."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: np.ndarray | None = None
        self.error: BaseException | None = None


class BlockCache:
    """Decoded blocks: memory LRU (``memory_bytes``) over a disk directory (``disk_bytes``)."""

    def __init__(self, memory_bytes: int, directory: Path | None = None, disk_bytes: int = 0) -> None:
        self.memory_bytes = memory_bytes
        self.disk_bytes = disk_bytes if directory is not None else 0
        self.directory = directory if self.disk_bytes > 0 else None
        self._memory: OrderedDict[BlockKey, np.ndarray] = OrderedDict()
        self._held = 0
        self._flights: dict[BlockKey, _Flight] = {}
        self._lock = threading.Lock()
        self._lock_files: dict[BlockKey, int] = {}  # descriptors of the lock files this process holds
        self._disk_estimate = 0  # bytes this process believes are on disk; rescanned past the budget
        self._stores_since_scan = 0
        self._failing = False
        self.memory_hits = 0
        self.disk_hits = 0
        self.misses = 0
        self.decodes = 0
        self.waits = 0
        self.evicted = 0
        if self.directory is not None:
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
                self._disk_estimate = self._scan_bytes()
            except OSError as exc:
                log.warning("block cache %s unusable (%s): decoded blocks stay in memory", self.directory, exc)
                self.directory = None

    def get(self, key: BlockKey, decode: Callable[[], np.ndarray]) -> np.ndarray:
        """The block ``key``: from memory, from disk, from another thread's decode, or ``decode()``.

        The array returned is shared and read-only. ``decode`` runs at most once per key at a
        time in this process; its exception reaches every thread that waited for it.
        """
        with self._lock:
            found = self._memory.get(key)
            if found is not None:
                self._memory.move_to_end(key)
                self.memory_hits += 1
                return found
            flight = self._flights.get(key)
            leader = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight()
            else:
                self.waits += 1
        if leader:
            return self._settle(key, flight, decode)
        flight.done.wait()
        if flight.error is not None:
            raise BlockUnavailable(f"decoding block {key.column},{key.row} of {key.path} failed") from flight.error
        assert flight.value is not None
        return flight.value

    def claim(self, keys: Iterable[BlockKey]) -> list[BlockKey]:
        """Those of ``keys`` this thread is to produce: in neither memory nor another thread's hands.

        Why all at once, under one lock: a read decodes the blocks it lacks in one go (one GDAL
        read of their rectangle), and two neighbouring reads that each looked first and claimed
        later would both decode the blocks they share. Every claimed key must then be settled
        by ``produce``, or threads waiting for it would wait for ever.
        """
        led: list[BlockKey] = []
        with self._lock:
            for key in keys:
                if key not in self._memory and key not in self._flights:
                    self._flights[key] = _Flight()
                    led.append(key)
        return led

    def reserve(self, keys: Iterable[BlockKey]) -> list[BlockKey]:
        """Of the ``claim``-ed ``keys``, those no other process is decoding now: this one decodes them.

        The lock file of each key returned is held until ``produce`` has stored its block. A key
        left out is another process's now; ``produce`` waits for it and loads its file. Without
        a disk directory there is nothing to share, and every key is this process's.
        """
        if not self._shares():
            return list(keys)
        return [key for key in keys if self._lock_across_processes(key, wait=False)]

    def produce(self, keys: list[BlockKey], decode: Callable[[BlockKey], np.ndarray]) -> None:
        """Settle the ``claim``-ed ``keys``, each from disk or ``decode(key)``; on an error every key
        not yet settled fails with it too, so no waiter is left behind.

        The keys this process ``reserve``-d are settled first, so that it never waits for
        another process's decode while holding a lock that process may be waiting for.
        """
        with self._lock:
            keys = sorted(keys, key=lambda key: key not in self._lock_files)
        for index, key in enumerate(keys):
            with self._lock:
                flight = self._flights[key]
            try:
                self._settle(key, flight, partial(decode, key))
            except BaseException as exc:
                for rest in keys[index + 1 :]:
                    self._unlock_across_processes(rest)
                    with self._lock:
                        pending = self._flights.pop(rest)
                    pending.error = exc
                    pending.done.set()
                raise

    def _settle(self, key: BlockKey, flight: _Flight, decode: Callable[[], np.ndarray]) -> np.ndarray:
        """The leader's part of a flight: load or decode, remember, and release the waiters."""
        try:
            value = self._load(key)
            if value is None and self._shares():
                with self._lock:
                    reserved = key in self._lock_files
                if not reserved and not self._lock_across_processes(key, wait=True):
                    with self._lock:
                        self.waits += 1  # another process decoded it meanwhile: its file, if stored
                    value = self._load(key)
            if value is None:
                with self._lock:
                    self.misses += 1
                    self.decodes += 1
                value = np.ascontiguousarray(decode())
                value.setflags(write=False)
                self._store(key, value)
            self._remember(key, value)
            flight.value = value
            return value
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            self._unlock_across_processes(key)
            with self._lock:
                self._flights.pop(key, None)
            flight.done.set()

    def _shares(self) -> bool:
        """Whether decodes are shared with other processes: only through a disk directory that
        takes writes (while stores fail, a waiter would find no file and decode again anyway)."""
        return self.directory is not None and not self._failing

    def _lock_across_processes(self, key: BlockKey, *, wait: bool) -> bool:
        """Take ``key``'s lock file; ``False`` when another process held it (after waiting for it
        to be released, when ``wait``). ``True`` also when no lock can be had (the lock file
        cannot be made, or the file system has no ``flock``): the block is then this process's
        to decode, as without a directory.

        Waiting polls rather than blocks, so that a process stuck in a decode costs a reader
        at most ``OTHER_PROCESS_WAIT_S``; the lock is taken either way once released.
        """
        assert self.directory is not None
        try:
            descriptor = os.open(self.directory / f"{key.file_name()}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            return True
        free = True
        deadline = time.monotonic() + OTHER_PROCESS_WAIT_S
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                free = False
                if not wait:
                    os.close(descriptor)
                    return False
                if time.monotonic() > deadline:
                    log.warning("block cache: another process still decodes %s; decoding it here", key.file_name())
                    break
                time.sleep(_POLL_S)
            except OSError:  # a file system without flock: no sharing of decodes
                break
        with self._lock:
            self._lock_files[key] = descriptor
        return free

    def _unlock_across_processes(self, key: BlockKey) -> None:
        """Release ``key``'s lock file; removed first when no block was stored (a failed decode or
        store, a block larger than the disk budget), so lock files do not outlive their blocks.
        A process that opened the removed file before gets its lock and decodes the block
        itself: duplicate work, never a wrong block (stores are atomic renames)."""
        with self._lock:
            descriptor = self._lock_files.pop(key, None)
        if descriptor is None:
            return
        if self.directory is not None and not (self.directory / key.file_name()).exists():
            with contextlib.suppress(OSError):
                (self.directory / f"{key.file_name()}.lock").unlink()
        os.close(descriptor)  # releases the flock

    def holds(self, key: BlockKey) -> bool:
        """Whether ``key`` is in memory or on disk now (no counting, no loading)."""
        with self._lock:
            if key in self._memory:
                return True
        return self.directory is not None and (self.directory / key.file_name()).exists()

    def _remember(self, key: BlockKey, value: np.ndarray) -> None:
        if value.nbytes > self.memory_bytes:
            return
        with self._lock:
            if key in self._memory:
                return
            self._memory[key] = value
            self._held += value.nbytes
            while self._held > self.memory_bytes:
                _, old = self._memory.popitem(last=False)
                self._held -= old.nbytes
                self.evicted += 1

    def _load(self, key: BlockKey) -> np.ndarray | None:
        if self.directory is None:
            return None
        path = self.directory / key.file_name()
        try:
            value = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:  # a truncated or foreign file: decode instead
            log.info("block cache: dropping unreadable %s (%s)", path.name, exc)
            with contextlib.suppress(OSError):
                path.unlink()
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # LRU order for eviction, across processes
        value.setflags(write=False)
        with self._lock:
            self.disk_hits += 1
        return value

    def _store(self, key: BlockKey, value: np.ndarray) -> None:
        if self.directory is None or value.nbytes > self.disk_bytes:
            return
        path = self.directory / key.file_name()
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            with open(tmp, "wb") as handle:
                np.save(handle, value, allow_pickle=False)
            os.replace(tmp, path)
        except OSError as exc:  # a full or read-only disk never fails the read
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            if not self._failing:
                log.warning("block cache: cannot write %s (%s); blocks stay in memory", path.name, exc)
                self._failing = True
            return
        self._failing = False
        with self._lock:
            self._disk_estimate += value.nbytes + 128  # + the .npy header
            self._stores_since_scan += 1
            scan = self._disk_estimate > self.disk_bytes or self._stores_since_scan >= RESCAN_STORES
        if scan:
            self._evict_disk()

    def _scan_bytes(self) -> int:
        assert self.directory is not None
        total = 0
        for path in self.directory.glob("*.npy"):
            with contextlib.suppress(OSError):
                total += path.stat().st_size
        return total

    def _evict_disk(self) -> None:
        """Delete the least recently used block files until the directory fits 90 % of its budget.

        Other processes write to the directory too, so the files are counted again here (also
        every ``RESCAN_STORES`` writes) rather than trusted from this process's estimate; the
        10 % left free spares a scan on each of the next writes.
        """
        assert self.directory is not None
        files = []
        for path in self.directory.glob("*.npy"):
            try:
                stat = path.stat()
            except OSError:
                continue
            files.append((stat.st_mtime, stat.st_size, path))
        total = sum(size for _, size, _ in files)
        target = self.disk_bytes * 0.9 if total > self.disk_bytes else self.disk_bytes
        for _, size, path in sorted(files):
            if total <= target:
                break
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
                path.with_name(f"{path.name}.lock").unlink(missing_ok=True)
            total -= size
        with self._lock:
            self._disk_estimate = total
            self._stores_since_scan = 0

    def stats(self) -> dict[str, int]:
        """Counters and sizes for ``/metrics``."""
        with self._lock:
            return {
                "memory_hits": self.memory_hits,
                "disk_hits": self.disk_hits,
                "misses": self.misses,
                "decodes": self.decodes,
                "waits": self.waits,
                "evicted": self.evicted,
                "memory_bytes": self._held,
                "memory_blocks": len(self._memory),
                "disk_bytes": self._disk_estimate if self.directory is not None else 0,
            }

    def clear_memory(self) -> None:
        """Forget the blocks held in memory (tests)."""
        with self._lock:
            self._memory.clear()
            self._held = 0


_CURRENT: BlockCache | None = None


def from_settings(settings: Settings) -> BlockCache | None:
    """The block cache ``EOTILER_BLOCK_CACHE_*`` describe, ``None`` when switched off."""
    if settings.block_cache_mb <= 0:
        return None
    return BlockCache(
        settings.block_cache_mb * 1024**2, settings.block_cache_dir, settings.block_cache_disk_mb * 1024**2
    )


def configure(cache: BlockCache | None) -> None:
    """Install the process's block cache (``create_app``); ``None`` switches it off."""
    global _CURRENT
    _CURRENT = cache


def current() -> BlockCache | None:
    """The process's block cache, ``None`` when off."""
    return _CURRENT
