"""PNG, JPEG and WebP encoders measured on images the server rendered, against MapServer's PNG.

Why: encoding is a large share of a 1024 px GetMap (issue 18), and the encoder and its settings
are the one part of it that can be chosen freely, as long as PNG pixels stay identical and JPEG /
WebP keep their quality. ``server/render/encode.py`` uses what this measures as fastest within
the size rule (PNG no larger than 1.2 x MapServer's PNG of the same request).

The images: eotiler (``eotiler serve`` on ``benchmarks/bench.py``'s COGs, derived from the
bundled T29UNU sample) renders a 1024 px true colour GetMap, a 1024 px NDVI GetMap and a 256 px
true colour XYZ tile as PNG; the PNG is decoded back (lossless) into the masked array the encoder
receives. MapServer (``benchmarks/peer_servers.py``, AGG/PNG as configured in ``bench.py``'s
mapfile) answers the same true colour requests; its PNG size is the size reference. MapServer
cannot compute NDVI, so that image has no reference.

Per image and candidate: milliseconds per encode (median of repeats in one thread, with the
min-max spread), bytes, bytes / MapServer's, whether the pixels decode back identical (PNG) or
how far they are from the source (JPEG/WebP: PSNR, and the largest difference from the current
encoder's pixels), and the share of the encode during which another Python thread could run
(the GIL released). The ``Server-Timing`` split (read / evalscript / encode) of the 1024 px
GetMap on the running server is reported with it.

Run: ``python benchmarks/encoders.py [--quick]`` (JSON in ``benchmarks/results/encoders.json``);
``benchmarks/bench.py`` runs it as one of its scenarios.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from PIL import Image
from rich.progress import Progress

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench import FULL, QUICK, RESULTS, TMS, LocalUrls, Plan, build_local  # noqa: E402
from peer_servers import start_eotiler, start_mapserver  # noqa: E402

from server.models import Grid, ImageFormat  # noqa: E402
from server.render.encode import encode  # noqa: E402

Encoder = Callable[[np.ma.MaskedArray], bytes]


@dataclass
class Sample:
    """One rendered image: the masked array the encoder receives, and MapServer's PNG of the request."""

    name: str
    data: np.ma.MaskedArray
    grid: Grid
    mapserver_png: bytes | None
    server_timing: dict[str, float]

    def mapserver_pixels(self) -> np.ma.MaskedArray | None:
        """MapServer's image as the encoder's input (alpha 0: masked), to compare encoders on the same pixels."""
        return None if self.mapserver_png is None else _decode_png(self.mapserver_png)


@dataclass(frozen=True)
class Candidate:
    """An encoder with its settings; ``quick`` ones also run in the CI smoke run."""

    fmt: str
    library: str
    settings: str
    encode: Encoder
    quick: bool = False


# ---- the rendered images ------------------------------------------------------------------------


def _decode_png(content: bytes) -> np.ma.MaskedArray:
    """A PNG back into (bands, h, w) with the alpha band as the mask (True: transparent)."""
    pixels = np.asarray(Image.open(io.BytesIO(content)))
    pixels = pixels[..., None] if pixels.ndim == 2 else pixels
    bands = np.moveaxis(pixels, -1, 0)
    if bands.shape[0] in (2, 4):
        transparent = bands[-1] == 0
        return np.ma.MaskedArray(bands[:-1].copy(), mask=np.broadcast_to(transparent, bands[:-1].shape))
    return np.ma.MaskedArray(bands.copy(), mask=False)


def _timings(header: str) -> dict[str, float]:
    out = {}
    for part in header.split(","):
        name, _, duration = part.strip().partition(";dur=")
        if duration:
            out[name] = float(duration)
    return out


