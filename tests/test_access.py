"""Clients, keys and layers on every endpoint: who may call, what they see, how they are refused.

A real uvicorn server runs the test configuration with three clients. Every credential form
(instance id in the path, a token from the token endpoint, HTTP Basic, the X-API-Key header,
``key=``) is sent to every endpoint (XYZ, WMS, WMTS KVP and REST, WCS, WFS, OGC API, the Catalog
API): the client's layer answers 200, another layer 403 and no credential 401, each refusal in
that protocol's own error format. Capabilities list exactly the caller's layers and carry its
instance id in their URLs.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlparse

import httpx
import numpy as np
import pytest
import yaml
from lxml import etree
from PIL import Image

from server.settings import Settings
from tests.conftest import serve, write_test_config

ALICE, ALICE_SECRET = "alice", "alice-oauth-secret-0123456789"
ALICE_KEY, ALICE_INSTANCE = "alice-api-key-5d1e9c0f7a2b", "a1b2c3d4-alice-instance"
ALICE_LAYERS = ["TRUE_COLOR", "NDVI_FLOAT", "RAW_B04"]
BOB_KEY, BOB_INSTANCE = "bob-api-key-77aa66bb55cc", "b0b0b0b0-bob-instance"
CAROL_KEY = "carol-api-key-rate-limited-01"
CAROL_LIMIT = 3
TOKEN_PATH = "/auth/realms/main/protocol/openid-connect/token"

OWS11, OWS20, OGC = "http://www.opengis.net/ows/1.1", "http://www.opengis.net/ows/2.0", "http://www.opengis.net/ogc"
WMS_NS, WMTS_NS = "http://www.opengis.net/wms", "http://www.opengis.net/wmts/1.0"


def client_config(directory: Path, clients: dict) -> Path:
    """The test configuration with ``clients`` added."""
    raw = yaml.safe_load(write_test_config(directory).read_text())
    raw["clients"] = clients
    path = directory / "eotiler-access.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


CLIENTS = {
    ALICE: {
        "secret": ALICE_SECRET,
        "api_keys": [ALICE_KEY],
        "instance_id": ALICE_INSTANCE,
        "layers": ALICE_LAYERS,
        "evalscripts": False,
    },
    "bob": {"api_keys": [BOB_KEY], "instance_id": BOB_INSTANCE},
    "carol": {"api_keys": [CAROL_KEY], "layers": ["TRUE_COLOR"], "rate_limit": CAROL_LIMIT},
}


@pytest.fixture(scope="module")
def closed_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    config = client_config(tmp_path_factory.mktemp("access"), CLIENTS)
    with serve(Settings(config=config, overview_cache_bytes=0)) as url:
        yield url


@pytest.fixture(scope="module")
def alice_token(closed_url: str) -> str:
    form = {"grant_type": "client_credentials", "client_id": ALICE, "client_secret": ALICE_SECRET}
    response = httpx.post(closed_url + TOKEN_PATH, data=form)
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


# --- one request per endpoint: (path, query) for a layer, and how its refusals look ---------------

TILE = "/layers/{layer}/tiles/WebMercatorQuad/11/974/666.png"  # over T29UNU


def wms(layer: str) -> tuple[str, dict[str, str]]:
    query = {"SERVICE": "WMS", "VERSION": "1.3.0", "REQUEST": "GetMap", "LAYERS": layer, "STYLES": ""}
    query |= {"CRS": "EPSG:4326", "BBOX": "53.0,-8.9,53.2,-8.6", "WIDTH": "64", "HEIGHT": "64", "FORMAT": "image/png"}
    return "/ogc/wms", query


def wmts(layer: str) -> tuple[str, dict[str, str]]:
    query = {"SERVICE": "WMTS", "VERSION": "1.0.0", "REQUEST": "GetTile", "LAYER": layer, "STYLE": "default"}
    query |= {"TILEMATRIXSET": "WebMercatorQuad", "TILEMATRIX": "11", "TILEROW": "666", "TILECOL": "974"}
    return "/ogc/wmts", query | {"FORMAT": "image/png"}


def wmts_rest(layer: str) -> tuple[str, dict[str, str]]:
    return f"/ogc/wmts/{layer}/default/default/WebMercatorQuad/11/666/974.png", {}


def wcs(layer: str) -> tuple[str, dict[str, str]]:
    query = {"SERVICE": "WCS", "VERSION": "2.0.1", "REQUEST": "GetCoverage", "COVERAGEID": layer}
    query |= {"FORMAT": "image/tiff", "SCALESIZE": "Long(32),Lat(32)"}
    return "/ogc/wcs", query | {"SUBSET": "Long(-8.9,-8.8)"}


def wfs(layer: str) -> tuple[str, dict[str, str]]:
    query = {"SERVICE": "WFS", "VERSION": "2.0.0", "REQUEST": "GetFeature", "TYPENAMES": f"eotiler:{layer}"}
    return "/ogc/wfs", query | {"COUNT": "1", "OUTPUTFORMAT": "application/json"}


def xyz(layer: str) -> tuple[str, dict[str, str]]:
    return TILE.format(layer=layer), {}


def ogcapi(layer: str) -> tuple[str, dict[str, str]]:
    return f"/collections/{layer}/map", {"bbox": "-8.9,53.0,-8.6,53.2", "width": "64", "height": "64", "f": "png"}


def ows_report(ns: str) -> Callable[[httpx.Response], str]:
    def check(response: httpx.Response) -> str:
        root = etree.fromstring(response.content)
        assert root.tag == f"{{{ns}}}ExceptionReport", response.text[:300]
        return root.findtext(f".//{{{ns}}}ExceptionText") or ""

    return check


def wms_report(response: httpx.Response) -> str:
    root = etree.fromstring(response.content)
    assert root.tag == f"{{{OGC}}}ServiceExceptionReport", response.text[:300]
    return root.findtext(f"{{{OGC}}}ServiceException") or ""


def json_detail(response: httpx.Response) -> str:
    body = response.json()
    assert set(body) == {"detail", "parameter"}, body
    return body["detail"]


ENDPOINTS = {
    "xyz": (xyz, json_detail),
    "wms": (wms, wms_report),
    "wmts": (wmts, ows_report(OWS11)),
    "wmts-rest": (wmts_rest, ows_report(OWS11)),
    "wcs": (wcs, ows_report(OWS20)),
    "wfs": (wfs, ows_report(OWS11)),
    "ogcapi": (ogcapi, json_detail),
}


def with_instance(path: str, instance: str) -> str:
    """Sentinel Hub's ``/ogc/<service>/<instance>`` for the KVP services, ``/<instance>/...`` otherwise."""
    for service in ("wms", "wmts", "wcs", "wfs"):
        if path == f"/ogc/{service}":
            return f"{path}/{instance}"
    return f"/{instance}{path}"


