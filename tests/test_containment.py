"""Containment: no request, and no catalogue item, makes the server open a file or URL outside
its configured sources.

A canary HTTP server on 127.0.0.1 records every hit, and a canary file is a VRT whose source is
that server, so opening the file (through GDAL) would hit it too. Every parameter of every
endpoint is given paths, URLs, GDAL connection strings, inline VRT XML and scripts that try to
reach them; static catalogue items point their hrefs at them. Nothing may touch the canary, and
no answer may be a 5xx.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import yaml

from server.settings import Settings
from tests.conftest import SAMPLE, serve, write_test_config


class Canary:
    """An HTTP server that only records who came."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        hits = self.hits

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                hits.append(self.path)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_HEAD = do_POST = do_GET  # noqa: N815

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()


@pytest.fixture(scope="module")
def canary() -> Iterator[Canary]:
    server = Canary()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def canary_file(tmp_path_factory: pytest.TempPathFactory, canary: Canary) -> Path:
    """A VRT whose only source is the canary server: opening it anywhere is detected."""
    path = tmp_path_factory.mktemp("canary") / "canary.vrt"
    path.write_text(
        f'<VRTDataset rasterXSize="10" rasterYSize="10"><VRTRasterBand dataType="Byte" band="1">'
        f"<SimpleSource><SourceFilename>/vsicurl/{canary.url}/from-canary-file.tif</SourceFilename>"
        f"<SourceBand>1</SourceBand></SimpleSource></VRTRasterBand></VRTDataset>"
    )
    return path


def hostile_values(canary: Canary, canary_file: Path) -> list[str]:
    vrt = canary_file.read_text()
    return [
        f"{canary.url}/param.tif",
        f"/vsicurl/{canary.url}/param.tif",
        f"/vsicurl?url={canary.url}/param.tif",
        f"vrt://{canary_file}",
        f"WMS:{canary.url}/wms",
        f"GTIFF_RAW:{canary_file}",
        str(canary_file),
        f"file://{canary_file}",
        f"../../../../../../..{canary_file}",
        f"/vsis3/eodata/../../..{canary_file}",
        vrt,
        f"s3://eodata/../..{canary_file}",
    ]


def hostile_scripts(canary: Canary, canary_file: Path) -> list[str]:
    js = [
        f"//VERSION=3\nfunction setup() {{ return {{input: ['B04'], output: {{bands: 1}}}}; }}\n"
        f"function evaluatePixel(s) {{ {call}; return [1]; }}"
        for call in (
            f"fetch('{canary.url}/js-fetch')",
            f"new XMLHttpRequest().open('GET', '{canary.url}/js-xhr')",
            f"require('fs').readFileSync('{canary_file}')",
            f"import('{canary.url}/js-import.mjs')",
            f"Deno.readTextFileSync('{canary_file}')",
        )
    ]
    expressions = [f"open('{canary_file}')", f"__import__('urllib.request').urlopen('{canary.url}/py')"]
    return [base64.b64encode(text.encode()).decode() for text in js + expressions]


@pytest.fixture(scope="module")
def contained_url(tmp_path_factory: pytest.TempPathFactory, canary: Canary, canary_file: Path) -> Iterator[str]:
    """The bundled configuration plus a collection whose catalogue items point at the canaries."""
    directory = tmp_path_factory.mktemp("contained")
    config_path = write_test_config(directory)
    raw = yaml.safe_load(config_path.read_text())
    items = directory / "evil-items"
    items.mkdir()
    template = json.loads(next((SAMPLE / "stac" / "sentinel-2-l2a").glob("*T29UNU*.json")).read_text())
    hrefs = [
        f"{canary.url}/item.jp2",
        f"/vsicurl/{canary.url}/item.jp2",
        f"file://{canary_file}",
        str(canary_file),
        f"s3://eodata/../../../../../../..{canary_file}",
        f"s3://eodata/Sentinel-2/../../../../../../../..{canary_file}",
        f"s3://other-bucket/{canary_file.name}",
        f"s3://eodata//{canary_file}",
    ]
    for number, href in enumerate(hrefs):
        item = copy.deepcopy(template)
        item["id"] = f"{template['id']}_EVIL{number}"
        item["assets"] = {key: {**asset, "href": href} for key, asset in template["assets"].items()}
        (items / f"{item['id']}.json").write_text(json.dumps(item))
    evil = copy.deepcopy(raw["collections"]["sentinel-2-l2a"])
    evil["catalogue"] = {"type": "static", "path": str(items)}
    raw["collections"]["evil"] = evil
    raw["layers"]["EVIL"] = {"title": "hostile items", "collection": "evil", "expression": "B04"}
    config_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    with serve(Settings(config=config_path, overview_cache_bytes=0, cache_memory_bytes=0)) as url:
        yield url


