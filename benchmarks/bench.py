"""eotiler side by side with plain TiTiler and MapServer, same machine, data and requests, one run.

``make bench`` (by hand, minutes) writes ``BENCHMARKS.md`` and ``benchmarks/results/bench.json``;
``make bench-quick`` is the smoke run CI makes (small files, one repeat, short windows).

Data, all derived from the real T29UNU sample bands and documented as such: B02/B03/B04 and
B8A (as B08) at 60 m, upsampled 6x to 10 m and mirror-tiled to ``--size`` px, written as COGs
(DEFLATE, 512 px blocks, overviews) for the local scenarios; for S3, the B04 COG and JPEG2000
files of ``benchmarks/s3_tiles.py`` (ESA-like 1024 px tiles, with and without TLM) behind the
request-counting S3 server with an emulated round-trip time; and a map session (pan, zoom,
restart, GetMap) over B02-B04 JPEG2000 at 10/20/60 m behind a proxy with CDSE's quota
(``benchmarks/map_session.py``, ``benchmarks/quota_proxy.py``). Peers read the same files: TiTiler
(``benchmarks/titiler_app.py``, ``expression=`` for band math) through a 4-band VRT of the same
COGs, MapServer 8 (FastCGI under lighttpd) through the same VRT. Every server runs with the same
worker count and eotiler's GDAL options; eotiler's tile cache is off except in the cached-tile
scenario.

Per scenario and server: p50/p95 latency of sequential requests (median over repeats, with the
min-max band), throughput with 4 concurrent clients, CPU milliseconds per request and peak RSS
of the whole process tree, S3 requests and bytes per tile where S3 is involved, and the ratio
eotiler / peer with its band over repeats.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import morecantile
import yaml
from rich.progress import Progress

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from harness import percentile  # noqa: E402
from peer_servers import Server, start_eotiler, start_mapserver, start_titiler  # noqa: E402
from s3_tiles import mirror_tiled  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
TMS = morecantile.tms.get("WebMercatorQuad")
ORIGIN = (499980.0, 5900040.0)  # T29UNU upper-left corner, EPSG:32629
LOCAL_KEY = "Bench/COG/2023/06/01/BENCH"
SAMPLE_R60 = next((ROOT / "sample/eodata/Sentinel-2/MSI/L2A/2022/10/05").glob("*T29UNU*.SAFE/GRANULE/*/IMG_DATA/R60m"))
NDVI_TITILER = "expression=(b4-b1)/(b4%2Bb1)&rescale=-0.5,1&colormap_name=rdylgn"  # %2B: a "+" in a query is a space


@dataclass(frozen=True)
class Plan:
    """How much to measure: the full run or the CI smoke run."""

    size: int
    repeats: int
    requests: int  # sequential requests per repeat
    window: float  # seconds of the concurrent-throughput phase
    workers: int
    s3_tiles: int  # cold tiles per format and zoom


FULL = Plan(size=6144, repeats=3, requests=24, window=10.0, workers=2, s3_tiles=3)
QUICK = Plan(size=1536, repeats=1, requests=6, window=2.0, workers=1, s3_tiles=1)


# ---- data ---------------------------------------------------------------------------------------


def build_local(work: Path, size: int) -> dict[str, Path]:
    """Four band COGs, a 4-band VRT (B04, B03, B02, B08), a STAC item, an eotiler config and a mapfile."""
    import rasterio
    from rasterio.transform import Affine
    from rasterio.warp import transform_bounds

    eodata = work / "eodata"
    folder = eodata / LOCAL_KEY
    folder.mkdir(parents=True, exist_ok=True)
    transform = Affine(10, 0, ORIGIN[0], 0, -10, ORIGIN[1])
    crs = None
    for band, source in (("B02", "B02"), ("B03", "B03"), ("B04", "B04"), ("B08", "B8A")):
        target = folder / f"{band}.tif"
        with rasterio.open(next(SAMPLE_R60.glob(f"*_{source}_60m.jp2"))) as src:
            crs = src.crs
            if target.exists():
                continue
            data = mirror_tiled(src.read(1), size)
        profile = {
            "driver": "COG",
            "width": size,
            "height": size,
            "count": 1,
            "dtype": "uint16",
            "crs": crs,
            "transform": transform,
            "nodata": 0,
            "BLOCKSIZE": 512,
            "COMPRESS": "DEFLATE",
            "OVERVIEWS": "AUTO",
        }
        with rasterio.open(target, "w", **profile) as dst:
            dst.write(data, 1)
    vrt = folder / "stack.vrt"
    bands = "".join(
        f'<VRTRasterBand dataType="UInt16" band="{i}"><NoDataValue>0</NoDataValue><SimpleSource>'
        f"<SourceFilename>{folder / name}.tif</SourceFilename><SourceBand>1</SourceBand></SimpleSource></VRTRasterBand>"
        for i, name in enumerate(("B04", "B03", "B02", "B08"), start=1)
    )
    vrt.write_text(
        f'<VRTDataset rasterXSize="{size}" rasterYSize="{size}"><SRS>{crs.to_wkt()}</SRS>'
        f"<GeoTransform>{ORIGIN[0]}, 10, 0, {ORIGIN[1]}, 0, -10</GeoTransform>{bands}</VRTDataset>"
    )
    bounds = (ORIGIN[0], ORIGIN[1] - size * 10, ORIGIN[0] + size * 10, ORIGIN[1])
    w, s, e, n = transform_bounds(crs, "EPSG:4326", *bounds)
    items = work / "items"
    items.mkdir(exist_ok=True)
    item = {
        "type": "Feature",
        "stac_version": "1.1.0",
        "id": "BENCH_COG",
        "collection": "bench",
        "bbox": [w, s, e, n],
        "geometry": {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]},
        "properties": {"datetime": "2023-06-01T11:54:11Z", "eo:cloud_cover": 0.0},
        "assets": {
            b: {"href": f"s3://eodata/{LOCAL_KEY}/{b}.tif", "type": "image/tiff"} for b in ("B02", "B03", "B04", "B08")
        },
        "links": [],
    }
    (items / "BENCH_COG.json").write_text(json.dumps(item))
    config = {
        "evalscripts_dir": str(ROOT / "evalscripts"),
        "collections": {
            "bench": {
                "title": "benchmark COGs (derived from T29UNU)",
                "catalogue": {"type": "static", "path": str(items)},
                "data_root": str(eodata),
                "bands": {b: {"asset": b, "resolutions": [10], "scale": 0.0001} for b in ("B02", "B03", "B04", "B08")},
            }
        },
        "layers": {
            "BENCH_TRUE_COLOR": {"title": "true colour", "collection": "bench", "evalscript": "true_color.py"},
            "BENCH_NDVI": {"title": "NDVI", "collection": "bench", "evalscript": "ndvi.py"},
            "BENCH_B04": {"title": "B04", "collection": "bench", "expression": "B04"},
        },
    }
    (work / "eotiler.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    mapfile = work / "bench.map"
    mapfile.write_text(
        MAPFILE.format(vrt=vrt, b04=folder / "B04.tif", minx=bounds[0], miny=bounds[1], maxx=bounds[2], maxy=bounds[3])
    )
    return {"config": work / "eotiler.yaml", "vrt": vrt, "mapfile": mapfile, "bounds": bounds}  # type: ignore[dict-item]


MAPFILE = """MAP
  NAME "bench"
  EXTENT {minx} {miny} {maxx} {maxy}
  SIZE 1024 1024
  PROJECTION "init=epsg:32629" END
  OUTPUTFORMAT NAME "png" DRIVER "AGG/PNG" MIMETYPE "image/png" IMAGEMODE RGBA EXTENSION "png" END
  OUTPUTFORMAT NAME "GEOTIFF_FLOAT" DRIVER "GDAL/GTiff" MIMETYPE "image/tiff" IMAGEMODE FLOAT32 EXTENSION "tif" END
  WEB
    METADATA
      "ows_enable_request" "*"
      "ows_srs" "EPSG:32629 EPSG:3857 EPSG:4326"
      "wms_title" "bench"
      "wcs_label" "bench"
    END
  END
  LAYER
    NAME "tc"
    TYPE RASTER
    STATUS ON
    DATA "{vrt}"
    PROJECTION "init=epsg:32629" END
    PROCESSING "BANDS=1,2,3"
    PROCESSING "SCALE=0,4000"
    PROCESSING "NODATA=0"
    METADATA "wms_title" "true colour" END
  END
  LAYER
    NAME "b04"
    TYPE RASTER
    STATUS ON
    DATA "{b04}"
    PROJECTION "init=epsg:32629" END
    METADATA
      "wcs_label" "B04"
      "wcs_rangeset_name" "B04"
      "wcs_formats" "GEOTIFF_FLOAT"
      "wcs_bandcount" "1"
      "wcs_native_format" "image/tiff"
    END
  END
