"""A map session over S3 with CDSE's quota: what a user panning and zooming a web map waits for.

Data: one Sentinel-2 L2A product in CDSE's SAFE layout at real eodata key paths, B02, B03 and B04
at 10, 20 and 60 m as JPEG2000 without TLM markers (``s3_tiles.build_safe``: the real T29UNU
60 m sample bands upsampled and mirror-tiled, 10980 px at 10 m, ESA's code-stream tiles), one
STAC item with ``s3://eodata/...`` hrefs, served by moto behind ``quota_proxy.py`` (30 ms round
trip, 4 connections and 2,000 requests a minute per credential, 429 beyond, 20 MB/s per
connection).

Session: a 1280 x 768 px WebMercatorQuad view, its 256 px tiles fetched by 6 client threads in
the order OpenLayers asks for them (nearest the centre first):

    (a) the first view of the unseen granule at z13, (b) a pan east by one view width,
    (c) a zoom in to z14 and (d) a zoom out to z10 at the panned centre, (e) view (a) again
    after a server restart, (f) one 1024 x 1024 px WMS GetMap (EPSG:3857, z12 resolution).

Per step and server: seconds until the last tile arrives, requests and MB at the proxy, the peak
of concurrent S3 requests (refused ones included), 429 answers, and client requests that failed
(a non-2xx answer other than TiTiler's 404 outside the item, or an eotiler image marked
incomplete); blank images (no data there) are counted apart. Peers: eotiler (true colour
evalscript) and plain TiTiler's STAC endpoint over the same item and hrefs
(``assets=B04_10m,B03_10m,B02_10m``, one URL template at every zoom, as its users write it), one
server at a time behind the same proxy, each starting with a fresh minute window. Restart = a new
process; eotiler keeps its on-disk overview cache, JPEG2000 tile-part index and decoded blocks
(directories under this run's work dir, so every run starts clean); TiTiler has none. eotiler's tile cache is off,
as in the other scenarios of ``bench.py``: steps (a)-(d) ask for tiles not asked before, and (e)
follows a restart, which would empty a memory cache anyway.

    python benchmarks/map_session.py            # full size (builds ~200 MB of JPEG2000 once)
    python benchmarks/map_session.py --quick    # 4096 px, every step, for CI
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import queue
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from peer_servers import Server, start_eotiler, start_titiler  # noqa: E402
from quota_proxy import Limits, QuotaProxy, summarise  # noqa: E402
from s3_tiles import ORIGIN, SAFE_BANDS, SAFE_PRODUCT, SAFE_TILES, build_safe, safe_key  # noqa: E402

LIMITS = Limits(connections=4, requests_per_minute=2000, rtt_ms=30.0, mb_per_s=20.0)
VIEW = (1280, 768)
CLIENTS = 6
LAYER = "TRUE_COLOR"
TITILER_ASSETS = "assets=B04_10m&assets=B03_10m&assets=B02_10m&rescale=1000,5000&nodata=0"
HALF_WORLD = 20037508.342789244  # WebMercatorQuad's extent from the origin, metres
KEY, SECRET = "session-key", "session-secret"  # noqa: S105 - the proxy's test credential


@dataclass(frozen=True)
class Step:
    """One user action: a view to fill with tiles, or one GetMap; ``restart`` first if set."""

    key: str
    title: str
    zoom: int
    center: tuple[float, float]  # EPSG:3857
    restart: bool = False
    getmap: bool = False


def resolution(zoom: int) -> float:
    """WebMercatorQuad metres per pixel at ``zoom``."""
    return 2 * HALF_WORLD / (256 * 2**zoom)


def view_tiles(center: tuple[float, float], zoom: int) -> list[tuple[int, int, int]]:
    """The 256 px tiles a 1280 x 768 view touches, nearest the centre first (OpenLayers' order)."""
    res = resolution(zoom)
    px, py = (center[0] + HALF_WORLD) / res, (HALF_WORLD - center[1]) / res
    xs = range(math.floor((px - VIEW[0] / 2) / 256), math.ceil((px + VIEW[0] / 2) / 256))
    ys = range(math.floor((py - VIEW[1] / 2) / 256), math.ceil((py + VIEW[1] / 2) / 256))
    tiles = [(zoom, x, y) for x in xs for y in ys]
    return sorted(tiles, key=lambda t: math.hypot((t[1] + 0.5) * 256 - px, (t[2] + 0.5) * 256 - py))


def session(size: int) -> list[Step]:
    """The steps over a ``size`` px granule: (a) and (b) side by side around the granule's centre."""
    from rasterio.warp import transform

    half = size * 10 / 2
    xs, ys = transform("EPSG:32629", "EPSG:3857", [ORIGIN[0] + half], [ORIGIN[1] - half])
    width = VIEW[0] * resolution(13)
    a = (xs[0] - width / 2, ys[0])
    b = (xs[0] + width / 2, ys[0])
    return [
        Step("a", "first view of an unseen granule, z13", 13, a),
        Step("b", "pan by one view width, z13", 13, b),
        Step("c", "zoom in, z14", 14, b),
        Step("d", "zoom out, z10", 10, b),
        Step("e", "view (a) after a server restart, z13", 13, a, restart=True),
        Step("f", "WMS GetMap 1024 px, EPSG:3857, z12 resolution", 12, (xs[0], ys[0]), getmap=True),
    ]


# ---- data and configuration -------------------------------------------------------------------


def write_item(size: int, folder: Path) -> Path:
    """The product's STAC item (CDSE's asset keys ``B04_10m`` ..., ``s3://eodata/`` hrefs)."""
    from rasterio.warp import transform_bounds

    bounds = (ORIGIN[0], ORIGIN[1] - size * 10, ORIGIN[0] + size * 10, ORIGIN[1])
    w, s, e, n = transform_bounds("EPSG:32629", "EPSG:4326", *bounds)
    assets = {
        f"{band}_{res}m": {"href": f"s3://eodata/{safe_key(band, res)}", "type": "image/jp2", "roles": ["data"]}
        for band in SAFE_BANDS
        for res in SAFE_TILES
    }
    item = {
        "type": "Feature",
        "stac_version": "1.1.0",
        "id": SAFE_PRODUCT,
        "collection": "sentinel-2-l2a",
        "bbox": [w, s, e, n],
        "geometry": {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]},
        "properties": {
            "datetime": "2023-06-01T11:54:09Z",
            "eo:cloud_cover": 0.0,
            "processing:version": "05.09",
            "proj:code": "EPSG:32629",
        },
        "assets": assets,
        "links": [],
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{SAFE_PRODUCT}.json"
    path.write_text(json.dumps(item))
    return path


def write_config(work: Path, items: Path) -> Path:
    """eotiler over the item: B02-B04 at 10/20/60 m from ``/vsis3/eodata``, a true-colour layer."""
    band = {"asset": "{band}_{{res}}m", "resolutions": list(SAFE_TILES), "scale": 0.0001, "offset_rule": "s2-baseline"}
    config = {
        "evalscripts_dir": str(ROOT / "evalscripts"),
        "collections": {
            "sentinel-2-l2a": {
                "title": "Sentinel-2 L2A (benchmark product behind the quota proxy)",
                "catalogue": {"type": "static", "path": str(items)},
                "data_root": "/vsis3/eodata",
                "bands": {b: {**band, "asset": band["asset"].format(band=b)} for b in SAFE_BANDS},
            }
        },
        "layers": {LAYER: {"title": "True colour", "collection": "sentinel-2-l2a", "evalscript": "true_color.py"}},
    }
    path = work / "eotiler-session.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


# ---- the two servers ------------------------------------------------------------------------------


@dataclass
class Peer:
    """How to start one server and what it is asked for."""

    name: str
    start: Callable[[], Server]
    tile: Callable[[tuple[int, int, int]], str]
    getmap: Callable[[tuple[float, float, float, float]], str]
    warm: str  # a request that loads the code paths without reading S3


def peers(proxy: QuotaProxy, work: Path, item: Path, workers: int, logs: Path) -> list[Peer]:
    """eotiler (its caches under ``work``, kept across its restart) and TiTiler, same proxy and key;
    their output goes to ``logs/<name>.log`` (what explains a failed request)."""
    s3 = proxy.env(KEY, SECRET)
    caches = work / "eotiler-caches"
    eotiler_env = {
        **s3,
        "EOTILER_S3_GATEWAY": "true",
        "EOTILER_S3_CONNECTIONS": str(LIMITS.connections),
        "EOTILER_S3_REQUESTS_PER_MINUTE": str(LIMITS.requests_per_minute),
        "EOTILER_OVERVIEW_CACHE_DIR": str(caches / "overviews"),
        "EOTILER_JP2_INDEX_DIR": str(caches / "jp2-index"),
        "EOTILER_BLOCK_CACHE_DIR": str(caches / "blocks"),
    }
    # eotiler's retry policy for 429/5xx (EOTILER_S3_RETRIES' default, GDAL_HTTP_RETRY_DELAY comes
    # with the shared GDAL options): the same chance to ride out a refusal.
    titiler_env = {**s3, "GDAL_HTTP_MAX_RETRY": "3"}
    config = write_config(work, item.parent)
    titiler_query = f"url={item}&{TITILER_ASSETS}"
    return [
        Peer(
            "eotiler",
            lambda: start_eotiler(config, workers, eotiler_env, logs / "eotiler.log"),
            lambda t: f"/layers/{LAYER}/tiles/WebMercatorQuad/{t[0]}/{t[1]}/{t[2]}.png",
            lambda b: (
                f"/ogc/wms?SERVICE=WMS&VERSION=1.3.0&REQUEST=GetMap&LAYERS={LAYER}&STYLES=&CRS=EPSG:3857"
                f"&BBOX={b[0]},{b[1]},{b[2]},{b[3]}&WIDTH=1024&HEIGHT=1024&FORMAT=image/png"
            ),
            f"/layers/{LAYER}/tiles/WebMercatorQuad/14/0/0.png",  # no scene there: S3 is not read
        ),
        Peer(
            "titiler",
            lambda: start_titiler(workers, titiler_env, logs / "titiler.log"),
            lambda t: f"/stac/tiles/WebMercatorQuad/{t[0]}/{t[1]}/{t[2]}.png?{titiler_query}",
            lambda b: (
                f"/stac/bbox/{b[0]},{b[1]},{b[2]},{b[3]}/1024x1024.png?{titiler_query}"
                "&coord_crs=epsg:3857&dst_crs=epsg:3857"
            ),
            f"/stac/tiles/WebMercatorQuad/14/0/0.png?{titiler_query}",  # outside the item: no asset opened
        ),
    ]


# ---- running a session --------------------------------------------------------------------------


def _outcome(response: httpx.Response | None, name: str) -> tuple[bool, bool, bool]:
    """(failed, incomplete, blank) for one answer as the map shows it; blank: no opaque pixel
    (outside the granule), which tells a fast empty answer from a fast rendered one."""
    if response is None:
        return True, False, False
    if response.status_code == 404 and name == "titiler":  # TileOutsideBounds: nothing there
        return False, False, True
    if not 200 <= response.status_code < 300:
        return True, False, False
    incomplete = "X-Eotiler-Failed-Scenes" in response.headers or "X-Eotiler-Skipped-Scenes" in response.headers
    blank = response.status_code == 204
    if response.headers.get("content-type", "").startswith("image/png"):
        with Image.open(io.BytesIO(response.content)) as image:
            blank = "A" in image.getbands() and image.getchannel("A").getextrema()[1] == 0
    return False, incomplete, blank


def fetch(server: Server, urls: list[str], name: str) -> dict:
    """Every URL by ``CLIENTS`` threads from one queue; seconds until the last answer."""
    todo: queue.Queue[str] = queue.Queue()
    for url in urls:
        todo.put(url)
    outcomes: list[tuple[bool, bool, bool]] = []
    errors: list[str] = []
    timings: list[tuple[str, float, str | None]] = []  # per answer: URL, seconds, Server-Timing

    def client() -> None:
        with httpx.Client(base_url=server.url, timeout=300) as http:
            while True:
                try:
                    url = todo.get_nowait()
                except queue.Empty:
                    return
                response = None
                try:
                    began = time.perf_counter()
                    response = http.get(url)
                    timings.append((url, round(time.perf_counter() - began, 3), response.headers.get("server-timing")))
                except httpx.HTTPError as error:
                    errors.append(f"{url[:120]}: {error!r}")
                outcome = _outcome(response, name)
                if outcome[0] and response is not None:
                    errors.append(f"{url[:120]} -> {response.status_code}: {response.text[:200]}")
                outcomes.append(outcome)

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(min(CLIENTS, len(urls)))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {
        "seconds": round(time.perf_counter() - start, 2),
        "images": len(urls),
        "failed": sum(o[0] for o in outcomes),
        "incomplete": sum(o[1] for o in outcomes),
        "blank": sum(o[2] for o in outcomes),
        "errors": errors[:5],
        "timings": timings,
    }


def getmap_bbox(step: Step) -> tuple[float, float, float, float]:
    """A 1024 px square around the step's centre at the step zoom's resolution."""
    half = 512 * resolution(step.zoom)
    x, y = step.center
    return (x - half, y - half, x + half, y + half)


def block_decodes(server: Server) -> float:
    """JPEG2000 blocks eotiler decoded so far (its ``/metrics``): where a step's CPU went."""
    text = httpx.get(server.url + "/metrics", timeout=30).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("eotiler_block_decodes_total"))


