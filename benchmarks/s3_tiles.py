"""Tiles over S3 with an emulated round-trip time: COG vs JPEG2000 with and without TLM markers.

What it measures, per format and zoom: cold tiles (a new process, nothing cached), the same tile
again in that process (hot file: GDAL's /vsicurl cache holds the header and indexes), and for
JPEG2000 at z8-z10 the overview cache (``server/sources/overview_cache.py``) before and after it
is warm. Latency is the eotiler read path (``scene_reader._read_one`` inside the request's GDAL
environment, rio-tiler underneath); requests and bytes are counted at the S3 server
(``tests/support/s3_server.py``, moto, ``--rtt-ms`` added to every request).

Test files are derived from the real T29UNU 60 m B04 band: upsampled 6x to 10 m (nearest) and
mirror-tiled to ``--size`` pixels (10980 = a full Sentinel-2 tile), then written as a COG
(DEFLATE, 512 px blocks, overviews) and as lossless JPEG2000 shaped like ESA's (1024 px tiles,
5 resolution levels) with and without TLM markers. Built once into ``benchmarks/results/data``.

    python benchmarks/s3_tiles.py            # full size, by hand (minutes; files ~0.5 GB)
    python benchmarks/s3_tiles.py --quick    # 2048 px, a smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

KEY = "Sentinel-2/MSI/L2A/2023/06/01/BENCH.SAFE/GRANULE/L2A_T29UNU_BENCH/IMG_DATA/R10m"
FORMATS = {"cog": "B04_cog.tif", "jp2-tlm": "B04_tlm.jp2", "jp2": "B04_notlm.jp2"}
ORIGIN = (499980.0, 5900040.0)  # T29UNU upper-left corner, EPSG:32629


def mirror_tiled(coarse: np.ndarray, size: int, factor: int = 6) -> np.ndarray:
    """A 60 m band as 10 m (``factor`` 6; 3: as 20 m): upsampled (nearest), mirror-tiled to ``size`` x ``size``."""
    fine = np.repeat(np.repeat(coarse, factor, axis=0), factor, axis=1)
    reps = -(-size // fine.shape[0])
    tiled = np.pad(fine, ((0, fine.shape[0] * (reps - 1)), (0, fine.shape[1] * (reps - 1))), mode="symmetric")
    return tiled[:size, :size]


def build(data_dir: Path, size: int) -> Path:
    """Write the three files (once per size) under ``data_dir/eodata/<KEY>/``."""
    import rasterio
    from rasterio.transform import Affine

    from tests.support.eodata_fixtures import SAMPLE_B04

    folder = data_dir / f"size{size}" / "eodata" / KEY
    if all((folder / name).exists() for name in FORMATS.values()):
        return data_dir / f"size{size}" / "eodata"
    folder.mkdir(parents=True, exist_ok=True)
    with rasterio.open(SAMPLE_B04) as src:
        coarse = src.read(1)
        crs = src.crs
    data = mirror_tiled(coarse, size)
    profile = {"width": size, "height": size, "count": 1, "dtype": "uint16", "crs": crs}
    profile["transform"] = Affine(10, 0, ORIGIN[0], 0, -10, ORIGIN[1])
    jp2 = {"QUALITY": 100, "REVERSIBLE": "YES", "RESOLUTIONS": 5, "BLOCKXSIZE": 1024, "BLOCKYSIZE": 1024}
    for fmt, name in FORMATS.items():
        print(f"building {name} ({size} px)...", flush=True)
        if fmt == "cog":
            options = {"driver": "COG", "nodata": 0, "BLOCKSIZE": 512, "COMPRESS": "DEFLATE", "OVERVIEWS": "AUTO"}
        else:
            options = {"driver": "JP2OpenJPEG", **jp2, "TLM": "YES" if fmt == "jp2-tlm" else "NO"}
        with rasterio.open(folder / name, "w", **profile, **options) as dst:
            dst.write(data, 1)
    return data_dir / f"size{size}" / "eodata"


# A Sentinel-2 L2A product in CDSE's layout (names constructed in ESA's pattern, pixels derived
# from the real T29UNU sample): B02, B03, B04 at 10, 20 and 60 m, as the SAFE's R10m/R20m/R60m hold them.
SAFE_PRODUCT = "S2B_MSIL2A_20230601T115409_N0509_R023_T29UNU_20230601T131520"
SAFE_KEY = f"Sentinel-2/MSI/L2A/2023/06/01/{SAFE_PRODUCT}.SAFE/GRANULE/L2A_T29UNU_A032650_20230601T115407/IMG_DATA"
SAFE_BANDS = ("B02", "B03", "B04")
# Resolution (m) -> code-stream tile size of ESA's files at that resolution.
SAFE_TILES = {10: 1024, 20: 640, 60: 192}


def safe_key(band: str, res: int) -> str:
    """The eodata key of one band file, e.g. ``.../IMG_DATA/R10m/T29UNU_20230601T115409_B04_10m.jp2``."""
    return f"{SAFE_KEY}/R{res}m/T29UNU_20230601T115409_{band}_{res}m.jp2"


def build_safe(data_dir: Path, size: int) -> Path:
    """B02-B04 at 10/20/60 m as JPEG2000 without TLM (``size`` px at 10 m), once, under ``data_dir``.

    Each resolution is the real 60 m sample band upsampled to it (nearest), so the three files of a
    band agree pixel for pixel; ESA's tile sizes and 5 resolution levels, lossless.
    """
    import rasterio
    from rasterio.transform import Affine

    root = data_dir / f"session{size}" / "eodata"
    sample = next((ROOT / "sample/eodata/Sentinel-2/MSI/L2A/2022/10/05").glob("*T29UNU*.SAFE/GRANULE/*/IMG_DATA/R60m"))
    for band in SAFE_BANDS:
        with rasterio.open(next(sample.glob(f"*_{band}_60m.jp2"))) as src:
            coarse, crs = src.read(1), src.crs
        for res, block in SAFE_TILES.items():
            target = root / safe_key(band, res)
            if target.exists():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            width = -(-size * 10 // res)
            print(f"building {target.name} ({width} px)...", flush=True)
            profile = {"width": width, "height": width, "count": 1, "dtype": "uint16", "crs": crs}
            profile["transform"] = Affine(res, 0, ORIGIN[0], 0, -res, ORIGIN[1])
            options = {"driver": "JP2OpenJPEG", "QUALITY": 100, "REVERSIBLE": "YES", "RESOLUTIONS": 5, "TLM": "NO"}
            partial = target.with_suffix(".part.jp2")  # renamed when complete: a crash leaves no half file
            with rasterio.open(partial, "w", **profile, **options, BLOCKXSIZE=block, BLOCKYSIZE=block) as dst:
                dst.write(mirror_tiled(coarse, width, 60 // res), 1)
            partial.rename(target)
    return root


def tiles_for(zoom: int, count: int, size: int) -> list[tuple[int, int, int]]:
    """``count`` tiles spread over the file at ``zoom`` (WebMercatorQuad)."""
    import morecantile
    from rasterio.warp import transform

    tms = morecantile.tms.get("WebMercatorQuad")
    extent = size * 10
    found = []
    for i in range(count):
        frac = (i + 0.5) / count
        x, y = ORIGIN[0] + extent * (0.15 + 0.7 * frac), ORIGIN[1] - extent * (0.15 + 0.7 * (1 - frac))
        lon, lat = transform("EPSG:32629", "EPSG:4326", [x], [y])
        tile = tms.tile(lon[0], lat[0], zoom)
        found.append((tile.z, tile.x, tile.y))
    return found


def worker(endpoint: str, overview_dir: str | None, drop: str | None = None) -> None:
    """Read tiles named on stdin (``fmt z x y``), one JSON line of timings per tile on stdout."""
    import morecantile
    from rasterio.crs import CRS

    from server.config.models import BandConfig
    from server.models import Grid
    from server.settings import Settings
    from server.sources.overview_cache import OverviewCache
    from server.sources.scene_reader import _read_one

    settings = Settings(s3_endpoint=endpoint, s3_https=False, s3_region="us-east-1",
                        s3_access_key_id="bench", s3_secret_access_key="bench-secret")  # fmt: skip
    gdal = settings.gdal_environment()
    if drop:  # measure what one option is worth: run with GDAL's default instead
        gdal = dataclasses.replace(gdal, options={k: v for k, v in gdal.options.items() if k != drop})
    overviews = OverviewCache(Path(overview_dir), 1 << 34) if overview_dir else None
    band = BandConfig(asset="B04", resolutions=[10])
    tms = morecantile.tms.get("WebMercatorQuad")
    for line in sys.stdin:
        fmt, z, x, y = line.split()
        b = tms.xy_bounds(morecantile.Tile(int(x), int(y), int(z)))
        grid = Grid((b.left, b.bottom, b.right, b.top), CRS.from_epsg(3857), 256, 256)
        path = f"/vsis3/eodata/{KEY}/{FORMATS[fmt]}"
        start = time.perf_counter()
        with gdal.env(path):
            if overviews is not None:
                path = overviews.local_path(path, 10.0, grid.ground_resolution(), False, 0) or path
            data = _read_one(path, band, grid, "nearest", False)
        ms = (time.perf_counter() - start) * 1000
        print(json.dumps({"ms": ms, "valid": int(data.count()) if data is not None else 0}), flush=True)


class Worker:
    """A worker process; ``read`` sends one tile and returns its timing and the S3 requests it made."""

    def __init__(self, s3, overview_dir: Path | None = None, drop: str | None = None) -> None:
        command = [sys.executable, __file__, "--worker", s3.endpoint]
        if overview_dir:
            command += ["--overview-dir", str(overview_dir)]
        if drop:
            command += ["--drop", drop]
        self.s3 = s3
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)

    def read(self, fmt: str, tile: tuple[int, int, int]) -> dict:
        assert self.process.stdin and self.process.stdout
        self.s3.reset()
        self.process.stdin.write(f"{fmt} {tile[0]} {tile[1]} {tile[2]}\n")
        self.process.stdin.flush()
        result = json.loads(self.process.stdout.readline())
        log = self.s3.requests()
        result.update(requests=len(log), mb=sum(r["bytes"] for r in log) / 1e6)
        return result

    def close(self) -> None:
        self.process.kill()
        self.process.wait()


def summarise(samples: list[dict]) -> dict:
    ms = [s["ms"] for s in samples]
    return {
        "tiles": len(samples),
        "p50_ms": round(statistics.median(ms), 1),
        "max_ms": round(max(ms), 1),
        "requests_median": statistics.median(s["requests"] for s in samples),
        "requests_max": max(s["requests"] for s in samples),
        "mb_median": round(statistics.median(s["mb"] for s in samples), 2),
    }


def main() -> None:
    """Build the files, start S3 with the RTT, run every scenario, write JSON and Markdown."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2048 px files, 2 tiles per zoom")
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--tiles", type=int, default=None, help="tiles per zoom")
    parser.add_argument("--rtt-ms", type=float, default=30.0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--overview-dir", help=argparse.SUPPRESS)
    parser.add_argument("--drop", help=argparse.SUPPRESS)
    parser.add_argument("--options", action="store_true", help="measure each GDAL option instead (requests only)")
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.overview_dir, args.drop)

    import tempfile

    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from tests.support.s3_server import S3Server

    size = args.size or (2048 if args.quick else 10980)
    per_zoom = args.tiles or (2 if args.quick else 5)
    eodata = build(args.out / "data", size)
    if args.options:
        return options_report(eodata, size, args.out)
    s3 = S3Server(eodata, delay_ms=args.rtt_ms)
    rows: list[dict] = []
    plan = [(fmt, z) for fmt in FORMATS for z in (14, 11, 9)] + [("jp2", z) for z in (10, 9, 8)]
    try:
        with Progress() as progress:
            task = progress.add_task("tiles over S3", total=len(plan))
            for index, (fmt, zoom) in enumerate(plan):
                overview = index >= 9
                cold, warm = [], []
                for tile in tiles_for(zoom, per_zoom, size):
                    directory = Path(tempfile.mkdtemp(prefix="eotiler-bench-ov-")) if overview else None
                    if directory:  # build the overview in one process, then read it warm in a fresh one
                        builder = Worker(s3, directory)
                        cold.append(builder.read(fmt, tile))
                        builder.close()
                    fresh = Worker(s3, directory)
                    if not directory:
                        cold.append(fresh.read(fmt, tile))
                    warm.append(fresh.read(fmt, tile))
                    fresh.close()
                name = f"{fmt} overview cache" if overview else fmt
                rows.append({"format": name, "zoom": zoom, "cold": summarise(cold), "warm": summarise(warm)})
                progress.advance(task)
    finally:
        s3.stop()
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"size": size, "rtt_ms": args.rtt_ms, "tiles_per_zoom": per_zoom, "rows": rows}
    (args.out / "s3_tiles.json").write_text(json.dumps(report, indent=2))
    table = Table(title=f"256 px tiles over S3, {size} px band, {args.rtt_ms:g} ms RTT, {per_zoom} tiles per row")
    for column in ("format", "z", "cold p50 ms", "cold req med/max", "cold MB", "warm p50 ms", "warm req med/max"):
        table.add_column(column)
    for row in rows:
        c, w = row["cold"], row["warm"]
        table.add_row(
            row["format"], str(row["zoom"]), f"{c['p50_ms']:.0f}", f"{c['requests_median']:g}/{c['requests_max']}",
            f"{c['mb_median']:.2f}", f"{w['p50_ms']:.0f}", f"{w['requests_median']:g}/{w['requests_max']}",
        )  # fmt: skip
    Console(width=140).print(table)
    print(f"raw numbers: {args.out / 's3_tiles.json'}")


