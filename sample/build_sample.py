"""Rebuild the bundled sample from ``../shared/data`` (run from the project root).

Why a script rather than a hand copy: the sample must stay a faithful subset of the shared
miniature eodata tree (same keys as the real ``s3://eodata`` bucket, same STAC item shape), and
anyone must be able to regenerate it and see exactly what was left out.

What is kept: every Sentinel-2 L2A product (T29UNU 2022, baseline 04.00, with SCL at 20 m and
60 m; the BigEarthNet-based 2017/2018 products of baselines 02.05/02.06 and 05.00) and the
Global-Mosaics COG, and the Sentinel-1 GRD measurement TIFFs (georeferenced by GCPs only).
What is dropped: AOT, WVP, TCI and QI_DATA rasters (no layer uses them). STAC items are pruned
to the assets whose files are bundled. A granule's ``MTD_TL.xml`` is kept (and named by a
``granule_metadata`` asset, as CDSE items name it) only when it holds real sun and viewing angle
grids: T29UNU's. The BigEarthNet-based products' tile metadata is constructed and has none.

The complete scene (every L2A band plus SCL in one product, for the scripts that combine B08
with SCL) is built here from the real Earth Search product
``S2A_MSIL2A_20200219T112111_N0214_R037_T29RKH_20200219T123947`` (Western Sahara): its COGs as
downsampled by the rio-tiler-pds authors (B02/B03/B04/B08 at 100 m, B05/B06/B07/B8A/B11/B12 and
SCL at 200 m, B01/B09 at 600 m, a 50.4 km crop) are written losslessly as JPEG2000 into the
CDSE SAFE layout, with asset keys that state the real resolution (``B04_100m``), and its item
is rewritten in the CDSE item shape from the real Earth Search properties. Pixels are real and
unchanged; the file names, ``R100m``-style folders and the granule folder name (from the real
datastrip and absolute orbit) are constructed. There is no tile metadata for it, so no angles.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import rasterio
from rasterio.warp import transform, transform_bounds

SKIP_ASSET_PREFIXES = ("AOT_", "WVP_", "TCI_", "CLD_", "SNW_")
COLLECTIONS = ("sentinel-2-l2a", "sentinel-2-global-mosaics", "sentinel-1-grd")
ANGLES_MARKER = b"<Sun_Angles_Grid>"  # tile metadata with real angle grids (ESA's, not constructed)

RKH_SOURCE = "sources/s2_l2a_29RKH_20200219_earthsearch_cogs_downsampled"
RKH_ITEM = "S2A_29RKH_20200219_0_L2A.json"
RKH_PRODUCT = "S2A_MSIL2A_20200219T112111_N0214_R037_T29RKH_20200219T123947"
# L2A_T<tile>_A<absolute orbit>_<datastrip sensing start>, both from the real item's ids
RKH_GRANULE = "L2A_T29RKH_A024344_20200219T113105"
RKH_FILES = {  # band -> (source file, resolution in metres)
    **{band: (f"{band}_100m.tif", 100) for band in ("B02", "B03", "B04", "B08")},
    **{band: (f"{band}_200m.tif", 200) for band in ("B05", "B06", "B07", "B8A", "B11", "B12", "SCL")},
    **{band: (f"{band}_600m.tif", 600) for band in ("B01", "B09")},
}


def main(shared: Path, out: Path) -> None:
    """Copy the kept items and their files from ``shared`` into ``out``."""
    if out.exists():
        for sub in ("eodata", "stac"):
            shutil.rmtree(out / sub, ignore_errors=True)
    for collection in COLLECTIONS:
        src_dir = shared / "stac_local" / collection
        dst_dir = out / "stac" / collection
        dst_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(src_dir / "collection.json", dst_dir / "collection.json")
        for item_path in sorted(src_dir.glob("*.json")):
            if item_path.name == "collection.json":
                continue
            item = json.loads(item_path.read_text())
            kept = {}
            for key, asset in item["assets"].items():
                if key.startswith(SKIP_ASSET_PREFIXES):
                    continue
                local = asset.pop("file:local_path", None)
                kept[key] = asset
                if local and (shared / local).is_file():
                    target = out / local
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(shared / local, target)
            item["assets"] = kept
            add_granule_metadata(item, shared, out)
            (dst_dir / item_path.name).write_text(json.dumps(item, indent=1) + "\n")
    # product metadata XML of the SAFE products (real for T29UNU) travels with the rasters
    for mtd in (shared / "eodata").rglob("MTD_MSIL2A.xml"):
        target = out / mtd.relative_to(shared)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(mtd, target)
    build_complete_scene(shared, out)


def add_granule_metadata(item: dict, shared: Path, out: Path) -> None:
    """Copy the granule's ``MTD_TL.xml`` and add a ``granule_metadata`` asset, if it has real angles."""
    hrefs = [asset["href"] for asset in item["assets"].values() if "/GRANULE/" in asset.get("href", "")]
    if not hrefs:
        return
    granule_href = hrefs[0].split("/IMG_DATA/")[0] + "/MTD_TL.xml"
    key = granule_href.removeprefix("s3://eodata/")
    source = shared / "eodata" / key
    if not source.is_file() or ANGLES_MARKER not in source.read_bytes():
        return
    target = out / "eodata" / key
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, target)
    item["assets"]["granule_metadata"] = {
        "href": granule_href,
        "type": "application/xml",
        "title": "MTD_TL.xml",
        "roles": ["metadata"],
        "file:size": source.stat().st_size,
    }


