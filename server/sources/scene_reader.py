"""Read the bands a script needs from one scene onto the output grid.

Each band comes from its own file (Sentinel-2 SAFE JP2 at 10/20/60 m, or a COG per band).
For every request the coarsest native resolution that still meets the requested ground
resolution is chosen, so zoomed-out views read 60 m files instead of decoding 10 m ones.
Categorical bands (SCL) are always resampled with nearest neighbour.
"""

from __future__ import annotations

import logging
import math
import re
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Executor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from functools import lru_cache, partial
from xml.sax.saxutils import escape

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.transform import array_bounds
from rasterio.warp import calculate_default_transform
from rio_tiler.errors import NoOverviewWarning, TileOutsideBounds
from rio_tiler.io import Reader

from server.config.models import BandConfig, CollectionConfig
from server.errors import EvalscriptError
from server.models import Grid, Scene
from server.sources import block_cache, block_read, s3_prefetch
from server.sources.angles import ANGLE_BANDS, read_angles, scene_angles
from server.sources.dataset_pool import DatasetPool
from server.sources.gcp_warp import read_gcp_part
from server.sources.gdal_env import GdalEnvironment
from server.sources.gdal_native import forget_remote_file
from server.sources.overview_cache import OverviewCache, Wanted
from server.sources.paths import gdal_path

log = logging.getLogger(__name__)
# A stacked VRT hides its files' overviews when no warp onto the grid could read them
# (``_overviews_in_reach``): rio-tiler's note that a dataset has none is then no news.
warnings.filterwarnings("ignore", category=NoOverviewWarning)

_BASELINE_RE = re.compile(r"_N(\d{2})(\d{2})_")


@dataclass(frozen=True, slots=True)
class BandSource:
    """Which asset of a scene serves a band, and at what native resolution."""

    band: str
    asset_key: str
    resolution: float


class MissingBands(Exception):
    """A scene has no file for these bands at any resolution, so its pixels cannot be computed.

    Why an exception and not ``None``: ``None`` means "nothing on this grid", which is normal;
    a missing band is a defect of the product (or of the configuration) that the pipeline
    reports to the client, logs and counts.
    """

    def __init__(self, scene_id: str, bands: list[str]) -> None:
        super().__init__(f"scene {scene_id} has no file for band(s) {', '.join(bands)}")
        self.bands = bands


@dataclass(slots=True)
class SceneData:
    """Bands of one scene on the output grid (physical units) and where they are valid."""

    scene: Scene
    bands: dict[str, np.ndarray]  # float32 (h, w); 0 where invalid
    valid: np.ndarray  # bool (h, w)
    sources: list[BandSource]


def processing_baseline(scene: Scene) -> float | None:
    """Processing baseline as a number (4.0 for ``04.00``), from metadata or the product id."""
    version = scene.properties.get("processing:version") or scene.properties.get("s2:processing_baseline")
    if isinstance(version, str):
        try:
            return float(version)
        except ValueError:
            pass
    match = _BASELINE_RE.search(scene.id)
    return int(match.group(1)) + int(match.group(2)) / 100 if match else None


def dn_offset(band: BandConfig, scene: Scene) -> float:
    """DN offset to add before scaling: -1000 (BOA_ADD_OFFSET) from baseline 04.00 on."""
    if band.offset_rule == "s2-baseline":
        baseline = processing_baseline(scene)
        return -1000.0 if baseline is not None and baseline >= 4.0 else 0.0
    return 0.0


def choose_source(name: str, band: BandConfig, scene: Scene, ground_res: float) -> BandSource | None:
    """The file that serves ``name`` at ``ground_res`` metres per pixel, ``None`` if the scene has none.

    Among the band's files present in the scene: the coarsest one at or finer than the request
    (no visible loss, least decoding), else the finest one, which is then the nearest. A band is
    thus read from another resolution whenever its usual one is absent (a 10 m request over a
    product that only has 60 m files reads them, resampled), as Sentinel Hub serves every band at
    any resolution.
    """
    available = [(res, band.asset.format(res=int(res) if float(res).is_integer() else res)) for res in band.resolutions]
    available = [(res, key) for res, key in available if key in scene.assets]
    if not available:
        return None
    # 5 % slack: a 60 m file serves a request of 57.2 m/pixel without visible loss, and grid
    # scale factors (UTM's 0.9996, geodesic vs projected metres) must not force the 20 m file.
    meeting = [item for item in available if item[0] <= ground_res * 1.05]
    res, key = max(meeting) if meeting else min(available)
    return BandSource(name, key, res)