OPTIONS = [
    None,
    "GDAL_DISABLE_READDIR_ON_OPEN",
    "GDAL_INGESTED_BYTES_AT_OPEN",
    "CPL_VSIL_CURL_CACHE_SIZE",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES",
    "VSI_CACHE",
]


def options_report(eodata: Path, size: int, out: Path) -> None:
    """Requests per tile with each option dropped (GDAL's default), counted at the S3 server.

    Per format: a cold z14 tile, a second z14 tile of the same file (hot file), a cold z9 tile and
    that z9 tile again (does the file stay hot after a large read?).
    """
    from rich.console import Console
    from rich.table import Table

    from tests.support.s3_server import S3Server

    s3 = S3Server(eodata)
    rows = []
    try:
        for fmt in ("cog", "jp2-tlm", "jp2"):
            for drop in OPTIONS:
                z14 = tiles_for(14, 2, size)
                z9 = tiles_for(9, 1, size)
                first = Worker(s3, drop=drop)
                counts = [first.read(fmt, z14[0])["requests"], first.read(fmt, z14[1])["requests"]]
                first.close()
                second = Worker(s3, drop=drop)
                big = second.read(fmt, z9[0])
                counts += [big["requests"], second.read(fmt, z9[0])["requests"]]
                second.close()
                rows.append({"format": fmt, "without": drop or "(all options)", "z14 cold": counts[0],
                             "z14 hot file": counts[1], "z9 cold": counts[2], "z9 again": counts[3],
                             "z9 cold MB": round(big["mb"], 1)})  # fmt: skip
    finally:
        s3.stop()
    (out / "gdal_options.json").write_text(json.dumps({"size": size, "rows": rows}, indent=2))
    table = Table(title=f"S3 requests per 256 px tile, {size} px band, one GDAL option at its default")
    for column in rows[0]:
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(v) for v in row.values()))
    Console(width=140).print(table)


if __name__ == "__main__":
    main()