def _median_timings(client: httpx.Client, urls: list[str]) -> tuple[bytes, dict[str, float]]:
    """The first URL's body and the median Server-Timing stages over all (distinct, uncached) URLs."""
    stages: dict[str, list[float]] = {}
    first = b""
    for url in urls:
        response = client.get(url)
        response.raise_for_status()
        first = first or response.content
        for name, value in _timings(response.headers.get("server-timing", "")).items():
            stages.setdefault(name, []).append(value)
    return first, {name: round(statistics.median(values), 1) for name, values in stages.items()}


def _central_tiles(bounds: tuple[float, float, float, float], zoom: int) -> list[tuple[int, int, int]]:
    """The tile at the centre of ``bounds`` (EPSG:32629) and its 8 neighbours: all covered by data."""
    from rasterio.warp import transform

    lon, lat = transform("EPSG:32629", "EPSG:4326", [(bounds[0] + bounds[2]) / 2], [(bounds[1] + bounds[3]) / 2])
    centre = TMS.tile(lon[0], lat[0], zoom)
    around = [(0, 0)] + [(dx, dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1) if (dx, dy) != (0, 0)]
    return [(zoom, centre.x + dx, centre.y + dy) for dx, dy in around]


def render_samples(local: dict, plan: Plan, env: dict[str, str] | None = None) -> list[Sample]:
    """Render the three images on eotiler (``env`` for its process) and the true colour ones on MapServer.

    Every image is requested ``3 x plan.repeats`` times on distinct extents (the tile cache is off),
    for the median Server-Timing; the first one is the image the encoders get.
    """
    urls = LocalUrls(local, plan)
    count = max(3, plan.repeats * 3)
    tiles = _central_tiles(local["bounds"], 13)
    z, x, y = tiles[0]
    tile_bbox = ",".join(f"{v!r}" for v in TMS.xy_bounds(x, y, z))
    wms_box = urls.boxes("EPSG:3857", 0)[0]
    jobs = [
        (
            "GetMap 1024 px true colour",
            urls.wms("BENCH_TRUE_COLOR", "EPSG:3857", "/ogc/wms")(0)[:count],
            urls.wms("tc", "EPSG:3857", "/mapserv")(0)[0],
            Grid(bbox=wms_box, crs="EPSG:3857", width=1024, height=1024),
        ),
        (
            "GetMap 1024 px NDVI",
            urls.wms("BENCH_NDVI", "EPSG:3857", "/ogc/wms")(0)[:count],
            None,
            Grid(bbox=wms_box, crs="EPSG:3857", width=1024, height=1024),
        ),
        (
            "XYZ 256 px true colour tile",
            [f"/layers/BENCH_TRUE_COLOR/tiles/WebMercatorQuad/{z}/{x}/{y}.png" for z, x, y in tiles][:count],
            "/mapserv?SERVICE=WMS&VERSION=1.3.0&REQUEST=GetMap&LAYERS=tc&STYLES=&CRS=EPSG:3857"
            f"&BBOX={tile_bbox}&WIDTH=256&HEIGHT=256&FORMAT=image/png&TRANSPARENT=TRUE",
            Grid(bbox=tuple(TMS.xy_bounds(x, y, z)), crs="EPSG:3857", width=256, height=256),
        ),
    ]
    rendered = []
    eotiler = start_eotiler(local["config"], 1, env)
    try:
        with httpx.Client(base_url=eotiler.url, timeout=300) as client:
            client.get(urls.wms("BENCH_TRUE_COLOR", "EPSG:3857", "/ogc/wms")(-1)[0]).raise_for_status()  # warm up
            for name, url_list, _, grid in jobs:
                content, timing = _median_timings(client, url_list)
                rendered.append((name, _decode_png(content), grid, timing))
    finally:
        eotiler.stop()
    references: dict[str, bytes | None] = {}
    mapserver = start_mapserver(local["mapfile"], 1)
    try:
        with httpx.Client(base_url=mapserver.url, timeout=300) as client:
            for name, _, url, _ in jobs:
                response = client.get(url) if url else None
                if response is not None and not response.headers["content-type"].startswith("image/png"):
                    raise RuntimeError(f"mapserver {url}: {response.status_code} {response.text[:300]}")
                references[name] = None if response is None else response.content
    finally:
        mapserver.stop()
    return [Sample(name, data, grid, references[name], timing) for name, data, grid, timing in rendered]


