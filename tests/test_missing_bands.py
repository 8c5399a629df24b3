"""Bands a product lacks: read from another resolution when one exists, else reported.

The bundled T29UNU product (2022-10-05) holds its bands only as 60 m files (plus SCL at 20 m)
and has no B08 file at any resolution, as every L2A product outside its 10 m folder.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import httpx
import numpy as np
import rasterio
from prometheus_client.parser import text_string_to_metric_families
from rasterio.windows import Window

from tests.support.serve_process import eotiler_process
from tests.test_pixels import T29UNU, band_file, refl

PRODUCT = "S2A_MSIL2A_20221005T115411_N0400_R023_T29UNU_20221005T164454"
B04_60M = band_file(T29UNU, "B04", 60)
COL, ROW, SIZE = 100, 100, 43  # a window of the 60 m grid inside the product's data
NDVI_TILE = "/layers/NDVI/tiles/WebMercatorQuad/11/974/666.png?time=2022-10-05"  # over T29UNU


def getmap_10m(layer: str) -> dict[str, str]:
    """WMS GetMap at 10 m per pixel in the product's UTM zone, on the 60 m grid's pixel edges."""
    with rasterio.open(B04_60M) as src:
        left, top = src.transform * (COL, ROW)
    width = SIZE * 6 * 10  # metres
    return {
        "SERVICE": "WMS",
        "VERSION": "1.3.0",
        "REQUEST": "GetMap",
        "LAYERS": layer,
        "STYLES": "",
        "CRS": "EPSG:32629",
        "BBOX": f"{left},{top - width},{left + width},{top}",
        "WIDTH": str(SIZE * 6),
        "HEIGHT": str(SIZE * 6),
        "FORMAT": "image/tiff",
        "TIME": "2022-10-05",
    }


def test_a_10m_request_reads_b04_from_the_60m_file(client: httpx.Client) -> None:
    response = client.get("/ogc/wms", params=getmap_10m("RAW_B04"))
    assert response.status_code == 200, response.text[:300]
    assert "x-eotiler-failed-scenes" not in response.headers
    assert response.headers["x-eotiler-scenes"] == PRODUCT
    with rasterio.open(io.BytesIO(response.content)) as got:
        assert got.crs.to_epsg() == 32629 and got.res == (10.0, 10.0)
        values = got.read(1).astype(np.float64)
    with rasterio.open(B04_60M) as src:
        dn = src.read(1, window=Window(COL, ROW, SIZE, SIZE)).astype(np.float64)
    # nearest neighbour from 60 m to 10 m on aligned grids: every 60 m pixel becomes 6 x 6
    expected = refl(np.kron(dn, np.ones((6, 6))), -1000.0)
    assert (dn > 0).all(), "the window holds data"
    np.testing.assert_allclose(values, expected, atol=1e-6)


def missing_b08_total(url: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "eotiler_missing_bands_total" and s.labels == {"band": "B08"}
    )


def test_a_band_no_file_holds_is_named_logged_counted_and_not_cached(test_config: Path, tmp_path: Path) -> None:
    """NDVI reads B08: over T29UNU alone the image is empty, and the answer says why."""
    log_path = tmp_path / "serve.log"
    env = {**os.environ, "EOTILER_ACCESS_LOG": "false"}
    with log_path.open("w") as output, eotiler_process(test_config, "--workers", "2", env=env, output=output) as ran:
        url = ran[0]
        before = missing_b08_total(url)
        answers = [httpx.get(url + NDVI_TILE, timeout=60) for _ in range(2)]
        wms = httpx.get(f"{url}/ogc/wms", params=getmap_10m("NDVI"), timeout=60)
        after = missing_b08_total(url)
    for answer in [*answers, wms]:
        assert answer.status_code == 200
        assert answer.headers["x-eotiler-failed-scenes"] == f"{PRODUCT}:B08"
        assert answer.headers["cache-control"] == "no-store" and "warning" in answer.headers
    assert [a.headers["x-cache"] for a in answers] == ["MISS", "MISS"], "an incomplete image is never cached"
    assert after - before == 3, "each answer counted once, whichever worker scraped"
    warnings = [
        line for line in log_path.read_text().splitlines() if "WARNING" in line and f"{PRODUCT} has no file" in line
    ]
    assert len(warnings) == 3 and all("B08" in line for line in warnings), warnings
