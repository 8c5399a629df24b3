"""Admission control for renders: a fixed number run at once, a bounded number wait.

Why: every render holds memory, reader threads and object-store connections. Beyond
``render_concurrency`` running and ``render_queue`` waiting, a new render is refused in
microseconds (503 + Retry-After) instead of piling up threads the server cannot run.
"""

from __future__ import annotations

import threading
import time

from server.errors import Overloaded


class Admission:
    """Render slots: ``admit`` takes one (waiting until a deadline at most), ``leave`` gives it back."""

    def __init__(self, concurrency: int, queue: int) -> None:
        self.concurrency = concurrency
        self.queue = queue
        self._slots = threading.BoundedSemaphore(concurrency)
        self._admitted = 0  # renders running or waiting for a slot
        self._lock = threading.Lock()

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
        """Give back a slot taken by ``admit``."""
        self._slots.release()
        with self._lock:
            self._admitted -= 1
