"""Large images in strips: bounded memory, and reading and evaluation on both cores.

Why strips: a 2048 x 2048 map holds every input band as float32 and the script's values as
float64 at once when drawn whole (hundreds of MB), and one thread reads, then evaluates, while
the other core waits. Cut into full-width strips of at most ``STRIP_PIXELS``, the pipeline
draws ``IN_FLIGHT`` strips at the same time (GDAL reads and numpy release the GIL), so one
strip is read while another is evaluated, and only those strips' inputs are in memory; the
post-processed output (a few bytes per pixel) is joined and encoded once, after the last strip.

A strip is the whole image's grid restricted to some rows: the same pixel edges, and the
whole image's ground resolution (``Grid.ground``), so it reads the same band files and its
pixels equal those of the whole image.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import numpy as np

from server.models import Grid, Scene
from server.render.floor import metres_per_pixel

STRIP_PIXELS = 1024 * 1024  # an image larger than this is drawn in strips of at most this size
IN_FLIGHT = 2  # strips of one image drawn at the same time (the machine's cores, at least two)

T = TypeVar("T")


@dataclass(slots=True)
class Drawn:
    """Post-processed images of one grid or strip (one per output), and what drew them."""

    data: list[np.ma.MaskedArray]
    scenes: list[Scene]
    failed: list[str]
    skipped: list[str]
    timings: dict[str, float]

    @classmethod
    def of(cls, data: list[np.ma.MaskedArray], rendered: Sequence[Any]) -> Drawn:
        """``data`` drawn from ``rendered`` (``pipeline.RenderedData``: several for a composite)."""
        drawn = cls(data, [], [], [], {})
        for part in rendered:
            drawn.add(part.mosaic.scenes, part.mosaic.failed, part.mosaic.skipped, part.timings)
        return drawn

    def add(self, scenes: list[Scene], failed: list[str], skipped: list[str], timings: dict[str, float]) -> None:
        """Count in what drew another part of the image (each name once; times summed)."""
        have = {scene.id for scene in self.scenes}
        for scene in scenes:
            if scene.id not in have:
                have.add(scene.id)
                self.scenes.append(scene)
        self.failed += [name for name in failed if name not in self.failed]
        self.skipped += [name for name in skipped if name not in self.skipped]
        for stage, ms in timings.items():
            self.timings[stage] = self.timings.get(stage, 0.0) + ms

    @classmethod
    def join(cls, parts: list[Drawn], order: list[Scene]) -> Drawn:
        """The strips of one image as one: images joined row-wise, drawn scenes in ``order``
        (the catalogue's priority), times summed over the strips (thread time, not wall)."""
        if len(parts) == 1:
            only = parts[0]
            only.scenes = _ordered(only.scenes, order)
            return only
        data = [np.ma.concatenate([part.data[i] for part in parts], axis=1) for i in range(len(parts[0].data))]
        joined = cls(data, [], [], [], {})
        for part in parts:
            joined.add(part.scenes, part.failed, part.skipped, part.timings)
        joined.scenes = _ordered(joined.scenes, order)
        return joined


def _ordered(scenes: list[Scene], order: list[Scene]) -> list[Scene]:
    """``scenes`` in the order they have in ``order`` (scenes not in it last, as they came)."""
    rank = {scene.id: number for number, scene in enumerate(order)}
    return sorted(scenes, key=lambda scene: rank.get(scene.id, len(rank)))


def strips(grid: Grid, pixels: int = STRIP_PIXELS) -> list[Grid]:
    """``grid`` cut into full-width strips of at most ``pixels`` (one strip: ``grid`` itself),
    each with the image's ground resolution, so its reads do not measure it again."""
    rows = max(1, pixels // grid.width)
    ground = metres_per_pixel(grid)
    if rows >= grid.height:
        return [replace(grid, ground=ground)]
    rows = -(-grid.height // -(-grid.height // rows))  # strips of nearly equal height
    x0, y0, x1, y1 = grid.bbox
    step = (y1 - y0) / grid.height
    found = []
    for top in range(0, grid.height, rows):
        height = min(rows, grid.height - top)
        bottom = y0 if top + height == grid.height else y1 - (top + height) * step
        box = (x0, bottom, x1, y1 - top * step)
        found.append(Grid(box, grid.crs, grid.width, height, grid.crs_wkt, ground))
    return found


def draw_strips(parts: list[Grid], draw: Callable[[Grid], T], executor: Executor | None) -> list[T]:
    """``draw`` every strip on ``executor``, ``IN_FLIGHT`` at a time, results in strip order.

    A window slides over the strips: when the oldest strip in flight is drawn the next one
    starts, so a core freed by one strip takes up the next while the other is still working.
    A failing strip raises here; the strips not started yet are not drawn.
    """
    if len(parts) == 1 or executor is None:
        return [draw(part) for part in parts]
    results: list[T] = []
    remaining = deque(parts)
    pending: deque[Future[T]] = deque()
    try:
        while remaining or pending:
            while remaining and len(pending) < IN_FLIGHT:
                pending.append(executor.submit(draw, remaining.popleft()))
            results.append(pending.popleft().result())
    finally:
        for future in pending:
            future.cancel()
    return results
