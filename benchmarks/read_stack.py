"""Three local bands onto one grid: a stacked warp against parallel band reads, with and without
GDAL's warp threads. Wall and CPU milliseconds per read, variants interleaved so that load on the
machine weighs on all of them alike.

Why: ``server/sources/scene_reader.py`` stacks local same-grid bands in one VRT below
``STACK_MAX_PIXELS`` and reads them in parallel above it; this is the measurement behind the limit.
The files are ``benchmarks/bench.py``'s COGs (run ``make bench`` or ``bench.py --quick`` first).

``--jp2``: the same question for JPEG2000 bands served by the decoded-block cache
(``BLOCK_STACK_MAX_PIXELS``): ``read_scene`` of B04, B03 and B02 at 10 m over warm blocks, one
stacked warp against one warp per band on the read threads, for WebMercatorQuad grids of
``--sizes`` px at z14 (and z13) resolution. The files are ``benchmarks/map_session.py``'s
full-size JPEG2000 (run it once, or ``--quick`` for the 4096 px ones).

Run: ``python benchmarks/read_stack.py [--size 1024] [--crs EPSG:3857,EPSG:4326,EPSG:32629]``,
``python benchmarks/read_stack.py --jp2 [--sizes 256,512,1024,2048] [--tiles 24]``.
"""

from __future__ import annotations

import argparse
import math
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
    parser.add_argument("--jp2", action="store_true", help="JPEG2000 bands over decoded blocks")
    parser.add_argument("--sizes", default="256,512,1024,2048", help="--jp2: grid sizes (px)")
    parser.add_argument("--tiles", type=int, default=24, help="--jp2: grids per size and variant")
    args = parser.parse_args()
    if args.jp2:
        jp2_blocks(args)
        return
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


def jp2_blocks(args: argparse.Namespace) -> None:
    """``read_scene`` over warm decoded blocks: one stacked warp against a warp per band."""
    from datetime import UTC, datetime

    from rasterio.warp import transform

    from server.config.models import CollectionConfig
    from server.models import Scene
    from server.sources import block_cache
    from server.sources.dataset_pool import DatasetPool

    data = next((p for p in (ROOT / "benchmarks/results/data").glob("session*/eodata") if "10980" in str(p)), None)
    data = data or next((ROOT / "benchmarks/results/data").glob("session*/eodata"))
    files = {p.name.split("_")[2]: p for p in data.glob("**/IMG_DATA/R10m/*_10m.jp2")}
    bands = {name: BandConfig(asset=f"{name}_{{res}}m", resolutions=[10]) for name in ("B04", "B03", "B02")}
    assets = {f"{name}_10m": "s3://eodata/" + str(files[name].relative_to(data)) for name in bands}
    scene = Scene("bench", datetime(2023, 6, 1, tzinfo=UTC), 0.0, (-9.0, 52.0, -7.0, 54.0), assets)
    collection = CollectionConfig(
        title="bench", catalogue={"type": "static", "path": str(data)}, data_root=str(data), bands=bands
    )
    cache = block_cache.BlockCache(2 * 1024**3)
    block_cache.configure(cache)
    pool, executor = DatasetPool(16), ThreadPoolExecutor(4)
    with rasterio.open(files["B04"]) as src:
        left, bottom, right, top = src.bounds
    (cx,), (cy,) = transform(src.crs, "EPSG:3857", [(left + right) / 2], [(bottom + top) / 2])
    print(f"{files['B04'].name}: {src.width} px, 3 bands, {args.tiles} grids per row, warm blocks, under load")

    def grids(size: int, zoom: int) -> list[Grid]:
        res = 2 * 20037508.342789244 / (256 * 2**zoom)
        out = []
        for i in range(args.tiles):  # a spiral of grids around the centre, on the tile lattice
            x0 = math.floor(cx / res / 256) * 256 * res + (i % 6 - 3) * size * res
            y0 = math.floor(cy / res / 256) * 256 * res + (i // 6 - 2) * size * res
            out.append(Grid((x0, y0, x0 + size * res, y0 + size * res), CRS.from_epsg(3857), size, size))
        return out

    def run(targets: list[Grid], stacked: bool) -> tuple[float, float]:
        reader.BLOCK_STACK_MAX_PIXELS = 2**40 if stacked else 0
        wall, cpu = time.perf_counter(), time.process_time()
        for grid in targets:
            reader.read_scene(scene, collection, list(bands), grid, units="DN", executor=executor, pool=pool)
        return (time.perf_counter() - wall) * 1000, (time.process_time() - cpu) * 1000

    for zoom in (14, 13):
        for size in (int(s) for s in args.sizes.split(",")):
            targets = grids(size, zoom)
            run(targets, True)  # decode the blocks, open the handles
            results: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
            for _ in range(2):
                for stacked in (False, True):
                    results[stacked].append(run(targets, stacked))
            for stacked, label in ((False, "a warp per band, in parallel"), (True, "one stacked warp")):
                walls = ", ".join(f"{w:.0f}" for w, _ in results[stacked])
                cpus = ", ".join(f"{c:.0f}" for _, c in results[stacked])
                print(f"z{zoom} {size:>5} px x {args.tiles}  {label:<30} wall {walls} ms  CPU {cpus} ms")


if __name__ == "__main__":
    main()
