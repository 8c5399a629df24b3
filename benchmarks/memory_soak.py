"""Resident memory of one server process while it renders 10,000 distinct tiles.

Why: the tile cache, the GDAL block and /vsicurl caches, the STAC result cache and the overview
cache are all bounded; this checks the bounds hold together. Starts ``eotiler serve`` (one
worker, the bundled sample), requests distinct TRUE_COLOR and MOISTURE_INDEX tiles over the sample's
scenes from z10 upwards with 4 concurrent clients, and samples VmRSS from /proc every 500 tiles.
The tile cache bound defaults to 8 MB here so that it is reached (10,000 tiles are ~21 MB) and
the test shows the process staying flat once it is.

    python benchmarks/memory_soak.py [--tiles 10000]
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import morecantile
from harness import rss_mb, start_server, stop_server, write_report
from rich.progress import Progress

AREAS = [(-8.99, 52.98, -8.55, 53.24, "2022-10-05")]  # T29UNU (the largest sample scene)


def tile_urls(count: int) -> list[str]:
    tms = morecantile.tms.get("WebMercatorQuad")
    urls: list[str] = []
    for zoom in range(10, 20):
        for w, s, e, n, day in AREAS:
            for tile in tms.tiles(w, s, e, n, zooms=[zoom]):
                for layer in ("TRUE_COLOR", "MOISTURE_INDEX"):
                    urls.append(f"/layers/{layer}/tiles/WebMercatorQuad/{tile.z}/{tile.x}/{tile.y}.png?time={day}")
                    if len(urls) >= count:
                        return urls
    return urls


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=10_000)
    parser.add_argument(
        "--cache-bytes", type=int, default=8 * 1024 * 1024, help="tile cache bound: small, so it is reached and held"
    )
    args = parser.parse_args()
    server, base = start_server(1, EOTILER_LOG_LEVEL="warning", EOTILER_CACHE_MEMORY_BYTES=str(args.cache_bytes))
    samples: list[tuple[int, float]] = []
    try:
        samples.append((0, rss_mb(server.pid)))
        urls = tile_urls(args.tiles)
        start = time.perf_counter()
        with httpx.Client(base_url=base, timeout=60) as client, ThreadPoolExecutor(4) as pool, Progress() as bar:
            task = bar.add_task("distinct tiles", total=len(urls))
            for done, status in enumerate(pool.map(lambda u: client.get(u).status_code, urls), start=1):
                assert status == 200, status
                bar.advance(task)
                if done % 500 == 0:
                    samples.append((done, rss_mb(server.pid)))
        elapsed = time.perf_counter() - start
        stats = httpx.get(base + "/cache/stats").json()
    finally:
        stop_server(server)
    result = {
        "tiles": len(urls),
        "elapsed_s": round(elapsed, 1),
        "tiles_per_s": round(len(urls) / elapsed, 1),
        "rss_mb": [[n, round(mb, 1)] for n, mb in samples],
        "memory_cache": stats["memory"],
    }
    write_report("memory_soak", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
