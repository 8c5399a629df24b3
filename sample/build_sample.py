"""Rebuild the bundled sample from ``../shared/data`` (run from the project root).

Why a script rather than a hand copy: the sample must stay a faithful subset of the shared
miniature eodata tree (same keys as the real ``s3://eodata`` bucket, same STAC item shape), and
anyone must be able to regenerate it and see exactly what was left out.

What is kept: every Sentinel-2 L2A product (T29UNU 2022, baseline 04.00, with SCL at 20 m and
60 m; the BigEarthNet-based 2017/2018 products of baselines 02.05/02.06 and 05.00) and the
Global-Mosaics COG, and the Sentinel-1 GRD measurement TIFFs (georeferenced by GCPs only).
What is dropped: AOT, WVP, TCI and QI_DATA rasters (no layer uses them). STAC items are pruned
to the assets whose files are bundled.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

SKIP_ASSET_PREFIXES = ("AOT_", "WVP_", "TCI_", "CLD_", "SNW_")
COLLECTIONS = ("sentinel-2-l2a", "sentinel-2-global-mosaics", "sentinel-1-grd")


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
            (dst_dir / item_path.name).write_text(json.dumps(item, indent=1) + "\n")
    # product metadata XML of the SAFE products (real for T29UNU) travels with the rasters
    for mtd in (shared / "eodata").rglob("MTD_MSIL2A.xml"):
        target = out / mtd.relative_to(shared)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(mtd, target)


if __name__ == "__main__":
    root = Path(__file__).resolve().parent
    shared_data = Path(sys.argv[1]) if len(sys.argv) > 1 else root.parent.parent / "shared" / "data"
    main(shared_data, root)
    print(f"sample rebuilt in {root}")