# ---- candidates -------------------------------------------------------------------------------------


def _interleaved(data: np.ma.MaskedArray, alpha: bool) -> np.ndarray:
    """(h, w, bands [+ alpha]) uint8: alpha 255 where any band has data; without alpha, black there."""
    bands = np.asarray(data.data)
    if alpha:
        valid = ~np.logical_and.reduce(np.ma.getmaskarray(data), axis=0)
        bands = np.concatenate([bands, (valid * np.uint8(255))[None]])
    else:
        bands = np.ma.filled(data, 0)
    out = np.moveaxis(bands, 0, -1)
    return np.ascontiguousarray(out[..., 0] if out.shape[-1] == 1 else out)


def _pillow(fmt: str, alpha: bool, **options: object) -> Encoder:
    def run(data: np.ma.MaskedArray) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(_interleaved(data, alpha)).save(buffer, format=fmt, **options)
        return buffer.getvalue()

    return run


def _rio_tiler(fmt: str, add_mask: bool, **options: object) -> Encoder:
    """GDAL's drivers through rio-tiler's ``ImageData.render``: eotiler's encoder before issue 18."""
    from rio_tiler.models import ImageData

    return lambda data: ImageData(data).render(add_mask=add_mask, img_format=fmt, **options)


def _shipped(fmt: ImageFormat, level: int = 6) -> Encoder:
    grid = Grid(bbox=(0.0, 0.0, 1.0, 1.0), crs="EPSG:3857", width=1, height=1)  # unused outside GeoTIFF
    return lambda data: encode(data, grid, fmt, level)


