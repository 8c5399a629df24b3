"""Admission control for renders: a fixed number run at once, a bounded number wait.

Why: every render holds memory, reader threads and object-store connections. Beyond
``render_concurrency`` running and ``render_queue`` waiting, a new render is refused in
microseconds (503 + Retry-After) instead of piling up threads the server cannot run.

Renders also share a pixel budget (``EOTILER_RENDER_PIXELS``): a render holds about 110 bytes
per pixel while it runs (a 1024 px map: ~115 MB of float inputs, script values and GDAL's warp
buffers), so four slots are fine for tiles but not for four large maps at once. A render takes
its pixels from the budget (at most the whole budget, so any image can run alone) and waits in
line, in arrival order, until they are free; its slot is taken after that, so a waiting map
holds no slot, but a tile that arrives behind it waits in the same line. See ``docs/memory.md``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from server.errors import Overloaded
from server.malloc_arenas import release_free_memory

log = logging.getLogger(__name__)

# Seconds without a render before the idle task runs: renders that follow each other (the tiles of
# a map view, a client asking one at a time) reuse the arrays the previous ones freed, and the
# memory goes back once the burst is over (a tile's arrays mapped afresh: docs/xyz-tile-speed.md).
IDLE_AFTER = 0.5


class Admission:
    """Render slots: ``admit`` takes one (waiting until a deadline at most), ``leave`` gives it back.

    ``pixels`` is the budget of image pixels rendered at once (0: none); ``admit`` and ``leave``
    are told each render's pixels.

    When the last render leaves and no render is admitted for ``idle_after`` seconds, a thread of
    its own gives the memory the renders freed back to the system (``release_free_memory``): off
    the render thread, so no answer waits for it, and only once renders have stopped, so a burst
    of renders reuses its freed arrays instead.
    """

    def __init__(
        self,
        concurrency: int,
        queue: int,
        on_idle: Callable[[], object] = release_free_memory,
        pixels: int = 0,
        idle_after: float = IDLE_AFTER,
    ) -> None:
        self.concurrency = concurrency
        self.queue = queue
        self.pixels = pixels
        self._slots = threading.BoundedSemaphore(concurrency)
        self._room = threading.Condition()  # guards the pixels in use and the line waiting for them
        self._in_use = 0
        self._line: deque[object] = deque()  # renders waiting for pixels, first come first served
        self._admitted = 0  # renders running or waiting for a slot
        self._arrivals = 0  # renders admitted since start: the idle task sees whether one came
        self._lock = threading.Lock()
        self._on_idle = on_idle
        self._idle_after = idle_after
        self._idle = threading.Event()
        self._idler: threading.Thread | None = None

    def load(self) -> tuple[int, int]:
        """Renders holding a slot, and renders waiting for one."""
        with self._lock:
            admitted = self._admitted
        with self._room:
            in_line = len(self._line)
        waiting = max(0, admitted - self.concurrency, in_line)
        return admitted - waiting, waiting

    def admit(self, deadline: float, pixels: int = 0) -> None:
        """Take ``pixels`` of the budget, then a slot, waiting until ``deadline``
        (``time.monotonic()``) at most.

        At most ``queue`` renders wait; beyond that, or when the wait reaches the deadline,
        ``Overloaded``. Paired with ``leave`` (with the same ``pixels``).
        """
        with self._lock:
            if self._admitted >= self.concurrency + self.queue:
                raise Overloaded("the server is busy rendering: retry shortly")
            self._admitted += 1
            self._arrivals += 1
        taken = self._take_pixels(pixels, deadline)
        if not taken or not self._slots.acquire(timeout=max(0.0, deadline - time.monotonic())):
            if taken:
                self._give_pixels(pixels)
            with self._lock:
                self._admitted -= 1
            raise Overloaded("the server is busy rendering: retry shortly")

    def leave(self, pixels: int = 0) -> None:
        """Give back a slot and the pixels taken by ``admit``; the last one out wakes the idle task."""
        self._slots.release()
        self._give_pixels(pixels)
        with self._lock:
            self._admitted -= 1
            if self._admitted:
                return
            if self._idler is None:
                self._idler = threading.Thread(target=self._when_idle, name="eotiler-idle", daemon=True)
                self._idler.start()
        self._idle.set()

    def _share(self, pixels: int) -> int:
        """What a render of ``pixels`` takes from the budget: all of it at most, so it can run alone."""
        return min(pixels, self.pixels) if self.pixels > 0 else 0

    def _take_pixels(self, pixels: int, deadline: float) -> bool:
        """Wait for the first place in line and room in the budget; False at ``deadline``."""
        share = self._share(pixels)
        if share == 0:
            return True
        ticket = object()
        with self._room:
            self._line.append(ticket)
            try:
                while self._line[0] is not ticket or self._in_use + share > self.pixels:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._room.wait(remaining)
                self._in_use += share
                return True
            finally:
                self._line.remove(ticket)
                self._room.notify_all()  # the next in line may fit now

    def _give_pixels(self, pixels: int) -> None:
        share = self._share(pixels)
        if share:
            with self._room:
                self._in_use -= share
                self._room.notify_all()

    def _when_idle(self) -> None:
        """Run ``on_idle`` each time the renders have all left and none came for ``idle_after``
        seconds (once for several departures)."""
        while True:
            self._idle.wait()
            self._idle.clear()
            with self._lock:
                arrivals = self._arrivals
            time.sleep(self._idle_after)
            with self._lock:
                busy = self._admitted > 0 or self._arrivals != arrivals
            if not busy:
                try:
                    self._on_idle()
                except Exception:  # noqa: BLE001 - the idle task must outlive a failure
                    log.exception("idle task failed")
