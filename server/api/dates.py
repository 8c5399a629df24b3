"""Dates with data: per view (``GET /layers/{layer}/dates``) and per layer (the OGC time dimensions).

Why one module for both: the viewer's date list, the WMS/WMTS ``time`` dimension and OGC API's
temporal extent must agree on what "a date with data" is: a UTC day with at least one scene that
the layer would draw, i.e. one passing the layer's cloud cover limit (``maxcc``) unless the
request sets its own. Answers come from ``Layer.catalogue.search``, so a STAC API collection is
searched through the same TTL cache as tiles.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from rasterio.crs import CRS

from server.api.params import RenderOptions, query_params
from server.api.tiles import PipelineDep
from server.catalog.catalogue import BBox
from server.catalog.layers import Layer
from server.errors import InvalidParameter
from server.models import Priority, TimeRange, check_bbox, parse_maxcc

router = APIRouter(tags=["layers"])

WGS84 = CRS.from_epsg(4326)
WORLD: BBox = (-180.0, -90.0, 180.0, 90.0)
# Scenes a per-view answer looks at, newest first. A STAC API search returns at most its
# collection's ``max_items`` anyway; a static catalogue answers from memory.
MAX_SCENES = 1000
# A STAC API collection whose document gives no temporal extent: the first Sentinel launch
# (Sentinel-1A, 2014-04-03) is the earliest date Copernicus data can have.
COPERNICUS_START = date(2014, 4, 3)


@dataclass(frozen=True, slots=True)
class DayWithData:
    """One UTC day with scenes over the view: how many and how cloudy (mean of the scenes that say)."""

    day: date
    scenes: int
    cloud_cover: float | None


@dataclass(frozen=True, slots=True)
class TimeDimension:
    """What capabilities advertise for a layer's time: a list of days, or ``start/end/P1D`` when the
    days cannot be listed (a STAC API collection), and the default (the newest day with data)."""

    days: tuple[str, ...]  # empty when ``interval`` is used
    interval: tuple[str, str] | None
    default: str

    def extent(self) -> str:
        """The WMS extent text: ``d1,d2,...`` or ``start/end/P1D``."""
        return f"{self.interval[0]}/{self.interval[1]}/P1D" if self.interval else ",".join(self.days)

    def values(self) -> list[str]:
        """The WMTS ``Value`` elements: one per day, or the one ``start/end/P1D`` value."""
        return [self.extent()] if self.interval else list(self.days)


def days_with_data(scenes: list) -> list[DayWithData]:
    """Scenes grouped by UTC day, newest day first."""
    by_day: dict[date, list] = defaultdict(list)
    for scene in scenes:
        by_day[scene.datetime.astimezone(UTC).date()].append(scene)
    found = []
    for day in sorted(by_day, reverse=True):
        covers = [s.cloud_cover for s in by_day[day] if s.cloud_cover is not None]
        mean = round(sum(covers) / len(covers), 2) if covers else None
        found.append(DayWithData(day, len(by_day[day]), mean))
    return found


def view_dates(
    layer: Layer, bbox: BBox, time: TimeRange | None, maxcc: float | None, limit: int = MAX_SCENES
) -> tuple[list[DayWithData], bool]:
    """Days with scenes over ``bbox`` (lon/lat) within ``time``; ``maxcc`` defaults to the layer's.

    Also says whether the search may have stopped short (as many scenes as it could return).
    """
    cloud = maxcc if maxcc is not None else layer.config.maxcc
    scenes = layer.catalogue.search(bbox, time, cloud, Priority.MOST_RECENT, limit)
    cap = min(limit, getattr(layer.catalogue, "max_items", limit))
    return days_with_data(scenes), len(scenes) >= cap


def time_dimension(layer: Layer, today: date) -> TimeDimension | None:
    """The layer's time dimension (``None``: a static catalogue without a scene to draw).

    A static catalogue lists the days of the scenes passing the layer's ``maxcc``; a STAC API one
    gives its collection's temporal extent (up to ``today``) day by day. The default is the newest
    day with data, inside the layer's ``default_time`` when one is configured.
    """
    if not layer.catalogue.enumerable:
        layer.catalogue.extent()  # fetches the collection document (once) that gives the interval
        start, end = getattr(layer.catalogue, "interval", None) or (None, None)
        first = start.date() if start else COPERNICUS_START
        last = min(end.date(), today) if end else today
        interval = (first.isoformat(), max(first, last).isoformat())
        return TimeDimension((), interval, interval[1])
    maxcc = layer.config.maxcc
    moments = sorted(
        s.datetime for s in layer.catalogue.scenes if maxcc is None or s.cloud_cover is None or s.cloud_cover <= maxcc
    )
    if not moments:
        return None
    days = tuple(sorted({m.astimezone(UTC).date().isoformat() for m in moments}))
    preferred = [m for m in moments if layer.default_time is None or layer.default_time.contains(m)]
    default = (preferred or moments)[-1].astimezone(UTC).date().isoformat()
    return TimeDimension(days, None, default)


def utc_today() -> date:
    """Today's UTC date: the end of a STAC API collection's open temporal extent."""
    return datetime.now(UTC).date()


def parse_lonlat_bbox(text: str | None, parameter: str = "bbox") -> BBox:
    """``W,S,E,N`` in degrees, checked like every request box, longitudes folded into [-180, 180]
    (a wrapped web map sends -190 or 200 at low zoom)."""
    if text is None or not text.strip():
        return WORLD
    parts = text.split(",")
    if len(parts) != 4:
        raise InvalidParameter(f"{parameter} must be W,S,E,N in degrees", parameter=parameter)
    try:
        west, south, east, north = (float(p) for p in parts)
    except ValueError:
        raise InvalidParameter(f"{parameter} must be four numbers", parameter=parameter) from None
    check_bbox((west, south, east, north), WGS84, parameter)
    if east - west >= 360:
        west, east = -180.0, 180.0
    else:
        west, east = max(west, -180.0), min(east, 180.0)
    south, north = max(south, -90.0), min(north, 90.0)
    if west >= east or south >= north:
        raise InvalidParameter(f"{parameter} lies outside -180..180, -90..90", parameter=parameter)
    return west, south, east, north


@router.get("/layers/{layer}/dates", summary="Dates with data over a view")
async def dates(layer: str, request: Request, pipeline: PipelineDep) -> dict[str, object]:
    """The UTC days with at least one scene of ``layer`` over ``bbox`` (W,S,E,N in degrees; default
    the globe), newest first, within ``time`` (instant or ``start/end``) and ``maxcc`` (default:
    the layer's), each with its scene count and mean cloud cover. ``complete`` is false when the
    search returned as many scenes as it may: older days may be missing."""
    target = pipeline.registry.get(layer)
    query = query_params(request)
    bbox = parse_lonlat_bbox(query.get("bbox"))
    options = RenderOptions.from_request(request)
    maxcc = parse_maxcc(query.get("maxcc"), "maxcc")
    found, full = await run_in_threadpool(view_dates, target, bbox, options.time, maxcc)
    return {
        "layer": target.id,
        "bbox": list(bbox),
        "time": options.time.isoformat() if options.time else None,
        "maxcc": maxcc if maxcc is not None else target.config.maxcc,
        "complete": not full,
        "dates": [{"date": d.day.isoformat(), "scenes": d.scenes, "cloud_cover": d.cloud_cover} for d in found],
    }
