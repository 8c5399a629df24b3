"""Admission control for renders: a fixed number run at once, a bounded number wait.

Why: every render holds memory, reader threads and object-store connections. Beyond
``render_concurrency`` running and ``render_queue`` waiting, a new render is refused in
microseconds (503 + Retry-After) instead of piling up threads the server cannot run.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from server.errors import Overloaded
from server.malloc_arenas import release_free_memory

log = logging.getLogger(__name__)


class Admission:
    """Render slots: ``admit`` takes one (waiting until a deadline at most), ``leave`` gives it back.

    When the last render leaves, a thread of its own gives the memory the renders freed back to
    the system (``release_free_memory``): off the render thread, so no answer waits for it, and
    only while no render runs, so a burst of renders reuses its freed arrays instead.
    """

    def __init__(self, concurrency: int, queue: int, on_idle: Callable[[], object] = release_free_memory) -> None:
        self.concurrency = concurrency
        self.queue = queue
        self._slots = threading.BoundedSemaphore(concurrency)
        self._admitted = 0  # renders running or waiting for a slot
        self._lock = threading.Lock()
        self._on_idle = on_idle
        self._idle = threading.Event()
        self._idler: threading.Thread | None = None

    def load(self) -> tuple[int, int]:
        """Renders holding a slot, and renders waiting for one."""
        with self._lock:
            admitted = self._admitted
        waiting = max(0, admitted - self.concurrency)
        return admitted - waiting, waiting

    def admit(self, deadline: float) -> None:
        """Take a slot, waiting until ``deadline`` (``time.monotonic()``) at most.

        At most ``queue`` renders wait for one; beyond that, or when the wait reaches the
        deadline, ``Overloaded``. Paired with ``leave``.
        """
        with self._lock:
            if self._admitted >= self.concurrency + self.queue:
                raise Overloaded("the server is busy rendering: retry shortly")
            self._admitted += 1
        if not self._slots.acquire(timeout=max(0.0, deadline - time.monotonic())):
            with self._lock:
                self._admitted -= 1
            raise Overloaded("the server is busy rendering: retry shortly")

    def leave(self) -> None:
        """Give back a slot taken by ``admit``; the last one out wakes the idle task."""
        self._slots.release()
        with self._lock:
            self._admitted -= 1
            if self._admitted:
                return
            if self._idler is None:
                self._idler = threading.Thread(target=self._when_idle, name="eotiler-idle", daemon=True)
                self._idler.start()
        self._idle.set()

    def _when_idle(self) -> None:
        """Run ``on_idle`` each time the renders have all left (once for several departures)."""
        while True:
            self._idle.wait()
            self._idle.clear()
            with self._lock:
                busy = self._admitted > 0
            if not busy:
                try:
                    self._on_idle()
                except Exception:  # noqa: BLE001 - the idle task must outlive a failure
                    log.exception("idle task failed")