def run_peer(peer: Peer, steps: list[Step], proxy: QuotaProxy, advance: Callable[[], None]) -> dict[str, dict]:
    """The whole session on one server; the proxy log is read and emptied around every step."""
    proxy.reset_quota()
    server = peer.start()
    results: dict[str, dict] = {}
    try:
        httpx.get(server.url + peer.warm, timeout=60)
        for step in steps:
            if step.restart:
                server.stop()
                server = peer.start()
                httpx.get(server.url + peer.warm, timeout=60)
            tiles = view_tiles(step.center, step.zoom)
            urls = [peer.getmap(getmap_bbox(step))] if step.getmap else [peer.tile(t) for t in tiles]
            proxy.reset()
            decoded = block_decodes(server) if peer.name == "eotiler" else 0.0
            result = fetch(server, urls, peer.name)
            result.update(summarise(proxy.requests()))
            if trace := os.environ.get("MAP_SESSION_TRACE"):  # every proxied request of the step, to study
                Path(trace).mkdir(parents=True, exist_ok=True)
                (Path(trace) / f"{peer.name}-{step.key}.json").write_text(json.dumps(proxy.requests()))
                (Path(trace) / f"{peer.name}-{step.key}-answers.json").write_text(json.dumps(result["timings"]))
                if peer.name == "eotiler":  # what the caches did in the step
                    stats = httpx.get(server.url + "/cache/stats", timeout=30).text
                    (Path(trace) / f"{peer.name}-{step.key}-cache.json").write_text(stats)
            result.pop("timings")
            if peer.name == "eotiler":
                result["block_decodes"] = block_decodes(server) - decoded
            results[step.key] = result
            advance()
    finally:
        server.stop()
    return results