def _read_one(
    path: str,
    band: BandConfig,
    grid: Grid,
    resampling: str,
    gcps: bool,
    pool: DatasetPool | None = None,
    environment: str = "",
) -> np.ma.MaskedArray | None:
    method = "nearest" if band.categorical else resampling
    if gcps:
        return read_gcp_part(path, grid, method, band.nodata)
    options = {"nodata": band.nodata, "resampling_method": method, "reproject_method": method}
    blocks = block_cache.current() if block_read.applies(path) else None
    with pool.lend(path, environment) if pool is not None else rasterio.open(path) as dataset:
        if blocks is not None:  # full-resolution JPEG2000: each block decoded once (block_read.py)
            array = block_read.read_from_blocks(dataset, path, grid, method, band.nodata, blocks)
            if array is not None:
                return array
        s3_prefetch.grid(dataset, path, grid)  # over S3, the JPEG2000 tile-parts of the read at once
        with Reader(path, dataset=dataset, options=options) as src:  # type: ignore[arg-type]
            image = src.part(grid.bbox, dst_crs=grid.crs, bounds_crs=grid.crs, width=grid.width, height=grid.height)
    return image.array[0]


# curl errors of a connection that broke without an HTTP answer. GDAL retries 429/5xx answers
# itself (GDAL_HTTP_MAX_RETRY) but not these, so up to two more attempts are made here.
_DROPPED = ("Empty reply from server", "Connection reset", "Recv failure", "Send failure", "Connection died")
DROP_RETRIES = 2
STACK_MAX_PIXELS = 1024 * 1024  # larger grids read their bands in parallel instead (see _read_stack)
STACK_UNWARPED_MAX_PIXELS = 512 * 512  # the same, for grids in the files' own CRS
DROP_RETRY_DELAY = 0.2  # seconds, doubled per attempt


def _dropped_connection(exc: Exception) -> bool:
    text = str(exc)
    return "CURL error" in text and any(marker in text for marker in _DROPPED)


def to_units(raw: np.ma.MaskedArray, band: BandConfig, scene: Scene, units: str) -> np.ndarray:
    """Stored DN -> the unit a script asked for; 0 where invalid.

    - REFLECTANCE: (DN + baseline offset) x scale + offset, negatives clamped to 0 as Sentinel
      Hub's ``harmonizeValues`` does; DN: that reflectance / scale (Sentinel Hub's harmonised DN).
    - LINEAR_POWER (bands with ``power_scale``, Sentinel-1): DN^2 x power_scale.
    - DEFAULT: each band's Sentinel Hub default (LINEAR_POWER where configured, else REFLECTANCE).
    Categorical bands always keep their stored value.

    One float32 array is made and every step works in it (a 1024 px band is 4 MB per pass):
    the operations and their float32 rounding are those of the formula, step by step.
    """
    mask = np.ma.getmaskarray(raw)
    if band.categorical:
        return raw.filled(0).astype(np.float32)
    if units == "LINEAR_POWER" or (units == "DEFAULT" and band.power_scale is not None):
        if band.power_scale is None:
            raise EvalscriptError("LINEAR_POWER is only defined for radar bands", parameter="units")
        power = np.ma.getdata(raw).astype(np.float64)
        np.square(power, out=power)
        power *= band.power_scale
        value = power.astype(np.float32)
    else:
        value = np.ma.getdata(raw).astype(np.float32)
        offset = dn_offset(band, scene)
        if offset:
            value += np.float32(offset)
        value *= np.float32(band.scale)
        if band.offset:
            value += np.float32(band.offset)
        np.maximum(value, np.float32(0.0), out=value)
        if units == "DN" and band.scale not in (0, 1):
            value /= np.float32(band.scale)
    value[mask] = 0.0
    return value


