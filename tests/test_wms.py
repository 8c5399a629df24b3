"""WMS 1.1.1 and 1.3.0 with real clients (OWSLib, GDAL's WMS driver), schema-validated documents,
axis order, compositing, GetFeatureInfo values and one test per exception code."""

from __future__ import annotations

import base64
import io
import json
import os
from pathlib import Path

import mapproxy
import morecantile
import numpy as np
import pytest
import rasterio
import yaml
from lxml import etree
from owslib.wms import WebMapService
from PIL import Image

SCHEMAS = os.path.join(os.path.dirname(mapproxy.__file__), "test", "schemas")
T29UNU_LONLAT = (-8.9, 53.0, -8.6, 53.2)  # west, south, east, north inside the 2022 scene


def image(response) -> np.ndarray:
    assert response.status_code == 200, response.text[:500]
    return np.asarray(Image.open(io.BytesIO(response.content)).convert("RGBA")).astype(np.int32)


def getmap(client, **params):
    base = {
        "SERVICE": "WMS",
        "REQUEST": "GetMap",
        "STYLES": "",
        "FORMAT": "image/png",
        "TRANSPARENT": "TRUE",
        "WIDTH": "300",
        "HEIGHT": "200",
    }
    return client.get("/ogc/wms", params={**base, **params})


def test_capabilities_1_3_0_validate_against_schema(client):
    response = client.get("/ogc/wms", params={"SERVICE": "WMS", "REQUEST": "GetCapabilities", "VERSION": "1.3.0"})
    assert response.headers["content-type"].startswith("text/xml")
    schema = etree.XMLSchema(etree.parse(os.path.join(SCHEMAS, "wms/1.3.0/capabilities_1_3_0.xsd")))
    doc = etree.fromstring(response.content)
    assert schema.validate(doc), schema.error_log
    ns = {"w": "http://www.opengis.net/wms"}
    names = doc.xpath("//w:Layer/w:Layer/w:Name/text()", namespaces=ns)
    assert "TRUE_COLOR" in names and "NDVI" in names
    ndvi = doc.xpath("//w:Layer[w:Name='NDVI']", namespaces=ns)[0]
    bbox4326 = ndvi.xpath("w:BoundingBox[@CRS='EPSG:4326']", namespaces=ns)[0]
    south = float(ndvi.findtext("w:EX_GeographicBoundingBox/w:southBoundLatitude", namespaces=ns))
    west = float(ndvi.findtext("w:EX_GeographicBoundingBox/w:westBoundLongitude", namespaces=ns))
    # 1.3.0 EPSG:4326 is lat/lon: minx is the south latitude, miny the west longitude
    assert float(bbox4326.get("minx")) == pytest.approx(south, abs=1e-5) and south > 0 > west
    assert float(bbox4326.get("miny")) == pytest.approx(west, abs=1e-5)
    dimension = ndvi.xpath("w:Dimension[@name='time']", namespaces=ns)[0]
    assert "2022-10-05" in dimension.text and dimension.get("default") == "2022-10-05"
    assert ndvi.xpath("w:Style/w:LegendURL/w:OnlineResource", namespaces=ns)
    crs = doc.xpath("//w:Capability/w:Layer/w:CRS/text()", namespaces=ns)
    assert {"EPSG:3857", "EPSG:4326", "CRS:84", "EPSG:3035", "EPSG:32629", "EPSG:32760"} <= set(crs)


def native_crs_of_items(test_config) -> dict[str, set[str]]:
    """Layer id -> the ``proj:code`` of every item in its collection's catalogue folder, read here."""
    config = yaml.safe_load(test_config.read_text())
    found = {}
    for layer_id, layer in config["layers"].items():
        folder = Path(config["collections"][layer["collection"]]["catalogue"]["path"])
        items = [json.loads(path.read_text()) for path in folder.glob("*.json")]
        found[layer_id] = {i["properties"]["proj:code"] for i in items if "proj:code" in i.get("properties", {})}
    return found