def credentials(form: str, token: str) -> tuple[Callable[[str], str], dict[str, str], dict[str, str]]:
    """(path rewrite, headers, extra query) of one credential form, for alice."""
    basic = base64.b64encode(f"{ALICE}:{ALICE_KEY}".encode()).decode()
    forms: dict[str, tuple[Callable[[str], str], dict[str, str], dict[str, str]]] = {
        "instance": (lambda p: with_instance(p, ALICE_INSTANCE), {}, {}),
        "bearer": (lambda p: p, {"Authorization": f"Bearer {token}"}, {}),
        "basic": (lambda p: p, {"Authorization": f"Basic {basic}"}, {}),
        "header": (lambda p: p, {"X-API-Key": ALICE_KEY}, {}),
        "key": (lambda p: p, {}, {"key": ALICE_KEY}),
    }
    return forms[form]


def is_image_with_data(response: httpx.Response, endpoint: str) -> None:
    assert response.status_code == 200, response.text[:300]
    if endpoint == "wfs":
        features = response.json()["features"]
        assert len(features) == 1 and features[0]["geometry"]["type"] in ("Polygon", "MultiPolygon")
        return
    if endpoint == "wcs":
        import rasterio

        with rasterio.open(io.BytesIO(response.content)) as src:
            assert src.crs.to_epsg() == 4326 and src.width == 32
            assert np.isfinite(src.read(1)).any()
        return
    image = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGBA"))
    assert (image[..., 3] > 0).any(), "the image has no data"