def _read_with_retries(
    path: str, band: BandConfig, grid: Grid, resampling: str, gcps: bool, pool: DatasetPool | None, identity: str
) -> np.ma.MaskedArray | None:
    """One band; a dropped connection is retried with backoff, a failed file forgotten by GDAL."""
    for attempt in range(DROP_RETRIES + 1):
        try:
            return _read_one(path, band, grid, resampling, gcps, pool, identity)
        except TileOutsideBounds:
            return None
        except Exception as exc:
            forget_remote_file(path)  # else GDAL keeps failing this file after S3 recovers
            if attempt == DROP_RETRIES or not _dropped_connection(exc):
                raise
            log.info("retrying %s after a dropped connection", path.rsplit("/", 1)[-1])
            time.sleep(DROP_RETRY_DELAY * 2**attempt)
    return None  # not reached: the loop returns or raises


def _stack_units(plan: list[tuple[str, BandConfig, BandSource]]) -> list[list[tuple[str, BandConfig, BandSource]]]:
    """Bands that can be warped together: same resolution, resampling, nodata and dtype."""
    units: dict[tuple[object, ...], list[tuple[str, BandConfig, BandSource]]] = {}
    for item in plan:
        _, band, source = item
        units.setdefault((source.resolution, band.categorical, band.nodata, band.dtype), []).append(item)
    return list(units.values())


# A warp shrinking the files by ``shrink`` may read their overviews of factor below ``shrink`` x
# this: GDAL 3.10 takes an overview up to about 1.27 times coarser than a read asks (measured,
# nearest neighbour, on the finer axis); 1.5 leaves a margin.
OVERVIEW_MARGIN = 1.5


@lru_cache(maxsize=256)
def _native_resolution(src: CRS, dst: CRS, width: int, height: int, transform: Affine) -> tuple[float, float]:
    """The files' pixel size in ``dst`` as rio-tiler's warp sets it (``get_vrt_transform``: the
    default transform of the whole file); the same for every tile of a file, so computed once."""
    dst_transform, _, _ = calculate_default_transform(src, dst, width, height, *array_bounds(height, width, transform))
    return abs(dst_transform.a), abs(dst_transform.e)


def _overviews_in_reach(
    grid: Grid, width: int, height: int, transform: Affine, crs: CRS, factors: tuple[int, ...]
) -> int:
    """How many of the files' overviews (of ``factors``, finest first) rio-tiler's warp onto
    ``grid`` could read: those less than ``OVERVIEW_MARGIN`` times coarser than the warped VRT
    (at the files' resolution) is shrunk onto the grid. 0: it reads the full resolution.

    Why it matters: for a read that shrinks the warped VRT at all, GDAL builds a warped dataset
    per overview level of the source to choose among them, about 7 ms of a 256 px tile of four
    levels, even when it then reads none (a z13 tile of 10 m bands). With none in reach the
    stacked VRT opens its sources without overviews, so GDAL's choice and the pixels are the same.
    """
    res_x, res_y = _native_resolution(crs, grid.crs, width, height, transform)
    x0, y0, x1, y1 = grid.bbox
    shrink = max((x1 - x0) / res_x / grid.width, (y1 - y0) / res_y / grid.height)
    return sum(factor < shrink * OVERVIEW_MARGIN for factor in factors)


