"""Fixtures for tests that read eodata over real S3 and STAC API servers (see ``tests/test_eodata_s3.py``).

Registered as a pytest plugin by ``tests/conftest.py``; each fixture is module-scoped, so every test
module that uses them starts its own servers (``--dist loadfile`` keeps a module on one worker).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from server.catalog.layers import LayerRegistry
from server.config import load_config
from server.pipeline import Pipeline
from server.settings import Settings
from tests.conftest import EODATA, SAMPLE, serve, write_test_config
from tests.support.eodata_fixtures import build_request_fixture, build_split
from tests.support.s3_server import S3Server
from tests.support.stac_api import StacApi

S2_ITEMS = sorted((SAMPLE / "stac/sentinel-2-l2a").glob("S2*.json"))
MOSAIC_ITEMS = sorted((SAMPLE / "stac/sentinel-2-global-mosaics").glob("Sentinel*.json"))
S1_ITEMS = sorted((SAMPLE / "stac/sentinel-1-grd").glob("S1*.json"))


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("eodata-fixtures")
    split = build_split(root / "eodata", root / "items/split")
    requests = build_request_fixture(root / "eodata", root / "items/requests")
    # A broken collection: a good granule, a newer one whose file is missing, one pointing outside.
    good = (root / "items/split" / f"{split.ids['A']}.json").read_text()
    broken = root / "items/broken"
    broken.mkdir()
    (broken / "good.json").write_text(good)
    missing = good.replace(split.ids["A"], "MISSING_PRODUCT").replace("2023-01-02", "2023-01-03")
    missing = missing.replace("T29UNU_20230102T115411_B04_60m.jp2", "T29UNU_20230102T115411_B04_60m_gone.jp2")
    (broken / "missing.json").write_text(missing)
    outside = good.replace(split.ids["A"], "OUTSIDE_PRODUCT").replace("2023-01-02", "2023-01-04")
    outside = outside.replace('"s3://eodata/', '"s3://other-bucket/')
    (broken / "outside.json").write_text(outside)
    (root / "items/dead").mkdir()
    (root / "items/dead/missing.json").write_text(missing)
    return {"root": root, "split": split, "requests": requests}


def eodata_s3(tree: dict) -> Iterator[S3Server]:
    """An S3 server holding the sample and the derived fixtures as bucket ``eodata``, stopped after use."""
    server = S3Server(EODATA, tree["root"] / "eodata")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def s3(tree: dict) -> Iterator[S3Server]:
    yield from eodata_s3(tree)


@pytest.fixture(scope="module")
def stac(tree: dict) -> Iterator[StacApi]:
    items = tree["root"] / "items"
    api = StacApi(
        {
            "sentinel-2-l2a": S2_ITEMS,
            "sentinel-2-global-mosaics": MOSAIC_ITEMS,
            "sentinel-1-grd": S1_ITEMS,
            "s2-split": sorted((items / "split").glob("*.json")),
            "s2-requests": sorted((items / "requests").glob("*.json")),
            "s2-broken": sorted((items / "broken").glob("*.json")),
            "s2-dead": sorted((items / "dead").glob("*.json")),
        }
    )
    yield api
    api.stop()


def s3_config(directory: Path, stac_url: str) -> Path:
    """The test configuration with every collection behind the STAC API and /vsis3/eodata."""
    raw = yaml.safe_load(write_test_config(directory).read_text())
    s2 = raw["collections"]["sentinel-2-l2a"]
    for cid, collection in list(raw["collections"].items()):
        collection["catalogue"] = {"type": "stac-api", "url": stac_url, "collection": cid}
        collection["data_root"] = "/vsis3/eodata"
    for cid in ("s2-split", "s2-requests", "s2-broken", "s2-dead"):
        raw["collections"][cid] = {
            **s2,
            "title": cid,
            "catalogue": {"type": "stac-api", "url": stac_url, "collection": cid},
            "data_root": "/vsis3/eodata",
        }
    for lid, cid in (("SPLIT", "s2-split"), ("REQ", "s2-requests"), ("BROKEN", "s2-broken"), ("DEAD", "s2-dead")):
        raw["layers"][f"{lid}_B04"] = {"title": lid, "collection": cid, "expression": "B04", "units": "DN"}
    path = directory / "eotiler-s3.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def s3_settings(config: Path, s3: S3Server, **extra: object) -> Settings:
    values: dict = {
        "config": config,
        "s3_endpoint": s3.endpoint,
        "s3_https": False,
        "s3_virtual_hosting": False,
        "s3_region": "us-east-1",
        "s3_access_key_id": "test-key",
        "s3_secret_access_key": "test-secret",
        "cache_memory_bytes": 0,  # every request reaches S3: these tests count reads
        "overview_cache_bytes": 0,  # ...and read the files themselves, unless a test says otherwise
        "jp2_index_dir": config.parent / "jp2-index",  # tile-part indexes of this module's objects only
        **extra,
    }
    return Settings(**values)


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory, stac: StacApi) -> Path:
    return s3_config(tmp_path_factory.mktemp("s3-config"), stac.url)


@pytest.fixture(scope="module")
def pipe(config: Path, s3: S3Server) -> Iterator[Pipeline]:
    settings = s3_settings(config, s3)
    pipeline = Pipeline(LayerRegistry(load_config(config), settings), settings)
    yield pipeline
    pipeline.close()


@pytest.fixture(scope="module")
def s3_client(config: Path, s3: S3Server) -> Iterator[httpx.Client]:
    with serve(s3_settings(config, s3)) as url, httpx.Client(base_url=url, timeout=60) as http:
        yield http
