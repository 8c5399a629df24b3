"""Encode a post-processed masked array as PNG, JPEG, WebP or GeoTIFF.

PNG/WebP carry the mask as alpha (transparent where no data); JPEG has no alpha, so no-data
pixels are black. GeoTIFF is written with rasterio so float outputs keep NaN as nodata and
the file is georeferenced with the request's grid.
"""

from __future__ import annotations

import numpy as np
import rasterio
from rasterio.enums import ColorInterp
from rasterio.io import MemoryFile
from rasterio.transform import from_bounds
from rio_tiler.models import ImageData

from server.errors import InvalidFormat
from server.evalscript.contract import OutputSpec, SampleType
from server.models import Grid, ImageFormat

_DRIVERS = {ImageFormat.PNG: "PNG", ImageFormat.JPEG: "JPEG", ImageFormat.WEBP: "WEBP"}


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


def encode(
    data: np.ma.MaskedArray, grid: Grid, fmt: ImageFormat, png_zlevel: int = 6, *, coverage: bool = False
) -> bytes:
    """Encode ``data`` (bands, h, w) for ``grid`` in ``fmt``."""
    if fmt is ImageFormat.GTIFF:
        return _geotiff(data, grid, coverage)
    image = ImageData(data, bounds=grid.bbox, crs=grid.crs)
    options: dict[str, object] = {}
    if fmt is ImageFormat.PNG:
        options["ZLEVEL"] = png_zlevel
    elif fmt is ImageFormat.JPEG:
        options["QUALITY"] = 90
    elif fmt is ImageFormat.WEBP:
        options["QUALITY"] = 90
    return image.render(add_mask=fmt is not ImageFormat.JPEG, img_format=_DRIVERS[fmt], **options)
