"""S3 scenarios of ``benchmarks/bench.py``: cold and warm tiles over S3 with an emulated round-trip
time, COG and full-size JPEG2000 with and without TLM, and zoomed-out JPEG2000 tiles before and
after eotiler's overview cache, against TiTiler reading the same objects.

Cold means a new server process (GDAL's caches empty) with empty overview and decoded-block
directories (a JPEG2000 object's tile-part index, a few KB kept on disk by design, stays); warm
is the same tile again in that process. Requests and bytes are counted at the S3 server
(``tests/support/s3_server.py``).
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import cache, partial
from pathlib import Path

import httpx
import yaml
from bench import ROOT, TMS, Plan, ratio  # noqa: F401 - TMS re-exported for callers
from peer_servers import Server, start_eotiler, start_titiler
from rich.progress import Progress
from s3_tiles import FORMATS, KEY, build, tiles_for

RTT_MS = 30.0
WARM_REPEATS = 5  # warm tiles per process in the credential row
LAYERS = {"cog": "S3_COG", "jp2-tlm": "S3_JP2_TLM", "jp2": "S3_JP2"}


def s3_config(work: Path, size: int, stac_items: Path) -> Path:
    """An eotiler configuration with one collection per format over ``/vsis3/eodata``."""
    from rasterio.warp import transform_bounds
    from s3_tiles import ORIGIN

    w, s, e, n = transform_bounds(
        "EPSG:32629", "EPSG:4326", ORIGIN[0], ORIGIN[1] - size * 10, ORIGIN[0] + size * 10, ORIGIN[1]
    )
    collections, layers = {}, {}
    for fmt, name in FORMATS.items():
        folder = stac_items / fmt
        folder.mkdir(parents=True, exist_ok=True)
        item = {
            "type": "Feature",
            "stac_version": "1.1.0",
            "id": f"BENCH_{fmt}",
            "collection": fmt,
            "bbox": [w, s, e, n],
            "geometry": {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]},
            "properties": {"datetime": "2023-06-01T11:54:11Z", "eo:cloud_cover": 0.0},
            "assets": {"B04": {"href": f"s3://eodata/{KEY}/{name}"}},
            "links": [],
        }
        (folder / "item.json").write_text(json.dumps(item))
        collections[fmt] = {
            "title": fmt,
            "catalogue": {"type": "static", "path": str(folder)},
            "data_root": "/vsis3/eodata",
            "bands": {"B04": {"asset": "B04", "resolutions": [10], "scale": 0.0001}},
        }
        layers[LAYERS[fmt]] = {"title": fmt, "collection": fmt, "expression": "B04", "rescale": [0, 0.4]}
    # the local sample TiTiler's process is warmed with (``_warm_process``), for eotiler's too
    collections["warm"] = {
        "title": "local sample",
        "catalogue": {"type": "static", "path": str(ROOT / "sample/stac/sentinel-2-global-mosaics")},
        "data_root": str(ROOT / "sample/eodata"),
        "bands": {"B04": {"asset": "B04", "resolutions": [100], "dtype": "int16", "nodata": -32768}},
    }
    layers["WARM"] = {"title": "local sample", "collection": "warm", "expression": "B04", "rescale": [0, 4000]}
    path = work / "eotiler-s3.yaml"
    path.write_text(
        yaml.safe_dump({"evalscripts_dir": str(ROOT / "evalscripts"), "collections": collections, "layers": layers})
    )
    return path


def _tile_urls(fmt: str, tile: tuple[int, int, int]) -> dict[str, str]:
    z, x, y = tile
    return {
        "eotiler": f"/layers/{LAYERS[fmt]}/tiles/WebMercatorQuad/{z}/{x}/{y}.png",
        "titiler": f"/cog/tiles/WebMercatorQuad/{z}/{x}/{y}.png?url=/vsis3/eodata/{KEY}/{FORMATS[fmt]}&rescale=0,4000",
    }


def _warm_process(server: Server) -> None:
    """Exercise the server's code paths without touching S3: a cold tile must only be cold in GDAL.

    Both servers read the same tile of the same local file first (GDAL's drivers, PROJ's
    transformations, the warp): what a process pays once is not a cold S3 read.
    """
    sample = next((ROOT / "sample" / "eodata" / "Global-Mosaics").rglob("B04.tif"))
    if server.name == "eotiler":
        urls = ["/layers/S3_COG/tiles/WebMercatorQuad/14/0/0.png", "/layers/WARM/tiles/WebMercatorQuad/8/119/109.png"]
    else:
        urls = [f"/cog/tiles/WebMercatorQuad/8/119/109.png?url={sample}&rescale=0,4000"]
    for url in urls:
        answer = _client().get(server.url + url, timeout=60)
        if answer.status_code != 200:
            raise RuntimeError(f"{server.name} {url} -> {answer.status_code}: {answer.text[:300]}")


@cache
def _client() -> httpx.Client:
    """One HTTP client for every measured request.

    Why: ``httpx.get`` builds a client (and its TLS context) per call, 30-200 ms on this machine
    depending on load, which was counted in every tile's time, for both servers alike.
    """
    return httpx.Client(timeout=300)


def _one(server: Server, url: str, s3) -> dict:
    s3.reset()
    start = time.perf_counter()
    response = _client().get(server.url + url)
    ms = (time.perf_counter() - start) * 1000
    if response.status_code != 200:
        raise RuntimeError(f"{server.name} {url} -> {response.status_code}: {response.text[:300]}")
    log = s3.requests()
    return {"ms": ms, "requests": len(log), "mb": sum(r["bytes"] for r in log) / 1e6}


def _summary(samples: list[dict]) -> dict:
    return {
        "p50_ms": round(statistics.median(s["ms"] for s in samples), 1),
        "max_ms": round(max(s["ms"] for s in samples), 1),
        "requests": statistics.median(s["requests"] for s in samples),
        "mb": round(statistics.median(s["mb"] for s in samples), 2),
        "p50_runs": [round(s["ms"], 1) for s in samples],
    }


def s3_scenarios(plan: Plan, out: Path, progress: Progress) -> list[dict]:
    """Cold/warm tiles per format at z14 and z11; JPEG2000 z8-z10 with the overview cache cold and warm."""
    from tests.support.s3_server import S3Server

    size = 2048 if plan.size < 4096 else 10980
    eodata = build(out / "data", size)
    work = Path(tempfile.mkdtemp(prefix="eotiler-bench-s3-"))
    config = s3_config(work, size, work / "items")
    s3 = S3Server(eodata, delay_ms=RTT_MS)
    # cold means no tile-part copied before either (the gateway keeps them on disk across restarts)
    env = {**s3.env(), "EOTILER_S3_TILE_PART_DISK_MB": "0"}
    titiler_env = {**env, "AWS_HTTPS": "NO", "AWS_VIRTUAL_HOSTING": "FALSE"}
    cases = [(fmt, z) for fmt in FORMATS for z in (14, 11)]
    rows: list[dict] = []
    task = progress.add_task("S3 scenarios", total=len(cases) * plan.s3_tiles * 4 + min(3, max(1, plan.s3_tiles)))
    try:
        for fmt, zoom in cases:
            row: dict = {"scenario": f"XYZ tile over S3 ({RTT_MS:g} ms RTT), {fmt}, z{zoom}", "servers": {}, "s3": True}
            # Cold means cold everywhere: a new process and, for eotiler, empty overview and decoded-block
            # caches (the default block directory is shared by every run, so a tile asked in an
            # earlier run was served from its decoded block: 62 ms where a decode takes ~240 ms).
            starters = (
                (
                    "eotiler",
                    lambda: start_eotiler(config, 1, {**env, **_empty_cache_dirs()}),
                ),
                ("titiler", lambda: start_titiler(1, titiler_env)),
            )
            for name, start in starters:
                cold, warm = [], []
                for tile in tiles_for(zoom, plan.s3_tiles, size):
                    server = start()
                    try:
                        _warm_process(server)
                        url = _tile_urls(fmt, tile)[name]
                        cold.append(_one(server, url, s3))
                        warm.append(_one(server, url, s3))
                    finally:
                        server.stop()
                    progress.advance(task)
                row["servers"][name] = {"cold": _summary(cold), "warm": _summary(warm)}
            ours, peer = row["servers"]["eotiler"]["cold"], row["servers"]["titiler"]["cold"]
            row["ratios"] = {"titiler": ratio(ours, peer)}
            rows.append(row)
        rows.append(_overview_rows(plan, config, env, titiler_env, s3, size, progress, task))
        rows.append(_credential_row(plan, config, env, s3, size, progress, task))
    finally:
        s3.stop()
    return rows


def _empty_cache_dirs() -> dict[str, str]:
    """Fresh overview and decoded-block directories for one cold eotiler process."""
    return {"EOTILER_OVERVIEW_CACHE_DIR": tempfile.mkdtemp(), "EOTILER_BLOCK_CACHE_DIR": tempfile.mkdtemp()}


def _wait_for_level(server: Server, seconds: float = 120.0) -> None:
    """Until the overview cache has a file on disk (the level the cold tile queued), or ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        stats = _client().get(server.url + "/cache/stats", timeout=30).json().get("overviews", {})
        if stats.get("files", 0) >= 1:
            return
        time.sleep(0.2)
    raise RuntimeError("the overview level was not built in time")