def candidates() -> list[Candidate]:
    """Every encoder and setting measured; optional libraries that are not installed are left out.

    ``pip install imagecodecs simplejpeg`` adds libpng/libspng with chosen filters, libjpeg-turbo
    without Huffman optimisation and another libwebp binding to the table.
    """
    gdal = "GDAL (rio-tiler render)"
    found = [
        Candidate("PNG", gdal, "ZLEVEL=6 (before)", _rio_tiler("PNG", True, ZLEVEL=6), quick=True),
        Candidate("PNG", gdal, "ZLEVEL=1", _rio_tiler("PNG", True, ZLEVEL=1)),
        Candidate("PNG", "Pillow (zlib-ng)", "compress_level=1", _pillow("PNG", True, compress_level=1), quick=True),
        Candidate("PNG", "Pillow (zlib-ng)", "compress_level=3", _pillow("PNG", True, compress_level=3)),
        Candidate("PNG", "Pillow (zlib-ng)", "compress_level=6", _pillow("PNG", True, compress_level=6)),
        Candidate("PNG", "Pillow (zlib-ng)", "optimize=True", _pillow("PNG", True, optimize=True)),
        Candidate("PNG", "eotiler: numpy Up filter + zlib-ng", "level=1", _shipped(ImageFormat.PNG, 1)),
        Candidate("PNG", "eotiler: numpy Up filter + zlib-ng", "level=2", _shipped(ImageFormat.PNG, 2)),
        Candidate("PNG", "eotiler: numpy Up filter + zlib-ng", "level=3 (shipped)", _shipped(ImageFormat.PNG, 3), True),
        Candidate("PNG", "eotiler: numpy Up filter + zlib-ng", "level=4", _shipped(ImageFormat.PNG, 4)),
        Candidate("PNG", "eotiler: numpy Up filter + zlib-ng", "level=6", _shipped(ImageFormat.PNG, 6)),
        Candidate("JPEG", gdal, "QUALITY=90 (before)", _rio_tiler("JPEG", False, QUALITY=90), quick=True),
        Candidate("JPEG", "Pillow (libjpeg-turbo)", "quality=90", _pillow("JPEG", False, quality=90)),
        Candidate("JPEG", "eotiler: Pillow", "quality=90, optimize (shipped)", _shipped(ImageFormat.JPEG), True),
        Candidate("WEBP", gdal, "QUALITY=90 (before)", _rio_tiler("WEBP", True, QUALITY=90), quick=True),
        Candidate("WEBP", "eotiler: Pillow", "quality=90 (shipped)", _shipped(ImageFormat.WEBP), True),
        Candidate("WEBP", "Pillow (libwebp)", "quality=90, method=2", _pillow("WEBP", True, quality=90, method=2)),
    ]
    try:
        import imagecodecs
    except ImportError:
        imagecodecs = None
    if imagecodecs is not None:
        for level, png_filter, label in (
            (6, None, "level=6, all filters"),
            (1, None, "level=1, all filters"),
            (1, 32, "level=1, filter=UP"),
            (1, 128, "level=1, filter=PAETH"),
            (4, 32, "level=4, filter=UP"),
        ):
            found.append(
                Candidate(
                    "PNG",
                    "imagecodecs (libpng + zlib)",
                    label,
                    lambda d, lv=level, f=png_filter: imagecodecs.png_encode(_interleaved(d, True), level=lv, filter=f),
                )
            )
        found.append(
            Candidate(
                "PNG",
                "imagecodecs (libspng)",
                "level=1",
                lambda d: imagecodecs.spng_encode(_interleaved(d, True), level=1),
            )
        )
        found.append(
            Candidate(
                "JPEG",
                "imagecodecs (libjpeg-turbo)",
                "level=90, 4:2:0, optimize",
                lambda d: imagecodecs.jpeg8_encode(_interleaved(d, False), level=90, subsampling=(2, 2), optimize=True),
            )
        )
        found.append(
            Candidate(
                "WEBP",
                "imagecodecs (libwebp)",
                "level=90",
                lambda d: imagecodecs.webp_encode(_interleaved(d, True), level=90, lossless=False),
            )
        )
    try:
        import simplejpeg
    except ImportError:
        simplejpeg = None
    if simplejpeg is not None:
        found.append(
            Candidate(
                "JPEG",
                "simplejpeg (libjpeg-turbo)",
                "quality=90, 4:2:0",
                lambda d: simplejpeg.encode_jpeg(_interleaved(d, False), quality=90, colorsubsampling="420"),
            )
        )
    order = {"PNG": 0, "JPEG": 1, "WEBP": 2}
    return sorted(found, key=lambda c: order[c.fmt])


# ---- measuring ------------------------------------------------------------------------------------


def time_encoder(run: Encoder, data: np.ma.MaskedArray, repeats: int) -> tuple[bytes, list[float]]:
    """The output and the CPU milliseconds of the encoding thread per encode, after one warm-up.

    Thread CPU time, not wall time: the cores are shared, and waiting for one is not the
    encoder's cost. Every encoder measured here runs on the calling thread only.
    """
    content = run(data)
    times = []
    for _ in range(repeats):
        start = time.thread_time()
        run(data)
        times.append((time.thread_time() - start) * 1000)
    return content, times


def gil_free_share(run: Encoder, data: np.ma.MaskedArray, seconds: float) -> float:
    """How much a pure-Python thread progresses while ``run`` encodes, relative to an idle main thread.

    Near 1: the encoder releases the GIL for (almost) all its work; near 0: it holds it. A
    background thread counts in Python; the main thread first sleeps, then encodes, for the same time.
    """
    counter = [0]
    stop = threading.Event()

    def count() -> None:
        while not stop.is_set():
            counter[0] += 1

    worker = threading.Thread(target=count, daemon=True)
    worker.start()
    try:
        time.sleep(0.05)
        start_count, start = counter[0], time.perf_counter()
        time.sleep(seconds)
        idle_rate = (counter[0] - start_count) / (time.perf_counter() - start)
        start_count, start = counter[0], time.perf_counter()
        while time.perf_counter() - start < seconds:
            run(data)
        busy_rate = (counter[0] - start_count) / (time.perf_counter() - start)
    finally:
        stop.set()
        worker.join()
    return round(min(1.0, busy_rate / idle_rate), 2) if idle_rate else 0.0