def _read_stack(
    paths: list[str], band: BandConfig, grid: Grid, resampling: str, pool: DatasetPool | None, environment: str
) -> list[np.ma.MaskedArray | None] | None:
    """Local bands on one pixel grid, warped together through an in-memory VRT.

    Why: the warp's coordinate transformation is most of a read's cost, and one warp of a
    stacked VRT computes it once for every band (TiTiler's multi-band files get this for free).
    Remote files are never stacked: a VRT reads its sources one after the other, and over S3
    the per-band reads must overlap. Up to 1024 x 1024 px one stacked warp costs less than
    parallel band reads on two cores, in CPU and in time (three bands of a 1024 px GetMap,
    ``benchmarks/read_stack.py``: EPSG:3857 162 ms CPU / 219 ms against 224 / 287; EPSG:4326
    148 / 287 against 195 / 443); GDAL's warp threads (NUM_THREADS) only added CPU. In the
    files' own CRS nothing is warped (a decimated read), and above 512 x 512 px parallel band
    reads are the faster (107 / 204 against 115 / 253). ``None`` when the files do not share a
    grid, or the grid is larger than these limits.

    The VRT is a dataset of ``pool`` like any file (keyed by its XML): opening it and its
    sources is a quarter of a 256 px tile's read, and a kept handle keeps its sources' decoded
    blocks in GDAL's block cache for the next tile or map of the area (the benchmark's 1024 px
    true colour GetMaps, which overlap: 0.83-0.92 x MapServer's time instead of 1.16-1.32 x).
    Those blocks stay until GDAL evicts them, so ``EOTILER_GDAL_CACHE_MB`` (64) is what they
    cost per process. Its sources are opened unshared (``shared="0"``): GDAL shares a source
    among the datasets one thread opens, and a handle lent to another thread must not read
    through a source another handle is reading. A warp that could read none of the files'
    overviews (``_overviews_in_reach``; a z13 tile of 10 m bands) opens the sources without
    them: the same pixels, without GDAL building a warped dataset per overview level of the
    files for each read.
    """
    if any(path.startswith("/vsi") for path in paths) or grid.width * grid.height > STACK_MAX_PIXELS:
        return None
    grids, levels = [], []
    for path in paths:
        with pool.lend(path, environment) if pool is not None else rasterio.open(path) as dataset:
            grids.append((dataset.width, dataset.height, dataset.transform, dataset.crs, dataset.count))
            levels.append(tuple(dataset.overviews(1)) if dataset.driver == "GTiff" else ())
    if any(g != grids[0] for g in grids[1:]) or grids[0][4] != 1:
        return None
    factors = levels[0] if all(found == levels[0] for found in levels) else ()  # the files' common overviews
    width, height, transform, crs, _ = grids[0]
    if grid.width * grid.height > STACK_UNWARPED_MAX_PIXELS and crs == grid.crs:
        return None
    dtype = {"uint8": "Byte", "uint16": "UInt16", "int16": "Int16", "float32": "Float32"}[band.dtype]
    nodata = "" if band.nodata is None else f"<NoDataValue>{band.nodata:g}</NoDataValue>"
    # A warp that could read none of the files' overviews (geographic files aside: rio-tiler
    # adjusts their bounds first) opens the sources without them. Overviews it could read stay
    # the sources' own: a VRT's <Overview> elements are opened shared by GDAL, so a pooled
    # handle lent to another thread would read through a dataset another thread is reading.
    warped = crs != grid.crs and not crs.is_geographic and bool(factors)
    hidden = warped and _overviews_in_reach(grid, width, height, transform, crs, factors) == 0
    options_xml = '<OpenOptions><OOI key="OVERVIEW_LEVEL">NONE</OOI></OpenOptions>' if hidden else ""
    sources = "".join(
        f'<VRTRasterBand dataType="{dtype}" band="{i}">{nodata}<SimpleSource>'
        f'<SourceFilename relativeToVRT="0" shared="0">{escape(path)}</SourceFilename>{options_xml}'
        f"<SourceBand>1</SourceBand></SimpleSource></VRTRasterBand>"
        for i, path in enumerate(paths, start=1)
    )
    vrt = (
        f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}"><SRS>{escape(crs.to_wkt())}</SRS>'
        f"<GeoTransform>{', '.join(repr(v) for v in transform.to_gdal())}</GeoTransform>{sources}</VRTDataset>"
    )
    method = "nearest" if band.categorical else resampling
    options = {"nodata": band.nodata, "resampling_method": method, "reproject_method": method}
    try:
        with (
            pool.lend(vrt, environment) if pool is not None else rasterio.open(vrt) as dataset,
            Reader(vrt, dataset=dataset, options=options) as src,  # type: ignore[arg-type]
        ):
            image = src.part(grid.bbox, dst_crs=grid.crs, bounds_crs=grid.crs, width=grid.width, height=grid.height)
    except TileOutsideBounds:
        return [None] * len(paths)
    return [image.array[i] for i in range(len(paths))]