@pytest.mark.parametrize("form", ["instance", "bearer", "basic", "header", "key"])
@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_each_credential_on_each_endpoint(closed_url: str, alice_token: str, endpoint: str, form: str):
    build, report = ENDPOINTS[endpoint]
    rewrite, headers, extra = credentials(form, alice_token)
    with httpx.Client(base_url=closed_url, timeout=60) as http:
        path, query = build("TRUE_COLOR")
        is_image_with_data(http.get(rewrite(path), params=query | extra, headers=headers), endpoint)
        path, query = build("FALSE_COLOR")  # a layer alice may not use
        refused = http.get(rewrite(path), params=query | extra, headers=headers)
        assert refused.status_code == 403, refused.text[:300]
        assert "FALSE_COLOR" in report(refused)


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_no_or_bad_credential_is_401_in_the_protocol_format(closed_url: str, endpoint: str):
    build, report = ENDPOINTS[endpoint]
    path, query = build("TRUE_COLOR")
    with httpx.Client(base_url=closed_url, timeout=60) as http:
        missing = http.get(path, params=query)
        assert missing.status_code == 401 and "credentials are required" in report(missing)
        assert missing.headers["www-authenticate"].startswith("Bearer")
        wrong = http.get(path, params=query | {"key": "not-a-key-of-anyone-000"})
        assert wrong.status_code == 401 and "not valid" in report(wrong)
        assert "not-a-key-of-anyone" not in wrong.text
        if path in ("/ogc/wms", "/ogc/wmts", "/ogc/wcs", "/ogc/wfs"):
            unknown = http.get(with_instance(path, "ffffffff-no-such-instance"), params=query)
            assert unknown.status_code == 401 and "instance id" in report(unknown)


def test_catalog_api_takes_every_credential(closed_url: str, alice_token: str):
    search = "/api/v1/catalog/1.0.0/search"
    body = {"collections": ["sentinel-2-l2a"], "limit": 1}
    with httpx.Client(base_url=closed_url, timeout=60) as http:
        for form in ("bearer", "basic", "header", "key", "instance"):
            rewrite, headers, extra = credentials(form, alice_token)
            found = http.post(rewrite(search), json=body, headers=headers, params=extra)
            assert found.status_code == 200, (form, found.text[:300])
            assert len(found.json()["features"]) == 1
        refused = http.post(search, json=body)
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "COMMON_UNAUTHORIZED"


def test_public_paths_need_no_credential(closed_url: str):
    with httpx.Client(base_url=closed_url, timeout=60) as http:
        for path in ("/healthz", "/readyz", "/metrics", "/static/viewer.js"):
            assert http.get(path).status_code == 200, path


def test_request_evalscripts_are_a_client_right(closed_url: str):
    import rasterio

    script = base64.b64encode(b"B04").decode()
    path, query = wms("TRUE_COLOR")
    query |= {"FORMAT": "image/tiff"}
    with httpx.Client(base_url=closed_url, timeout=60) as http:
        refused = http.get(path, params=query | {"EVALSCRIPT": script, "key": ALICE_KEY})
        assert refused.status_code == 403 and "EVALSCRIPT" in wms_report(refused)
        tile = http.get(TILE.format(layer="TRUE_COLOR"), params={"evalscript": script, "key": ALICE_KEY})
        assert tile.status_code == 403 and tile.json()["parameter"] == "evalscript"
        # bob may: his script's pixels are the B04 layer's
        own = http.get(path, params=query | {"EVALSCRIPT": script, "key": BOB_KEY})
        layer = http.get(path, params=query | {"LAYERS": "RAW_B04", "key": BOB_KEY})
        assert own.status_code == 200 and layer.status_code == 200, own.text[:300]
        with rasterio.open(io.BytesIO(own.content)) as a, rasterio.open(io.BytesIO(layer.content)) as b:
            first, second = a.read(1), b.read(1)
        assert np.isfinite(first).any() and np.array_equal(first, second, equal_nan=True)


