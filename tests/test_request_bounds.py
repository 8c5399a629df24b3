"""Numbers from requests reach PROJ and GDAL only inside the CRS's area of use.

A box entirely outside the area of use, or reaching absurdly far past it (``1e308``), is refused
before any transformation; a box partly inside is rendered, its part outside empty. The decisive
case runs against a real ``eotiler serve`` process: the 1e308 box that kept PROJ busy for
minutes (holding the GIL, so ``/healthz`` stopped answering) is answered at once.
"""

from __future__ import annotations

import io
import os
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from lxml import etree
from PIL import Image
from rasterio.crs import CRS

from server.errors import InvalidParameter
from server.models import Grid, area_of_use, check_bbox, request_grid
from tests.support.serve_process import eotiler_process

ABSURD = {
    "SERVICE": "WMS",
    "VERSION": "1.3.0",
    "REQUEST": "GetMap",
    "LAYERS": "TRUE_COLOR",
    "STYLES": "",
    "CRS": "EPSG:3857",
    "BBOX": "-1e308,-1e308,1e308,1e308",
    "WIDTH": "256",
    "HEIGHT": "256",
    "FORMAT": "image/png",
}
WEB_MERCATOR = CRS.from_epsg(3857)
UTM_29N = CRS.from_epsg(32629)  # the zone of the T29UNU sample (x 499980-530700, y 5869320-5900040)


def ogc_code(response: httpx.Response) -> tuple[str, str]:
    root = etree.fromstring(response.content)
    item = next(e for e in root.iter() if e.get("code") or e.get("exceptionCode"))
    return item.get("code") or item.get("exceptionCode") or "", "".join(item.itertext()).strip()


def test_the_absurd_box_is_answered_at_once_while_healthz_keeps_answering(test_config: Path) -> None:
    env = {**os.environ, "EOTILER_ACCESS_LOG": "false"}
    with eotiler_process(test_config, env=env) as (url, process):
        probes: list[tuple[int, float]] = []
        stop = threading.Event()

        def probe() -> None:
            with httpx.Client(base_url=url, timeout=30) as http:
                while not stop.is_set():
                    start = time.monotonic()
                    status = http.get("/healthz").status_code
                    probes.append((status, time.monotonic() - start))
                    time.sleep(0.05)

        prober = threading.Thread(target=probe)
        prober.start()
        try:
            time.sleep(0.3)
            start = time.monotonic()
            try:
                response = httpx.get(f"{url}/ogc/wms", params=ABSURD, timeout=20)
            finally:
                elapsed = time.monotonic() - start
            time.sleep(0.3)
        finally:
            stop.set()
            prober.join(timeout=60)
            if process.poll() is None and elapsed >= 20:
                process.kill()  # a server stuck in PROJ does not stop on SIGTERM
        assert response.status_code == 400, response.text[:300]
        assert ogc_code(response)[0] == "InvalidParameterValue"
        assert "area of use" in ogc_code(response)[1]
    # Generous bounds that only prove nothing hung (the old code held the GIL for minutes).
    assert elapsed < 3.0, elapsed
    assert len(probes) >= 5 and all(status == 200 for status, _ in probes), probes
    assert max(seconds for _, seconds in probes) < 2.0, probes


@pytest.mark.parametrize(
    ("crs", "bbox"),
    [
        (WEB_MERCATOR, (-1e308, -1e308, 1e308, 1e308)),  # covers the world and reaches absurdly past it
        (WEB_MERCATOR, (1e308 / 2, 1e308 / 2, 1e308, 1e308)),  # entirely outside
        (WEB_MERCATOR, (-1e12, 0.0, 0.0, 1.0)),
        (CRS.from_epsg(4326), (-10.0, 95.0, 10.0, 100.0)),  # beyond the pole
        (CRS.from_epsg(4326), (185.0, 0.0, 190.0, 10.0)),  # past the antimeridian only
        (CRS.from_user_input("OGC:CRS84"), (-1e6, -1e6, 1e6, 1e6)),
        (UTM_29N, (5e7, 0.0, 5.1e7, 1e5)),  # a UTM box thousands of km from its zone
        (CRS.from_epsg(32733), (500000.0, 1.1e7, 510000.0, 1.2e7)),  # the south zone's y beyond the equator
        (CRS.from_epsg(3035), (-1e9, -1e9, -5e8, -5e8)),
    ],
)
def test_boxes_outside_the_area_of_use_are_refused(crs: CRS, bbox: tuple[float, float, float, float]) -> None:
    with pytest.raises(InvalidParameter) as caught:
        check_bbox(bbox, crs, "BBOX")
    assert caught.value.parameter == "BBOX" and "area of use" in caught.value.public_message