def map_session(
    size: int, workers: int, out: Path, advance: Callable[[], None] = lambda: None, only: str | None = None
) -> dict:
    """Build the data, start S3 and the proxy, run the session on both servers; one report row."""
    from tests.support.s3_server import S3Server

    eodata = build_safe(out / "data", size)
    work = Path(tempfile.mkdtemp(prefix="eotiler-map-session-"))
    item = write_item(size, work / "items")
    steps = session(size)
    logs = out / "map-session-logs"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    s3 = S3Server(eodata)
    proxy = QuotaProxy(s3.endpoint, LIMITS)
    servers: dict[str, dict[str, dict]] = {}
    try:
        for peer in peers(proxy, work, item, workers, logs):
            if only is None or peer.name == only:
                servers[peer.name] = run_peer(peer, steps, proxy, advance)
    finally:
        proxy.stop()
        s3.stop()
        shutil.rmtree(work, ignore_errors=True)
    rows = []
    for step in steps:
        ours, peer = servers.get("eotiler", {}).get(step.key), servers.get("titiler", {}).get(step.key)
        rows.append(
            {
                "step": step.key,
                "title": step.title,
                "servers": {name: r for name, r in (("eotiler", ours), ("titiler", peer)) if r is not None},
                "ratio": round(ours["seconds"] / peer["seconds"], 3) if ours and peer and peer["seconds"] else None,
                "requests_ratio": (
                    round(ours["requests"] / peer["requests"], 3) if ours and peer and peer["requests"] else None
                ),
            }
        )
    return {
        "scenario": "Map session over a quota-emulating S3 proxy",
        "map_session": {
            "size": size,
            "workers": workers,
            "clients": CLIENTS,
            "view": list(VIEW),
            "limits": LIMITS.__dict__,
            "logs": str(logs),
            "steps": rows,
        },
    }


def scenario(plan, out: Path, progress) -> dict:  # noqa: ANN001 - bench.Plan and rich Progress
    """The ``bench.py`` entry: full size unless the plan is the quick one."""
    size = 4096 if plan.size < 4096 else 10980
    task = progress.add_task("map session", total=2 * len(session(size)))
    return map_session(size, plan.workers, out, lambda: progress.advance(task))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4096 px bands, one worker")
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--only", choices=["eotiler", "titiler"], help="run one server (no ratios): while iterating")
    args = parser.parse_args()
    size = args.size or (4096 if args.quick else 10980)
    workers = args.workers or (1 if args.quick else 2)
    row = map_session(size, workers, args.out, lambda: print(".", end="", flush=True), args.only)
    print()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "map_session.json").write_text(json.dumps(row, indent=2))
    from bench_report import map_session_lines  # noqa: PLC0415

    print("\n".join(map_session_lines([row])))


if __name__ == "__main__":
    main()
