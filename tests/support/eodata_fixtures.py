"""Products derived from the bundled real sample for S3 tests, written at real eodata key paths.

- ``build_split``: the real T29UNU 60 m B04 band cut into two overlapping granules ``A``
  (columns 0-319, values as is) and ``B`` (columns 192-511, DN + 500 so every pixel tells which
  granule drew it), with their own dates and cloud cover: the sample has no overlapping granules.
- ``build_request_fixture``: a 2048 px B04 band at 10 m (the real 60 m values upsampled 6x,
  documented as derived) as a COG and as a JPEG2000 with TLM markers, copied under several keys
  so each copy is read cold; plus 20 m and 60 m versions for the resolution choice.

Items are in the CDSE shape (asset keys ``B04_60m``, ``s3://eodata/...`` hrefs).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import Affine
from rasterio.warp import transform_bounds
from rasterio.windows import Window

SAMPLE_B04 = (
    Path(__file__).resolve().parents[2]
    / "sample/eodata/Sentinel-2/MSI/L2A/2022/10/05/S2A_MSIL2A_20221005T115411_N0400_R023_T29UNU_20221005T164454.SAFE"
    / "GRANULE/L2A_T29UNU_A038058_20221005T115407/IMG_DATA/R60m/T29UNU_20221005T115411_B04_60m.jp2"
)
JP2_OPTIONS = {"QUALITY": 100, "REVERSIBLE": "YES", "RESOLUTIONS": 5, "TLM": "YES", "PLT": "YES"}
SPLIT_A = (0, 320)  # column range of granule A
SPLIT_B = (192, 512)  # column range of granule B
B_OFFSET = 500


@dataclass(frozen=True)
class Split:
    """What the split fixture holds, for independent expectations."""

    original: np.ndarray  # uint16 (512, 512) DN of the real band
    transform: Affine
    crs: rasterio.crs.CRS
    ids: dict[str, str]  # "A"/"B" -> item id


def _item(item_id: str, when: datetime, cloud: float, bounds_lonlat: tuple, assets: dict[str, str]) -> dict:
    w, s, e, n = bounds_lonlat
    return {
        "type": "Feature",
        "stac_version": "1.1.0",
        "id": item_id,
        "collection": "test",
        "bbox": [w, s, e, n],
        "geometry": {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]},
        "properties": {
            "datetime": when.isoformat().replace("+00:00", "Z"),
            "eo:cloud_cover": cloud,
            "processing:version": "04.00",
        },
        "assets": {key: {"href": href, "type": "image/jp2", "roles": ["data"]} for key, href in assets.items()},
        "links": [],
    }


def _write(path: Path, data: np.ndarray, profile: dict, **options: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", **{**profile, **options}) as dst:
        dst.write(data, 1)


def _key(day: datetime, product: str, tile: str, res: int, band: str = "B04") -> str:
    granule = f"L2A_{tile}_A038058_{day:%Y%m%dT115407}"
    return (
        f"Sentinel-2/MSI/L2A/{day:%Y/%m/%d}/{product}.SAFE/GRANULE/{granule}/IMG_DATA/R{res}m/"
        f"{tile}_{day:%Y%m%dT115411}_{band}_{res}m.jp2"
    )


def build_split(eodata: Path, items: Path) -> Split:
    """Two overlapping granules from one real band; see the module docstring."""
    with rasterio.open(SAMPLE_B04) as src:
        original = src.read(1)
        transform, crs = src.transform, src.crs
    ids = {}
    for part, (c0, c1), day, cloud, add in (
        ("A", SPLIT_A, datetime(2023, 1, 2, tzinfo=UTC), 10.0, 0),
        ("B", SPLIT_B, datetime(2023, 1, 5, tzinfo=UTC), 30.0, B_OFFSET),
    ):
        product = f"S2{'A' if part == 'A' else 'B'}_MSIL2A_{day:%Y%m%d}T115411_N0400_R023_T29UNU_{day:%Y%m%d}T164454"
        data = original[:, c0:c1].astype(np.uint16)
        data = np.where(data > 0, data + add, 0).astype(np.uint16)
        part_transform = rasterio.windows.transform(Window(c0, 0, c1 - c0, 512), transform)
        key = _key(day, product, "T29UNU", 60)
        profile = {"driver": "JP2OpenJPEG", "width": c1 - c0, "height": 512, "count": 1, "dtype": "uint16"}
        profile.update(crs=crs, transform=part_transform)
        _write(eodata / key, data, profile, BLOCKXSIZE=192, BLOCKYSIZE=192, **JP2_OPTIONS)
        bounds = rasterio.transform.array_bounds(512, c1 - c0, part_transform)
        lonlat = transform_bounds(crs, "EPSG:4326", bounds[0], bounds[1], bounds[2], bounds[3])
        doc = _item(product, day.replace(hour=11, minute=54), cloud, lonlat, {"B04_60m": f"s3://eodata/{key}"})
        items.mkdir(parents=True, exist_ok=True)
        (items / f"{product}.json").write_text(json.dumps(doc))
        ids[part] = product
    return Split(original, transform, crs, ids)


def build_request_fixture(eodata: Path, items: Path, copies: int = 6) -> dict[str, list[str]]:
    """COG and JP2+TLM copies of a 2048 px 10 m band, plus a 10/20/60 m product; returns item ids by kind."""
    with rasterio.open(SAMPLE_B04) as src:
        coarse = src.read(1, window=Window(0, 0, 342, 342))
        origin = src.transform * (0, 0)
        crs = src.crs
    fine = np.repeat(np.repeat(coarse, 6, axis=0), 6, axis=1)[:2048, :2048]
    work = eodata.parent / "_build"
    work.mkdir(parents=True, exist_ok=True)
    made: dict[str, Path] = {}
    for res, factor in ((10, 1), (20, 2), (60, 6)):
        size = 2048 // factor
        data = fine[::factor, ::factor][:size, :size]
        profile = {"width": size, "height": size, "count": 1, "dtype": "uint16", "crs": crs}
        profile["transform"] = Affine(res, 0, origin[0], 0, -res, origin[1])
        block = {10: 1024, 20: 640, 60: 192}[res]
        made[f"jp2_{res}"] = work / f"B04_{res}m.jp2"
        _write(
            made[f"jp2_{res}"],
            data,
            {"driver": "JP2OpenJPEG", **profile},
            BLOCKXSIZE=block,
            BLOCKYSIZE=block,
            **JP2_OPTIONS,
        )
    made["cog"] = work / "B04_10m.tif"
    cog_profile = {
        "driver": "COG",
        "width": 2048,
        "height": 2048,
        "count": 1,
        "dtype": "uint16",
        "crs": crs,
        "nodata": 0,
    }
    cog_profile["transform"] = Affine(10, 0, origin[0], 0, -10, origin[1])
    _write(made["cog"], fine, cog_profile, BLOCKSIZE=512, COMPRESS="DEFLATE", OVERVIEWS="AUTO")
    bounds = (origin[0], origin[1] - 20480, origin[0] + 20480, origin[1])
    lonlat = transform_bounds(crs, "EPSG:4326", *bounds)
    out: dict[str, list[str]] = {"cog": [], "jp2": [], "levels": []}
    items.mkdir(parents=True, exist_ok=True)
    base = datetime(2023, 3, 1, 11, 54, tzinfo=UTC)
    for number in range(copies):
        for kind, suffix in (("cog", "tif"), ("jp2", "jp2")):
            day = base + timedelta(days=number if kind == "cog" else 10 + number)
            product = f"S2A_MSIL2A_{day:%Y%m%d}T115411_N0400_R023_T29UNU_{day:%Y%m%d}T164454"
            key = _key(day, product, "T29UNU", 10).replace(".jp2", f".{suffix}")
            (eodata / key).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(made["cog" if kind == "cog" else "jp2_10"], eodata / key)
            doc = _item(product, day, 5.0, lonlat, {"B04_10m": f"s3://eodata/{key}"})
            (items / f"{product}.json").write_text(json.dumps(doc))
            out[kind].append(product)
    day = base + timedelta(days=30)
    product = f"S2A_MSIL2A_{day:%Y%m%d}T115411_N0400_R023_T29UNU_{day:%Y%m%d}T164454"
    assets = {}
    for res in (10, 20, 60):
        key = _key(day, product, "T29UNU", res)
        (eodata / key).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(made[f"jp2_{res}"], eodata / key)
        assets[f"B04_{res}m"] = f"s3://eodata/{key}"
    (items / f"{product}.json").write_text(json.dumps(_item(product, day, 5.0, lonlat, assets)))
    out["levels"].append(product)
    shutil.rmtree(work)
    return out
