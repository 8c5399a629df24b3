"""Read a JPEG2000 band onto a grid from decoded blocks (``block_cache``), as rio-tiler would.

The path it replaces is rio-tiler's ``Reader.part``: a ``WarpedVRT`` on the grid's CRS at the
file's resolution (or the grid's, when that is finer), read at the grid's size with the same
resampling, ``nodata`` as source and destination nodata and the mask ``value == nodata``. Here
the window of the file that VRT would read (plus a margin for the resampling kernel) is
cut from whole blocks, each decoded once by ``BlockCache``, and warped with
rio-tiler's own ``read`` through the same ``WarpedVRT`` parameters, from an in-memory dataset of
those blocks; the bands of one pixel grid with the same nodata pixels are one dataset and one
warp (``assemble`` each, then ``warp`` them together).

It serves only what GDAL would decode at full resolution: a grid coarser than 1.5x the file's
resolution reads JPEG2000 resolution levels (GDAL picks a 2x overview from ~1.67x on) and stays
on rio-tiler's path, as do grids in the file's own CRS and bands without a nodata value (rio-tiler
masks those with an alpha band instead).
"""

from __future__ import annotations

import ctypes
import math
import os
import platform
import struct
import sys
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache, partial

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.io import DatasetReader, MemoryFile
from rasterio.transform import array_bounds
from rasterio.warp import transform_bounds
from rasterio.windows import Window
from rio_tiler.reader import read
from rio_tiler.utils import get_vrt_transform

from server.models import Grid
from server.sources import gdal_native, s3_prefetch
from server.sources.block_cache import BlockCache, BlockKey

MAX_VRT_RATIO = 1.5  # VRT pixels per grid pixel above which GDAL would read a resolution level
KERNEL_MARGIN = 8  # source pixels around the window: the widest kernel (lanczos, 3 px) with room
# The window cut from the blocks starts and ends on this grid of the file's pixels. The warper's
# source coordinates are rounded differently wherever the source array starts, and where the
# output falls half-way between source pixels that moves bilinear results by 1 (4 of 65,536
# pixels of a real 10 m band with an unaligned start, and with a 64 px grid); on this grid, as
# with whole 1024 px blocks, every pixel test against rio-tiler on the file passes.
WINDOW_GRID = 256
_VSI_STAT_SIZE = 0x4
# struct stat on 64-bit Linux (x86_64 and aarch64 alike): st_size at byte 48, st_mtime at 88.
_STAT_LAYOUT = (48, 88) if sys.platform == "linux" and platform.machine() in ("x86_64", "aarch64") else None
if gdal_native._GDAL is not None and _STAT_LAYOUT is not None:  # noqa: SLF001 - the one loaded GDAL
    gdal_native._GDAL.VSIStatExL.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int]  # noqa: SLF001
    gdal_native._GDAL.VSIStatExL.restype = ctypes.c_int  # noqa: SLF001


def object_version(path: str) -> str | None:
    """Size and modification time of ``path``, or ``None`` when they cannot be known.

    Local files: ``os.stat``. ``/vsi`` paths: GDAL's ``VSIStatExL``, answered from what GDAL's
    /vsicurl layer learnt when the file was opened (``Content-Length``/``Last-Modified``), so
    it costs no request. The ETag would name an S3 object version better, but GDAL keeps it
    to itself (only a new HEAD request returns it); an S3 object rewritten gets a new
    ``Last-Modified`` (1 s resolution) and usually a new size.
    """
    if not path.startswith("/vsi"):
        try:
            stat = os.stat(path)
        except OSError:
            return None
        return f"{stat.st_size}-{stat.st_mtime_ns}"
    library = gdal_native._GDAL  # noqa: SLF001
    if library is None or _STAT_LAYOUT is None:
        return None
    buffer = ctypes.create_string_buffer(256)
    if library.VSIStatExL(path.encode(), buffer, _VSI_STAT_SIZE) != 0:
        return None
    size = struct.unpack_from("<q", buffer, _STAT_LAYOUT[0])[0]
    mtime = struct.unpack_from("<q", buffer, _STAT_LAYOUT[1])[0]
    return f"{size}-{mtime}"


