"""WFS 2.0.0 footprints read by three real clients: sentinelhub-py, OWSLib and GDAL's WFS driver.

Expected values come from the sample's STAC items read here as JSON: ids, dates, cloud cover and
footprints (compared with shapely), ordered newest first as Sentinel Hub's WFS lists them.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from shutil import which

import httpx
import numpy as np
import pytest
import shapely.geometry
from lxml import etree
from owslib.wfs import WebFeatureService as OwsWfs
from pyproj import Transformer
from sentinelhub import CRS, BBox, DataCollection, SHConfig, WebFeatureService

from tests.support.sentinelhub_client import sentinel2_l2a_at

SAMPLE = Path(__file__).resolve().parents[1] / "sample" / "stac"
NS = {
    "wfs": "http://www.opengis.net/wfs/2.0",
    "gml": "http://www.opengis.net/gml/3.2",
    "ows": "http://www.opengis.net/ows/1.1",
    "fes": "http://www.opengis.net/fes/2.0",
    "xsd": "http://www.w3.org/2001/XMLSchema",
    "e": "urn:x-eotiler:wfs",
}


def items(collection: str) -> list[dict]:
    docs = [json.loads(p.read_text()) for p in sorted((SAMPLE / collection).glob("*.json"))]
    docs = [d for d in docs if d.get("type") == "Feature"]
    return sorted(docs, key=lambda d: (d["properties"]["datetime"], d["id"]), reverse=True)


def shape(doc: dict) -> shapely.geometry.base.BaseGeometry:
    return shapely.geometry.shape(doc["geometry"])


@pytest.fixture(scope="module")
def sh_config(live_url: str) -> Iterator[SHConfig]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
        yield SHConfig(
            sh_base_url=live_url,
            sh_token_url=live_url + "/auth/realms/main/protocol/openid-connect/token",
            sh_client_id="any",
            sh_client_secret="any",
            instance_id="my-instance-id",
            max_wfs_records_per_query=2,  # every answer below is several pages
        )


def l2a(config: SHConfig) -> DataCollection:
    """Sentinel-2 L2A served at ``sh_base_url``, as sentinelhub-py's CDSE examples define it."""
    return sentinel2_l2a_at(config.sh_base_url)


def test_sentinelhub_footprints_dates_and_cloud_cover(sh_config: SHConfig):
    expected = [i for i in items("sentinel-2-l2a") if i["properties"]["eo:cloud_cover"] <= 30]
    assert 3 <= len(expected) < len(items("sentinel-2-l2a"))
    world = BBox((-179, -85, 179, 85), crs=CRS.WGS84)
    wfs = WebFeatureService(
        world, ("2015-01-01", "2030-12-31"), data_collection=l2a(sh_config), maxcc=0.3, config=sh_config
    )
    found = list(wfs)
    assert [f["properties"]["id"] for f in found] == [i["id"] for i in expected]  # newest first, pages of 2
    assert [f["properties"]["cloudCoverage"] for f in found] == [i["properties"]["eo:cloud_cover"] for i in expected]
    times = [
        datetime.fromisoformat(i["properties"]["datetime"].replace("Z", "")).replace(microsecond=0) for i in expected
    ]
    assert wfs.get_dates() == times
    for got, want in zip(wfs.get_geometries(), expected, strict=True):
        assert got.geom_type == "MultiPolygon" and got.equals(shape(want))
    assert all(f["properties"]["path"].startswith("s3://eodata/Sentinel-2/") for f in found)
    assert all(f["properties"]["path"].endswith(".SAFE") for f in found)


def test_sentinelhub_bbox_is_latitude_first_and_filters_by_footprint(sh_config: SHConfig):
    target = next(i for i in items("sentinel-2-l2a") if "T29UNU" in i["id"])
    point = shape(target).representative_point()
    box = point.buffer(0.02).bounds
    expected = [i["id"] for i in items("sentinel-2-l2a") if shape(i).intersects(shapely.geometry.box(*box))]
    wfs = WebFeatureService(
        BBox(box, crs=CRS.WGS84), ("2015-01-01", "2030-12-31"), data_collection=l2a(sh_config), config=sh_config
    )
    assert [f["properties"]["id"] for f in wfs] == expected and target["id"] in expected
    # the same box in Web Mercator (x/y): the same scenes
    to_3857 = Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True)
    merc = BBox(to_3857.transform_bounds(*box), crs=CRS.POP_WEB)
    in_merc = WebFeatureService(merc, ("2015-01-01", "2030-12-31"), data_collection=l2a(sh_config), config=sh_config)
    assert [f["properties"]["id"] for f in in_merc] == expected
    interval = WebFeatureService(
        BBox(box, crs=CRS.WGS84), ("2022-10-05", "2022-10-05"), data_collection=l2a(sh_config), config=sh_config
    )
    assert [f["properties"]["date"] for f in interval] == [
        i["properties"]["datetime"][:10]
        for i in items("sentinel-2-l2a")
        if i["id"] in expected and "20221005" in i["id"]
    ]