def footprint(bounds: tuple[float, float, float, float], crs: str) -> list[list[float]]:
    """The crop's outline in lon/lat, 4 points per edge (UTM edges are curved in lon/lat)."""
    x0, y0, x1, y1 = bounds
    steps = np.linspace(0.0, 1.0, 5)[:-1]
    xs = [*(x0 + (x1 - x0) * steps), *([x1] * 4), *(x1 - (x1 - x0) * steps), *([x0] * 4)]
    ys = [*([y1] * 4), *(y1 - (y1 - y0) * steps), *([y0] * 4), *(y0 + (y1 - y0) * steps)]
    lons, lats = transform(crs, "EPSG:4326", xs, ys)
    ring = [[round(lon, 7), round(lat, 7)] for lon, lat in zip(lons, lats, strict=True)]
    return [*ring, ring[0]]


def build_complete_scene(shared: Path, out: Path) -> None:
    """29RKH: every L2A band and SCL, real pixels, written losslessly as JPEG2000 in the SAFE layout."""
    source = shared / RKH_SOURCE
    real = json.loads((source / RKH_ITEM).read_text())
    props = real["properties"]
    base = f"Sentinel-2/MSI/L2A/2020/02/19/{RKH_PRODUCT}.SAFE"
    assets: dict[str, dict] = {}
    bounds = crs = None
    for band, (name, res) in RKH_FILES.items():
        with rasterio.open(source / name) as src:
            data = src.read(1)
            crs, bounds = src.crs.to_string(), tuple(src.bounds)
            profile = {
                "driver": "JP2OpenJPEG",
                "width": src.width,
                "height": src.height,
                "count": 1,
                "dtype": src.dtypes[0],
                "crs": src.crs,
                "transform": src.transform,
                "QUALITY": 100,
                "REVERSIBLE": "YES",  # lossless: the pixel values are the source's
                "RESOLUTIONS": 3,
            }
            key = f"{base}/GRANULE/{RKH_GRANULE}/IMG_DATA/R{res}m/T29RKH_20200219T112111_{band}_{res}m.jp2"
            target = out / "eodata" / key
            target.parent.mkdir(parents=True, exist_ok=True)
            with rasterio.open(target, "w", **profile) as dst:
                dst.write(data, 1)
            with rasterio.open(target) as check:
                if not np.array_equal(check.read(1), data):
                    raise SystemExit(f"{target}: JPEG2000 round trip changed pixel values")
            asset = {
                "href": f"s3://eodata/{key}",
                "type": "image/jp2",
                "title": f"{band} - {res}m",
                "roles": ["data"],
                "file:size": target.stat().st_size,
                "proj:code": crs,
                "proj:shape": [src.height, src.width],
                "proj:transform": list(src.transform)[:6],
                "proj:bbox": list(bounds),
                "data_type": src.dtypes[0],
                "gsd": res,
                "nodata": 0,
            }
            if band != "SCL":
                asset |= {"raster:scale": 0.0001, "raster:offset": 0.0}  # baseline 02.14: no BOA offset
            assets[f"{band}_{res}m"] = asset
    assert bounds is not None and crs is not None
    ring = footprint(bounds, crs)
    west, south, east, north = transform_bounds(crs, "EPSG:4326", *bounds, densify_pts=21)
    kept = (
        "platform", "constellation", "instruments", "eo:cloud_cover", "grid:code", "view:sun_azimuth",
        "view:sun_elevation", "s2:processing_baseline", "s2:product_uri", "s2:datatake_id", "s2:datastrip_id",
        "s2:granule_id", "s2:reflectance_conversion_factor", "s2:not_vegetated_percentage",
        "s2:thin_cirrus_percentage", "s2:nodata_pixel_percentage",
    )
    item = {
        "type": "Feature",
        "stac_version": "1.1.0",
        "stac_extensions": [
            "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
            "https://stac-extensions.github.io/raster/v2.0.0/schema.json",
            "https://stac-extensions.github.io/file/v2.1.0/schema.json",
        ],
        "id": RKH_PRODUCT,
        "collection": "sentinel-2-l2a",
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "bbox": [round(west, 7), round(south, 7), round(east, 7), round(north, 7)],
        "properties": {
            "datetime": props["datetime"],
            "proj:code": crs,
            **{name: props[name] for name in kept},
            "processing:version": props["s2:processing_baseline"],
            "product:type": props["s2:product_type"],
            "sat:relative_orbit": 37,
            "sat:absolute_orbit": 24344,
            "x-miniature:note": (
                "real L2A pixels (Earth Search COGs downsampled by the rio-tiler-pds authors to 100/200/600 m, "
                "50.4 km crop) written losslessly as JPEG2000; properties from the real Earth Search item; "
                "file names and CDSE item shape constructed; no tile metadata (no angles)"
            ),
        },
        "links": [
            {"rel": "collection", "href": "./sentinel-2-l2a/collection.json"},
            {"rel": "enclosure", "type": "application/x-directory", "href": f"s3://eodata/{base}/"},
            *({"rel": "derived_from", "href": link["href"]} for link in real["links"] if link["rel"] == "derived_from"),
        ],
        "assets": assets,
    }
    target = out / "stac" / "sentinel-2-l2a" / f"{RKH_PRODUCT}.json"
    target.write_text(json.dumps(item, indent=1) + "\n")


if __name__ == "__main__":
    root = Path(__file__).resolve().parent
    shared_data = Path(sys.argv[1]) if len(sys.argv) > 1 else root.parent.parent / "shared" / "data"
    main(shared_data, root)
    print(f"sample rebuilt in {root}")
