"""Encode a post-processed masked array as PNG, JPEG, WebP or GeoTIFF.

PNG/WebP carry the mask as alpha (transparent where no data); JPEG has no alpha, so no-data
pixels are black. GeoTIFF is written with rasterio so float outputs keep NaN as nodata and
the file is georeferenced with the request's grid.

The encoders are the fastest measured by ``benchmarks/encoders.py`` on rendered images (see
``BENCHMARKS.md``): PNG is written here (every row filtered with PNG's "Up" filter in numpy,
deflated by zlib-ng, which releases the GIL), 8-10x less CPU than GDAL's PNG driver, whose
per-row adaptive filter choice costs more than the compression; files stay below MapServer's
for the same pixels. JPEG and WebP go through Pillow (libjpeg-turbo, libwebp): the same
quality and size as GDAL's drivers at a fraction of the CPU, and Pillow lets other threads run.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import rasterio
from PIL import Image
from rasterio.enums import ColorInterp
from rasterio.io import MemoryFile
from rasterio.transform import from_bounds
from zlib_ng import zlib_ng

from server.errors import InvalidFormat
from server.evalscript.contract import OutputSpec, SampleType
from server.models import Grid, ImageFormat

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_COLOUR_TYPE = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> PNG colour type (grey, grey + alpha, RGB, RGBA)
_PNG_FILTER_UP = 2
# Deflate level of PNG (EOTILER_PNG_ZLEVEL's default): on the rendered 1024 px GetMaps of
# ``benchmarks/encoders.py`` level 3 costs 38-40 % of level 6's CPU (true colour 46 against 119 ms,
# NDVI 58 against 152) for 8-9 % more bytes, and stays below MapServer's PNG of the same pixels
# (0.96 x); level 2 saves 6-9 ms more for 15 % more bytes, level 1 breaks the 1.2 x size rule.
PNG_ZLEVEL = 3
JPEG_QUALITY = 90
WEBP_QUALITY = 90
# Deflate level of GeoTIFF outputs: level 1 costs 40 % of the default level 6's CPU on a
# 1024 px float32 coverage for 5 % more bytes (docs/performance.md).
GEOTIFF_ZLEVEL = 1


def check_format(output: OutputSpec, fmt: ImageFormat) -> None:
    """Refuse encodings that cannot hold the script's output, before any data is read."""
    if fmt is ImageFormat.GTIFF:
        return
    if output.sample_type in (SampleType.INT8, SampleType.INT16):
        raise InvalidFormat("signed integer output needs image/tiff (.tif)", parameter="format")
    if output.sample_type is SampleType.FLOAT32:
        raise InvalidFormat("this layer returns float32 values: request image/tiff (.tif)", parameter="format")
    bands = output.bands - (1 if output.has_alpha else 0)
    if bands not in (1, 3):
        raise InvalidFormat(f"this layer returns {output.bands} bands: request image/tiff (.tif)", parameter="format")
    if fmt in (ImageFormat.JPEG, ImageFormat.WEBP) and output.sample_type is SampleType.UINT16:
        raise InvalidFormat("16-bit output needs image/png or image/tiff", parameter="format")


def _geotiff(data: np.ma.MaskedArray, grid: Grid, coverage: bool) -> bytes:
    """Images get an alpha band (integer) or NaN (float); coverages keep only the data bands.

    A coverage (WCS) with integer samples marks no-data in an internal TIFF mask, so a client
    sees exactly the bands DescribeCoverage lists.
    """
    count = data.shape[0]
    is_float = data.dtype.kind == "f"
    alpha = not is_float and not coverage
    profile = {
        "driver": "GTiff",
        "width": grid.width,
        "height": grid.height,
        "dtype": data.dtype.name,
        "crs": grid.crs,
        "transform": from_bounds(*grid.bbox, grid.width, grid.height),
        "compress": "deflate",
        "zlevel": GEOTIFF_ZLEVEL,
        "count": count + 1 if alpha else count,
        "nodata": float("nan") if is_float else None,
        "tiled": grid.width >= 256 and grid.height >= 256,
    }
    if profile["tiled"]:
        profile.update(blockxsize=256, blockysize=256)
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), MemoryFile() as memfile:
        with memfile.open(**profile) as dst:
            if is_float:
                dst.write(data.filled(np.nan))
            elif coverage:
                dst.write(data.filled(0))
                dst.write_mask(np.where(np.ma.getmaskarray(data)[0], 0, 255).astype(np.uint8))
            else:
                dst.write(data.filled(0), indexes=list(range(1, count + 1)))
                alpha = np.where(np.ma.getmaskarray(data)[0], 0, np.iinfo(data.dtype).max).astype(data.dtype)
                dst.write(alpha, count + 1)
                dst.colorinterp = [*dst.colorinterp[:count], ColorInterp.alpha]
        return memfile.read()