def test_owslib_capabilities_and_gml(live_url: str):
    wfs = OwsWfs(live_url + "/ogc/wfs", version="2.0.0")
    assert {"eotiler:TRUE_COLOR", "eotiler:sentinel-2-l2a", "eotiler:sentinel-1-grd"} <= set(wfs.contents)
    l2a = items("sentinel-2-l2a")
    west, south, east, north = wfs.contents["eotiler:sentinel-2-l2a"].boundingBoxWGS84
    assert west == pytest.approx(min(i["bbox"][0] for i in l2a), abs=1e-5)
    assert north == pytest.approx(max(i["bbox"][3] for i in l2a), abs=1e-5)
    described = wfs.get_schema("eotiler:TRUE_COLOR")  # OWSLib reads DescribeFeatureType
    assert described["geometry"].endswith("MultiPolygon") and described["geometry_column"] == "geometry"
    assert described["properties"]["cloudCoverage"] == "double" and described["properties"]["date"] == "date"
    params = {"SERVICE": "WFS", "VERSION": "2.0.0", "REQUEST": "DescribeFeatureType", "TYPENAMES": "eotiler:TRUE_COLOR"}
    schema = etree.fromstring(httpx.get(live_url + "/ogc/wfs", params=params).content)
    assert schema.get("targetNamespace") == NS["e"]
    names = [e.get("name") for e in schema.findall(".//xsd:sequence/xsd:element", NS)]
    assert names == ["id", "date", "time", "cloudCoverage", "path", "orbitDirection", "geometry"]
    body = wfs.getfeature(typename=["eotiler:TRUE_COLOR"], maxfeatures=3, startindex=2).read()
    root = etree.fromstring(body)
    assert root.tag == f"{{{NS['wfs']}}}FeatureCollection"
    assert root.get("numberMatched") == str(len(l2a)) and root.get("numberReturned") == "3"
    members = root.findall("wfs:member", NS)
    assert [m.findtext("e:TRUE_COLOR/e:id", namespaces=NS) for m in members] == [i["id"] for i in l2a[2:5]]
    gml_ids = [m.find("e:TRUE_COLOR", NS).get(f"{{{NS['gml']}}}id") for m in members]
    assert len(set(gml_ids)) == 3 and all(g.startswith("TRUE_COLOR.") for g in gml_ids)
    for member, item in zip(members, l2a[2:5], strict=True):
        surface = member.find(".//gml:MultiSurface", NS)
        assert surface.get("srsName") == "urn:ogc:def:crs:EPSG::4326"
        assert surface.get(f"{{{NS['gml']}}}id") and surface.find("gml:surfaceMember/gml:Polygon", NS).get(
            f"{{{NS['gml']}}}id"
        )
        numbers = [
            float(v) for v in member.findtext(".//gml:exterior/gml:LinearRing/gml:posList", namespaces=NS).split()
        ]
        ring = [(numbers[k + 1], numbers[k]) for k in range(0, len(numbers), 2)]  # lat lon -> lon lat
        assert ring[0] == ring[-1]
        assert shapely.geometry.Polygon(ring).equals(shape(item))
        assert member.findtext(".//e:date", namespaces=NS) == item["properties"]["datetime"][:10]
        assert float(member.findtext(".//e:cloudCoverage", namespaces=NS)) == item["properties"]["eo:cloud_cover"]


