"""Footprint geometry in lon/lat: GeoJSON polygons read defensively and tested for overlap.

Why not shapely: the server needs one predicate (does a scene footprint meet a query area?) on
a few polygons per request; a small exact test on the rings avoids a GEOS dependency. Request
geometries are bounded in size before anything loops over them.
"""

from __future__ import annotations

import math
from typing import Any

from server.errors import InvalidParameter

Point = tuple[float, float]
Ring = list[Point]
Polygon = list[Ring]  # outer ring first, then holes
BBox = tuple[float, float, float, float]

MAX_VERTICES = 10_000  # per request geometry


def _point(value: Any, parameter: str) -> Point:
    if not isinstance(value, list | tuple) or len(value) < 2:
        raise InvalidParameter(f"{parameter}: a position must be [lon, lat]", parameter=parameter)
    try:
        x, y = float(value[0]), float(value[1])
    except (TypeError, ValueError):
        raise InvalidParameter(f"{parameter}: coordinates must be numbers", parameter=parameter) from None
    if not (math.isfinite(x) and math.isfinite(y) and -360 <= x <= 360 and -90 <= y <= 90):
        raise InvalidParameter(f"{parameter}: coordinates must be lon/lat degrees", parameter=parameter)
    return (x, y)


def _ring(value: Any, parameter: str, budget: list[int]) -> Ring:
    if not isinstance(value, list) or not value:
        raise InvalidParameter(f"{parameter}: a ring must be a list of positions", parameter=parameter)
    budget[0] -= len(value)
    if budget[0] < 0:
        raise InvalidParameter(f"{parameter}: more than {MAX_VERTICES} positions", parameter=parameter)
    ring = [_point(p, parameter) for p in value]
    if len(ring) > 1 and ring[0] == ring[-1]:
        ring = ring[:-1]
    return ring


def polygons(geometry: Any, parameter: str = "intersects") -> list[Polygon]:
    """The polygons of a GeoJSON Polygon, MultiPolygon or Point (a point is a one-vertex polygon)."""
    if not isinstance(geometry, dict):
        raise InvalidParameter(f"{parameter} must be a GeoJSON geometry object", parameter=parameter)
    kind, coordinates = geometry.get("type"), geometry.get("coordinates")
    budget = [MAX_VERTICES]
    if kind == "Point":
        return [[[_point(coordinates, parameter)]]]
    if kind == "Polygon" and isinstance(coordinates, list) and coordinates:
        return [[_ring(r, parameter, budget) for r in coordinates]]
    if kind == "MultiPolygon" and isinstance(coordinates, list) and coordinates:
        parts = []
        for polygon in coordinates:
            if not isinstance(polygon, list) or not polygon:
                raise InvalidParameter(f"{parameter}: a polygon must be a list of rings", parameter=parameter)
            parts.append([_ring(r, parameter, budget) for r in polygon])
        return parts
    raise InvalidParameter(f"{parameter} must be a GeoJSON Point, Polygon or MultiPolygon", parameter=parameter)


def box(bbox: BBox) -> list[Polygon]:
    """A lon/lat box as one polygon."""
    west, south, east, north = bbox
    return [[[(west, south), (east, south), (east, north), (west, north)]]]


def bounds(parts: list[Polygon]) -> BBox:
    """Lon/lat bounds of polygons."""
    xs = [p[0] for poly in parts for ring in poly for p in ring]
    ys = [p[1] for poly in parts for ring in poly for p in ring]
    return (min(xs), min(ys), max(xs), max(ys))


def _orientation(a: Point, b: Point, c: Point) -> float:
    return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])


def _on_segment(a: Point, b: Point, c: Point) -> bool:
    return min(a[0], b[0]) <= c[0] <= max(a[0], b[0]) and min(a[1], b[1]) <= c[1] <= max(a[1], b[1])


def _segments_meet(p1: Point, p2: Point, q1: Point, q2: Point) -> bool:
    d1, d2 = _orientation(q1, q2, p1), _orientation(q1, q2, p2)
    d3, d4 = _orientation(p1, p2, q1), _orientation(p1, p2, q2)
    if ((d1 > 0 > d2) or (d1 < 0 < d2)) and ((d3 > 0 > d4) or (d3 < 0 < d4)):
        return True
    return (
        (d1 == 0 and _on_segment(q1, q2, p1))
        or (d2 == 0 and _on_segment(q1, q2, p2))
        or (d3 == 0 and _on_segment(p1, p2, q1))
        or (d4 == 0 and _on_segment(p1, p2, q2))
    )


def _edges(polygon: Polygon) -> list[tuple[Point, Point]]:
    return [(ring[i], ring[(i + 1) % len(ring)]) for ring in polygon for i in range(len(ring))]


def _contains(polygon: Polygon, point: Point) -> bool:
    """Even-odd rule over all rings: inside the outer ring and outside every hole."""
    x, y = point
    inside = False
    for a, b in _edges(polygon):
        if (a[1] > y) != (b[1] > y) and x < a[0] + (y - a[1]) * (b[0] - a[0]) / (b[1] - a[1]):
            inside = not inside
    return inside


def _polygon_bounds(polygon: Polygon) -> BBox:
    return bounds([polygon])


def intersects(first: list[Polygon], second: list[Polygon]) -> bool:
    """True when the two areas share at least one point (touching counts)."""
    for a in first:
        box_a = _polygon_bounds(a)
        for b in second:
            box_b = _polygon_bounds(b)
            if box_a[0] > box_b[2] or box_b[0] > box_a[2] or box_a[1] > box_b[3] or box_b[1] > box_a[3]:
                continue
            if _contains(b, a[0][0]) or _contains(a, b[0][0]):
                return True
            edges_b = _edges(b)
            if any(_segments_meet(p, q, r, s) for p, q in _edges(a) for r, s in edges_b):
                return True
    return False


def footprint(scene_geometry: dict[str, Any] | None, bbox: BBox) -> list[Polygon]:
    """A scene's footprint polygons: its item geometry, else its bounding box."""
    if scene_geometry is not None:
        try:
            return polygons(scene_geometry, "geometry")
        except InvalidParameter:
            pass
    return box(bbox)
