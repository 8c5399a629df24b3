"""Scene lookups shared by the Catalog API and WFS: which scenes of a collection meet an area,
a time range, a cloud cover bound and a CQL2 filter, and how a scene is written out.

Why one module: the two APIs are two views of the same question (the footprints behind a
collection), so they must agree on every scene they list; they differ only in their documents.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from server.catalog.catalogue import Catalogue
from server.models import Priority, Scene, TimeRange
from server.shapi import geometry
from server.shapi.cql2 import Filter, matches

GLOBE = (-180.0, -90.0, 180.0, 90.0)
# Scenes asked of a STAC API catalogue per search: its own ``max_items`` bounds what it returns.
_API_LIMIT = 100_000


@dataclass(frozen=True, slots=True)
class SceneQuery:
    """What a request asks for; ``area`` is lon/lat polygons (``None``: anywhere)."""

    area: list[geometry.Polygon] | None = None
    time_range: TimeRange | None = None
    maxcc: float | None = None
    cql: Filter | None = None
    ids: frozenset[str] | None = None

    def boxes(self) -> list[geometry.BBox]:
        """Lon/lat boxes to search: one per polygon (an antimeridian-split area gives two)."""
        if self.area is None:
            return [GLOBE]
        return [geometry.bounds([polygon]) for polygon in self.area]


def _box_overlaps(a: geometry.BBox, b: geometry.BBox) -> bool:
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


def _candidates(catalogue: Catalogue, query: SceneQuery) -> Iterable[Scene]:
    boxes = query.boxes()
    if catalogue.enumerable:
        for scene in catalogue.scenes:
            if any(_box_overlaps(scene.bbox, b) for b in boxes):
                yield scene
        return
    seen: set[str] = set()
    for bbox in boxes:
        for scene in catalogue.search(bbox, query.time_range, query.maxcc, Priority.LEAST_RECENT, _API_LIMIT):
            if scene.id not in seen:
                seen.add(scene.id)
                yield scene


def find_scenes(catalogue: Catalogue, query: SceneQuery, *, newest_first: bool = False) -> list[Scene]:
    """Every scene matching ``query``, ordered by acquisition time then id."""
    found = []
    for scene in _candidates(catalogue, query):
        if query.ids is not None and scene.id not in query.ids:
            continue
        if query.time_range is not None and not query.time_range.contains(scene.datetime):
            continue
        if query.maxcc is not None and scene.cloud_cover is not None and scene.cloud_cover > query.maxcc:
            continue
        if query.area is not None and not geometry.intersects(
            geometry.footprint(scene.geometry, scene.bbox), query.area
        ):
            continue
        if not matches(query.cql, scene_properties(scene)):
            continue
        found.append(scene)
    found.sort(key=lambda s: (s.datetime, s.id), reverse=newest_first)
    return found


def iso(moment: datetime) -> str:
    """A time as UTC ``YYYY-MM-DDTHH:MM:SS[.ffffff]Z``."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def iso_time(scene: Scene) -> str:
    """The acquisition time of ``scene`` (``iso``)."""
    return iso(scene.datetime)


def scene_properties(scene: Scene) -> dict[str, Any]:
    """The item properties a filter sees (``datetime`` normalised, ``id`` added)."""
    return {**scene.properties, "datetime": iso_time(scene), "id": scene.id}


def scene_geometry(scene: Scene) -> dict[str, Any]:
    """The footprint as GeoJSON: the item geometry, else its bounding box."""
    if scene.geometry is not None:
        return scene.geometry
    west, south, east, north = scene.bbox
    ring = [[west, south], [east, south], [east, north], [west, north], [west, south]]
    return {"type": "Polygon", "coordinates": [ring]}


def product_path(scene: Scene) -> str:
    """The folder all of the scene's files live under (the product, e.g. ``s3://eodata/.../X.SAFE``)."""
    hrefs = [h for h in scene.assets.values() if isinstance(h, str) and "://" in h]
    if not hrefs:
        return ""
    parts = [h.split("/")[:-1] for h in hrefs]
    common = parts[0]
    for other in parts[1:]:
        size = 0
        while size < min(len(common), len(other)) and common[size] == other[size]:
            size += 1
        common = common[:size]
    safe = next((i for i, part in enumerate(common) if part.upper().endswith((".SAFE", ".SEN3"))), None)
    return "/".join(common if safe is None else common[: safe + 1])


def stac_item(scene: Scene, collection_id: str, base_url: str) -> dict[str, Any]:
    """A STAC 1.0 item for ``scene``, with links under the Catalog API at ``base_url``."""
    item_url = f"{base_url}/collections/{collection_id}/items/{scene.id}"
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": [],
        "id": scene.id,
        "collection": collection_id,
        "geometry": scene_geometry(scene),
        "bbox": list(scene.bbox),
        "properties": {**scene.properties, "datetime": iso_time(scene)},
        "assets": {key: {"href": href} for key, href in scene.assets.items()},
        "links": [
            {"rel": "self", "href": item_url, "type": "application/geo+json"},
            {"rel": "collection", "href": f"{base_url}/collections/{collection_id}", "type": "application/json"},
        ],
    }
