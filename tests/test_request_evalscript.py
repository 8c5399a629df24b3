"""EVALSCRIPT (base64) on XYZ, WMS GetMap and WMTS GetTile: request scripts are whitelisted
expressions only, give the same pixels as the equivalent configured layer, and bad scripts are
clean 4xx errors naming the parameter."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import rasterio
from lxml import etree
from PIL import Image

TILE = "/layers/{layer}/tiles/WebMercatorQuad/10/486/333.{ext}"  # over T29UNU (2022-10-05)


def b64(text: str | bytes) -> str:
    """A script (or any bytes) as a request's EVALSCRIPT."""
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


def wmts_tile(layer: str, **extra: str) -> dict[str, str]:
    """KVP of a WMTS GetTile of tile 10/486/333 (over T29UNU) as GeoTIFF; ``extra`` adds or replaces."""
    return {
        "SERVICE": "WMTS",
        "REQUEST": "GetTile",
        "VERSION": "1.0.0",
        "LAYER": layer,
        "STYLE": "default",
        "TILEMATRIXSET": "WebMercatorQuad",
        "TILEMATRIX": "10",
        "TILEROW": "333",
        "TILECOL": "486",
        "FORMAT": "image/tiff",
        **extra,
    }


def tif(response) -> np.ndarray:
    assert response.status_code == 200, response.text[:300]
    with rasterio.open(io.BytesIO(response.content)) as src:
        return src.read()


def test_xyz_evalscript_replaces_the_layer_script(client):
    reference = tif(client.get(TILE.format(layer="RAW_B04", ext="tif")))
    replaced = tif(client.get(TILE.format(layer="TRUE_COLOR", ext="tif"), params={"evalscript": b64("B04")}))
    assert replaced.shape == reference.shape == (1, 256, 256)
    assert (~np.isnan(reference)).mean() > 0.3
    assert np.allclose(replaced, reference, equal_nan=True)


def test_url_safe_base64_without_padding_is_accepted(client):
    script = base64.urlsafe_b64encode(b"B04 * 0.5").decode().rstrip("=")
    half = tif(client.get(TILE.format(layer="RAW_B04", ext="tif"), params={"evalscript": script}))
    full = tif(client.get(TILE.format(layer="RAW_B04", ext="tif")))
    assert np.allclose(half * 2, full, equal_nan=True)


def test_json_evalscript_with_colormap_matches_configured_layer(client):
    # NDVI_EXPRESSION in config/eotiler.yaml: the same expression, rescale and colormap
    script = json.dumps({"expression": "(B08 - B04) / (B08 + B04)", "rescale": [-1, 1], "colormap": "rdylgn"})
    bounds = "3371000,9019000,3375000,9023000"  # EPSG:3857 over the 2018 T35VPK product
    params = {
        "SERVICE": "WMS",
        "VERSION": "1.3.0",
        "REQUEST": "GetMap",
        "CRS": "EPSG:3857",
        "BBOX": bounds,
        "WIDTH": "128",
        "HEIGHT": "128",
        "FORMAT": "image/png",
        "STYLES": "",
        "TRANSPARENT": "TRUE",
    }
    configured = client.get("/ogc/wms", params={**params, "LAYERS": "NDVI_EXPRESSION"})
    scripted = client.get("/ogc/wms", params={**params, "LAYERS": "TRUE_COLOR", "EVALSCRIPT": b64(script)})
    a = np.asarray(Image.open(io.BytesIO(configured.content)).convert("RGBA"))
    b = np.asarray(Image.open(io.BytesIO(scripted.content)).convert("RGBA"))
    assert (a[..., 3] > 0).mean() > 0.1
    assert (a == b).all()


def test_wmts_gettile_takes_evalscript(client):
    params = wmts_tile("TRUE_COLOR", EVALSCRIPT=b64("B04"))
    got = tif(client.get("/ogc/wmts", params=params))
    assert np.allclose(got, tif(client.get(TILE.format(layer="RAW_B04", ext="tif"))), equal_nan=True)


@pytest.mark.parametrize(
    ("script", "fragment"),
    [
        ("%%%not base64", "base64"),
        (b64("__import__('os').system('id')"), "EVALSCRIPT"),
        (b64("B04.__class__"), "EVALSCRIPT"),
        (b64("open('/etc/passwd')"), "EVALSCRIPT"),
        (b64("B99 * 2"), "B99"),
        (b64("//VERSION=3\nfunction setup() {}"), "evaluatePixel"),
        (b64('{"expression": "B04", "rescale": [1, 1]}'), "rescale"),
        (b64('{"expression": "B04", "extra": 1}'), "JSON"),
        (b64("B04 *" * 2000), "EVALSCRIPT"),
    ],
)
def test_bad_evalscripts_are_clean_400s(client, script, fragment):
    response = client.get(TILE.format(layer="TRUE_COLOR", ext="png"), params={"evalscript": script})
    assert response.status_code == 400
    body = response.json()
    assert body["parameter"].upper() == "EVALSCRIPT" and fragment.lower() in body["detail"].lower()


def test_wms_bad_evalscript_is_an_ogc_exception(client):
    params = {
        "SERVICE": "WMS",
        "VERSION": "1.3.0",
        "REQUEST": "GetMap",
        "LAYERS": "TRUE_COLOR",
        "CRS": "EPSG:3857",
        "BBOX": "-1000000,6900000,-900000,7000000",
        "WIDTH": "64",
        "HEIGHT": "64",
        "FORMAT": "image/png",
        "STYLES": "",
        "EVALSCRIPT": b64("exec('1')"),
    }
    response = client.get("/ogc/wms", params=params)
    assert response.status_code == 400
    assert etree.fromstring(response.content)[0].get("code") == "InvalidParameterValue"


def test_layer_can_refuse_request_scripts(client):
    response = client.get(TILE.format(layer="LOCKED_B04", ext="tif"), params={"evalscript": b64("B04")})
    assert response.status_code == 400 and "does not accept" in response.json()["detail"]