Raw = np.ma.MaskedArray | None
BLOCK_STACK_MAX_PIXELS = 1024 * 1024  # larger grids warp their bands' blocks in parallel instead


@dataclass(slots=True)
class _BandReads:
    """How the bands of one scene are read onto one grid (``read_scene``'s read tasks)."""

    scene: Scene
    collection: CollectionConfig
    grid: Grid
    resampling: str
    ground_res: float
    gcps: bool
    gdal: GdalEnvironment | None
    overviews: OverviewCache | None
    pool: DatasetPool | None
    resolved: dict[str, str] = field(default_factory=dict)  # band name -> the file ``files`` chose

    def env(self, path: str) -> AbstractContextManager[object]:
        return self.gdal.env(path) if self.gdal is not None else rasterio.Env()

    def files(self, unit: list[tuple[str, BandConfig, BandSource]]) -> list[str]:
        """The files that serve ``unit``: the band files, or their local levels in ``overviews``.

        Each band is looked up once (``resolved``): ``read_scene`` resolves every band before it
        forms its read units (a remote band served by a local level is stacked like a local
        file), and the reads then find the same files without asking the overview cache, or
        queuing its builds, again. The overview cache may copy a small band here for the
        request (``OverviewCache.copy_now``), in the GDAL environment it is given per band.
        """
        todo = [item for item in unit if item[0] not in self.resolved]
        if todo:
            paths = [self.band_file(source) for _, _, source in todo]
            if self.overviews is not None and not self.gcps:
                scene, collection = self.scene, self.collection
                paths = _through_overviews(paths, todo, scene, collection, self.ground_res, self.gdal, self.overviews)
            self.resolved.update(zip([name for name, _, _ in todo], paths, strict=True))
        return [self.resolved[name] for name, _, _ in unit]

    def band_file(self, source: BandSource) -> str:
        """The GDAL path of ``source``'s file in the scene."""
        return gdal_path(self.scene.assets[source.asset_key], self.collection.href_prefix, self.collection.data_root)

    def load(self, unit: list[tuple[str, BandConfig, BandSource]]) -> list[tuple[str, Raw]]:
        """The bands of ``unit`` from the files that serve them (``files``), stacked when they can
        be, named."""
        identity = self.gdal.identity if self.gdal is not None else ""
        paths = self.files(unit)
        with self.env(self.band_file(unit[0][2])):
            raws: list[Raw] | None = None
            if len(unit) > 1:
                raws = _read_stack(paths, unit[0][1], self.grid, self.resampling, self.pool, identity)
            if raws is None:
                raws = [
                    _read_with_retries(path, band, self.grid, self.resampling, self.gcps, self.pool, identity)
                    for path, (_, band, _) in zip(paths, unit, strict=True)
                ]
        return [(name, raw) for (name, _, _), raw in zip(unit, raws, strict=True)]

    def assemble(
        self, item: tuple[str, BandConfig, BandSource], cache: block_cache.BlockCache
    ) -> tuple[str, block_read.Assembled | None]:
        """The file serving ``item``, and its decoded blocks under the grid when they serve it."""
        path = self.band_file(item[2])
        with self.env(path):
            path = self.files([item])[0]
            if not block_read.applies(path):
                return path, None
            identity = self.gdal.identity if self.gdal is not None else ""
            try:
                with self.pool.lend(path, identity) if self.pool is not None else rasterio.open(path) as dataset:
                    return path, block_read.assemble(dataset, path, self.grid, item[1].nodata, cache)
            except Exception as exc:  # noqa: BLE001 - the band's own read (load) retries or reports it
                forget_remote_file(path)
                log.info("decoded blocks of %s unavailable (%s)", path.rsplit("/", 1)[-1], exc)
                return path, None


def _call(task: Callable[[], list[tuple[str, Raw]]]) -> list[tuple[str, Raw]]:
    return task()


Served = tuple[tuple[str, BandConfig, BandSource], block_read.Assembled]