@pytest.mark.parametrize("version", ["1.3.0", "1.1.1"])
def test_capabilities_bounding_boxes_only_in_common_and_native_crs(client, test_config, version):
    """A layer's BoundingBoxes: CRS:84, EPSG:4326, EPSG:3857 and its scenes' own CRSs, not all 124."""
    response = client.get("/ogc/wms", params={"SERVICE": "WMS", "REQUEST": "GetCapabilities", "VERSION": version})
    doc = etree.fromstring(response.content)
    ns = {"w": "http://www.opengis.net/wms"} if version == "1.3.0" else {}
    prefix, attribute = ("w:", "CRS") if version == "1.3.0" else ("", "SRS")
    advertised = doc.xpath(f"//{prefix}Capability/{prefix}Layer/{prefix}{attribute}/text()", namespaces=ns)
    assert len(advertised) >= 124  # every CRS is still offered, once, on the root layer
    native = native_crs_of_items(test_config)
    assert native["TRUE_COLOR"] >= {"EPSG:32629", "EPSG:32633", "EPSG:32635"} and native["S1_VV"] == set()
    layers = doc.xpath(f"//{prefix}Layer/{prefix}Layer", namespaces=ns)
    assert {layer.findtext(f"{prefix}Name", namespaces=ns) for layer in layers} == set(native)
    for layer in layers:
        name = layer.findtext(f"{prefix}Name", namespaces=ns)
        boxes = [box.get(attribute) for box in layer.findall(f"{prefix}BoundingBox", namespaces=ns)]
        assert len(boxes) == len(set(boxes)) and set(boxes) == {"CRS:84", "EPSG:4326", "EPSG:3857"} | native[name]
        utm = layer.xpath(f"{prefix}BoundingBox[@{attribute}='EPSG:32629']", namespaces=ns)
        if utm:  # a real UTM box: metres, not degrees
            assert float(utm[0].get("maxx")) - float(utm[0].get("minx")) > 10_000
    # 313 KB for 18 layers when every layer had a box in every CRS; about 2 KB a layer without
    assert len(response.content) < 3_000 * len(layers), len(response.content)


def test_capabilities_1_1_1_validate_against_dtd(client):
    response = client.get("/ogc/wms", params={"service": "wms", "request": "GetCapabilities", "version": "1.1.1"})
    assert response.headers["content-type"] == "application/vnd.ogc.wms_xml"
    dtd = etree.DTD(os.path.join(SCHEMAS, "wms/1.1.1/WMS_MS_Capabilities.dtd"))
    doc = etree.fromstring(response.content)
    assert dtd.validate(doc), dtd.error_log
    box = doc.xpath("//Layer[Name='NDVI']/BoundingBox[@SRS='EPSG:4326']")[0]
    assert float(box.get("minx")) < 0  # 1.1.1 is always lon/lat


@pytest.mark.parametrize("version", ["1.1.1", "1.3.0"])
def test_owslib_reads_capabilities_and_map(live_url, version):
    service = WebMapService(f"{live_url}/ogc/wms", version=version)
    assert "TRUE_COLOR" in service.contents
    layer = service["NDVI"]
    assert "EPSG:3857" in layer.crsOptions
    srs = "EPSG:4326"
    bbox = T29UNU_LONLAT
    result = service.getmap(
        layers=["TRUE_COLOR"], styles=[""], srs=srs, bbox=bbox, size=(300, 200), format="image/png", transparent=True
    )
    pixels = np.asarray(Image.open(io.BytesIO(result.read())).convert("RGBA"))
    assert pixels.shape == (200, 300, 4) and (pixels[..., 3] == 255).mean() > 0.95 and pixels[..., :3].std() > 5


def test_axis_order_gives_identical_pixels(client):
    w, s, e, n = T29UNU_LONLAT
    a = image(getmap(client, VERSION="1.1.1", SRS="EPSG:4326", BBOX=f"{w},{s},{e},{n}", LAYERS="SWIR"))
    b = image(getmap(client, VERSION="1.3.0", CRS="EPSG:4326", BBOX=f"{s},{w},{n},{e}", LAYERS="SWIR"))
    c = image(getmap(client, VERSION="1.3.0", CRS="CRS:84", BBOX=f"{w},{s},{e},{n}", LAYERS="SWIR"))
    assert a[..., 3].mean() > 200 and a[..., :3].std() > 5
    assert np.array_equal(a, b) and np.array_equal(a, c)