def applies(path: str) -> bool:
    """JPEG2000 only: other formats decode cheaply (or carry their own overviews)."""
    return path.lower().endswith(".jp2")


@dataclass(frozen=True, slots=True)
class Assembled:
    """One band's pixels under a grid (from decoded blocks), with the ``WarpedVRT`` parameters
    that warp them."""

    array: np.ndarray  # the window on the ``WINDOW_GRID``; a read-only strided view when in one block
    transform: Affine  # of ``array``
    crs: CRS  # of the file
    vrt: dict[str, object]  # rio-tiler's WarpedVRT: crs, transform, width, height, dtype
    nodata: float
    window: tuple[slice, slice]  # the part of ``array`` the warp reads (with the kernel's margin)

    def warps_with(self, other: Assembled) -> bool:
        """Whether one warp of both gives each its own pixels: same blocks' geometry, VRT, nodata
        value and nodata pixels.

        Why the nodata pixels: a warp of several bands takes a source pixel as nodata only where
        every band is (GDAL's ``UNIFIED_SRC_NODATA``), and its other mode (each band its own
        mask) still moves the edges of a bilinear read (measured on the real 60 m bands with
        holes in one band). Where the masks are the same, both are each band's own warp. Only
        the window the warp reads is compared.
        """
        return (
            self.array.shape == other.array.shape
            and self.array.dtype == other.array.dtype
            and self.transform == other.transform
            and self.crs == other.crs
            and self.vrt == other.vrt
            and self.nodata == other.nodata
            and self.window == other.window
            and np.array_equal(self.array[self.window] == self.nodata, other.array[other.window] == other.nodata)
        )


def read_from_blocks(
    dataset: DatasetReader,
    path: str,
    grid: Grid,
    method: str,
    nodata: float | None,
    cache: BlockCache,
) -> np.ma.MaskedArray | None:
    """Band 1 of ``dataset`` on ``grid`` through ``cache``; ``None`` when this path does not apply.

    ``None`` hands the read back to rio-tiler (see ``assemble``).
    """
    part = assemble(dataset, path, grid, nodata, cache)
    return None if part is None else warp([part], grid, method)[0]