def _with_alpha(data: np.ma.MaskedArray, dtype: np.dtype, alpha: bool = True) -> np.ndarray:
    """(h, w, bands + 1) pixels in ``dtype``; alpha is the dtype's maximum where any band has data.

    ``alpha=False``: (h, w, bands), the values as they are, masked or not.
    """
    bands, height, width = data.shape
    pixels = np.empty((height, width, bands + alpha), dtype=dtype)
    values = np.ma.getdata(data)
    for band in range(bands):  # band by band: 10x faster than one copy of the moved axes
        pixels[..., band] = values[band]
    if alpha:
        valid = ~np.logical_and.reduce(np.ma.getmaskarray(data), axis=0)
        pixels[..., bands] = np.where(valid, dtype.type(np.iinfo(data.dtype).max), dtype.type(0))
    return pixels


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(body, zlib.crc32(kind)))


def _png(data: np.ma.MaskedArray, level: int, alpha: bool = True) -> bytes:
    """8- or 16-bit grey + alpha or RGBA PNG; grey or RGB without ``alpha``.

    Every row uses the "Up" filter (difference to the row above, bytewise, so one numpy
    subtraction serves 8 and 16 bits): on rendered imagery it compresses as well as libpng's
    per-row choice among all five filters, which is where most of a libpng encode goes.
    """
    if data.dtype not in (np.uint8, np.uint16):
        raise InvalidFormat(f"{data.dtype} output needs image/tiff (.tif)", parameter="format")
    dtype = np.dtype(">u2") if data.dtype == np.uint16 else np.dtype(np.uint8)
    pixels = _with_alpha(data, dtype, alpha)
    height, width, channels = pixels.shape
    rows = pixels.view(np.uint8).reshape(height, -1)
    filtered = np.empty((height, rows.shape[1] + 1), dtype=np.uint8)
    filtered[:, 0] = _PNG_FILTER_UP
    filtered[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])
    header = struct.pack(">IIBBBBB", width, height, pixels.dtype.itemsize * 8, _PNG_COLOUR_TYPE[channels], 0, 0, 0)
    return b"".join(
        (
            _PNG_SIGNATURE,
            _png_chunk(b"IHDR", header),
            _png_chunk(b"IDAT", zlib_ng.compress(filtered, level)),
            _png_chunk(b"IEND", b""),
        )
    )


def _pillow(pixels: np.ndarray, fmt: str, **options: object) -> bytes:
    image = Image.fromarray(np.ascontiguousarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _jpeg(data: np.ma.MaskedArray) -> bytes:
    """Grey or RGB baseline JPEG, 4:2:0, optimised Huffman tables (the size GDAL's driver gives).

    Black exactly where PNG would be transparent (every band masked): whatever the script
    computed under no-data never shows.
    """
    pixels = np.ma.getdata(data)
    transparent = np.logical_and.reduce(np.ma.getmaskarray(data), axis=0)
    if transparent.any():
        pixels = np.where(transparent, 0, pixels).astype(np.uint8)
    return _pillow(np.moveaxis(pixels, 0, -1), "JPEG", quality=JPEG_QUALITY, subsampling="4:2:0", optimize=True)


def _webp(data: np.ma.MaskedArray) -> bytes:
    """Lossy RGBA WebP; a grey image is written as RGB (WebP has no grey)."""
    if data.shape[0] == 1:
        data = np.ma.concatenate([data] * 3)
    return _pillow(_with_alpha(data, np.dtype(np.uint8)), "WEBP", quality=WEBP_QUALITY)


def encode(
    data: np.ma.MaskedArray,
    grid: Grid,
    fmt: ImageFormat,
    png_zlevel: int = PNG_ZLEVEL,
    *,
    coverage: bool = False,
    alpha: bool = True,
) -> bytes:
    """Encode ``data`` (bands, h, w) for ``grid`` in ``fmt``; ``png_zlevel`` is zlib-ng's level (1-9).

    ``alpha=False``: a PNG of the bands alone (Sentinel Hub's Process API: transparency only from
    a script's own 4th band).
    """
    if fmt is ImageFormat.GTIFF:
        return _geotiff(data, grid, coverage)
    if fmt is ImageFormat.PNG:
        return _png(data, png_zlevel, alpha)
    if data.dtype != np.uint8:
        raise InvalidFormat("16-bit output needs image/png or image/tiff", parameter="format")
    if fmt is ImageFormat.JPEG:
        return _jpeg(data)
    return _webp(data)
