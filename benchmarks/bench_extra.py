"""Two scenarios of ``benchmarks/bench.py`` that are not request-for-request comparisons:

- cached tiles under 16 concurrent clients (wrk when installed, else an async Python client),
  eotiler with its tile cache on, 2 workers; TiTiler has no tile cache, so the same requests
  make it render every time (its row shows what the cache is worth, not a like-for-like race);
- evalscript evaluation cost, numpy vs JavaScript, from ``benchmarks/evalscripts.py``.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
import time

import httpx
from bench import RESULTS, ROOT, Plan, tiles_over
from peer_servers import Server, start_eotiler, start_titiler
from rich.progress import Progress

CLIENTS = 16


def _wrk(server: Server, url: str, seconds: float) -> dict:
    output = subprocess.run(
        ["wrk", "-t2", f"-c{CLIENTS}", f"-d{max(1, int(seconds))}s", "--latency", server.url + url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    def latency(label: str) -> float:
        match = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)", output, re.MULTILINE)
        if not match:
            return float("nan")
        value, unit = float(match[1]), match[2]
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return {
        "per_s": float(rate[1]) if rate else 0.0,
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
        "non_2xx": int(errors[1]) if errors else 0,
        "tool": "wrk -t2 -c16",
    }


def _async_clients(server: Server, url: str, seconds: float) -> dict:
    async def run() -> list[float]:
        times: list[float] = []
        stop = time.monotonic() + seconds
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:

            async def one() -> None:
                while time.monotonic() < stop:
                    start = time.perf_counter()
                    await client.get(url)
                    times.append((time.perf_counter() - start) * 1000)

            await asyncio.gather(*(one() for _ in range(CLIENTS)))
        return times

    times = sorted(asyncio.run(run()))
    return {
        "per_s": round(len(times) / seconds, 1),
        "p50_ms": round(times[len(times) // 2], 2),
        "p99_ms": round(times[int(len(times) * 0.99)], 2),
        "non_2xx": 0,
        "tool": "httpx async, 16 clients",
    }


def cached_scenario(local: dict, plan: Plan, progress: Progress) -> dict:
    """One tile, already rendered, requested by 16 clients for ``plan.window`` seconds, 2 workers."""
    task = progress.add_task("cached tiles", total=2)
    z, x, y = tiles_over(local["bounds"], 13, 1)[0]
    urls = {
        "eotiler": f"/layers/BENCH_TRUE_COLOR/tiles/WebMercatorQuad/{z}/{x}/{y}.png",
        "titiler": f"/cog/tiles/WebMercatorQuad/{z}/{x}/{y}.png?url={local['vrt']}&bidx=1&bidx=2&bidx=3&rescale=0,4000",
    }
    measure = _wrk if shutil.which("wrk") else _async_clients
    results = {}
    for name, start in (
        ("eotiler", lambda: start_eotiler(local["config"], 2, {"EOTILER_CACHE_MEMORY_BYTES": str(64 << 20)})),
        ("titiler", lambda: start_titiler(2)),
    ):
        server = start()
        try:
            for _ in range(3):  # render once per worker: every later answer is a cache hit
                httpx.get(server.url + urls[name], timeout=60)
            server.start_sampling()
            cpu = server.cpu_seconds()
            result = measure(server, urls[name], max(plan.window, 2.0))
            seconds = max(plan.window, 2.0)
            result["cpu_ms_per_request"] = round(
                (server.cpu_seconds() - cpu) * 1000 / max(1, result["per_s"] * seconds), 2
            )
            result["peak_rss_mb"] = server.peak_rss_mb()
            results[name] = result
        finally:
            server.stop()
        progress.advance(task)
    return {
        "scenario": "Cached tile, 16 concurrent clients, 2 workers (TiTiler has no tile cache: it renders)",
        "servers": results,
        "throughput_ratio": {"titiler": round(results["eotiler"]["per_s"] / max(results["titiler"]["per_s"], 1e-9), 2)},
    }


def evalscript_scenario(plan: Plan, progress: Progress) -> dict:
    """ms per 256 px tile: evaluation alone and the whole uncached tile, numpy vs JavaScript (as served and in V8)."""
    task = progress.add_task("evalscripts", total=1)
    repeat = 3 if plan.repeats == 1 else 20
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "evalscripts.py"), "--repeat", str(repeat)],
        check=True,
        capture_output=True,
    )
    report = json.loads((RESULTS / "evalscripts.json").read_text())
    progress.advance(task)
    return {"scenario": "Evalscript evaluation, numpy vs JavaScript, per 256 px tile", "evalscripts": report}
