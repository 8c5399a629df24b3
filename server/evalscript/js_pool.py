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

import logging
import os
import queue
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from server.errors import EvalscriptError, Overloaded

log = logging.getLogger(__name__)

GRACE_SECONDS = 3.0  # context creation and IPC on top of the script's own limit


@dataclass(frozen=True, slots=True)
class JsLimits:
    """Per-job limits: V8 time (seconds) and heap (bytes)."""

    timeout: float = 2.0
    heap_bytes: int = 256 * 1024 * 1024


@dataclass(slots=True)
class _Process:
    process: subprocess.Popen[bytes]
    conn: Connection

    def kill(self) -> None:
        self.conn.close()
        self.process.kill()
        self.process.wait(timeout=5)


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
        self, kind: str, meta: dict[str, Any], payload: np.ndarray | None = None, out: np.ndarray | None = None
    ) -> Any:
        """Run one job; for ``evaluate`` send ``payload`` and receive the result into ``out``.

        Raises ``EvalscriptError`` (a 400) for anything the script did: syntax or runtime error,
        time or memory limit, a crash of its worker.
        """
        meta = {**meta, "timeout": self.limits.timeout, "heap_bytes": self.limits.heap_bytes}
        worker = self._acquire()
        if worker.process.poll() is not None:  # died while idle (killed, OOM killer): not the script's fault
            worker = self._replace(worker)
        try:
            try:
                worker.conn.send((kind, meta))
                if payload is not None:
                    worker.conn.send_bytes(memoryview(np.ascontiguousarray(payload)).cast("B"))
                if not worker.conn.poll(self.limits.timeout + GRACE_SECONDS):
                    worker = self._replace(worker)
                    raise EvalscriptError("evalscript exceeded its time limit")
                answer = worker.conn.recv()
                if answer[0] == "error":
                    kind_of, message = answer[1], answer[2]
                    raise EvalscriptError(
                        message if kind_of in ("timeout", "memory") else f"{kind_of} error: {message}"
                    )
                if out is not None:
                    worker.conn.recv_bytes_into(memoryview(out).cast("B"))
                return answer[1]
            except (EOFError, OSError) as exc:
                log.warning("evalscript worker died: %s", type(exc).__name__)
                worker = self._replace(worker)
                raise EvalscriptError("evalscript crashed its runtime (memory limit?)") from None
        finally:
            self._idle.put(worker)

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


def pool() -> JsPool:
    """The process-wide pool, created on first use."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = JsPool(*_SETTINGS)
        return _POOL
