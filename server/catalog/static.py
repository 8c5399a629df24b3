"""A static STAC catalogue: item JSON files in a directory, loaded once and searched in memory.

Why: the bundled sample and air-gapped deployments have no STAC API; keeping items in the CDSE
item shape (asset keys ``B04_10m``, ``s3://eodata/...`` hrefs) means the sample and the real
bucket go through the same reader code, and only this class differs from the STAC API one.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path
from typing import Any

from server.catalog.catalogue import BBox
from server.errors import ConfigError
from server.models import Priority, Scene, TimeRange

log = logging.getLogger(__name__)


def scene_from_item(item: dict[str, Any]) -> Scene:
    """Build a ``Scene`` from a STAC item dict (CDSE shape)."""
    props = item.get("properties", {})
    when = props.get("datetime") or props.get("start_datetime")
    moment = datetime.fromisoformat(str(when).replace("Z", "+00:00"))
    bbox = item.get("bbox") or [-180.0, -90.0, 180.0, 90.0]
    assets = {key: asset["href"] for key, asset in item.get("assets", {}).items() if "href" in asset}
    cloud = props.get("eo:cloud_cover")
    return Scene(
        id=str(item["id"]),
        datetime=moment,
        cloud_cover=float(cloud) if cloud is not None else None,
        bbox=(float(bbox[0]), float(bbox[1]), float(bbox[2]), float(bbox[3])),
        assets=assets,
        properties=props,
        geometry=item.get("geometry") if isinstance(item.get("geometry"), dict) else None,
    )


def intersects(a: BBox, b: BBox) -> bool:
    """True when two lon/lat boxes overlap (touching edges do not count)."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def sort_scenes(scenes: list[Scene], priority: Priority) -> list[Scene]:
    """Order scenes by PRIORITY; ties broken by id so results are deterministic."""
    if priority is Priority.LEAST_RECENT:
        return sorted(scenes, key=lambda s: (s.datetime, s.id))
    if priority is Priority.LEAST_CC:
        return sorted(
            scenes, key=lambda s: (s.cloud_cover if s.cloud_cover is not None else 101.0, -s.datetime.timestamp(), s.id)
        )
    return sorted(scenes, key=lambda s: (-s.datetime.timestamp(), s.id))


class StaticCatalogue:
    """All items of one collection directory, held in memory."""

    enumerable = True

    def __init__(self, path: Path) -> None:
        self.path = path
        self.scenes: list[Scene] = []
        for item_path in sorted(path.glob("*.json")):
            try:
                doc = json.loads(item_path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise ConfigError(f"{item_path}: not a readable JSON document ({exc})") from None
            if doc.get("type") != "Feature":
                continue  # collection.json and other non-item documents
            try:
                self.scenes.append(scene_from_item(doc))
            except (KeyError, ValueError, TypeError) as exc:
                raise ConfigError(f"{item_path}: not a STAC item in the expected shape ({exc})") from None
        log.info("static catalogue %s: %d items", path, len(self.scenes))
        self._extent = self._compute_extent()

    def search(
        self,
        bbox: BBox,
        time_range: TimeRange | None,
        maxcc: float | None,
        priority: Priority,
        limit: int,
    ) -> list[Scene]:
        """Scenes overlapping ``bbox`` (lon/lat) within ``time_range`` and ``maxcc``, in priority order."""
        found = [
            s
            for s in self.scenes
            if intersects(s.bbox, bbox)
            and (time_range is None or time_range.contains(s.datetime))
            and (maxcc is None or s.cloud_cover is None or s.cloud_cover <= maxcc)
        ]
        return sort_scenes(found, priority)[:limit]

    def ready(self) -> bool:
        """Always: the items are in memory."""
        return True

    def extent(self) -> tuple[BBox | None, list[datetime]]:
        """Union of item footprints and the sorted list of acquisition times (computed once: items are static)."""
        return self._extent

    def _compute_extent(self) -> tuple[BBox | None, list[datetime]]:
        if not self.scenes:
            return None, []
        boxes = [s.bbox for s in self.scenes]
        union = (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))
        return union, sorted({s.datetime for s in self.scenes})
