"""A pool of worker processes that run JavaScript evalscripts in V8 (``js_worker.py``).

Why processes and our own small pool instead of ``ProcessPoolExecutor``: a worker whose script
outran every limit must be killed and replaced on its own, without breaking the jobs of the
others. Each worker runs one job at a time; the parent waits at most the script time limit plus
a grace period, then kills it. Workers are fresh interpreters (``python -m
server.evalscript.js_worker``, never forked: the server holds GDAL and event-loop threads, and
multiprocessing's spawn would re-import the server's main module) talking over a socketpair.
They start on first use, so a server without JavaScript layers starts none.

Band values travel through one file mapping per worker (in ``/dev/shm``, or
``EOTILER_JS_SHM_DIR``), bounded by ``JsLimits.buffer_bytes``: an image larger than the buffer
runs in strips of pixels that fit, one job per strip on the same worker. So the shared memory a
server process holds is at most ``js_workers x buffer_bytes`` (2 x 8 MB = 16 MB by default),
below twice that while buffers grow (a worker unmaps its old buffer at its next job), and
``serve --workers N`` multiplies it by N: Docker's default 64 MB ``/dev/shm`` fits the buffers
of 4 server processes with the defaults. Every buffer's pages are allocated
when its file is created (``reserve_buffer``), so a full filesystem is an error here, never a
SIGBUS in this process or a worker; the buffer then shrinks (more strips), and with no room
at all the values of each strip travel through the socket instead.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import mmap
import os
import queue
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from server.errors import EvalscriptError, Overloaded

log = logging.getLogger(__name__)

GRACE_SECONDS = 3.0  # context creation and IPC on top of the script's own limit
TILE_PIXELS = 512 * 512
SMALLEST_BUFFER = 1 << 20  # bytes: the least a buffer is created with (less only on a full filesystem)
DEFAULT_SHM_DIR = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: PTH112 - None: tempfile's own directory


@dataclass(frozen=True, slots=True)
class JsLimits:
    """Per-job limits: V8 time (seconds) and heap (bytes); the shared buffer of each worker (bytes)."""

    timeout: float = 2.0
    heap_bytes: int = 256 * 1024 * 1024
    buffer_bytes: int = 8 * 1024 * 1024

    def for_pixels(self, pixels: int) -> float:
        """The time limit for an image: per 512 x 512 pixels, so a large GetMap gets as long as its tiles."""
        return self.timeout * max(1.0, pixels / TILE_PIXELS)


def reserve_buffer(size: int, directory: str | None) -> tuple[mmap.mmap, str]:
    """A new file of ``size`` bytes in ``directory`` with every page allocated, and its mapping.

    Why ``posix_fallocate`` and not ``ftruncate`` alone: a truncated file is sparse, and on a full
    tmpfs the first write to a missing page kills the writer with SIGBUS (this server when it
    stages band values, or the worker when it writes results). Allocated pages cannot go
    missing later, so a full filesystem shows up here, as ``OSError`` (ENOSPC), before anyone
    writes. The file is deleted again when this fails.
    """
    fd, path = tempfile.mkstemp(prefix="eotiler-js-", dir=directory)
    try:
        os.posix_fallocate(fd, 0, size)
        return mmap.mmap(fd, size), path
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    finally:
        os.close(fd)


@dataclass(slots=True)
class _Process:
    process: subprocess.Popen[bytes]
    conn: Connection
    buffer: mmap.mmap | None = None  # band values in and out, shared with the worker
    buffer_path: str | None = None  # set until the worker has mapped the file, then unlinked

    def ensure_buffer(self, want: int, least: int, directory: str | None) -> bool:
        """A shared buffer of ``want`` bytes, or of as many as the filesystem has room for.

        On ENOSPC the size is halved, down to ``SMALLEST_BUFFER`` (a smaller one would cut an
        image into more strips than the socket's, which carry that size) and never below
        ``least`` (one pixel's values); a buffer already held is kept when no larger one fits.
        False when there is no buffer of ``least`` bytes (the filesystem is full or missing):
        the caller sends the values through the socket.
        """
        have = len(self.buffer) if self.buffer is not None else 0
        if have >= want:
            return True
        size = want
        floor = max(least, min(want, SMALLEST_BUFFER), have + 1)
        while True:
            try:
                buffer, path = reserve_buffer(size, directory)
                break
            except OSError as exc:
                size //= 2
                if exc.errno == errno.ENOSPC and size >= floor:
                    continue
                if have >= least:  # the reserved buffer still serves, in smaller strips
                    return True
                log.warning("no shared buffer for evalscripts in %s (%s): values go through the socket", directory, exc)
                return False
        self.release_buffer()
        self.buffer, self.buffer_path = buffer, path
        return True

    def mapped(self) -> None:
        """The worker holds the mapping now: the file name is no longer needed."""
        if self.buffer_path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.buffer_path)
            self.buffer_path = None

    def release_buffer(self) -> None:
        self.mapped()
        if self.buffer is not None:
            with contextlib.suppress(BufferError):  # a view still alive: unmapped when it goes
                self.buffer.close()
            self.buffer = None

    def kill(self) -> None:
        self.conn.close()
        self.process.kill()
        self.process.wait(timeout=5)
        self.release_buffer()


class _WorkerLost(Exception):
    """The job's worker is gone or must go (killed, crashed, past its time): replace it."""


class JsPool:
    """``workers`` V8 worker processes; ``run`` hands a job to a free one."""

    def __init__(self, workers: int = 2, limits: JsLimits | None = None, shm_dir: str | None = DEFAULT_SHM_DIR) -> None:
        self.workers = workers
        self.limits = limits or JsLimits()
        self.shm_dir = shm_dir
        self._idle: queue.Queue[_Process] = queue.Queue()
        self._started = 0
        self._lock = threading.Lock()
        self.restarts = 0

    def _start(self) -> _Process:
        parent, child = socket.socketpair()
        package_root = str(Path(__file__).resolve().parents[2])
        # Scripts cannot read the environment, but the worker gets no credentials all the same.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "EOTILER_S3_"))}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
        process = subprocess.Popen(
            [sys.executable, "-m", "server.evalscript.js_worker", str(child.fileno())],
            pass_fds=(child.fileno(),),
            env=env,
            stdin=subprocess.DEVNULL,
        )
        child.close()
        return _Process(process, Connection(parent.detach()))

    def _acquire(self) -> _Process:
        with self._lock:
            if self._idle.empty() and self._started < self.workers:
                self._started += 1
                return self._start()
        try:
            return self._idle.get(timeout=self.limits.timeout + GRACE_SECONDS)
        except queue.Empty:
            raise Overloaded("every evalscript worker is busy: retry shortly") from None

    def _replace(self, worker: _Process) -> _Process:
        worker.kill()
        self.restarts += 1
        return self._start()

    def run(
        self, kind: str, meta: dict[str, Any], payload: list[np.ndarray] | None = None, out: np.ndarray | None = None
    ) -> Any:
        """Run one job; for ``evaluate`` send ``payload`` and receive the result into ``out``.

        Band values travel through a file mapping shared with the worker, written once here and
        copied once into V8: only the small job description crosses the socket. An image whose
        values do not fit the buffer runs in strips (``_evaluate``) under one time limit.

        Raises ``EvalscriptError`` (a 400) for anything the script did: syntax or runtime error,
        time or memory limit, a crash of its worker; ``Overloaded`` (503) when every worker is
        busy or there is no shared memory left.
        """
        pixels = out.shape[-1] * out.shape[-2] if out is not None else 0
        deadline = time.monotonic() + self.limits.for_pixels(pixels)
        worker = self._acquire()
        if worker.process.poll() is not None:  # died while idle (killed, OOM killer): not the script's fault
            worker = self._replace(worker)
        try:
            if payload is not None and out is not None:
                self._evaluate(worker, meta, payload, out, deadline)
                return None
            return self._exchange(worker, kind, meta, deadline)
        except _WorkerLost as exc:
            worker = self._replace(worker)
            raise EvalscriptError(str(exc)) from None
        finally:
            self._idle.put(worker)

    def _exchange(self, worker: _Process, kind: str, meta: dict[str, Any], deadline: float) -> Any:
        """Send one job and wait for its answer until ``deadline``; the answer's value."""
        timeout = deadline - time.monotonic()
        if timeout <= 0:
            raise EvalscriptError("evalscript exceeded its time limit")
        meta = {**meta, "timeout": timeout, "heap_bytes": self.limits.heap_bytes}
        try:
            worker.conn.send((kind, meta))
            if not worker.conn.poll(timeout + GRACE_SECONDS):
                raise _WorkerLost("evalscript exceeded its time limit")
            answer = worker.conn.recv()
        except (EOFError, OSError) as exc:
            log.warning("evalscript worker died: %s", type(exc).__name__)
            raise _WorkerLost("evalscript crashed its runtime (memory limit?)") from None
        worker.mapped()
        if answer[0] == "error":
            kind_of, message = answer[1], answer[2]
            raise EvalscriptError(message if kind_of in ("timeout", "memory") else f"{kind_of} error: {message}")
        return answer[1]

    def _evaluate(
        self, worker: _Process, meta: dict[str, Any], payload: list[np.ndarray], out: np.ndarray, deadline: float
    ) -> None:
        """Run ``evaluatePixel`` over ``out``'s pixels in strips that fit the worker's buffer.

        ``payload`` holds one plane of values per (sample, band), each with ``out``'s pixels;
        ``out`` is (bands, height, width). A strip is a range of pixels: the slice of every plane
        in, the slice of every output band back, so the worker's layout
        ([sample][band][pixel] in, [band][pixel] out) holds within a strip as it does for the
        image, and ``n`` (the driver's pixel count), ``in_length`` and ``out_length`` are the
        strip's. Pixels are independent and every strip runs in the same V8 context, in order,
        so script globals see what one whole-image call would show them. With no room for a
        shared buffer at all, each strip (``SMALLEST_BUFFER`` bytes of values) goes through the
        socket with its job and comes back in the answer: slower, never a failed request.
        """
        planes = [np.ravel(plane) for plane in payload]  # views of contiguous planes
        results = out.reshape(out.shape[0], -1)
        pixels = results.shape[1]
        per_pixel = (len(planes) + results.shape[0]) * 8  # float64 in and out, whatever ``out`` holds
        if per_pixel > self.limits.buffer_bytes:
            raise EvalscriptError(f"{len(planes)} samples x bands per pixel do not fit the shared buffer")
        want = min(self.limits.buffer_bytes, max(pixels * per_pixel, SMALLEST_BUFFER))
        buffer = worker.buffer if worker.ensure_buffer(want, per_pixel, self.shm_dir) else None
        step = max(1, (len(buffer) if buffer is not None else SMALLEST_BUFFER) // per_pixel)
        bands = results.shape[0]
        for start in range(0, pixels, step):
            stop = min(start + step, pixels)
            count = stop - start
            job = {
                **meta,
                "in_bytes": count * len(planes) * 8,
                "in_length": count * len(planes),
                "out_length": count * bands,
                "eval_meta": {**meta["eval_meta"], "n": count},
            }
            if buffer is not None:
                for i, plane in enumerate(planes):
                    np.frombuffer(buffer, np.float64, count, i * count * 8)[:] = plane[start:stop]
                # the path is None once the worker has mapped this buffer
                job.update(shm_path=worker.buffer_path, shm_size=len(buffer))
                self._exchange(worker, "evaluate", job, deadline)
                values = np.frombuffer(buffer, np.float64, count * bands, job["in_bytes"])
            else:
                job["inline"] = np.concatenate([plane[start:stop] for plane in planes], dtype=np.float64).tobytes()
                values = np.frombuffer(self._exchange(worker, "evaluate", job, deadline), np.float64)
            with np.errstate(over="ignore"):  # beyond float32: infinity, as numpy scripts get
                results[:, start:stop] = values.reshape(bands, count)

    def close(self) -> None:
        """Stop every worker."""
        while True:
            try:
                worker = self._idle.get_nowait()
            except queue.Empty:
                return
            worker.kill()


_POOL: JsPool | None = None
_POOL_LOCK = threading.Lock()
_SETTINGS: tuple[int, JsLimits, str | None] = (2, JsLimits(), DEFAULT_SHM_DIR)


def configure(workers: int, limits: JsLimits, shm_dir: str | None = None) -> None:
    """Set the pool size, limits and buffer directory (``create_app``; None: ``DEFAULT_SHM_DIR``).

    A running pool with other settings is stopped; the next job starts one with these.
    """
    global _SETTINGS, _POOL
    with _POOL_LOCK:
        _SETTINGS = (workers, limits, shm_dir or DEFAULT_SHM_DIR)
        if _POOL is not None and (_POOL.workers, _POOL.limits, _POOL.shm_dir) != _SETTINGS:
            _POOL.close()
            _POOL = None


def shutdown() -> None:
    """Stop the pool's workers (a process that only validated a configuration needs none)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is not None:
            _POOL.close()
            _POOL = None


def pool() -> JsPool:
    """The process-wide pool, created on first use."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = JsPool(*_SETTINGS)
        return _POOL
