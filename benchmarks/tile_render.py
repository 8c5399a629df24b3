"""Uncached tile rendering per layer on the bundled sample: p50 / p95 ms per tile.

Each tile goes through the whole HTTP stack in-process (FastAPI TestClient, the method used for
the ~53 ms titiler.core reference in ../shared/notes/performance.md) and the Server-Timing header
gives the split between catalogue, read, evalscript and encode. There is no tile cache yet, so
every request renders. Run: `make bench` (or `python benchmarks/tile_render.py --repeat 3`).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import morecantile
from fastapi.testclient import TestClient
from harness import percentile
from rich.console import Console
from rich.progress import track
from rich.table import Table

from server.app import create_app
from server.settings import Settings

TMS = morecantile.tms.get("WebMercatorQuad")
OUT = Path(__file__).resolve().parent / "results"


def tiles_for(bbox: list[float], target: int = 12) -> list[morecantile.Tile]:
    """Tiles over a scene at the first zoom that gives at least ``target`` tiles (max 24)."""
    for zoom in range(6, 19):
        tiles = list(TMS.tiles(*bbox, zooms=[zoom]))
        if len(tiles) >= target:
            return tiles[:24]
    return tiles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=2, help="passes over each layer's tiles")
    args = parser.parse_args()
    client = TestClient(create_app(Settings(log_level="warning")))
    layers = [layer for layer in client.get("/layers").json()["layers"] if "png" in layer["formats"]]
    results = {}
    for layer in layers:
        scenes = client.get(f"/layers/{layer['id']}").json()["scenes"]
        jobs = [(t, s["datetime"][:10]) for s in scenes for t in tiles_for(s["bbox"], 6)]
        totals: list[float] = []
        stages: dict[str, list[float]] = {}
        for _ in track(range(args.repeat), description=f"{layer['id']:<24}"):
            for tile, day in jobs:
                start = time.perf_counter()
                response = client.get(
                    f"/layers/{layer['id']}/tiles/WebMercatorQuad/{tile.z}/{tile.x}/{tile.y}.png", params={"time": day}
                )
                totals.append((time.perf_counter() - start) * 1000)
                response.raise_for_status()
                for part in response.headers.get("server-timing", "").split(","):
                    name, _, dur = part.strip().partition(";dur=")
                    if dur:
                        stages.setdefault(name, []).append(float(dur))
        results[layer["id"]] = {
            "tiles": len(totals),
            "p50_ms": percentile(totals, 0.5),
            "p95_ms": percentile(totals, 0.95),
            **{f"{k}_ms_median": statistics.median(v) for k, v in stages.items()},
        }
    table = Table(title="Uncached 256 px PNG tiles, end to end in-process (ms)")
    for col in ("layer", "tiles", "p50", "p95", "read", "evalscript", "encode"):
        table.add_column(col, justify="right" if col != "layer" else "left")
    for lid, r in results.items():
        table.add_row(
            lid,
            str(r["tiles"]),
            f"{r['p50_ms']:.1f}",
            f"{r['p95_ms']:.1f}",
            f"{r.get('read_ms_median', 0):.1f}",
            f"{r.get('evalscript_ms_median', 0):.1f}",
            f"{r.get('encode_ms_median', 0):.1f}",
        )
    Console(width=140).print(table)
    OUT.mkdir(exist_ok=True)
    meta = {"machine": platform.platform(), "python": platform.python_version(), "cpus": __import__("os").cpu_count()}
    (OUT / "tile_render.json").write_text(json.dumps({"meta": meta, "layers": results}, indent=1))
    print(f"raw numbers: {OUT / 'tile_render.json'}")


if __name__ == "__main__":
    main()
