"""A pool of worker processes that run JavaScript evalscripts in V8 (``js_worker.py``).

Why processes and our own small pool instead of ``ProcessPoolExecutor``: a worker whose script
outran every limit must be killed and replaced on its own, without breaking the jobs of the
others. Each worker runs one job at a time; the parent waits at most the script time limit plus
a grace period, then kills it. Workers are fresh interpreters (``python -m
server.evalscript.js_worker``, never forked: the server holds GDAL and event-loop threads, and
multiprocessing's spawn would re-import the server's main module) talking over a socketpair.
They start on first use, so a server without JavaScript layers starts none.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import queue
import socket
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from server.errors import EvalscriptError, Overloaded

log = logging.getLogger(__name__)

GRACE_SECONDS = 3.0
TILE_PIXELS = 512 * 512
_SHM_DIR = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: PTH112 - tempfile takes a str  # context creation and IPC on top of the script's own limit


@dataclass(frozen=True, slots=True)
class JsLimits:
    """Per-job limits: V8 time (seconds) and heap (bytes)."""

    timeout: float = 2.0
    heap_bytes: int = 256 * 1024 * 1024

    def for_pixels(self, pixels: int) -> float:
        """The time limit for an image: per 512 x 512 pixels, so a large GetMap gets as long as its tiles."""
        return self.timeout * max(1.0, pixels / TILE_PIXELS)


@dataclass(slots=True)
class _Process:
    process: subprocess.Popen[bytes]
    conn: Connection
    buffer: mmap.mmap | None = None  # band values in and out, shared with the worker
    buffer_path: str | None = None  # set until the worker has mapped the file, then unlinked

    def ensure_buffer(self, size: int) -> None:
        """A shared file mapping of at least ``size`` bytes (a new one when it must grow)."""
        if self.buffer is not None and len(self.buffer) >= size:
            return
        self.release_buffer()
        size = max(size, 1 << 20)
        fd, path = tempfile.mkstemp(prefix="eotiler-js-", dir=_SHM_DIR)
        try:
            os.ftruncate(fd, size)
            self.buffer = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        self.buffer_path = path

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


class JsPool:
    """``workers`` V8 worker processes; ``run`` hands a job to a free one."""

    def __init__(self, workers: int = 2, limits: JsLimits | None = None) -> None:
        self.workers = workers
        self.limits = limits or JsLimits()
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

        Band values travel through a file mapping shared with the worker (``/dev/shm``), written
        once here and copied once into V8: only the small job description crosses the socket.

        Raises ``EvalscriptError`` (a 400) for anything the script did: syntax or runtime error,
        time or memory limit, a crash of its worker.
        """
        timeout = self.limits.for_pixels(out.shape[-1] * out.shape[-2] if out is not None else 0)
        meta = {**meta, "timeout": timeout, "heap_bytes": self.limits.heap_bytes}
        worker = self._acquire()
        if worker.process.poll() is not None:  # died while idle (killed, OOM killer): not the script's fault
            worker = self._replace(worker)
        try:
            try:
                if payload is not None and out is not None:
                    meta = {**meta, **self._stage(worker, payload, out)}
                worker.conn.send((kind, meta))
                if not worker.conn.poll(timeout + GRACE_SECONDS):
                    worker = self._replace(worker)
                    raise EvalscriptError("evalscript exceeded its time limit")
                answer = worker.conn.recv()
                worker.mapped()
                if answer[0] == "error":
                    kind_of, message = answer[1], answer[2]
                    raise EvalscriptError(
                        message if kind_of in ("timeout", "memory") else f"{kind_of} error: {message}"
                    )
                if out is not None and worker.buffer is not None:  # converted to out's dtype here
                    offset = sum(a.nbytes for a in payload or [])
                    with np.errstate(over="ignore"):  # beyond float32: infinity, as numpy scripts get
                        out.reshape(-1)[:] = np.frombuffer(worker.buffer, np.float64, out.size, offset)
                return answer[1]
            except (EOFError, OSError) as exc:
                log.warning("evalscript worker died: %s", type(exc).__name__)
                worker = self._replace(worker)
                raise EvalscriptError("evalscript crashed its runtime (memory limit?)") from None
        finally:
            self._idle.put(worker)

    @staticmethod
    def _stage(worker: _Process, payload: list[np.ndarray], out: np.ndarray) -> dict[str, Any]:
        """Write the input arrays into the worker's shared buffer; the job's buffer description."""
        in_bytes = sum(a.nbytes for a in payload)
        worker.ensure_buffer(in_bytes + out.size * 8)  # V8 writes float64, whatever ``out`` holds
        assert worker.buffer is not None
        offset = 0
        for array in payload:
            view = np.frombuffer(worker.buffer, np.float64, array.size, offset)
            view[:] = array.reshape(-1)
            offset += array.nbytes
        return {"shm_path": worker.buffer_path, "shm_size": len(worker.buffer), "in_bytes": in_bytes}

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
_SETTINGS: tuple[int, JsLimits] = (2, JsLimits())


def configure(workers: int, limits: JsLimits) -> None:
    """Set the pool size and limits (``create_app``); takes effect for a pool not yet started."""
    global _SETTINGS, _POOL
    with _POOL_LOCK:
        _SETTINGS = (workers, limits)
        if _POOL is not None and (_POOL.workers, _POOL.limits) != _SETTINGS:
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
