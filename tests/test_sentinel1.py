"""Sentinel-1 GRD: measurement TIFFs georeferenced only by GCPs, warped through a spline."""

from __future__ import annotations

import io

import numpy as np
import pytest
import rasterio
from PIL import Image
from pyproj import Geod
from rasterio.crs import CRS
from rasterio.transform import from_gcps

from server.models import Grid, ImageFormat, RenderRequest
from server.pipeline import Pipeline
from server.sources.gcp_warp import read_gcp_part
from tests.conftest import EODATA

GRD = sorted(EODATA.glob("Sentinel-1/SAR/GRD/**/measurement/*.tiff"))
GEOD = Geod(ellps="WGS84")


@pytest.mark.parametrize("path", GRD, ids=lambda p: p.name[:22])
def test_pixels_land_on_their_gcps(path):
    """At every interior GCP the warped image shows the source pixel the GCP names (an affine fit does not)."""
    with rasterio.open(path) as src:
        gcps, _ = src.gcps
        data = src.read(1)
    affine = from_gcps(gcps)
    affine_error = max(GEOD.inv(*(affine * (g.col, g.row)), g.x, g.y)[2] for g in gcps)
    checked = 0
    for gcp in gcps:
        row, col = int(gcp.row), int(gcp.col)
        if not (1 <= row < data.shape[0] - 1 and 1 <= col < data.shape[1] - 1) or data[row, col] == 0:
            continue
        d = 1e-5  # a 3x3 grid of ~0.7 m pixels centred on the GCP
        grid = Grid((gcp.x - 1.5 * d, gcp.y - 1.5 * d, gcp.x + 1.5 * d, gcp.y + 1.5 * d), CRS.from_epsg(4326), 3, 3)
        out = read_gcp_part(str(path), grid, "nearest", 0)
        assert out is not None and out[1, 1] == data[row, col], (gcp, out[1, 1], data[row, col])
        checked += 1
    assert checked >= 20
    if "iw-grd" in path.name:
        assert affine_error > 300  # metres: why a single affine fit is not good enough


def test_grid_outside_the_scene_reads_nothing():
    grid = Grid((0.0, 0.0, 0.1, 0.1), CRS.from_epsg(4326), 8, 8)
    assert read_gcp_part(str(GRD[0]), grid, "nearest", 0) is None


def test_s1_layers_render_over_http(client, pipeline: Pipeline):
    layer = pipeline.registry.get("RAW_S1_VH_DB")
    scene = next(s for s in layer.catalogue.scenes if "IW_GRDH" in s.id)
    w, s, e, n = scene.bbox
    grid = Grid((w, s, e, n), CRS.from_epsg(4326), 256, 200)
    rendered = pipeline.render_data(RenderRequest("RAW_S1_VH_DB", grid, ImageFormat.GTIFF))
    assert 0.3 < rendered.mosaic.filled.mean() < 0.9  # a tilted swath inside its bounding box
    with rasterio.open(next(p for p in GRD if "iw-grd-vh" in p.name)) as src:
        vh = src.read(1).astype(np.float64)
    expected = np.percentile(20 * np.log10(vh[vh > 0]), [5, 50, 95])
    got = np.percentile(rendered.values[0][rendered.mosaic.filled], [5, 50, 95])
    assert np.allclose(got, expected, atol=0.6)  # same distribution of dB values after the warp
    for name in ("S1_VV", "S1_VH", "S1_VH_DB"):
        response = client.get(
            f"/ogc/wms?SERVICE=WMS&VERSION=1.1.1&REQUEST=GetMap&LAYERS={name}&STYLES="
            f"&SRS=EPSG:4326&BBOX={w},{s},{e},{n}&WIDTH=256&HEIGHT=200&FORMAT=image/png&TRANSPARENT=TRUE"
        )
        assert response.status_code == 200 and response.headers["content-type"] == "image/png", response.text
        image = np.asarray(Image.open(io.BytesIO(response.content)))
        assert image.shape == (200, 256, 4) and 0.3 < (image[..., 3] > 0).mean() < 0.9