def test_getmap_3857_matches_xyz_tile(client):
    tms = morecantile.tms.get("WebMercatorQuad")
    tile = tms.tile(-8.77, 53.11, 12)
    b = tms.xy_bounds(tile)
    wms = image(
        getmap(
            client,
            VERSION="1.3.0",
            CRS="EPSG:3857",
            BBOX=f"{b.left},{b.bottom},{b.right},{b.top}",
            LAYERS="TRUE_COLOR",
            WIDTH="256",
            HEIGHT="256",
        )
    )
    xyz = image(client.get(f"/layers/TRUE_COLOR/tiles/WebMercatorQuad/{tile.z}/{tile.x}/{tile.y}.png"))
    assert np.array_equal(wms, xyz)
    alias = getmap(
        client,
        VERSION="1.1.1",
        SRS="EPSG:900913",
        BBOX=f"{b.left},{b.bottom},{b.right},{b.top}",
        LAYERS="TRUE_COLOR",
        WIDTH="256",
        HEIGHT="256",
    )
    assert np.array_equal(image(alias), xyz)  # the old Google code is web mercator too


def test_gdal_wms_driver_reads_real_pixels(live_url, tmp_path):
    xml = f"""<GDAL_WMS><Service name="WMS"><Version>1.1.1</Version>
      <ServerUrl>{live_url}/ogc/wms?</ServerUrl><SRS>EPSG:4326</SRS><ImageFormat>image/png</ImageFormat>
      <Layers>SWIR</Layers><Transparent>TRUE</Transparent></Service>
      <DataWindow><UpperLeftX>-8.9</UpperLeftX><UpperLeftY>53.2</UpperLeftY><LowerRightX>-8.6</LowerRightX>
      <LowerRightY>53.0</LowerRightY><SizeX>600</SizeX><SizeY>400</SizeY></DataWindow>
      <BandsCount>4</BandsCount><BlockSizeX>256</BlockSizeX><BlockSizeY>256</BlockSizeY>
      <Cache><Path>{tmp_path}/gdalcache</Path></Cache></GDAL_WMS>"""
    path = tmp_path / "swir.xml"
    path.write_text(xml)
    with rasterio.open(path) as src:
        assert src.crs.to_epsg() == 4326 and (src.width, src.height) == (600, 400)
        data = src.read(window=((100, 300), (100, 400)))
    assert data[3].mean() > 200 and data[:3].std() > 5


def test_several_layers_are_composited_in_order(client):
    w, s, e, n = T29UNU_LONLAT
    params = {"VERSION": "1.1.1", "SRS": "EPSG:4326", "BBOX": f"{w},{s},{e},{n}"}
    top = image(getmap(client, LAYERS="TRUE_COLOR_CLOUDMASKED", **params))
    bottom = image(getmap(client, LAYERS="SCL", **params))
    both = image(getmap(client, LAYERS="SCL,TRUE_COLOR_CLOUDMASKED", STYLES=",", **params))
    visible = top[..., 3] == 255
    assert visible.any() and (~visible & (bottom[..., 3] == 255)).any()
    assert np.array_equal(both[visible][:, :3], top[visible][:, :3])
    under = ~visible & (bottom[..., 3] == 255)
    assert np.array_equal(both[under][:, :3], bottom[under][:, :3])


def test_opaque_map_uses_bgcolor(client):
    response = getmap(
        client,
        VERSION="1.3.0",
        CRS="CRS:84",
        BBOX="-9.2,52.9,-8.8,53.1",
        LAYERS="TRUE_COLOR",
        TRANSPARENT="FALSE",
        BGCOLOR="0x336699",
        FORMAT="image/jpeg",
    )
    assert response.headers["content-type"] == "image/jpeg"
    pixels = image(response)
    assert np.abs(pixels[5, 5, :3] - [0x33, 0x66, 0x99]).max() <= 3  # west of the scene: no data


FEATURE_INFO = {  # GetFeatureInfo at the middle pixel of a 300 x 200 map of the whole T29UNU scene
    "SERVICE": "WMS",
    "REQUEST": "GetFeatureInfo",
    "VERSION": "1.3.0",
    "CRS": "CRS:84",
    "BBOX": ",".join(str(v) for v in T29UNU_LONLAT),
    "WIDTH": "300",
    "HEIGHT": "200",
    "LAYERS": "RAW_NDMI",
    "QUERY_LAYERS": "RAW_NDMI",
    "STYLES": "",
    "FORMAT": "image/png",
    "I": "150",
    "J": "100",
    "INFO_FORMAT": "application/json",
}