def assemble(
    dataset: DatasetReader, path: str, grid: Grid, nodata: float | None, cache: BlockCache
) -> Assembled | None:
    """The decoded blocks of band 1 of ``dataset`` under ``grid``; ``None`` when this path does not apply.

    ``None``: the grid is in the file's CRS, the band has no nodata, the grid is coarser than
    the file (see ``MAX_VRT_RATIO``), the grid misses the file, or the object's version is
    unknown. Missing blocks are decoded here (the expensive part, run per band in parallel by
    the caller); ``warp`` then puts one or several bands on the grid.
    """
    nodata = nodata if nodata is not None else dataset.nodata
    if nodata is None or dataset.count != 1:
        return None
    version = object_version(path)
    if version is None:
        return None
    placement = _placement(dataset, path, version, grid)
    if placement is None:
        return None
    vrt_transform, vrt_width, vrt_height, window = placement
    row0, row1, col0, col1 = window
    top, left = row0 // WINDOW_GRID * WINDOW_GRID, col0 // WINDOW_GRID * WINDOW_GRID
    bottom = min(dataset.height, -(-row1 // WINDOW_GRID) * WINDOW_GRID)
    right = min(dataset.width, -(-col1 // WINDOW_GRID) * WINDOW_GRID)
    source = _assemble(dataset, path, version, (top, bottom, left, right), cache)
    read_window = (slice(row0 - top, row1 - top), slice(col0 - left, col1 - left))
    vrt = {
        "crs": grid.crs,
        "transform": vrt_transform,
        "width": vrt_width,
        "height": vrt_height,
        "dtype": dataset.dtypes[0],
    }
    transform = dataset.transform * Affine.translation(left, top)
    return Assembled(source, transform, dataset.crs, vrt, nodata, read_window)


_Placement = tuple[Affine, int, int, tuple[int, int, int, int]]
_PLACEMENTS: OrderedDict[tuple[object, ...], _Placement | None] = OrderedDict()
_PLACEMENTS_KEPT = 1024
_PLACEMENTS_LOCK = threading.Lock()


def _placement(dataset: DatasetReader, path: str, version: str, grid: Grid) -> _Placement | None:
    """rio-tiler's WarpedVRT for ``grid`` over the file (transform, width, height) and the window
    of the file it reads; ``None`` when the block path does not apply (the grid is in the file's
    CRS, coarser than the file, or misses it).

    Remembered per file version and grid: the bands of one pixel grid (three for true colour)
    and the strips and tiles asked again share it, and computing it (rio-tiler's
    ``get_vrt_transform``, bounds transformed with 21 points a side) cost ~4 ms a band.
    """
    key = (path, version, grid.bbox, grid.crs_wkt or grid.crs.to_wkt(), grid.width, grid.height)
    with _PLACEMENTS_LOCK:
        if key in _PLACEMENTS:
            _PLACEMENTS.move_to_end(key)
            return _PLACEMENTS[key]
    found: _Placement | None = None
    if dataset.crs is not None and dataset.crs != grid.crs:
        vrt_transform, vrt_width, vrt_height = get_vrt_transform(
            dataset, grid.bbox, grid.height, grid.width, dst_crs=grid.crs
        )
        if vrt_width <= grid.width * MAX_VRT_RATIO and vrt_height <= grid.height * MAX_VRT_RATIO:
            window = source_window(dataset, grid, vrt_transform, vrt_width, vrt_height)
            found = None if window is None else (vrt_transform, vrt_width, vrt_height, window)
    with _PLACEMENTS_LOCK:
        _PLACEMENTS[key] = found
        while len(_PLACEMENTS) > _PLACEMENTS_KEPT:
            _PLACEMENTS.popitem(last=False)
    return found


def warp(parts: list[Assembled], grid: Grid, method: str) -> list[np.ma.MaskedArray]:
    """``parts`` on ``grid``: one warp for all of them (they must ``warps_with`` each other).

    rio-tiler's own read of its WarpedVRT, over the assembled blocks instead of the file: the
    same warper, kernel and approximation (rasterio's reproject picks source pixels a fraction
    of a pixel away from a warped VRT's at some scales), and the same nodata and mask rules.
    Several bands are one multi-band dataset and one warp, which computes the coordinate
    transformation (most of a warp's cost) once for all.
    """
    first = parts[0]
    if len(parts) == 1:
        source = first.array  # no copy (a view of the cached block when the window lies in one)
    else:
        source = np.empty((len(parts), *first.array.shape), dtype=first.array.dtype)
        for layer, part in zip(source, parts, strict=True):
            layer[...] = part.array
    with _in_memory(source, first.transform, first.crs) as blocks:
        image = read(
            blocks,
            indexes=list(range(1, len(parts) + 1)),
            width=grid.width,
            height=grid.height,
            nodata=first.nodata,
            vrt_options=first.vrt,
            resampling_method=method,
            reproject_method=method,
        )
    return [image.array[i] for i in range(len(parts))]


@contextmanager
def _in_memory(array: np.ndarray, transform: Affine, crs: CRS) -> Iterator[DatasetReader]:
    """``array`` (rows x columns, or bands x rows x columns) as a read-only GDAL dataset, without
    a copy when the CRS has an EPSG code.

    GDAL's MEM driver opens the array's own memory (``DATAPOINTER``, with the array's strides, so
    a window cut from a block is not copied; allowed here only, with ``GDAL_MEM_ENABLE_OPEN``,
    since the string is ours); other CRSs are written to an uncompressed GeoTIFF in /vsimem
    (~2-5 ms for 2048 x 1024 px).
    """
    bands = array.reshape(-1, *array.shape[-2:])  # (bands, rows, columns), a view
    count, lines, pixels = bands.shape
    band_step, line_step, pixel_step = bands.strides
    code = _exact_epsg(crs)
    if code is not None and min(bands.strides) > 0 and array.dtype.name in _GDAL_TYPES:
        geotransform = "/".join(repr(v) for v in transform.to_gdal())
        spec = (
            f"MEM:::DATAPOINTER={array.ctypes.data},PIXELS={pixels},LINES={lines},BANDS={count},"
            f"DATATYPE={_GDAL_TYPES[array.dtype.name]},PIXELOFFSET={pixel_step},LINEOFFSET={line_step},"
            f"BANDOFFSET={band_step},GEOTRANSFORM={geotransform},SPATIALREFERENCE=EPSG:{code}"
        )
        with rasterio.Env(GDAL_MEM_ENABLE_OPEN="YES"), rasterio.open(spec) as memory:
            yield memory  # ``array`` stays referenced by the caller while this is open
        return
    profile = {"width": pixels, "height": lines, "count": count, "dtype": array.dtype}
    with MemoryFile() as memory:
        with memory.open(driver="GTiff", crs=crs, transform=transform, **profile) as out:
            out.write(bands)
        with memory.open() as dataset:
            yield dataset


@lru_cache(maxsize=64)
def _exact_epsg(crs: CRS) -> int | None:
    """The EPSG code that is exactly ``crs`` (a close match may differ, e.g. in its datum)."""
    return crs.to_epsg(confidence_threshold=100)


_GDAL_TYPES = {"uint8": "Byte", "uint16": "UInt16", "int16": "Int16", "uint32": "UInt32", "int32": "Int32",
               "float32": "Float32", "float64": "Float64"}  # fmt: skip


def source_window(
    dataset: DatasetReader, grid: Grid, vrt_transform: Affine, vrt_width: int, vrt_height: int
) -> tuple[int, int, int, int] | None:
    """Rows and columns ``(row0, row1, col0, col1)`` of the file under the VRT, with a margin."""
    bounds = array_bounds(vrt_height, vrt_width, vrt_transform)
    west, south, east, north = bounds[0], bounds[1], bounds[2], bounds[3]
    left, bottom, right, top = transform_bounds(grid.crs, dataset.crs, west, south, east, north, densify_pts=21)
    inverse = ~dataset.transform
    corners = [inverse * corner for corner in ((left, top), (right, top), (left, bottom), (right, bottom))]
    cols, rows = [c for c, _ in corners], [r for _, r in corners]
    col0 = max(0, math.floor(min(cols)) - KERNEL_MARGIN)
    col1 = min(dataset.width, math.ceil(max(cols)) + KERNEL_MARGIN)
    row0 = max(0, math.floor(min(rows)) - KERNEL_MARGIN)
    row1 = min(dataset.height, math.ceil(max(rows)) + KERNEL_MARGIN)
    if col0 >= col1 or row0 >= row1:
        return None
    return row0, row1, col0, col1


def _assemble(
    dataset: DatasetReader, path: str, version: str, window: tuple[int, int, int, int], cache: BlockCache
) -> np.ndarray:
    """The pixels of ``window`` (rows ``row0:row1``, columns ``col0:col1``), cut from the blocks
    covering it: a view of the cached block when it lies in one, else a copy of the window only
    (a z13 tile's window is ~330 px where its four blocks are 2048 px; copying them whole, then
    again into a stack of bands, cost a warm tile of three bands more than its warp).

    Blocks missing from the cache are claimed together (``BlockCache.claim``) and decoded by one
    read of their rectangle: over S3, GDAL then fetches their tile-parts in parallel, where one
    read per block waits a round trip after another (a cold 1024 px GetMap: 3.7-5.9 s block by
    block). Blocks another thread or worker process is decoding are waited for, not decoded
    again (``BlockCache``: unless that process stores nothing, or takes longer than
    ``OTHER_PROCESS_WAIT_S``); when this read's blocks do not fill a rectangle, each is read alone.
    """
    row0, row1, col0, col1 = window
    block_height, block_width = dataset.block_shapes[0]
    rows = range(row0 // block_height, (row1 - 1) // block_height + 1)
    cols = range(col0 // block_width, (col1 - 1) // block_width + 1)
    top, left = rows[0] * block_height, cols[0] * block_width
    keys = {(row, col): BlockKey(path, version, 1, col, row) for row in rows for col in cols}
    led = cache.claim(keys.values())  # the blocks this read produces; others are another thread's
    where = {key: place for place, key in keys.items()}
    # Of those, the ones neither on disk nor being decoded by another worker process.
    decoded = [where[key] for key in cache.reserve([key for key in led if not cache.holds(key)])]
    if decoded:  # over S3, their tile-parts fetched at once before GDAL reads them one by one
        block_rows, block_cols = [r for r, _ in decoded], [c for _, c in decoded]
        s3_prefetch.window(
            path,
            (
                min(block_cols) * block_width,
                min(block_rows) * block_height,
                (max(block_cols) + 1) * block_width,
                (max(block_rows) + 1) * block_height,
            ),
        )
    region = _Region(dataset, decoded, block_height, block_width)
    cache.produce(led, lambda key: region.block(*where[key]))
    if len(keys) == 1:  # the usual tile at z14 and finer: a view of the cached block, no copy
        block = cache.get(next(iter(keys.values())), partial(region.block, rows[0], cols[0]))
        return block[row0 - top : row1 - top, col0 - left : col1 - left]
    out = np.empty((row1 - row0, col1 - col0), dtype=dataset.dtypes[0])
    for (row, col), key in keys.items():
        block = cache.get(key, partial(region.block, row, col))
        y, x = row * block_height, col * block_width  # the block's first pixel in the file
        y0, y1 = max(row0, y), min(row1, y + block.shape[0])
        x0, x1 = max(col0, x), min(col1, x + block.shape[1])
        out[y0 - row0 : y1 - row0, x0 - col0 : x1 - col0] = block[y0 - y : y1 - y, x0 - x : x1 - x]
    return out


class _Region:
    """The rectangle of blocks a read produces, decoded by one ``dataset.read`` when first needed."""

    def __init__(self, dataset: DatasetReader, blocks: list[tuple[int, int]], height: int, width: int) -> None:
        self.dataset = dataset
        self.block_height, self.block_width = height, width
        self.rows = (min(r for r, _ in blocks), max(r for r, _ in blocks)) if blocks else (0, -1)
        self.cols = (min(c for _, c in blocks), max(c for _, c in blocks)) if blocks else (0, -1)
        if len(set(blocks)) != (self.rows[1] - self.rows[0] + 1) * (self.cols[1] - self.cols[0] + 1):
            self.rows, self.cols = (0, -1), (0, -1)  # not a rectangle: its gaps are others' blocks
        self._data: np.ndarray | None = None

    def block(self, row: int, col: int) -> np.ndarray:
        """Block ``(row, col)``: cut from the region when it lies in it, else read alone."""
        y, x = row * self.block_height, col * self.block_width
        inside = self.rows[0] <= row <= self.rows[1] and self.cols[0] <= col <= self.cols[1]
        if not inside or self.rows == (row, row) and self.cols == (col, col):
            return self._read(x, y, self.block_width, self.block_height)
        if self._data is None:
            top, left = self.rows[0] * self.block_height, self.cols[0] * self.block_width
            bottom, right = (self.rows[1] + 1) * self.block_height, (self.cols[1] + 1) * self.block_width
            self._data = self._read(left, top, right - left, bottom - top)
        top, left = self.rows[0] * self.block_height, self.cols[0] * self.block_width
        return self._data[y - top : y - top + self.block_height, x - left : x - left + self.block_width].copy()

    def _read(self, x: int, y: int, width: int, height: int) -> np.ndarray:
        dataset = self.dataset
        window = Window(x, y, min(width, dataset.width - x), min(height, dataset.height - y))
        return dataset.read(1, window=window)
