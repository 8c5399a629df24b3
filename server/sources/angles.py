"""Sun and viewing angles of a Sentinel-2 granule, interpolated onto a request grid.

Sentinel Hub offers ``sunZenithAngles``, ``sunAzimuthAngles``, ``viewZenithMean`` and
``viewAzimuthMean`` as inputs (degrees); the biophysical scripts (FAPAR, leaf chlorophyll) need
them. They are not rasters: the granule metadata (``MTD_TL.xml``) holds them as 23 x 23 grids
with a 5 km step in the granule's UTM CRS, the first node on the tile's upper-left corner.
Viewing angles come per band and detector, each detector's grid NaN outside its footprint; the
"mean" inputs average every band and detector present at a node.

Why the metadata is fetched through GDAL (``gdal_native.read_file``): on CDSE it sits next to
the JPEG2000 files in ``s3://eodata``, so it must be read with the same endpoint, keys and
retries as the bands. It is fetched and parsed once per granule and kept in a bounded cache.

Interpolation is bilinear between the four nodes around each request pixel centre (the node
values are point samples). Azimuths are unwrapped around their circular mean before averaging
and interpolating, so a grid crossing north (359 -> 1 degrees) does not average to 180.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import rasterio
from lxml import etree
from rasterio.crs import CRS
from rasterio.warp import transform

from server.config.models import CollectionConfig
from server.models import Grid, Scene
from server.sources.gdal_env import GdalEnvironment
from server.sources.gdal_native import forget_remote_file, read_file
from server.sources.paths import gdal_path

log = logging.getLogger(__name__)

SUN_ZENITH = "sunZenithAngles"
SUN_AZIMUTH = "sunAzimuthAngles"
VIEW_ZENITH = "viewZenithMean"
VIEW_AZIMUTH = "viewAzimuthMean"
ANGLE_BANDS = frozenset({SUN_ZENITH, SUN_AZIMUTH, VIEW_ZENITH, VIEW_AZIMUTH})
AZIMUTHS = frozenset({SUN_AZIMUTH, VIEW_AZIMUTH})

MAX_METADATA_BYTES = 16 * 1024 * 1024  # real MTD_TL.xml files are 0.3-0.7 MB
LATTICE_STEP = 16  # pixels between exactly transformed points of a grid in another CRS
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, remove_comments=True)


@dataclass(frozen=True, slots=True)
class AngleGrids:
    """The angle grids of one granule: node (row, col) lies at (ulx + col * step_x, uly - row * step_y)."""

    crs: CRS
    ulx: float
    uly: float
    step_x: float
    step_y: float
    grids: dict[str, np.ndarray]  # float64 (rows, cols) per angle band; NaN where no value


def wrap_degrees(delta: np.ndarray) -> np.ndarray:
    """Angle differences folded into [-180, 180)."""
    return (delta + 180.0) % 360.0 - 180.0


def circular_reference(values: np.ndarray) -> float:
    """The circular mean of the finite ``values`` (degrees): the centre azimuths are unwrapped around."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0
    radians = np.radians(finite)
    return float(np.degrees(np.arctan2(np.sin(radians).mean(), np.cos(radians).mean())))


def unwrap_azimuths(values: np.ndarray) -> np.ndarray:
    """Azimuths made continuous: each within 180 degrees of the circular mean of all of them."""
    reference = circular_reference(values)
    return reference + wrap_degrees(values - reference)


def _values(node: etree._Element) -> np.ndarray:
    rows = [[float(v) for v in (row.text or "").split()] for row in node.iterfind("{*}Values_List/{*}VALUES")]
    if not rows or any(len(row) != len(rows[0]) for row in rows):
        raise ValueError("an angle grid is not rectangular")
    return np.array(rows, dtype=np.float64)


def _steps(node: etree._Element) -> tuple[float, float]:
    return float(node.findtext("{*}COL_STEP") or "nan"), float(node.findtext("{*}ROW_STEP") or "nan")


