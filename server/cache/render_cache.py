"""Rendered images through the tile cache, each render in an admitted slot within its budget.

Why one place: every image endpoint answers the same way: a hit from memory or Redis, else a
render on a render thread holding a slot (``render.admission``) while the request's thread waits
at most until its deadline. A render stuck in GDAL keeps its slot, never the client; a complete
late image is still stored for the next request; an incomplete one (scenes failed or skipped)
is never stored.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from server.cache.tile_cache import CachedImage, TileCache, content_etag
from server.errors import UpstreamTimeout
from server.models import RenderRequest, RenderResult
from server.render.admission import Admission

log = logging.getLogger(__name__)

# Share of the request budget kept for the script and the encoder after reads stop.
READ_MARGIN = 0.1


class RenderCache:
    """The tile cache in front of admitted renders."""

    def __init__(
        self, cache: TileCache, admission: Admission, budget: float, max_age: Callable[[RenderRequest], int]
    ) -> None:
        self.cache = cache
        self.admission = admission
        self.budget = budget  # seconds: the request budget
        self.max_age = max_age
        # One thread per slot; the request's thread waits at most for the rest of its budget.
        self._renders = ThreadPoolExecutor(max_workers=admission.concurrency, thread_name_prefix="eotiler-render")
        self._local = threading.local()  # the deadline of the render a render thread runs

    def close(self) -> None:
        """Stop taking renders (running ones end on their own)."""
        self._renders.shutdown(wait=False, cancel_futures=True)

    def hit(
        self, found: tuple[CachedImage, str], req: RenderRequest, timings: dict[str, float], mark: float
    ) -> RenderResult:
        """The result for a cached image found at ``mark`` (``time.perf_counter()``)."""
        item, level = found
        timings = {**timings, f"cache-{level}": (time.perf_counter() - mark) * 1000}
        return RenderResult(
            item.content, item.media_type, item.scenes, timings, item.empty, "HIT", self.max_age(req), etag=item.etag
        )

    def in_memory(self, key: str, req: RenderRequest, timings: dict[str, float]) -> RenderResult | None:
        """The image from this process's memory only (no I/O: safe on the event loop), or None."""
        mark = time.perf_counter()
        found = self.cache.get(key, memory_only=True)
        return None if found is None else self.hit(found, req, timings, mark)

    def cached(
        self,
        key: str,
        req: RenderRequest,
        produce: Callable[[], RenderResult],
        timings: dict[str, float],
        deadline: float | None = None,
    ) -> RenderResult:
        """Serve ``key`` from the tile cache, or ``produce`` it and store it.

        ``produce`` runs on a render thread holding a render slot; this thread waits for it until
        ``deadline`` (default: a request budget from now) and then answers 504. A render that
        outlives its request keeps its slot and its place in the admission count until it ends
        (so stuck renders make the server refuse new work, never accept more than it can run),
        and a complete late image is still stored for the next request.
        """
        return self.cached_many([key], req, lambda _: [produce()], timings, deadline)[0]

    def cached_many(
        self,
        keys: list[str],
        req: RenderRequest,
        produce: Callable[[list[int]], list[RenderResult]],
        timings: dict[str, float],
        deadline: float | None = None,
    ) -> list[RenderResult]:
        """``cached`` for images made together (outputs of one script from one read): each key
        from the cache, and those missing (their positions handed to ``produce``, which returns
        their results in that order) made in one render slot."""
        mark = time.perf_counter()
        results: list[RenderResult | None] = []
        for key in keys:
            found = self.cache.get(key)
            results.append(None if found is None else self.hit(found, req, timings, mark))
        missing = [number for number, result in enumerate(results) if result is None]
        if not missing:
            return [result for result in results if result is not None]
        deadline = deadline or time.monotonic() + self.budget
        pixels = req.grid.width * req.grid.height  # the admission's pixel budget: memory of large maps
        self.admission.admit(deadline, pixels)
        # Reads stop a little before the answer is due (and never later than a budget from now),
        # so a slow request still gets its incomplete image instead of a 504.
        read_by = min(deadline, time.monotonic() + self.budget) - self.budget * READ_MARGIN
        wanted = [keys[number] for number in missing]
        try:
            future = self._renders.submit(self._render_in_slot, wanted, req, lambda: produce(missing), read_by, pixels)
        except RuntimeError:  # the pipeline is closing
            self.admission.leave(pixels)
            raise
        try:
            made = future.result(timeout=max(0.0, deadline - time.monotonic()))
        except FutureTimeout:
            log.warning("request budget spent: %s answered 504, its render goes on in the background", wanted[0])
            raise UpstreamTimeout(f"the image was not ready in time (request budget {self.budget:g} s)") from None
        for number, result in zip(missing, made, strict=True):
            result.timings = {**timings, **{k: v for k, v in result.timings.items() if k != "catalogue"}}
            results[number] = result
        return [result for result in results if result is not None]

    def _render_in_slot(
        self,
        keys: list[str],
        req: RenderRequest,
        produce: Callable[[], list[RenderResult]],
        deadline: float,
        pixels: int,
    ) -> list[RenderResult]:
        """Run on a render thread: produce (reads stop at ``deadline``), store what is complete,
        then give the slot and the ``pixels`` admitted with it back."""
        self._local.deadline = deadline
        try:
            results = produce()
            for key, result in zip(keys, results, strict=True):
                result.cache = "MISS"
                if result.failed or result.skipped:
                    result.max_age = 0  # incomplete: neither we nor a browser may keep it
                    continue
                self.store(key, result)
                result.max_age = self.max_age(req)
            return results
        finally:
            self._local.deadline = None
            self.admission.leave(pixels)

    def store(self, key: str, result: RenderResult) -> None:
        """Keep a complete image under ``key`` (its strong ETag computed once, here)."""
        result.etag = content_etag(result.content)
        self.cache.put(key, CachedImage(result.content, result.media_type, result.scenes, result.empty, result.etag))

    def unadmitted(self, key: str, req: RenderRequest, produce: Callable[[], RenderResult]) -> RenderResult:
        """An image that reads no data (an empty one): from the cache, or made on this thread
        without a render slot and stored."""
        mark = time.perf_counter()
        found = self.cache.get(key)
        if found is not None:
            return self.hit(found, req, {}, mark)
        result = produce()
        result.cache = "MISS"
        self.store(key, result)
        return result

    def deadline(self) -> float:
        """When the render running on this thread must be answered (a request budget from now
        outside a render thread)."""
        found = getattr(self._local, "deadline", None)
        return found if found is not None else time.monotonic() + self.budget