# --- capabilities: only the caller's layers, URLs under its instance id ----------------------------


def _wms_layers(content: bytes) -> set[str]:
    root = etree.fromstring(content)
    return {e.text for e in root.iterfind(f".//{{{WMS_NS}}}Layer/{{{WMS_NS}}}Name")}


def _hrefs(content: bytes) -> list[str]:
    root = etree.fromstring(content)
    hrefs = [v for e in root.iter() for k, v in e.attrib.items() if k.endswith("href") or k == "template"]
    return [h for h in hrefs if h.startswith("http://127.0.0.1")]


def test_capabilities_list_the_callers_layers_under_its_instance(closed_url: str, alice_token: str):
    with httpx.Client(base_url=closed_url, timeout=60) as http:
        bob_layers = {layer["id"] for layer in http.get("/layers", params={"key": BOB_KEY}).json()["layers"]}
        assert set(ALICE_LAYERS) < bob_layers and len(bob_layers) > 10
        alice = {layer["id"] for layer in http.get("/layers", headers={"X-API-Key": ALICE_KEY}).json()["layers"]}
        assert alice == set(ALICE_LAYERS)

        caps = {"SERVICE": "WMS", "REQUEST": "GetCapabilities", "VERSION": "1.3.0"}
        for rewrite, headers, extra in (credentials(f, alice_token) for f in ("instance", "bearer", "key")):
            document = http.get(rewrite("/ogc/wms"), params=caps | extra, headers=headers)
            assert document.status_code == 200
            assert _wms_layers(document.content) == set(ALICE_LAYERS)
            urls = _hrefs(document.content)
            assert urls and all(urlparse(u).path.startswith(f"/{ALICE_INSTANCE}/ogc/wms") for u in urls), urls
            assert ALICE_KEY not in document.text and ALICE_SECRET not in document.text
        # the same URL for another client: its own layers, never alice's cached document
        bob = http.get("/ogc/wms", params=caps, headers={"X-API-Key": BOB_KEY})
        assert _wms_layers(bob.content) == bob_layers
        assert all(urlparse(u).path.startswith(f"/{BOB_INSTANCE}/") for u in _hrefs(bob.content))

        wmts_caps = http.get(f"/ogc/wmts/{ALICE_INSTANCE}", params={"SERVICE": "WMTS", "REQUEST": "GetCapabilities"})
        root = etree.fromstring(wmts_caps.content)
        names = {e.text for e in root.iterfind(f".//{{{WMTS_NS}}}Layer/{{{OWS11}}}Identifier")}
        assert names == set(ALICE_LAYERS)
        resource = root.find(f".//{{{WMTS_NS}}}ResourceURL").get("template")
        assert urlparse(resource).path.startswith(f"/{ALICE_INSTANCE}/ogc/wmts/")
        # the ResourceURL works as advertised, with nothing else sent
        values = {"TileMatrixSet": "WebMercatorQuad", "TileMatrix": "11", "TileRow": "666", "TileCol": "974"}
        url = resource.format(**values, Style="default", Time="default")
        is_image_with_data(http.get(url), "wmts")

        wcs_caps = http.get("/ogc/wcs", params={"SERVICE": "WCS", "REQUEST": "GetCapabilities", "key": ALICE_KEY})
        root = etree.fromstring(wcs_caps.content)
        ids = {e.text for e in root.iter("{http://www.opengis.net/wcs/2.0}CoverageId")}
        assert ids == set(ALICE_LAYERS)
        assert all(urlparse(u).path.startswith(f"/{ALICE_INSTANCE}/ogc/wcs") for u in _hrefs(wcs_caps.content))

        wfs_caps = http.get(f"/ogc/wfs/{ALICE_INSTANCE}", params={"SERVICE": "WFS", "REQUEST": "GetCapabilities"})
        root = etree.fromstring(wfs_caps.content)
        types = {e.text.rpartition(":")[2] for e in root.iter("{http://www.opengis.net/wfs/2.0}Name")}
        assert set(ALICE_LAYERS) <= types and "FALSE_COLOR" not in types  # collections stay listed

        collections = http.get(f"/{ALICE_INSTANCE}/collections", params={"f": "json"}).json()
        assert {c["id"] for c in collections["collections"]} == set(ALICE_LAYERS)
        links = [link["href"] for c in collections["collections"] for link in c["links"]]
        assert links and all(urlparse(h).path.startswith(f"/{ALICE_INSTANCE}/") for h in links)

        tilejson = http.get("/layers/TRUE_COLOR/tilejson.json", headers={"Authorization": f"Bearer {alice_token}"})
        tile_url = tilejson.json()["tiles"][0]
        assert urlparse(tile_url).path.startswith(f"/{ALICE_INSTANCE}/layers/TRUE_COLOR/tiles/")
        filled = tile_url.replace("{z}", "11").replace("{x}", "974").replace("{y}", "666")
        is_image_with_data(http.get(filled), "xyz")