END
"""


# ---- measuring --------------------------------------------------------------------------------


def tiles_over(bounds: tuple[float, float, float, float], zoom: int, count: int) -> list[tuple[int, int, int]]:
    """``count`` distinct tiles spread inside ``bounds`` (EPSG:32629)."""
    from rasterio.warp import transform

    found: list[tuple[int, int, int]] = []
    for i in range(count * 4):
        frac = (i * 0.618034) % 1
        x = bounds[0] + (bounds[2] - bounds[0]) * (0.15 + 0.7 * frac)
        y = bounds[3] - (bounds[3] - bounds[1]) * (0.15 + 0.7 * ((i * 0.414214) % 1))
        lon, lat = transform("EPSG:32629", "EPSG:4326", [x], [y])
        tile = TMS.tile(lon[0], lat[0], zoom)
        if (tile.z, tile.x, tile.y) not in found:
            found.append((tile.z, tile.x, tile.y))
        if len(found) == count:
            break
    return found


def sequential(server: Server, urls: list[str]) -> list[float]:
    """Milliseconds per request, one at a time; any non-200 answer stops the benchmark."""
    times = []
    with httpx.Client(base_url=server.url, timeout=300) as client:
        for url in urls:
            start = time.perf_counter()
            response = client.get(url)
            times.append((time.perf_counter() - start) * 1000)
            if response.status_code != 200:
                raise RuntimeError(f"{server.name} {url[:200]} -> {response.status_code}: {response.text[:300]}")
    return times


def concurrent(server: Server, urls: list[str], seconds: float, clients: int = 4) -> float:
    """Requests per second with ``clients`` clients cycling through ``urls``."""
    stop = time.monotonic() + seconds
    done = [0] * clients

    def run(index: int) -> None:
        with httpx.Client(base_url=server.url, timeout=300) as client:
            i = index
            while time.monotonic() < stop:
                client.get(urls[i % len(urls)])
                done[index] += 1
                i += clients

    start = time.monotonic()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(run, range(clients)))
    return sum(done) / (time.monotonic() - start)


def measure(server: Server, make_urls: Callable[[int], list[str]], plan: Plan) -> dict:
    """Latency over ``plan.repeats`` repeats (fresh URLs each: nothing cached), throughput, CPU, RSS."""
    sequential(server, make_urls(-1)[:2])  # warm the process (imports, first GDAL open)
    server.start_sampling()
    cpu = server.cpu_seconds()
    p50s, p95s, count = [], [], 0
    for repeat in range(plan.repeats):
        times = sequential(server, make_urls(repeat))
        count += len(times)
        p50s.append(percentile(times, 0.5))
        p95s.append(percentile(times, 0.95))
    cpu_ms = (server.cpu_seconds() - cpu) * 1000 / max(count, 1)
    rate = concurrent(server, make_urls(plan.repeats), plan.window)
    return {
        "p50_ms": round(statistics.median(p50s), 1),
        "p50_band": [round(min(p50s), 1), round(max(p50s), 1)],
        "p95_ms": round(statistics.median(p95s), 1),
        "per_s": round(rate, 1),
        "cpu_ms_per_request": round(cpu_ms, 1),
        "peak_rss_mb": server.peak_rss_mb(),
        "p50_runs": [round(v, 1) for v in p50s],
    }


def ratio(ours: dict, peer: dict) -> dict:
    """eotiler / peer of the p50 latency, with the band over repeats."""
    pairs = [a / b for a, b in zip(ours["p50_runs"], peer["p50_runs"], strict=False) if b]
    return {"p50": round(ours["p50_ms"] / peer["p50_ms"], 2), "band": [round(min(pairs), 2), round(max(pairs), 2)]}


# ---- scenarios ---------------------------------------------------------------------------------


class LocalUrls:
    """The request lists of the local scenarios: each method returns ``repeat -> [url, ...]``."""

    ZOOMS = (12, 13, 14)

    def __init__(self, local: dict, plan: Plan) -> None:
        self.bounds = local["bounds"]
        self.vrt = local["vrt"]
        self.count = plan.requests

    def tiles(self, repeat: int) -> list[tuple[int, int, int]]:
        """Distinct tiles; each repeat uses another zoom, so nothing is read twice."""
        zoom = self.ZOOMS[repeat % len(self.ZOOMS)] if repeat >= 0 else 12
        return tiles_over(self.bounds, zoom, self.count)

    def boxes(self, crs: str, repeat: int) -> list[tuple[float, float, float, float]]:
        """Map extents over 40 % of the file, shifted per request and repeat, in ``crs``."""
        from rasterio.warp import transform_bounds

        b = self.bounds
        span = (b[2] - b[0]) * 0.4
        out = []
        for i in range(self.count):
            shift = (i * 0.618034 + repeat * 0.1) % 1 * (b[2] - b[0] - span)
            out.append(
                transform_bounds(
                    "EPSG:32629", crs, b[0] + shift, b[1] + shift, b[0] + shift + span, b[1] + shift + span
                )
            )
        return out

    def eotiler_tiles(self, layer: str) -> Callable[[int], list[str]]:
        return lambda r: [f"/layers/{layer}/tiles/WebMercatorQuad/{z}/{x}/{y}.png" for z, x, y in self.tiles(r)]

    def titiler_tiles(self, extra: str) -> Callable[[int], list[str]]:
        return lambda r: [
            f"/cog/tiles/WebMercatorQuad/{z}/{x}/{y}.png?url={self.vrt}&{extra}" for z, x, y in self.tiles(r)
        ]

    def wms(self, layer: str, crs: str, prefix: str) -> Callable[[int], list[str]]:
        def urls(repeat: int) -> list[str]:
            found = []
            for w, s, e, n in self.boxes(crs, repeat):
                bbox = f"{s},{w},{n},{e}" if crs == "EPSG:4326" else f"{w},{s},{e},{n}"
                found.append(
                    f"{prefix}?SERVICE=WMS&VERSION=1.3.0&REQUEST=GetMap&LAYERS={layer}&STYLES=&CRS={crs}&BBOX={bbox}"
                    "&WIDTH=1024&HEIGHT=1024&FORMAT=image/png"
                )
            return found

        return urls

    def titiler_bbox(self, crs: str, extra: str) -> Callable[[int], list[str]]:
        code = crs.split(":")[1]
        return lambda r: [
            f"/cog/bbox/{w},{s},{e},{n}/1024x1024.png?url={self.vrt}&coord_crs=epsg:{code}&dst_crs=epsg:{code}&{extra}"
            for w, s, e, n in self.boxes(crs, r)
        ]

    def wcs(self, server: str) -> Callable[[int], list[str]]:
        eotiler = (
            "/ogc/wcs?SERVICE=WCS&VERSION=2.0.1&REQUEST=GetCoverage&COVERAGEID=BENCH_B04&FORMAT=image/tiff"
            "&SUBSETTINGCRS=http://www.opengis.net/def/crs/EPSG/0/32629&OUTPUTCRS=http://www.opengis.net/def/crs/EPSG/0/32629"
            "&SUBSET=E({w},{e})&SUBSET=N({s},{n})&SCALESIZE=E(1024),N(1024)"
        )
        mapserver = (
            "/mapserv?SERVICE=WCS&VERSION=2.0.1&REQUEST=GetCoverage&COVERAGEID=b04&FORMAT=image/tiff"
            "&SUBSET=x({w},{e})&SUBSET=y({s},{n})&SCALESIZE=x(1024),y(1024)"
        )
        template = eotiler if server == "eotiler" else mapserver
        return lambda r: [template.format(w=w, s=s, e=e, n=n) for w, s, e, n in self.boxes("EPSG:32629", r)]


def local_scenarios(local: dict, plan: Plan, progress: Progress, only: list[str] | None = None) -> list[dict]:
    """Uncached XYZ tiles and 1024 px GetMaps from the local COGs; WCS 2.0.1 float32 coverages.

    ``only``: substrings of scenario titles to keep (all when empty), for measuring one change.
    """
    u = LocalUrls(local, plan)
    eotiler_tiles, titiler_tiles, titiler_bbox, wcs = u.eotiler_tiles, u.titiler_tiles, u.titiler_bbox, u.wcs

    def wms(layer: str, crs: str, server: str) -> Callable[[int], list[str]]:
        return u.wms(layer, crs, "/ogc/wms" if server == "eotiler" else "/mapserv")

    ndvi_ti = NDVI_TITILER
    tc_ti = "bidx=1&bidx=2&bidx=3&rescale=0,4000"
    rows: list[dict] = []
    servers = {
        "eotiler": lambda: start_eotiler(local["config"], plan.workers),
        "titiler": lambda: start_titiler(plan.workers),
        "mapserver": lambda: start_mapserver(local["mapfile"], plan.workers),
    }
    scenarios: list[tuple[str, dict[str, Callable[[int], list[str]]]]] = [
        (
            "XYZ 256 px true colour, local COG, uncached",
            {"eotiler": eotiler_tiles("BENCH_TRUE_COLOR"), "titiler": titiler_tiles(tc_ti)},
        ),
        (
            "XYZ 256 px NDVI, local COG, uncached",
            {"eotiler": eotiler_tiles("BENCH_NDVI"), "titiler": titiler_tiles(ndvi_ti)},
        ),
        (
            "WMS GetMap 1024 px NDVI, EPSG:3857",
            {"eotiler": wms("BENCH_NDVI", "EPSG:3857", "eotiler"), "titiler": titiler_bbox("EPSG:3857", ndvi_ti)},
        ),
        (
            "WMS GetMap 1024 px NDVI, EPSG:4326",
            {"eotiler": wms("BENCH_NDVI", "EPSG:4326", "eotiler"), "titiler": titiler_bbox("EPSG:4326", ndvi_ti)},
        ),
        (
            "WMS GetMap 1024 px true colour, EPSG:3857",
            {
                "eotiler": wms("BENCH_TRUE_COLOR", "EPSG:3857", "eotiler"),
                "mapserver": wms("tc", "EPSG:3857", "mapserver"),
                "titiler": titiler_bbox("EPSG:3857", tc_ti),
            },
        ),
        (
            "WMS GetMap 1024 px true colour, EPSG:4326",
            {
                "eotiler": wms("BENCH_TRUE_COLOR", "EPSG:4326", "eotiler"),
                "mapserver": wms("tc", "EPSG:4326", "mapserver"),
                "titiler": titiler_bbox("EPSG:4326", tc_ti),
            },
        ),
        ("WCS 2.0.1 GetCoverage 1024 px float32 GeoTIFF", {"eotiler": wcs("eotiler"), "mapserver": wcs("mapserver")}),
    ]
    if only:
        scenarios = [s for s in scenarios if any(part.lower() in s[0].lower() for part in only)]
        servers = {name: start for name, start in servers.items() if any(name in s[1] for s in scenarios)}
    task = progress.add_task("local scenarios", total=sum(len(s[1]) for s in scenarios))
    for name in servers:  # one server at a time: peers never share the CPU
        server = servers[name]()
        try:
            for title, per_server in scenarios:
                if name in per_server:
                    row = next((r for r in rows if r["scenario"] == title), None)
                    if row is None:
                        row = {"scenario": title, "servers": {}}
                        rows.append(row)
                    row["servers"][name] = measure(server, per_server[name], plan)
                    progress.advance(task)
        finally:
            server.stop()
    for row in rows:
        ours = row["servers"]["eotiler"]
        row["ratios"] = {peer: ratio(ours, result) for peer, result in row["servers"].items() if peer != "eotiler"}
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the CI smoke run: small files, one repeat")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--only",
        action="append",
        metavar="TEXT",
        help="run only the local scenarios whose title contains TEXT (repeatable); prints their rows, writes no report",
    )
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    missing = [tool for tool in ("lighttpd", "mapserv") if shutil.which(tool) is None]
    if missing:
        print(f"missing {', '.join(missing)}: apt-get install lighttpd cgi-mapserver", file=sys.stderr)
        return 2
    work = args.out / "data" / f"peers{plan.size}"
    started = time.monotonic()
    with Progress() as progress:
        local = build_local(work, plan.size)
        rows = local_scenarios(local, plan, progress, args.only)
        if args.only:
            print(json.dumps(rows, indent=1))
            return 0
        from bench_s3 import s3_scenarios  # noqa: PLC0415 - the S3 part lives in its own module

        rows += s3_scenarios(plan, args.out, progress)
        from map_session import scenario as map_session_scenario  # noqa: PLC0415

        rows.append(map_session_scenario(plan, args.out, progress))
        from bench_extra import cached_scenario, evalscript_scenario  # noqa: PLC0415

        rows.append(cached_scenario(local, plan, progress))
        rows.append(evalscript_scenario(plan, progress))
        from encoders import encoder_scenario  # noqa: PLC0415

        rows.append(encoder_scenario(local, plan, progress))
    report = {
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "plan": plan.__dict__,
        "machine": machine(),
        "seconds": round(time.monotonic() - started),
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(json.dumps(report, indent=2))
    from bench_report import write_markdown  # noqa: PLC0415

    target = ROOT / "BENCHMARKS.md" if not args.quick else args.out / "BENCHMARKS-quick.md"
    write_markdown(report, target)
    print(f"wrote {target} and {args.out / 'bench.json'}")
    return 0


def machine() -> dict[str, object]:
    """What the numbers were measured on."""
    import rasterio
    import titiler.core

    import server

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem = next(
        int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")
    )
    mapserver = subprocess.run(["mapserv", "-v"], capture_output=True, text=True).stdout.split(" OUTPUT")[0]
    return {
        "cpu": cpu,
        "cores": len(__import__("os").sched_getaffinity(0)),
        "memory_gb": round(mem / 2**20, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "eotiler": server.__version__,
        "titiler.core": titiler.core.__version__,
        "rasterio": rasterio.__version__,
        "gdal": rasterio.__gdal_version__,
        "mapserver": mapserver.strip(),
    }


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    raise SystemExit(main())