def test_get_feature_info_reports_values_and_scene(client):
    w, s, e, n = T29UNU_LONLAT
    params = dict(FEATURE_INFO)
    body = client.get("/ogc/wms", params=params).json()
    props = body["features"][0]["properties"]
    assert props["scene"]["id"].startswith("S2A_MSIL2A_20221005") and props["scene"]["datetime"].startswith("2022")
    b8a, b11 = props["bands"]["B8A"], props["bands"]["B11"]
    assert props["value"][0] == pytest.approx((b8a - b11) / (b8a + b11), abs=1e-6)
    # the same pixel read independently from the JP2 with rasterio
    from tests.test_pixels import T29UNU, band_file, refl

    x, y = w + (e - w) * 150.5 / 300, n - (n - s) * 100.5 / 200
    with rasterio.open(band_file(T29UNU, "B8A", 60)) as src:
        xs, ys = rasterio.warp.transform("EPSG:4326", src.crs, [x], [y])
        row, col = src.index(xs[0], ys[0])
        dn = src.read(1, window=((row, row + 1), (col, col + 1)))[0, 0]
    assert b8a == pytest.approx(refl(float(dn), -1000), abs=1e-6)
    for fmt, marker in (("text/plain", "B8A ="), ("text/html", "<table>"), ("application/vnd.ogc.gml", "<B8A>")):
        text = client.get("/ogc/wms", params={**params, "INFO_FORMAT": fmt}).text
        assert marker in text and "S2A_MSIL2A_20221005" in text
    v111 = {**params, "VERSION": "1.1.1", "SRS": "EPSG:4326", "X": "150", "Y": "100"}
    del v111["I"], v111["J"], v111["CRS"]
    assert client.get("/ogc/wms", params=v111).json()["features"][0]["properties"]["bands"]["B8A"] == b8a


def test_get_feature_info_reports_what_the_request_evalscript_computes(client):
    """A client showing a map made with EVALSCRIPT gets that script's value at the clicked pixel."""
    params = dict(FEATURE_INFO)
    script = (
        "//VERSION=3\nfunction setup() { return {input: ['B8A', 'B11', 'dataMask'],"
        " output: {bands: 2, sampleType: 'FLOAT32'}}; }\n"
        "function evaluatePixel(s) { return [s.B11 * 3 - s.B8A, s.dataMask]; }"
    )
    encoded = base64.b64encode(script.encode()).decode()
    props = client.get("/ogc/wms", params={**params, "EVALSCRIPT": encoded}).json()["features"][0]["properties"]
    b8a, b11 = props["bands"]["B8A"], props["bands"]["B11"]
    assert len(props["value"]) == 2 and props["value"][1] == 1.0
    assert props["value"][0] == pytest.approx(b11 * 3 - b8a, abs=1e-6)
    default = client.get("/ogc/wms", params=params).json()["features"][0]["properties"]
    assert default["value"][0] == pytest.approx((b8a - b11) / (b8a + b11), abs=1e-6)  # the layer's own script
    refused = client.get("/ogc/wms", params={**params, "EVALSCRIPT": "%%%"})
    assert refused.status_code == 400 and b"EVALSCRIPT" in refused.content


def test_get_legend_graphic(client):
    response = client.get(
        "/ogc/wms",
        params={
            "SERVICE": "WMS",
            "REQUEST": "GetLegendGraphic",
            "LAYER": "NDVI",
            "FORMAT": "image/png",
            "VERSION": "1.3.0",
        },
    )
    assert response.headers["content-type"] == "image/png" and Image.open(io.BytesIO(response.content)).width > 50


def test_vendor_parameters_and_lowercase_keys_are_accepted(client):
    w, s, e, n = T29UNU_LONLAT
    response = client.get(
        "/ogc/wms",
        params={
            "service": "WMS",
            "request": "GetMap",
            "version": "1.1.1",
            "layers": "TRUE_COLOR",
            "styles": "",
            "format": "image/jpeg",
            "transparent": "false",
            "srs": "EPSG:4326",
            "bbox": f"{w},{s},{e},{n}",
            "width": "256",
            "height": "256",
            "DPI": "96",
            "MAP_RESOLUTION": "96",
            "FORMAT_OPTIONS": "dpi:96",
            "TILED": "true",
            "time": "2022-10",
            "maxcc": "80",
            "priority": "leastCC",
        },
    )
    assert response.headers["content-type"] == "image/jpeg" and image(response)[..., :3].std() > 5
    assert "T29UNU" in response.headers["x-eotiler-scenes"]


