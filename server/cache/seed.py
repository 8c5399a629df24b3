"""Pre-render tiles into the shared cache: ``eotiler seed``.

Resumable by construction: a tile whose key is already in the cache is skipped, so a run that was
interrupted (or a second run over a larger area) only renders what is missing. Concurrency is
bounded (default 4: the CDSE free tier allows 4 concurrent connections per user). With
``--dask`` the tile list is spread over an existing dask.distributed cluster; each worker builds
its own pipeline from the same ``EOTILER_*`` settings and writes into the same Redis.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import morecantile

from server.errors import EotilerError, InvalidParameter
from server.grids import get_tms, tile_grid
from server.models import ImageFormat, RenderRequest, TimeRange
from server.pipeline import Pipeline

Tile = tuple[int, int, int]  # z, x, y


@dataclass(slots=True)
class SeedSummary:
    """What a seeding run did."""

    rendered: int = 0
    skipped: int = 0
    failed: int = 0
    bytes: int = 0
    elapsed_s: float = 0.0
    errors: list[str] = field(default_factory=list)

    def add(self, outcome: tuple[str, int, str]) -> None:
        """Count one tile's outcome: (rendered|skipped|failed, bytes, message)."""
        kind, size, message = outcome
        setattr(self, kind, getattr(self, kind) + 1)
        self.bytes += size
        if message and len(self.errors) < 20:
            self.errors.append(message)


def parse_zooms(text: str) -> list[int]:
    """``8-12`` or ``10`` or ``8,10`` -> zoom levels."""
    zooms: set[int] = set()
    try:
        for part in text.split(","):
            low, _, high = part.partition("-")
            zooms.update(range(int(low), int(high or low) + 1))
    except ValueError:
        raise InvalidParameter("zooms must look like 8-12 or 10 or 8,10", parameter="zooms") from None
    if not zooms or min(zooms) < 0 or max(zooms) > 30:
        raise InvalidParameter("zooms must be between 0 and 30", parameter="zooms")
    return sorted(zooms)


def tile_list(tms: morecantile.TileMatrixSet, bbox: tuple[float, float, float, float], zooms: list[int]) -> list[Tile]:
    """Every tile of ``zooms`` that intersects the lon/lat ``bbox``."""
    return [(t.z, t.x, t.y) for t in tms.tiles(*bbox, zooms=zooms, truncate=True)]


def seed_tile(
    pipeline: Pipeline,
    layer_id: str,
    tms_id: str,
    tile: Tile,
    fmt: ImageFormat,
    time_range: TimeRange | None,
) -> tuple[str, int, str]:
    """Render one tile into the cache unless it is there already."""
    z, x, y = tile
    try:
        layer = pipeline.registry.get(layer_id)
        req = RenderRequest(layer_id, tile_grid(get_tms(tms_id), z, x, y), fmt, time_range)
        if pipeline.cache.contains(pipeline.cache_key(req, layer, pipeline.find_scenes(layer, req))):
            return "skipped", 0, ""
        return "rendered", len(pipeline.render(req).content), ""
    except EotilerError as exc:
        return "failed", 0, f"{z}/{x}/{y}: {exc.public_message}"
    except Exception as exc:  # noqa: BLE001 - one bad tile must not stop a long seeding run
        return "failed", 0, f"{z}/{x}/{y}: {type(exc).__name__}"


def seed_local(
    pipeline: Pipeline,
    layer_id: str,
    tms_id: str,
    tiles: list[Tile],
    fmt: ImageFormat,
    time_range: TimeRange | None,
    concurrency: int,
    on_done: Callable[[], None] = lambda: None,
) -> SeedSummary:
    """Seed with a thread pool in this process."""
    summary = SeedSummary()
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="eotiler-seed") as pool:
        futures = [pool.submit(seed_tile, pipeline, layer_id, tms_id, t, fmt, time_range) for t in tiles]
        for future in as_completed(futures):
            summary.add(future.result())
            on_done()
    summary.elapsed_s = time.perf_counter() - start
    return summary


def _seed_chunk_on_worker(
    layer_id: str,
    tms_id: str,
    tiles: list[Tile],
    fmt: str,
    time_text: str | None,
    concurrency: int,
    config: str,
    redis_url: str,
) -> list[tuple[str, int, str]]:
    """Runs on a dask worker: one pipeline per call. The configuration file and Redis come from
    the seeding command (the same path must exist on the workers); S3 keys and the other
    settings from the worker's own environment, so credentials never travel with the tasks."""
    from server.catalog.layers import LayerRegistry
    from server.config import load_config
    from server.models import parse_time
    from server.settings import Settings

    settings = Settings(config=Path(config), redis_url=redis_url)
    pipeline = Pipeline(LayerRegistry(load_config(settings.config), settings), settings)
    try:
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            return list(
                pool.map(
                    lambda t: seed_tile(pipeline, layer_id, tms_id, t, ImageFormat(fmt), parse_time(time_text)),
                    tiles,
                )
            )
    finally:
        pipeline.close()


def chunks(items: list[Tile], size: int) -> Iterator[list[Tile]]:
    """Consecutive slices of ``size`` (tiles of one area share scenes and file headers)."""
    for i in range(0, len(items), size):
        yield items[i : i + size]


def seed_dask(
    address: str,
    layer_id: str,
    tms_id: str,
    tiles: list[Tile],
    fmt: ImageFormat,
    time_text: str | None,
    concurrency: int,
    config: Path,
    redis_url: str,
    on_done: Callable[[int], None] = lambda n: None,
) -> SeedSummary:
    """Spread chunks of the tile list over a dask.distributed cluster (optional extra ``dask``)."""
    try:
        from distributed import Client
        from distributed import as_completed as dask_completed
    except ImportError:
        raise InvalidParameter(
            "--dask needs the optional extra: pip install 'eotiler[dask]'", parameter="dask"
        ) from None
    summary = SeedSummary()
    start = time.perf_counter()
    with Client(address) as client:
        futures = [
            client.submit(
                _seed_chunk_on_worker,
                layer_id,
                tms_id,
                chunk,
                fmt.value,
                time_text,
                concurrency,
                str(config),
                redis_url,
                pure=False,
            )
            for chunk in chunks(tiles, 32)
        ]
        for future in dask_completed(futures):
            outcomes: Iterable[tuple[str, int, str]] = future.result()
            count = 0
            for outcome in outcomes:
                summary.add(outcome)
                count += 1
            on_done(count)
    summary.elapsed_s = time.perf_counter() - start
    return summary
