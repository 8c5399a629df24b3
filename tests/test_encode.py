"""The encoders' contract on real sample bands, decoded by GDAL (rasterio) and Pillow.

PNG is lossless: every band and the alpha decode to exactly the array and its mask, in 8 and
16 bits, grey and RGB. JPEG is black where every band is masked, whatever lies under the mask.
WebP is lossy RGB(A) with an exact alpha. The values are the bundled T29UNU 60 m bands, so the
images compress like rendered imagery, not like synthetic gradients.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.enums import ColorInterp
from rasterio.errors import NotGeoreferencedWarning
from rasterio.io import MemoryFile

from server.models import Grid, ImageFormat
from server.render.encode import encode
from tests.conftest import EODATA

R60 = next((EODATA / "Sentinel-2/MSI").glob("L2A*/2022/10/05/*T29UNU*.SAFE/GRANULE/*/IMG_DATA/R60m"))
GRID = Grid((0.0, 0.0, 300.0, 200.0), "EPSG:3857", 300, 200)


def sample_bands(dtype: type, count: int) -> np.ndarray:
    """(count, 200, 300) of B04, B03, B02: DN as uint16, or DN / 8 clipped to uint8."""
    out = []
    for band in ("B04", "B03", "B02")[:count]:
        with rasterio.open(next(R60.glob(f"*_{band}_60m.jp2"))) as src:
            out.append(src.read(1, window=((200, 400), (150, 450))))
    values = np.stack(out)
    return values if dtype is np.uint16 else np.clip(values // 8, 0, 255).astype(np.uint8)


def block_mask(shape: tuple[int, ...]) -> np.ndarray:
    """No data in the upper-left block of every band."""
    mask = np.zeros(shape, dtype=bool)
    mask[:, :80, :120] = True
    return mask


def decode(content: bytes) -> tuple[np.ndarray, tuple[ColorInterp, ...], str]:
    with warnings.catch_warnings(), MemoryFile(content) as memfile:
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # images carry no georeferencing
        with memfile.open() as dataset:
            return dataset.read(), dataset.colorinterp, dataset.driver


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("count", [1, 3])
def test_png_decodes_to_the_array_with_the_mask_as_alpha(dtype: type, count: int):
    values = sample_bands(dtype, count)
    mask = block_mask(values.shape)
    content = encode(np.ma.MaskedArray(values, mask=mask), GRID, ImageFormat.PNG)
    decoded, colours, driver = decode(content)
    assert driver == "PNG" and decoded.dtype == dtype and decoded.shape == (count + 1, 200, 300)
    assert colours[-1] is ColorInterp.alpha and colours[0] is (ColorInterp.gray if count == 1 else ColorInterp.red)
    np.testing.assert_array_equal(decoded[:count], values)
    np.testing.assert_array_equal(decoded[count], np.where(mask[0], 0, np.iinfo(dtype).max))


def test_png_without_mask_is_opaque_and_levels_change_only_the_size():
    values = sample_bands(np.uint8, 3)
    data = np.ma.MaskedArray(values, mask=False)
    fast, small = (encode(data, GRID, ImageFormat.PNG, level) for level in (1, 9))
    for content in (fast, small):
        decoded = np.asarray(Image.open(io.BytesIO(content)))  # libpng through Pillow, a second decoder
        np.testing.assert_array_equal(np.moveaxis(decoded, -1, 0)[:3], values)
        assert (decoded[..., 3] == 255).all()
    assert len(small) < len(fast)


def test_jpeg_is_black_where_every_band_is_masked():
    values = sample_bands(np.uint8, 3)
    assert values[:, :80, :120].min() > 20  # real reflectances under the mask, far from black
    mask = block_mask(values.shape)
    decoded, colours, driver = decode(encode(np.ma.MaskedArray(values, mask=mask), GRID, ImageFormat.JPEG))
    assert driver == "JPEG" and decoded.shape == (3, 200, 300)
    # Away from the block's edge (8x8 DCT blocks, 4:2:0 chroma), the no-data block is black.
    assert decoded[:, :64, :104].max() <= 2
    error = decoded[:, 96:, 136:].astype(np.float64) - values[:, 96:, 136:]
    assert 10 * np.log10(255.0**2 / np.mean(error**2)) > 38  # quality 90


def test_webp_is_lossy_rgba_with_an_exact_alpha():
    values = sample_bands(np.uint8, 1)
    mask = block_mask(values.shape)
    decoded = np.asarray(Image.open(io.BytesIO(encode(np.ma.MaskedArray(values, mask=mask), GRID, ImageFormat.WEBP))))
    assert decoded.shape == (200, 300, 4)
    np.testing.assert_array_equal(decoded[..., 3], np.where(mask[0], 0, 255))
    grey = decoded[..., :3].astype(np.float64)
    valid = ~mask[0]
    assert np.abs(grey[valid] - values[0][valid][:, None]).mean() < 3


def test_the_default_png_level_keeps_files_within_1_2_x_of_a_libpng_level_6_file():
    """The size rule of the PNG level (``encode.PNG_ZLEVEL``, the server's default): the fast level
    must not cost more than 1.2 x the bytes of libpng's adaptive filters at level 6 (Pillow, what
    MapServer's AGG/PNG writes) for the same pixels. Level 1 is 1.5 x on these bands."""
    from server.render.encode import PNG_ZLEVEL, _with_alpha
    from server.settings import Settings

    assert Settings().png_zlevel == PNG_ZLEVEL
    values = sample_bands(np.uint8, 3)
    data = np.ma.MaskedArray(values, mask=block_mask(values.shape))
    reference = io.BytesIO()
    Image.fromarray(_with_alpha(data, np.dtype(np.uint8))).save(reference, format="PNG", compress_level=6)
    content = encode(data, GRID, ImageFormat.PNG)
    assert len(content) <= 1.2 * len(reference.getvalue())
    decoded = np.asarray(Image.open(io.BytesIO(content)))
    np.testing.assert_array_equal(np.moveaxis(decoded, -1, 0)[:3], values)