def exception_code(response, version="1.3.0") -> str:
    doc = etree.fromstring(response.content)
    if version == "1.3.0":
        schema = etree.XMLSchema(etree.parse(os.path.join(SCHEMAS, "wms/1.3.0/exceptions_1_3_0.xsd")))
        assert schema.validate(doc), schema.error_log
        return doc[0].get("code")
    dtd = etree.DTD(os.path.join(SCHEMAS, "wms/1.1.1/exception_1_1_1.dtd"))
    assert dtd.validate(doc), dtd.error_log
    return doc[0].get("code")


GOOD = {
    "SERVICE": "WMS",
    "REQUEST": "GetMap",
    "VERSION": "1.3.0",
    "LAYERS": "NDVI",
    "STYLES": "",
    "CRS": "EPSG:3857",
    "BBOX": "-1000000,6900000,-900000,7000000",
    "WIDTH": "256",
    "HEIGHT": "256",
    "FORMAT": "image/png",
}
BAD = [
    ({"FORMAT": "image/gif"}, "InvalidFormat"),
    ({"CRS": "EPSG:2154"}, "InvalidCRS"),
    ({"LAYERS": "NOPE"}, "LayerNotDefined"),
    ({"STYLES": "fancy"}, "StyleNotDefined"),
    ({"TIME": "last tuesday"}, "InvalidDimensionValue"),
    ({"LAYERS": ""}, "MissingParameterValue"),
    ({"BBOX": "1,2,3"}, "InvalidParameterValue"),
    ({"BBOX": "5,5,1,1"}, "InvalidParameterValue"),
    ({"BBOX": "nan,1,2,3"}, "InvalidParameterValue"),
    ({"WIDTH": "5000"}, "InvalidParameterValue"),
    ({"WIDTH": "-1"}, "InvalidParameterValue"),
    ({"MAXCC": "x"}, "InvalidParameterValue"),
    ({"PRIORITY": "best"}, "InvalidParameterValue"),
    ({"REQUEST": "DescribeEverything"}, "OperationNotSupported"),
    (
        {"REQUEST": "GetFeatureInfo", "QUERY_LAYERS": "NDVI", "I": "999", "J": "0", "INFO_FORMAT": "text/plain"},
        "InvalidPoint",
    ),
    ({"REQUEST": "GetFeatureInfo", "QUERY_LAYERS": "NDVI", "I": "1", "J": "1", "INFO_FORMAT": "x/y"}, "InvalidFormat"),
]


@pytest.mark.parametrize(("change", "code"), BAD)
def test_exception_codes_1_3_0(client, change, code):
    params = {k: v for k, v in {**GOOD, **change}.items()}
    response = client.get("/ogc/wms", params=params)
    assert 400 <= response.status_code < 500
    assert exception_code(response) == code


def test_exception_1_1_1_uses_invalid_srs(client):
    params = {**GOOD, "VERSION": "1.1.1", "SRS": "EPSG:2154"}
    del params["CRS"]
    response = client.get("/ogc/wms", params=params)
    assert response.headers["content-type"] == "application/vnd.ogc.se_xml"
    assert exception_code(response, "1.1.1") == "InvalidSRS"


def test_inimage_and_blank_exceptions(client):
    inimage = client.get("/ogc/wms", params={**GOOD, "LAYERS": "NOPE", "EXCEPTIONS": "INIMAGE"})
    pixels = image(inimage)
    assert pixels.shape == (256, 256, 4) and (pixels[..., 3] > 0).any()  # the message is drawn
    blank = client.get(
        "/ogc/wms",
        params={**GOOD, "LAYERS": "NOPE", "EXCEPTIONS": "application/vnd.ogc.se_blank", "TRANSPARENT": "TRUE"},
    )
    assert (image(blank)[..., 3] == 0).all()


def test_generic_ogc_endpoint_dispatches_on_service(client):
    assert client.get("/ogc", params={"SERVICE": "WMS", "REQUEST": "GetCapabilities"}).status_code == 200
    wfs = client.get("/ogc", params={"SERVICE": "WFS", "REQUEST": "GetCapabilities"})
    assert etree.fromstring(wfs.content).tag == "{http://www.opengis.net/wfs/2.0}WFS_Capabilities"
    response = client.get("/ogc", params={"SERVICE": "WPS", "REQUEST": "GetCapabilities"})
    assert exception_code(response) == "InvalidParameterValue"