def _overview_rows(plan, config, env, titiler_env, s3, size, progress, task) -> dict:
    """JPEG2000 (no TLM) z8-z10: eotiler with an empty overview cache, then warm (a new process
    sharing the cache directory), against TiTiler."""

    def fresh(start: Callable[[], Server], tile: tuple[int, int, int], build: bool = False) -> dict:
        server = start()
        try:
            _warm_process(server)
            result = _one(server, _tile_urls("jp2", tile)[server.name], s3)
            if build:  # the level is built in the background: the process stops once it is on disk
                _wait_for_level(server)
            return result
        finally:
            server.stop()

    cold, warm, peer = [], [], []
    for zoom in (10, 9, 8)[: max(1, plan.s3_tiles)]:
        tile = tiles_for(zoom, 1, size)[0]
        ov_env = {**env, "EOTILER_OVERVIEW_CACHE_DIR": tempfile.mkdtemp(prefix="eotiler-bench-ov-")}
        cold.append(fresh(partial(start_eotiler, config, 1, ov_env), tile, build=True))  # builds the level
        warm.append(fresh(partial(start_eotiler, config, 1, ov_env), tile))  # a new process: GDAL cold
        peer.append(fresh(partial(start_titiler, 1, titiler_env), tile))
        progress.advance(task)
    row = {
        "scenario": "XYZ tile over S3, JPEG2000 no TLM, z8-z10, eotiler overview cache cold / warm",
        "servers": {
            "eotiler (overview cache cold)": _summary(cold),
            "eotiler": _summary(warm),
            "titiler": _summary(peer),
        },
        "s3": True,
    }
    row["ratios"] = {"titiler": ratio(row["servers"]["eotiler"], row["servers"]["titiler"])}
    return row