def _block_groups(served: list[Served]) -> list[list[Served]]:
    """Bands whose decoded blocks one warp serves: a stacking unit and the same blocks' geometry."""
    groups: list[list[Served]] = []
    for unit in _stack_units([item for item, _ in served]):
        parts = [entry for entry in served if entry[0] in unit]
        while parts:
            first = parts[0][1]
            group = [entry for entry in parts if first.warps_with(entry[1])]
            groups.append(group)
            parts = [entry for entry in parts if entry not in group]
    return groups


def _warp_blocks(group: list[Served], grid: Grid, resampling: str) -> list[Callable[[], list[tuple[str, Raw]]]]:
    """The warps of ``group``'s assembled blocks onto ``grid``: one for all, or one per band.

    Why one: most of a warp's cost is its coordinate transformation, and a warp of the bands
    stacked computes it once (``benchmarks/read_stack.py --jp2``, 24 warm z14 tiles of three
    10 m bands: 425-535 ms wall and 439-551 ms CPU stacked, 619-667 and 769-812 band by band on
    the read threads, under load). Stacked costs less CPU at every size measured (256-2048 px,
    25-45 % less); warps apart on two idle cores finished sooner only for 1024 px grids at z13
    resolution (3x3 blocks: 2.9-3.3 s against 3.5-4.3 s for 24), and a busy server has no idle
    core to give them. Above ``BLOCK_STACK_MAX_PIXELS`` (images that large are drawn in strips
    anyway) the bands are warped apart, in parallel on the read threads.
    """
    method = "nearest" if group[0][0][1].categorical else resampling

    def run(entries: list[Served]) -> list[tuple[str, Raw]]:
        arrays = block_read.warp([part for _, part in entries], grid, method)
        return [(item[0], array) for (item, _), array in zip(entries, arrays, strict=True)]

    if len(group) > 1 and grid.width * grid.height <= BLOCK_STACK_MAX_PIXELS:
        return [partial(run, group)]
    return [partial(run, [entry]) for entry in group]


def _through_overviews(
    paths: list[str],
    unit: list[tuple[str, BandConfig, BandSource]],
    scene: Scene,
    collection: CollectionConfig,
    ground_res: float,
    gdal: GdalEnvironment | None,
    overviews: OverviewCache,
) -> list[str]:
    """The local levels that serve ``paths`` (or the paths themselves), queuing what is missing.

    Also queues copies of the remote bands' coarsest files (the views zoomed out of this one).
    Builds run in the background, with ``gdal``'s settings at background priority; a small
    band's copy at its own resolution is made for the request at hand, with the request's
    settings (``OverviewCache.copy_now``).
    """
    background = gdal.background() if gdal is not None else None

    def environment(path: str) -> Callable[[], AbstractContextManager[object]]:
        return partial(background.env, path) if background is not None else rasterio.Env

    def foreground(path: str) -> Callable[[], AbstractContextManager[object]]:
        return partial(gdal.env, path) if gdal is not None else rasterio.Env

    for name, band, source in unit:
        coarsest = choose_source(name, band, scene, math.inf)
        if coarsest is not None and coarsest.resolution > source.resolution:
            path = gdal_path(scene.assets[coarsest.asset_key], collection.href_prefix, collection.data_root)
            if path.startswith("/vsi"):
                overviews.prefetch(path, coarsest.resolution, band.categorical, band.nodata, environment(path))
    found = overviews.local_paths(
        [
            Wanted(path, src.resolution, ground_res, cfg.categorical, cfg.nodata, environment(path), foreground(path))
            for path, (_, cfg, src) in zip(paths, unit, strict=True)
        ]
    )
    return [level or path for path, level in zip(paths, found, strict=True)]