@pytest.mark.parametrize(
    ("crs", "bbox"),
    [
        (WEB_MERCATOR, (-40075016.0, -20037508.0, 40075016.0, 20037508.0)),  # OpenLayers: two worlds wide
        (WEB_MERCATOR, (-0.0, -0.0, 1.0, 1.0)),  # negative zero
        (CRS.from_epsg(4326), (80.0, -180.0, 100.0, 180.0)),  # past the pole: partly inside
        (CRS.from_epsg(4326), (170.0, -10.0, 190.0, 10.0)),  # across the antimeridian
        (UTM_29N, (500000.0, 5870000.0, 2500000.0, 5900000.0)),  # from the zone far to the east
    ],
)
def test_boxes_partly_inside_are_accepted(crs: CRS, bbox: tuple[float, float, float, float]) -> None:
    check_bbox(bbox, crs, "BBOX")


def test_transformations_see_only_the_part_in_the_area_of_use() -> None:
    beyond_pole = request_grid((170.0, 80.0, 190.0, 95.0), CRS.from_user_input("OGC:CRS84"), 64, 64)
    assert beyond_pole.usable_bbox() == (170.0, 80.0, 180.0, 90.0)
    assert beyond_pole.bbox_wgs84() == (170.0, 80.0, 180.0, 90.0)
    world = request_grid((-4e7, -4e7, 4e7, 4e7), WEB_MERCATOR, 256, 256)
    west, south, east, north = world.bbox_wgs84()
    assert (west, east) == pytest.approx((-180.0, 180.0)) and -90 <= south < -85 and 85 < north <= 90
    # The ground resolution is that of the pixels over the area of use, not of the whole box.
    inside = Grid((500000.0, 5870000.0, 530000.0, 5900000.0), UTM_29N, 60, 60)
    reaching = Grid((500000.0, 5870000.0, 2500000.0, 5900000.0), UTM_29N, 4000, 60)
    assert inside.ground_resolution() == pytest.approx(500, rel=0.01)
    assert reaching.ground_resolution() == pytest.approx(500, rel=0.05)
    x0, _, x1, _ = area_of_use(UTM_29N.to_wkt()) or (0, 0, 0, 0)
    assert reaching.usable_bbox()[2] == x1 < 2500000.0 and x0 < 500000.0


def rgba(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text[:300]
    return np.asarray(Image.open(io.BytesIO(response.content)).convert("RGBA"))


def test_a_box_partly_outside_renders_its_inside_and_leaves_the_rest_empty(client: httpx.Client) -> None:
    # 500 m pixels from the sample scene eastwards: to x 1,000,000 (inside zone 29's area of use)
    # and to x 2,500,000 (far past it). The shared columns are the same pixels.
    params = {**ABSURD, "CRS": "EPSG:32629", "TRANSPARENT": "TRUE", "TIME": "2022-10-05", "HEIGHT": "60"}
    inside = rgba(client.get("/ogc/wms", params={**params, "BBOX": "500000,5870000,1000000,5900000", "WIDTH": "1000"}))
    far = {**params, "BBOX": "500000,5870000,2500000,5900000", "WIDTH": "4000"}
    reaching = rgba(client.get("/ogc/wms", params=far))
    assert (inside[:, :60, 3] > 0).mean() > 0.9, "the sample scene covers the first 60 columns"
    assert np.array_equal(reaching[:, :1000], inside)
    assert not reaching[:, 62:, 3].any(), "nothing but the sample scene has data"


WMS_OUTSIDE = [
    ("EPSG:3857", "-1e308,-1e308,1e308,1e308"),
    ("EPSG:3857", "1e300,1e300,1e308,1e308"),
    ("EPSG:4326", "95,0,100,10"),  # 1.3.0: lat,lon
    ("EPSG:4326", "0,185,10,190"),
    ("CRS:84", "185,0,190,10"),
    ("EPSG:32633", "5e7,0,5.1e7,100000"),
]


@pytest.mark.parametrize(("crs", "bbox"), WMS_OUTSIDE)
def test_wms_refuses_boxes_outside_the_area_of_use(client: httpx.Client, crs: str, bbox: str) -> None:
    response = client.get("/ogc/wms", params={**ABSURD, "CRS": crs, "BBOX": bbox}, timeout=10)
    assert response.status_code == 400
    code, text = ogc_code(response)
    assert code == "InvalidParameterValue" and "area of use" in text


def test_wcs_subset_outside_the_area_of_use_is_invalid_subsetting(client: httpx.Client) -> None:
    base = {"SERVICE": "WCS", "VERSION": "2.0.1", "REQUEST": "GetCoverage", "COVERAGEID": "NDVI_FLOAT"}
    for subsets in (
        [("SUBSET", "Long(185,190)"), ("SUBSET", "Lat(0,10)")],
        [("SUBSET", "x(-1e308,1e308)"), ("SUBSET", "y(-1e308,1e308)"), ("SUBSETTINGCRS", "EPSG:3857")],
        [("SUBSET", "E(5e7,5.1e7)"), ("SUBSET", "N(0,100000)"), ("SUBSETTINGCRS", "EPSG:32633")],
    ):
        response = client.get("/ogc/wcs", params=[*base.items(), *subsets], timeout=10)
        assert response.status_code == 404, response.text[:300]
        code, text = ogc_code(response)
        assert code == "InvalidSubsetting" and "area of use" in text, text