def eotiler_s3_spelling(env: dict[str, str]) -> dict[str, str]:
    """The same S3 settings as ``EOTILER_S3_*`` variables instead of GDAL's ``AWS_*`` ones."""
    spelled = {}
    for name, value in env.items():
        suffix = name.removeprefix("AWS_").removeprefix("S3_")
        spelled[f"EOTILER_S3_{suffix}" if name.startswith("AWS_") else name] = value
    return spelled


def _credential_row(plan: Plan, config: Path, env: dict[str, str], s3, size: int, progress, task) -> dict:
    """Cold and warm COG tiles with the documented ``AWS_*`` credentials and with ``EOTILER_S3_*``.

    Issue 15 asks that both spellings cost the same per tile: with ``AWS_*`` in the environment,
    rasterio once built a boto3 session for every ``rasterio.Env`` (about 40 ms a tile). The two
    spellings alternate tile by tile in one run, each in a new process; a warm tile (no S3
    request: what is left is the per-tile work, credentials included) is asked ``WARM_REPEATS``
    times per process.
    """
    spellings = {"AWS_*": env, "EOTILER_S3_*": eotiler_s3_spelling(env)}
    samples: dict[str, dict[str, list[dict]]] = {name: {"cold": [], "warm": []} for name in spellings}
    for tile in tiles_for(14, plan.s3_tiles * 2, size):
        for name, spelled in spellings.items():
            server = start_eotiler(config, 1, {**spelled, "EOTILER_OVERVIEW_CACHE_DIR": tempfile.mkdtemp()})
            try:
                _warm_process(server)
                url = _tile_urls("cog", tile)["eotiler"]
                samples[name]["cold"].append(_one(server, url, s3))
                samples[name]["warm"].extend(_one(server, url, s3) for _ in range(WARM_REPEATS))
            finally:
                server.stop()
            progress.advance(task)
    servers = {
        f"eotiler, {name} credentials": {"cold": _summary(found["cold"]), "warm": _summary(found["warm"])}
        for name, found in samples.items()
    }
    aws, ours = servers["eotiler, AWS_* credentials"], servers["eotiler, EOTILER_S3_* credentials"]
    return {
        "scenario": f"XYZ tile over S3 ({RTT_MS:g} ms RTT), cog, z14, AWS_* / EOTILER_S3_* credentials",
        "servers": servers,
        "s3": True,
        "ratios": {},  # the same server twice: no peer
        "spellings": {"cold": ratio(aws["cold"], ours["cold"]), "warm": ratio(aws["warm"], ours["warm"])},
    }


