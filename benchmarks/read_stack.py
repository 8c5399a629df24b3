"""Three local bands onto one grid: a stacked warp against parallel band reads, with and without
GDAL's warp threads. Wall and CPU milliseconds per read, variants interleaved so that load on the
machine weighs on all of them alike.

Why: ``server/sources/scene_reader.py`` stacks local same-grid bands in one VRT below
``STACK_MAX_PIXELS`` and reads them in parallel above it; this is the measurement behind the limit.
The files are ``benchmarks/bench.py``'s COGs (run ``make bench`` or ``bench.py --quick`` first).

Run: ``python benchmarks/read_stack.py [--size 1024] [--crs EPSG:3857,EPSG:4326,EPSG:32629]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import rasterio
from rasterio.crs import CRS
from rasterio.warp import transform_bounds

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import server.sources.scene_reader as reader  # noqa: E402
from server.config.models import BandConfig  # noqa: E402
from server.models import Grid  # noqa: E402

BAND = BandConfig(asset="B04", resolutions=[10], scale=0.0001)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024, help="grid width and height (px)")
    parser.add_argument("--crs", default="EPSG:3857,EPSG:4326,EPSG:32629")
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--data", type=Path, default=ROOT / "benchmarks/results/data/peers6144")
    args = parser.parse_args()
    folder = next(args.data.glob("eodata/**/B04.tif")).parent
    paths = [str(folder / f"{name}.tif") for name in ("B04", "B03", "B02")]
    with rasterio.open(paths[0]) as src:
        b, crs_of_file = src.bounds, src.crs
    span = (b.right - b.left) * 0.4
    pool = ThreadPoolExecutor(4)
    threads = {"warp": 0}
    plain_reader = reader.Reader

    def with_warp_threads(path: object, **kwargs: object):  # noqa: ANN202 - rio-tiler's Reader
        if threads["warp"]:
            kwargs["options"] = {**kwargs.get("options", {}), "vrt_options": {"NUM_THREADS": threads["warp"]}}  # type: ignore[dict-item]
        return plain_reader(path, **kwargs)

    reader.Reader = with_warp_threads  # type: ignore[assignment,misc]
    reader.STACK_MAX_PIXELS = args.size * args.size

    def per_band(grid: Grid) -> object:
        return list(pool.map(lambda p: reader._read_one(p, BAND, grid, "nearest", False), paths))

    def stacked(grid: Grid) -> object:
        return reader._read_stack(paths, BAND, grid, "nearest", None, "")

    variants: dict[str, tuple[int, Callable[[Grid], object]]] = {
        "bands in parallel": (0, per_band),
        "stacked": (0, stacked),
        "stacked, warp NUM_THREADS=2": (2, stacked),
        "bands in parallel, warp NUM_THREADS=2": (2, per_band),
    }
    for crs in args.crs.split(","):

        def grid(i: int, crs: str = crs) -> Grid:
            shift = (i * 0.618034) % 1 * (b.right - b.left - span)
            box = transform_bounds(crs_of_file, crs, b.left + shift, b.bottom + shift, b.left + shift + span,
                                   b.bottom + shift + span)  # fmt: skip
            return Grid(box, CRS.from_user_input(crs), args.size, args.size)

        results: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in variants}
        for warp, run in variants.values():  # first opens, caches
            threads["warp"] = warp
            run(grid(0))
        for i in range(1, args.repeats + 1):
            for name, (warp, run) in variants.items():
                threads["warp"] = warp
                target = grid(i)
                wall, cpu = time.perf_counter(), time.process_time()
                run(target)
                results[name][0].append((time.perf_counter() - wall) * 1000)
                results[name][1].append((time.process_time() - cpu) * 1000)
        for name, (wall_ms, cpu_ms) in results.items():
            print(
                f"{crs:<11} {args.size} px  {name:<40} wall p50 {statistics.median(wall_ms):6.1f} ms"
                f"  CPU p50 {statistics.median(cpu_ms):6.1f} ms"
            )


if __name__ == "__main__":
    main()