def read_scene(
    scene: Scene,
    collection: CollectionConfig,
    band_names: Iterable[str],
    grid: Grid,
    *,
    resampling: str = "nearest",
    units: str | Mapping[str, str] = "REFLECTANCE",
    gdal: GdalEnvironment | None = None,
    executor: Executor | None = None,
    overviews: OverviewCache | None = None,
    pool: DatasetPool | None = None,
) -> SceneData | None:
    """Read ``band_names`` of ``scene`` on ``grid``.

    Bands are read in parallel on ``executor`` (JPEG2000 decoding releases the GIL). JPEG2000
    bands served by the decoded-block cache have their blocks assembled in parallel, then the
    bands of one pixel grid are warped once (``_warp_blocks``). Zoomed-out JPEG2000 reads go
    through ``overviews`` when given. Returns ``None`` when the scene does not
    touch the grid; raises ``MissingBands`` (before reading anything) when no file of the scene
    holds some of the bands.
    """
    ground_res = grid.ground_resolution()
    plan: list[tuple[str, BandConfig, BandSource]] = []
    missing: list[str] = []
    names = list(band_names)
    for name in names:
        if name in ANGLE_BANDS:
            continue  # not a raster: interpolated from the granule metadata below
        band = collection.bands[name]
        source = choose_source(name, band, scene, ground_res)
        if source is None:
            missing.append(name)
        else:
            plan.append((name, band, source))
    angle_names = [name for name in names if name in ANGLE_BANDS]
    angles = scene_angles(scene, collection, angle_names, gdal) if angle_names else None
    missing += [name for name in angle_names if angles is None or name not in angles.grids]
    if missing:
        raise MissingBands(scene.id, missing)

    gcps = collection.geolocation == "gcps"
    reads = _BandReads(scene, collection, grid, resampling, ground_res, gcps, gdal, overviews, pool)
    cache = None if gcps else block_cache.current()
    tasks: list[Callable[[], list[tuple[str, Raw]]]] = []
    # The file of every band first (a local level of the overview cache where it serves the
    # grid): which files are local decides how the bands are read.
    files = dict(zip([name for name, _, _ in plan], reads.files(plan), strict=True))
    rest = plan
    # Bands served by decoded blocks (JPEG2000 files, block_read.applies): their blocks
    # assembled (decoded where missing) band by band in parallel, then one warp per group of
    # bands on one pixel grid (_warp_blocks). Other files are never handed to the read threads
    # for this: a thread hop per band costs a 256 px tile more than the check.
    blocky = [item for item in plan if cache is not None and block_read.applies(files[item[0]])]
    if cache is not None and blocky:
        assemble = partial(reads.assemble, cache=cache)
        assembled = list(executor.map(assemble, blocky) if executor and len(blocky) > 1 else map(assemble, blocky))
        served = [(item, part) for item, (_, part) in zip(blocky, assembled, strict=True) if part is not None]
        for group in _block_groups(served):
            tasks += _warp_blocks(group, grid, resampling)
        assembled_names = {item[0] for item, (_, part) in zip(blocky, assembled, strict=True) if part is not None}
        rest = [item for item in plan if item[0] not in assembled_names]
    # Remote files are never stacked (see _read_stack): one unit each, so they are read at once.
    # Local files are, a remote collection's too where the overview cache serves them (a
    # zoomed-out view: one warp of the bands' local levels instead of one per band).
    remote = {name for name, _, _ in rest if gcps or files[name].startswith("/vsi")}
    read_units = [[item] for item in rest if item[0] in remote]
    read_units += _stack_units([item for item in rest if item[0] not in remote])
    tasks += [partial(reads.load, unit) for unit in read_units]
    results = list(executor.map(_call, tasks)) if executor and len(tasks) > 1 else [task() for task in tasks]
    by_name = {name: raw for named in results for name, raw in named}
    raws = [by_name[name] for name, _, _ in plan]
    if any(raw is None for raw in raws):
        return None
    valid = np.ones((grid.height, grid.width), dtype=bool)
    bands: dict[str, np.ndarray] = {}
    for (name, band, _), raw in zip(plan, raws, strict=True):
        assert raw is not None  # narrowed above
        valid &= ~np.ma.getmaskarray(raw)
        bands[name] = to_units(raw, band, scene, units if isinstance(units, str) else units[name])
    if angles is not None:
        angle_bands, angle_valid = read_angles(angle_names, angles, grid)
        bands.update(angle_bands)
        valid &= angle_valid  # nothing where the granule's angle grid does not reach
    return SceneData(scene, bands, valid, [source for _, _, source in plan])