def _decoded(content: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(content))
    image.load()
    return np.asarray(image)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    error = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if error == 0 else round(float(10 * np.log10(255.0**2 / error)), 2)


def measure_sample(sample: Sample, found: list[Candidate], repeats: int, gil_seconds: float) -> list[dict]:
    """Every candidate on one image: CPU time, bytes, ratios to MapServer, pixels against the source."""
    rows = []
    source_rgb = _interleaved(sample.data, False)
    theirs = sample.mapserver_pixels()
    reference: dict[str, np.ndarray] = {}  # the first (GDAL) encoder's decoded pixels per format
    for candidate in found:
        content, times = time_encoder(candidate.encode, sample.data, repeats)
        pixels = _decoded(content)
        row = {
            "image": sample.name,
            "format": candidate.fmt,
            "library": candidate.library,
            "settings": candidate.settings,
            "cpu_ms": round(statistics.median(times), 2),
            "cpu_ms_band": [round(min(times), 2), round(max(times), 2)],
            "bytes": len(content),
            "gil_free": gil_free_share(candidate.encode, sample.data, gil_seconds),
        }
        if candidate.fmt == "PNG":
            reference_bytes = len(sample.mapserver_png) if sample.mapserver_png else None
            row["vs_mapserver"] = round(len(content) / reference_bytes, 3) if reference_bytes else None
            # The same request's pixels differ between servers (resampling, overviews); this ratio
            # compares the encoders alone: the candidate on MapServer's own pixels.
            row["vs_mapserver_same_pixels"] = (
                round(len(candidate.encode(theirs)) / reference_bytes, 3) if theirs is not None else None
            )
            row["lossless"] = bool(np.array_equal(pixels, _interleaved(sample.data, True)))
        else:
            rgb = pixels[..., :3] if pixels.ndim == 3 else pixels
            row["psnr_db"] = _psnr(rgb, source_rgb)
            first = reference.setdefault(candidate.fmt, rgb)
            row["max_diff_vs_gdal"] = int(np.abs(rgb.astype(np.int16) - first.astype(np.int16)).max())
        rows.append(row)
    return rows


def encoder_scenario(local: dict, plan: Plan, progress: Progress | None = None) -> dict:
    """The encoder table for ``bench.py``: every candidate on the three rendered images."""
    samples = render_samples(local, plan)
    quick = plan is QUICK
    found = [c for c in candidates() if c.quick or not quick]
    repeats = 3 if quick else 15
    task = progress.add_task("encoders", total=len(samples)) if progress is not None else None
    rows = []
    for sample in samples:
        rows += measure_sample(sample, found, repeats, 0.1 if quick else 0.4)
        if progress is not None and task is not None:
            progress.advance(task)
    return {
        "scenario": "Encoders on rendered images",
        "encoders": {
            "repeats": repeats,
            "mapserver_png": {s.name: len(s.mapserver_png) if s.mapserver_png else None for s in samples},
            "server_timing": {s.name: s.server_timing for s in samples},
            "rows": rows,
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the CI smoke run: the shipped and previous encoders")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    local = build_local(args.out / "data" / f"peers{QUICK.size}", QUICK.size)
    result = encoder_scenario(local, plan)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "encoders.json").write_text(json.dumps(result, indent=2))
    from bench_report import encoder_lines  # noqa: PLC0415

    print("\n".join(encoder_lines([result])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