@pytest.mark.skipif(which("ogr2ogr") is None, reason="GDAL's command line tools (Debian gdal-bin) are not installed")
def test_gdal_wfs_driver_reads_every_footprint(live_url: str):
    out = subprocess.run(
        ["ogr2ogr", "-f", "GeoJSON", "/vsistdout/", f"WFS:{live_url}/ogc/wfs", "eotiler:sentinel-1-grd"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    doc = json.loads(out.stdout)
    s1 = items("sentinel-1-grd")
    assert [f["properties"]["id"] for f in doc["features"]] == [i["id"] for i in s1]
    for feature, item in zip(doc["features"], s1, strict=True):
        # GDAL swapped GML's lat/lon back; its GeoJSON rounds the last digits
        assert shapely.geometry.shape(feature["geometry"]).symmetric_difference(shape(item)).area < 1e-12
        assert feature["properties"]["date"].replace("/", "-") == item["properties"]["datetime"][:10]
    listed = subprocess.run(
        ["ogrinfo", "-ro", "-so", f"WFS:{live_url}/ogc/wfs"], capture_output=True, text=True, timeout=120
    )
    assert "eotiler:TRUE_COLOR" in listed.stdout and "eotiler:sentinel-2-l2a" in listed.stdout


def test_json_paging_srs_and_the_ogc_endpoint(client: httpx.Client):
    l2a = items("sentinel-2-l2a")
    base = {
        "SERVICE": "WFS",
        "VERSION": "2.0.0",
        "REQUEST": "GetFeature",
        "TYPENAMES": "DSS2",
        "OUTPUTFORMAT": "application/json",
    }
    seen = []
    for start in range(0, len(l2a) + 3, 3):
        page = client.get("/ogc", params={**base, "COUNT": "3", "STARTINDEX": str(start)}).json()
        assert page["numberMatched"] == len(l2a)
        seen += [f["properties"]["id"] for f in page["features"]]
    assert seen == [i["id"] for i in l2a]
    merc = client.get("/ogc/wfs", params={**base, "SRSNAME": "EPSG:3857", "COUNT": "1"}).json()
    to_4326 = Transformer.from_crs("EPSG:3857", "EPSG:4326", always_xy=True)
    back = shapely.transform(
        shapely.geometry.shape(merc["features"][0]["geometry"]),
        lambda xy: np.column_stack(to_4326.transform(xy[:, 0], xy[:, 1])),
    )
    assert back.geom_type == "MultiPolygon" and back.geoms[0].equals_exact(shape(l2a[0]), tolerance=1e-7)
    assert merc["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::3857"
    hits = etree.fromstring(
        client.get(
            "/ogc/wfs", params={**base, "OUTPUTFORMAT": "application/gml+xml; version=3.2", "RESULTTYPE": "hits"}
        ).content
    )
    assert hits.get("numberMatched") == str(len(l2a)) and hits.get("numberReturned") == "0"
    cloudy = client.get("/ogc/wfs", params={**base, "MAXCC": "10"}).json()
    assert [f["properties"]["id"] for f in cloudy["features"]] == [
        i["id"] for i in l2a if i["properties"]["eo:cloud_cover"] <= 10
    ]


def test_capabilities_structure(client: httpx.Client):
    root = etree.fromstring(client.get("/ogc", params={"SERVICE": "WFS", "REQUEST": "GetCapabilities"}).content)
    assert root.tag == f"{{{NS['wfs']}}}WFS_Capabilities" and root.get("version") == "2.0.0"
    order = [etree.QName(child).localname for child in root]
    assert order == ["ServiceIdentification", "OperationsMetadata", "FeatureTypeList", "Filter_Capabilities"]
    operations = {o.get("name") for o in root.findall("ows:OperationsMetadata/ows:Operation", NS)}
    assert operations == {"GetCapabilities", "DescribeFeatureType", "GetFeature"}
    constraints = {
        c.get("name"): c.findtext("ows:DefaultValue", namespaces=NS)
        for c in root.findall("ows:OperationsMetadata/ows:Constraint", NS)
    }
    assert constraints["ImplementsBasicWFS"] == "TRUE" and constraints["ImplementsResultPaging"] == "TRUE"
    for feature in root.findall("wfs:FeatureTypeList/wfs:FeatureType", NS):
        assert [etree.QName(c).localname for c in feature][:3] == ["Name", "Title", "DefaultCRS"]
        assert feature.findtext("wfs:DefaultCRS", namespaces=NS) == "urn:ogc:def:crs:EPSG::4326"
    assert root.find("fes:Filter_Capabilities/fes:Conformance/fes:Constraint", NS) is not None


def test_errors_are_ows_reports(client: httpx.Client):
    base = {"SERVICE": "WFS", "VERSION": "2.0.0", "REQUEST": "GetFeature"}
    for params, code, locator in (
        (base, "MissingParameterValue", "TYPENAMES"),
        ({**base, "TYPENAMES": "NOPE"}, "InvalidParameterValue", "TYPENAMES"),
        ({**base, "TYPENAMES": "DSS2", "BBOX": "1,2,3"}, "InvalidParameterValue", "BBOX"),
        ({**base, "TYPENAMES": "DSS2", "VERSION": "1.1.0"}, "InvalidParameterValue", "VERSION"),
        ({**base, "REQUEST": "Transaction"}, "OperationNotSupported", "REQUEST"),
    ):
        response = client.get("/ogc/wfs", params=params)
        assert response.status_code == 400, response.text
        root = etree.fromstring(response.content)
        assert root.tag == f"{{{NS['ows']}}}ExceptionReport" and root.get("version") == "2.0.0"
        exception = root.find("ows:Exception", NS)
        assert (exception.get("exceptionCode"), exception.get("locator")) == (code, locator)