def test_rate_limit_answers_429_with_retry_after(closed_url: str):
    path, query = wms("TRUE_COLOR")
    caps = {"SERVICE": "WMS", "REQUEST": "GetCapabilities", "key": CAROL_KEY}
    with httpx.Client(base_url=closed_url, timeout=60) as http:
        statuses = [http.get("/ogc/wms", params=caps).status_code for _ in range(CAROL_LIMIT)]
        assert statuses == [200] * CAROL_LIMIT
        limited = http.get(path, params=query | {"key": CAROL_KEY})
        assert limited.status_code == 429 and "rate limit" in wms_report(limited)
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        tile = http.get(TILE.format(layer="TRUE_COLOR"), headers={"X-API-Key": CAROL_KEY})
        assert tile.status_code == 429 and "3 requests per minute" in json_detail(tile)
        # other clients are not held back by carol's limit
        bob = http.get(TILE.format(layer="TRUE_COLOR"), headers={"X-API-Key": BOB_KEY})
        assert bob.status_code == 200
        # a client's tiles are for its own cache only, never a shared proxy's
        assert bob.headers["cache-control"].startswith("private, max-age=")


def test_open_server_accepts_instance_paths(settings: Settings):
    """No clients: everything stays open, and Sentinel Hub-style URLs with any instance id work."""
    with serve(settings) as url, httpx.Client(base_url=url, timeout=60) as http:
        path, query = wms("TRUE_COLOR")
        is_image_with_data(http.get(with_instance(path, "any-instance-id"), params=query), "wms")
        is_image_with_data(http.get(with_instance(TILE.format(layer="TRUE_COLOR"), "any-id")), "xyz")
        assert http.get("/layers/FALSE_COLOR/tiles/WebMercatorQuad/11/974/666.png").status_code == 200


def test_clients_file_adds_clients_and_refuses_bad_ones(tmp_path: Path):
    from server.access.clients import with_clients_file
    from server.config import load_config
    from server.errors import ConfigError

    config = load_config(client_config(tmp_path, {ALICE: CLIENTS[ALICE]}))
    extra = tmp_path / "clients.yaml"
    extra.write_text(yaml.safe_dump({"clients": {"dave": {"api_keys": ["dave-key-0123456789abc"]}}}))
    merged = with_clients_file(config, extra)
    assert set(merged.clients) == {ALICE, "dave"}
    assert "dave-key-0123456789abc" not in repr(merged.clients["dave"])
    extra.write_text(yaml.safe_dump({"dave": {"api_keys": ["short"]}}))
    with pytest.raises(ConfigError, match="16 characters") as short:
        with_clients_file(config, extra)
    assert "short" not in str(short.value).replace("16 characters", "")
    extra.write_text(yaml.safe_dump({"dave": {"api_keys": [ALICE_KEY]}}))
    with pytest.raises(ConfigError, match="also used by alice") as shared:
        with_clients_file(config, extra)
    assert ALICE_KEY not in str(shared.value)
    extra.write_text(yaml.safe_dump({"dave": {"api_keys": ["dave-key-0123456789abc"], "layers": ["NOPE"]}}))
    with pytest.raises(ConfigError, match="unknown layer"):
        with_clients_file(config, extra)
