"""Load soak: 16 concurrent clients for 5 minutes over random tiles and GetMaps, 2 workers.

What a public server meets on a normal day: XYZ tiles at random zooms and places (numpy and
JavaScript layers), WMS GetMaps of random size and CRS, WMTS tiles. It reports throughput,
p50/p95/p99 latency per kind, every non-200 answer (there should be none), and the resident
memory of each worker over time, which must stay flat after warm-up: every cache is bounded.

    python benchmarks/soak.py [--duration 300] [--clients 16] [--workers 2]   (make soak)
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from collections import Counter, defaultdict
from pathlib import Path

import httpx
import morecantile
from harness import rss_mb, start_server, stop_server, write_report
from rich.progress import Progress

# The largest sample scene (T29UNU, 2022-10-05) and its neighbourhood.
WEST, SOUTH, EAST, NORTH = -8.99, 52.98, -8.55, 53.24
DAY = "2022-10-05"
TILE_LAYERS = ("TRUE_COLOR", "MOISTURE_INDEX", "SCL", "TRUE_COLOR_HIGHLIGHT", "SWIR")
TMS = morecantile.tms.get("WebMercatorQuad")


def worker_pids(master: int) -> list[int]:
    """uvicorn's worker processes: the master's children that run the server (not its helpers)."""
    path = Path(f"/proc/{master}/task/{master}/children")
    children = [int(p) for p in path.read_text().split()] if path.exists() else []
    return [pid for pid in children if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]


def random_request(rng: random.Random) -> tuple[str, str]:
    """(kind, path + query) of one random request over the sample."""
    roll = rng.random()
    if roll < 0.6:
        zoom = rng.randint(8, 14)
        lon, lat = rng.uniform(WEST, EAST), rng.uniform(SOUTH, NORTH)
        tile = TMS.tile(lon, lat, zoom)
        layer = rng.choice(TILE_LAYERS)
        return "xyz", f"/layers/{layer}/tiles/WebMercatorQuad/{tile.z}/{tile.x}/{tile.y}.png?time={DAY}"
    if roll < 0.85:
        size = rng.choice((256, 512, 768, 1024))
        span = rng.uniform(0.02, 0.3)
        lon, lat = rng.uniform(WEST, EAST - span), rng.uniform(SOUTH, NORTH - span / 2)
        layer = rng.choice(TILE_LAYERS[:3])
        fmt = rng.choice(("image/png", "image/jpeg"))
        if rng.random() < 0.5:
            crs, bbox = "EPSG:4326", f"{lat},{lon},{lat + span / 2},{lon + span}"
        else:
            left, bottom = TMS.xy(lon, lat)
            right, top = TMS.xy(lon + span, lat + span / 2)
            crs, bbox = "EPSG:3857", f"{left},{bottom},{right},{top}"
        query = (
            f"SERVICE=WMS&VERSION=1.3.0&REQUEST=GetMap&LAYERS={layer}&STYLES=&CRS={crs}&BBOX={bbox}"
            f"&WIDTH={size}&HEIGHT={size}&FORMAT={fmt}&TRANSPARENT=TRUE&TIME={DAY}"
        )
        return "wms", f"/ogc/wms?{query}"
    zoom = rng.randint(9, 13)
    tile = TMS.tile(rng.uniform(WEST, EAST), rng.uniform(SOUTH, NORTH), zoom)
    query = (
        f"SERVICE=WMTS&VERSION=1.0.0&REQUEST=GetTile&LAYER={rng.choice(TILE_LAYERS)}&STYLE=default"
        f"&TILEMATRIXSET=WebMercatorQuad&TILEMATRIX={tile.z}&TILEROW={tile.y}&TILECOL={tile.x}"
        f"&FORMAT=image/png&TIME={DAY}"
    )
    return "wmts", f"/ogc/wmts?{query}"


async def client(base: str, seed: int, stop_at: float, results: list[tuple[str, int, float]]) -> None:
    rng = random.Random(seed)
    async with httpx.AsyncClient(base_url=base, timeout=120) as http:
        while time.monotonic() < stop_at:
            kind, path = random_request(rng)
            start = time.perf_counter()
            try:
                status = (await http.get(path)).status_code
            except httpx.HTTPError:
                status = -1  # connection error
            results.append((kind, status, (time.perf_counter() - start) * 1000))


async def tile_cache_mb(base: str) -> dict[str, float]:
    """Tile-cache bytes per worker, from /cache/stats (new connections reach both workers)."""
    found: dict[str, float] = {}
    for _ in range(6):
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            stats = (await http.get("/cache/stats")).json()
        found[str(stats["pid"])] = round(stats["memory"]["bytes"] / 2**20, 1)
    return found


async def run(base: str, master: int, duration: float, clients: int) -> dict:
    results: list[tuple[str, int, float]] = []
    memory: list[dict[str, object]] = []
    started = time.monotonic()
    stop_at = started + duration
    tasks = [asyncio.create_task(client(base, seed, stop_at, results)) for seed in range(clients)]
    with Progress() as progress:
        bar = progress.add_task("soak", total=duration)
        while time.monotonic() < stop_at:
            await asyncio.sleep(min(10.0, max(0.0, stop_at - time.monotonic())))
            elapsed = time.monotonic() - started
            memory.append(
                {
                    "seconds": round(elapsed),
                    "requests": len(results),
                    "rss_mb": {str(pid): round(rss_mb(pid), 1) for pid in worker_pids(master)},
                    "tile_cache_mb": await tile_cache_mb(base),
                }
            )
            progress.update(bar, completed=min(elapsed, duration), description=f"soak: {len(results)} requests")
    await asyncio.gather(*tasks)
    return summarise(results, memory, time.monotonic() - started)


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    pick = lambda q: round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)  # noqa: E731
    return {"p50": pick(0.5), "p95": pick(0.95), "p99": pick(0.99), "max": round(ordered[-1], 1)}


def summarise(results: list[tuple[str, int, float]], memory: list[dict[str, object]], seconds: float) -> dict:
    by_kind: dict[str, list[float]] = defaultdict(list)
    for kind, status, ms in results:
        if status == 200:
            by_kind[kind].append(ms)
    statuses = Counter(status for _, status, _ in results)
    warm = [m for m in memory if int(m["seconds"]) >= 60]  # type: ignore[call-overload]
    totals = [sum(m["rss_mb"].values()) for m in warm]  # type: ignore[attr-defined]
    return {
        "requests": len(results),
        "seconds": round(seconds, 1),
        "throughput_per_s": round(len(results) / seconds, 1),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "unexpected": sum(v for k, v in statuses.items() if k != 200),
        "latency_ms": {kind: {"count": len(v), **percentiles(v)} for kind, v in sorted(by_kind.items())},
        "latency_ms_all": percentiles([ms for _, status, ms in results if status == 200]),
        "rss_after_warmup_mb": {
            "first": round(totals[0], 1) if totals else None,
            "last": round(totals[-1], 1) if totals else None,
            "min": round(min(totals), 1) if totals else None,
            "max": round(max(totals), 1) if totals else None,
            "mean": round(statistics.mean(totals), 1) if totals else None,
        },
        "memory": memory,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=300.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    server, base = start_server(args.workers, EOTILER_LOG_LEVEL="warning", EOTILER_ACCESS_LOG="false")
    try:
        time.sleep(2)  # every worker up
        report = asyncio.run(run(base, server.pid, args.duration, args.clients))
    finally:
        stop_server(server)
    report.update({"clients": args.clients, "workers": args.workers})
    write_report("soak", report)
    return 0 if report["unexpected"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