def _probe(fmt: str, zoom: int, tiles: int, servers: tuple[str, ...], env_extra: dict[str, str]) -> None:
    """Cold tiles of one format and zoom, each in a new process, with each answer's Server-Timing
    and the S3 requests it made (method, range, bytes): where a cold tile's time goes."""
    from tests.support.s3_server import S3Server

    size = 10980
    eodata = build(ROOT / "benchmarks" / "results" / "data", size)
    work = Path(tempfile.mkdtemp(prefix="eotiler-bench-s3-"))
    config = s3_config(work, size, work / "items")
    s3 = S3Server(eodata, delay_ms=RTT_MS)
    env = {**s3.env(), "EOTILER_S3_TILE_PART_DISK_MB": "0", **env_extra}
    starters = {
        "eotiler": lambda: start_eotiler(config, 1, {**_empty_cache_dirs(), **env}),
        "titiler": lambda: start_titiler(1, {**env, "AWS_HTTPS": "NO", "AWS_VIRTUAL_HOSTING": "FALSE"}),
    }
    try:
        found: dict[str, list[float]] = {name: [] for name in servers}
        for tile in tiles_for(zoom, tiles, size):
            for name in servers:
                server = starters[name]()
                try:
                    _warm_process(server)
                    url = _tile_urls(fmt, tile)[name]
                    s3.reset()
                    start = time.perf_counter()
                    answer = _client().get(server.url + url)
                    ms = (time.perf_counter() - start) * 1000
                    found[name].append(ms)
                    print(f"{name} {tile} {ms:.1f} ms  {answer.headers.get('server-timing', '')}")
                    for entry in s3.requests():
                        print(f"    {entry['method']} {entry['range']} {entry['bytes']}")
                finally:
                    server.stop()
        for name, values in found.items():
            print(name, "p50", round(statistics.median(values), 1), [round(v) for v in values])
    finally:
        s3.stop()


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="cold tiles of one S3 row, with timings and S3 requests")
    parser.add_argument("--format", choices=sorted(FORMATS), default="cog")
    parser.add_argument("--zoom", type=int, default=14)
    parser.add_argument("--tiles", type=int, default=3)
    parser.add_argument("--servers", default="eotiler,titiler")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for both servers")
    args = parser.parse_args()
    extra = dict(item.split("=", 1) for item in args.env)
    _probe(args.format, args.zoom, args.tiles, tuple(args.servers.split(",")), extra)