def test_the_canaries_detect_an_open(canary: Canary, canary_file: Path) -> None:
    """The control: GDAL opening the canary file does reach the canary server."""
    import rasterio

    with rasterio.open(canary_file) as dataset:
        with contextlib.suppress(rasterio.errors.RasterioIOError):
            dataset.read(1)
    assert any(hit.endswith("/from-canary-file.tif") for hit in canary.hits)
    canary.hits.clear()


def test_hostile_catalogue_items_never_reach_gdal(contained_url: str, canary: Canary) -> None:
    with httpx.Client(base_url=contained_url, timeout=30) as client:
        for path in (
            "/layers/EVIL/tiles/WebMercatorQuad/10/486/333.tif",
            "/layers/EVIL/tiles/WebMercatorQuad/12/1945/1333.tif",
        ):
            response = client.get(path)
            assert response.status_code == 502, response.text[:300]  # every item refused
    assert canary.hits == []


def test_hostile_parameters_never_reach_a_file_or_url(contained_url: str, canary: Canary, canary_file: Path) -> None:
    values = hostile_values(canary, canary_file)
    scripts = hostile_scripts(canary, canary_file)
    tile = "/layers/TRUE_COLOR/tiles/WebMercatorQuad/10/486/333.png"
    wms = {"SERVICE": "WMS", "VERSION": "1.3.0", "REQUEST": "GetMap", "LAYERS": "TRUE_COLOR", "STYLES": "",
           "CRS": "EPSG:3857", "BBOX": "-1232078,7083888,-1193942,7122023", "WIDTH": "64", "HEIGHT": "64",
           "FORMAT": "image/png"}  # fmt: skip
    wmts = {"SERVICE": "WMTS", "VERSION": "1.0.0", "REQUEST": "GetTile", "LAYER": "TRUE_COLOR", "STYLE": "default",
            "TILEMATRIXSET": "WebMercatorQuad", "TILEMATRIX": "10", "TILEROW": "333", "TILECOL": "486",
            "FORMAT": "image/png"}  # fmt: skip
    wcs = {"SERVICE": "WCS", "VERSION": "2.0.1", "REQUEST": "GetCoverage", "COVERAGEID": "RAW_B04",
           "FORMAT": "image/tiff"}  # fmt: skip
    requests: list[tuple[str, dict[str, str]]] = []
    for value in values:
        quoted = httpx.URL(value).raw_path.decode() if value.startswith("/") else value
        requests += [
            (f"/layers/{quoted}/tiles/WebMercatorQuad/10/486/333.png", {}),
            (f"/layers/TRUE_COLOR/tiles/{quoted}/10/486/333.png", {}),
            (f"/layers/{quoted}/tilejson.json", {}),
            (tile, {"time": value}),
            (tile, {"evalscript": value}),
            (tile, {"evalscript": base64.b64encode(value.encode()).decode()}),
        ]
        for params, keys in ((wms, ("LAYERS", "STYLES", "CRS", "FORMAT", "TIME", "SLD", "SLD_BODY")),
                             (wmts, ("LAYER", "TILEMATRIXSET", "STYLE", "FORMAT")),
                             (wcs, ("COVERAGEID", "FORMAT", "OUTPUTCRS", "SUBSET"))):  # fmt: skip
            endpoint = "/ogc/wms" if params is wms else "/ogc/wmts" if params is wmts else "/ogc/wcs"
            requests += [(endpoint, {**params, key: value}) for key in keys]
    for script in scripts:
        requests += [(tile, {"evalscript": script}), ("/ogc/wms", {**wms, "EVALSCRIPT": script})]
    statuses = []
    with httpx.Client(base_url=contained_url, timeout=30) as client:
        for path, params in requests:
            response = client.get(path, params=params)
            statuses.append(response.status_code)
            assert response.status_code < 500, (path, params, response.text[:300])
            assert "Traceback" not in response.text
    assert len(requests) > 200
    assert canary.hits == [], canary.hits
