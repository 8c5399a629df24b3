"""Cached-tile throughput: ``eotiler serve --workers 2`` on loopback, 16 concurrent clients.

Starts the server (memory level; ``--redis URL`` adds the shared level), warms a set of tiles
over the bundled T29UNU scene, then requests them at random for ``--requests`` requests and
reports tiles/s and p50/p95/p99 latency. Run by hand: ``python benchmarks/cached_tiles.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time

import httpx
import morecantile
from harness import start_server, stop_server, write_report
from rich.progress import Progress


async def run(base: str, urls: list[str], total: int, concurrency: int, hits: list[bool]) -> list[float]:
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:
        for url in urls * 4:  # warm-up: without Redis each worker keeps its own copy
            assert (await client.get(url)).status_code == 200
        queue = [random.choice(urls) for _ in range(total)]
        with Progress() as progress:
            task = progress.add_task("cached tiles", total=total)

            async def worker() -> None:
                while queue:
                    url = queue.pop()
                    start = time.perf_counter()
                    response = await client.get(url)
                    latencies.append((time.perf_counter() - start) * 1000)
                    assert response.status_code == 200
                    hits.append(response.headers.get("x-cache") == "HIT")
                    progress.advance(task)

            await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--redis", default=None)
    args = parser.parse_args()
    extra = {"EOTILER_REDIS_URL": args.redis} if args.redis else {}
    server, base = start_server(args.workers, **extra)
    try:
        tms = morecantile.tms.get("WebMercatorQuad")
        tiles = list(tms.tiles(-8.95, 52.98, -8.55, 53.24, zooms=[10, 11, 12]))
        urls = [f"/layers/TRUE_COLOR/tiles/WebMercatorQuad/{t.z}/{t.x}/{t.y}.png?time=2022-10-05" for t in tiles]
        start = time.perf_counter()
        hits: list[bool] = []
        latencies = asyncio.run(run(base, urls, args.requests, args.concurrency, hits))
        elapsed = time.perf_counter() - start
    finally:
        stop_server(server)
    q = statistics.quantiles(latencies, n=100)
    result = {
        "tiles": len(urls),
        "requests": len(latencies),
        "concurrency": args.concurrency,
        "workers": args.workers,
        "redis": bool(args.redis),
        "hit_ratio": round(sum(hits) / len(hits), 4),
        "tiles_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(q[49], 2),
        "p95_ms": round(q[94], 2),
        "p99_ms": round(q[98], 2),
    }
    write_report("cached_tiles", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