def _mean(grids: list[np.ndarray], azimuth: bool) -> np.ndarray:
    """Node-wise mean over bands and detectors, ignoring NaN (a detector's grid outside its footprint)."""
    stack = np.stack(grids)
    present = np.isfinite(stack)
    count = present.sum(axis=0)
    if azimuth:
        stack = unwrap_azimuths(stack)
    total = np.where(present, stack, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return mean % 360.0 if azimuth else mean


def parse_tile_metadata(content: bytes) -> AngleGrids | None:
    """Angle grids of a Sentinel-2 ``MTD_TL.xml``; ``None`` when it has no sun angle grid.

    Raises ``ValueError`` for a document that is not tile metadata in the expected shape.
    """
    try:
        root = etree.fromstring(content, _PARSER)
    except etree.XMLSyntaxError as exc:
        raise ValueError(f"granule metadata is not XML ({exc})") from None
    sun = root.find(".//{*}Tile_Angles/{*}Sun_Angles_Grid")
    if sun is None:
        return None
    code = root.findtext(".//{*}Tile_Geocoding/{*}HORIZONTAL_CS_CODE")
    position = root.find(".//{*}Tile_Geocoding/{*}Geoposition")
    if not code or position is None:
        raise ValueError("granule metadata has no tile geocoding")
    zenith, azimuth = sun.find("{*}Zenith"), sun.find("{*}Azimuth")
    if zenith is None or azimuth is None:
        raise ValueError("granule metadata has an incomplete sun angle grid")
    step_x, step_y = _steps(zenith)
    grids = {SUN_ZENITH: _values(zenith), SUN_AZIMUTH: _values(azimuth)}
    view_zenith, view_azimuth = [], []
    for view in root.iterfind(".//{*}Tile_Angles/{*}Viewing_Incidence_Angles_Grids"):
        for name, found in (("Zenith", view_zenith), ("Azimuth", view_azimuth)):
            node = view.find(f"{{*}}{name}")
            if node is not None:
                found.append(_values(node))
    shape = grids[SUN_ZENITH].shape
    if view_zenith and view_azimuth:
        if any(g.shape != shape for g in (*view_zenith, *view_azimuth)):
            raise ValueError("granule metadata has viewing angle grids of another shape")
        grids[VIEW_ZENITH] = _mean(view_zenith, azimuth=False)
        grids[VIEW_AZIMUTH] = _mean(view_azimuth, azimuth=True)
    if grids[SUN_AZIMUTH].shape != shape or not (step_x > 0 and step_y > 0):
        raise ValueError("granule metadata has inconsistent sun angle grids")
    return AngleGrids(
        CRS.from_user_input(code),
        float(position.findtext("{*}ULX") or "nan"),
        float(position.findtext("{*}ULY") or "nan"),
        step_x,
        step_y,
        grids,
    )


def granule_metadata_href(scene: Scene, asset_key: str) -> str | None:
    """Where a scene's ``MTD_TL.xml`` is: its ``asset_key`` asset (CDSE items name it
    ``granule_metadata``), else the SAFE layout's place for it, next to the granule's
    ``IMG_DATA`` folder that the band hrefs name."""
    href = scene.assets.get(asset_key)
    if href:
        return href
    for band_href in scene.assets.values():
        head, marker, _ = band_href.partition("/IMG_DATA/")
        if marker and "/GRANULE/" in head:
            return f"{head}/MTD_TL.xml"
    return None


@dataclass(frozen=True, slots=True)
class NodePositions:
    """The four nodes around each pixel centre of a grid (flat indices) and their bilinear weights.

    Computed once per grid: every angle grid of a granule has the same nodes.
    """

    corners: tuple[np.ndarray, ...]  # 4 x intp (h, w): index into the flattened node grid
    weights: tuple[np.ndarray, ...]  # 4 x float64 (h, w), summing to 1
    inside: np.ndarray  # bool (h, w): the pixel centre lies within the node grid

    @classmethod
    def at(cls, rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> NodePositions:
        """From fractional node coordinates of the pixel centres, for node grids of ``shape``."""
        nrows, ncols = shape
        inside = (cols >= 0) & (cols <= ncols - 1) & (rows >= 0) & (rows <= nrows - 1)
        c0 = np.clip(np.floor(cols), 0, max(ncols - 2, 0)).astype(np.intp)
        r0 = np.clip(np.floor(rows), 0, max(nrows - 2, 0)).astype(np.intp)
        tc, tr = np.clip(cols - c0, 0.0, 1.0), np.clip(rows - r0, 0.0, 1.0)
        c1, r1 = np.minimum(c0 + 1, ncols - 1), np.minimum(r0 + 1, nrows - 1)
        corners = (r0 * ncols + c0, r0 * ncols + c1, r1 * ncols + c0, r1 * ncols + c1)
        weights = ((1 - tr) * (1 - tc), (1 - tr) * tc, tr * (1 - tc), tr * tc)
        return cls(corners, weights, inside)


def _lattice(n: int) -> np.ndarray:
    """Pixel indices transformed exactly: every ``LATTICE_STEP``-th and the last one."""
    return np.unique(np.r_[np.arange(0, n, LATTICE_STEP), n - 1])


def _lerp_axis(values: np.ndarray, lattice: np.ndarray, n: int, axis: int) -> np.ndarray:
    """``values`` known at ``lattice`` indices along ``axis``, linearly filled in to indices 0..n-1."""
    if len(lattice) < 2:
        return values
    full = np.arange(n)
    k = np.clip(np.searchsorted(lattice, full, side="right") - 1, 0, len(lattice) - 2)
    t = (full - lattice[k]) / (lattice[k + 1] - lattice[k])
    shape = [1, 1]
    shape[axis] = n
    t = t.reshape(shape)
    return np.take(values, k, axis=axis) * (1 - t) + np.take(values, k + 1, axis=axis) * t


def node_positions(angles: AngleGrids, grid: Grid) -> NodePositions:
    """The grid's pixel centres in node units of the granule's angle grids.

    In another CRS only a lattice of every ``LATTICE_STEP``-th pixel is transformed exactly and
    the rest filled in linearly: the transformation is smooth and the angles change by about
    0.01 degree per km, so the error is far below float32 resolution, at a fraction of the cost.
    """
    x0, y0, x1, y1 = grid.bbox
    dx, dy = (x1 - x0) / grid.width, (y1 - y0) / grid.height
    if CRS.from_user_input(grid.crs) == angles.crs:
        xs = x0 + (np.arange(grid.width) + 0.5) * dx
        ys = y1 - (np.arange(grid.height) + 0.5) * dy
        gx, gy = np.meshgrid(xs, ys)
    else:
        lc, lr = _lattice(grid.width), _lattice(grid.height)
        lx, ly = np.meshgrid(x0 + (lc + 0.5) * dx, y1 - (lr + 0.5) * dy)
        tx, ty = transform(grid.crs, angles.crs, lx.ravel(), ly.ravel())
        gx = _lerp_axis(_lerp_axis(np.reshape(tx, lx.shape), lc, grid.width, 1), lr, grid.height, 0)
        gy = _lerp_axis(_lerp_axis(np.reshape(ty, lx.shape), lc, grid.width, 1), lr, grid.height, 0)
    shape = next(iter(angles.grids.values())).shape
    return NodePositions.at((angles.uly - gy) / angles.step_y, (gx - angles.ulx) / angles.step_x, shape)


def interpolate(angles: AngleGrids, name: str, grid: Grid, at: NodePositions | None = None) -> np.ndarray:
    """Bilinear interpolation of one angle grid at the pixel centres of ``grid`` (float64).

    A pixel whose four surrounding nodes are partly NaN is the weighted mean of the finite
    ones; NaN where none is finite or where the pixel lies outside the node grid. ``at``: the
    positions from ``node_positions``, when several angles are read on one grid.
    """
    at = at if at is not None else node_positions(angles, grid)
    values = angles.grids[name]
    azimuth = name in AZIMUTHS
    flat = (unwrap_azimuths(values) if azimuth else values).ravel()
    if np.isfinite(flat).all():
        result = sum(flat[corner] * weight for corner, weight in zip(at.corners, at.weights, strict=True))
    else:
        total = np.zeros(at.inside.shape)
        weight_sum = np.zeros(at.inside.shape)
        for corner, weight in zip(at.corners, at.weights, strict=True):
            node = flat[corner]
            finite = np.isfinite(node)
            total += np.where(finite, node * weight, 0.0)
            weight_sum += np.where(finite, weight, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            result = np.where(weight_sum > 0, total / weight_sum, np.nan)
    result = np.where(at.inside, result, np.nan)
    return result % 360.0 if azimuth else result


class AngleCache:
    """Parsed angle grids per granule metadata file (and GDAL identity), least recently used first out.

    ``None`` is cached too: a granule without tile metadata or without angle grids is asked once.
    A lock per file makes concurrent first requests for one granule fetch it once.
    """

    def __init__(self, capacity: int = 256) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[tuple[str, str], AngleGrids | None] = OrderedDict()
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._lock = threading.Lock()
        self.fetches = 0  # metadata files read, for tests and logs

    def clear(self) -> None:
        """Forget every granule (the next request fetches its metadata again)."""
        with self._lock:
            self._entries.clear()

    def get(self, path: str, identity: str = "") -> AngleGrids | None:
        """The grids of the metadata at ``path`` (a GDAL path); read it in the caller's GDAL environment."""
        key = (path, identity)
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
            file_lock = self._locks.setdefault(key, threading.Lock())
        with file_lock:
            with self._lock:
                if key in self._entries:
                    return self._entries[key]
            try:
                content = read_file(path, MAX_METADATA_BYTES)
            except OSError:
                forget_remote_file(path)  # as for bands: else GDAL keeps failing it after S3 recovers
                raise  # a failed read, not cached
            self.fetches += 1
            if content is None:
                log.info("no granule metadata at %s", path.rsplit("/", 3)[-3:])
                grids = None
            else:
                try:
                    grids = parse_tile_metadata(content)
                except ValueError as exc:
                    raise OSError(f"unusable granule metadata: {exc}") from None
            with self._lock:
                self._entries[key] = grids
                self._locks.pop(key, None)
                while len(self._entries) > self.capacity:
                    self._entries.popitem(last=False)
            return grids


DEFAULT_CACHE = AngleCache()


def read_angles(names: Iterable[str], angles: AngleGrids, grid: Grid) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Angle bands on ``grid`` (float32 degrees, 0 where undefined) and where all of them are defined."""
    bands: dict[str, np.ndarray] = {}
    valid = np.ones((grid.height, grid.width), dtype=bool)
    at = node_positions(angles, grid)
    for name in names:
        values = interpolate(angles, name, grid, at)
        finite = np.isfinite(values)
        valid &= finite
        bands[name] = np.where(finite, values, 0.0).astype(np.float32)
    return bands, valid


def scene_angles(
    scene: Scene,
    collection: CollectionConfig,
    names: list[str],
    gdal: GdalEnvironment | None,
    cache: AngleCache = DEFAULT_CACHE,
) -> AngleGrids | None:
    """The angle grids of ``scene`` (fetched once per granule), ``None`` when it has no tile
    metadata with angles. The metadata's asset key is the one the angle bands are configured with."""
    href = granule_metadata_href(scene, collection.bands[names[0]].asset)
    if href is None:
        return None
    path = gdal_path(href, collection.href_prefix, collection.data_root)
    with gdal.env(path) if gdal is not None else rasterio.Env():
        return cache.get(path, gdal.identity if gdal is not None else "")
