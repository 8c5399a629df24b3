"""A STAC API catalogue (the CDSE one by default), searched per request and cached with a TTL.

Why httpx and not pystac-client: the server needs exactly one call (``POST /search`` with paging)
with hard timeouts, retries on 429/5xx and a pooled connection shared by all request threads;
pystac-client adds conformance probing and a requests session per client without giving more
control. Items are turned into ``Scene`` objects by the same ``scene_from_item`` as the static
catalogue, so the reader code cannot tell the two apart.

Search results are cached (cachetools ``TTLCache``) under a key built from the request footprint
*rounded outwards* to a 0.25° grid and the time range: neighbouring tiles share one search, and
the exact footprint filter is applied locally afterwards.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from datetime import datetime
from typing import Any

import httpx
from cachetools import TTLCache

from server.catalog.static import BBox, intersects, scene_from_item, sort_scenes
from server.errors import UpstreamTimeout, UpstreamUnavailable
from server.models import Priority, Scene, TimeRange
from server.upstream_breaker import CircuitBreaker

log = logging.getLogger(__name__)

_GRID = 0.25  # degrees: search footprints are rounded outwards to this grid
_RETRY_STATUS = {429, 500, 502, 503, 504}
_SORT_FIELDS = {
    Priority.MOST_RECENT: [{"field": "properties.datetime", "direction": "desc"}],
    Priority.LEAST_RECENT: [{"field": "properties.datetime", "direction": "asc"}],
    Priority.LEAST_CC: [
        {"field": "properties.eo:cloud_cover", "direction": "asc"},
        {"field": "properties.datetime", "direction": "desc"},
    ],
}


def rounded_bbox(bbox: BBox) -> BBox:
    """``bbox`` grown outwards to the search grid (and clamped to the globe)."""
    west = max(-180.0, math.floor(bbox[0] / _GRID) * _GRID)
    south = max(-90.0, math.floor(bbox[1] / _GRID) * _GRID)
    east = min(180.0, math.ceil(bbox[2] / _GRID) * _GRID)
    north = min(90.0, math.ceil(bbox[3] / _GRID) * _GRID)
    return (west, south, east, north)


def _interval(doc: dict[str, Any]) -> tuple[datetime | None, datetime | None] | None:
    """The first temporal interval of a collection document (``None`` ends are open), if it has one."""
    try:
        ends = doc["extent"]["temporal"]["interval"][0]
        return tuple(  # type: ignore[return-value]
            datetime.fromisoformat(str(e).replace("Z", "+00:00")) if e else None for e in ends[:2]
        )
    except (KeyError, IndexError, TypeError, ValueError):
        return None


class StacApiCatalogue:
    """Scenes of one collection of a STAC API, found by footprint, time and cloud cover."""

    enumerable = False  # the scene list of a whole API collection is never fetched

    def __init__(
        self,
        url: str,
        collection: str,
        *,
        cql2_filter: dict[str, Any] | None = None,
        max_items: int = 100,
        timeout: float = 10.0,
        cache_ttl: int = 300,
        retries: int = 2,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.breaker = breaker or CircuitBreaker(f"catalogue {url}")
        self.collection = collection
        self.cql2_filter = cql2_filter
        self.max_items = max_items
        self.retries = retries
        self.scenes: list[Scene] = []  # nothing to list; see ``enumerable``
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            transport=httpx.HTTPTransport(retries=retries),  # connection failures
            headers={"Accept": "application/geo+json", "User-Agent": "eotiler"},
            follow_redirects=True,
        )
        self._cache: TTLCache[tuple[Any, ...], list[Scene]] = TTLCache(maxsize=4096, ttl=max(cache_ttl, 1))
        self._cache_enabled = cache_ttl > 0
        self._lock = threading.Lock()
        self._extent: tuple[BBox | None, list[datetime]] | None = None
        self._extent_retry = 0.0  # monotonic time after which a failed extent fetch is retried
        self.interval: tuple[datetime | None, datetime | None] | None = None  # the collection's temporal extent
        self.searches = 0  # API searches made (the TTL cache's misses): /cache/stats

    def search(
        self,
        bbox: BBox,
        time_range: TimeRange | None,
        maxcc: float | None,
        priority: Priority,
        limit: int,
    ) -> list[Scene]:
        """Scenes overlapping ``bbox`` (lon/lat) within ``time_range`` and ``maxcc``, in priority order."""
        wide = rounded_bbox(bbox)
        key = (wide, time_range.isoformat() if time_range else None, maxcc, priority)
        with self._lock:
            found = self._cache.get(key) if self._cache_enabled else None
        if found is None:
            self.breaker.check()
            try:
                found = self._fetch(wide, time_range, maxcc, priority)
            except UpstreamUnavailable:
                self.breaker.failure()
                raise
            self.breaker.success()
            with self._lock:
                self._cache[key] = found
        near = [s for s in found if intersects(s.bbox, bbox)]
        return sort_scenes(near, priority)[:limit]

    def _body(self, bbox: BBox, time_range: TimeRange | None, maxcc: float | None, priority: Priority) -> dict:
        body: dict[str, Any] = {
            "collections": [self.collection],
            "bbox": list(bbox),
            "limit": min(self.max_items, 100),
            "sortby": _SORT_FIELDS[priority],
        }
        if time_range is not None:
            body["datetime"] = time_range.isoformat()
        clauses = []
        if maxcc is not None:
            clauses.append({"op": "<=", "args": [{"property": "eo:cloud_cover"}, maxcc]})
        if self.cql2_filter:
            clauses.append(self.cql2_filter)
        if clauses:
            body["filter"] = clauses[0] if len(clauses) == 1 else {"op": "and", "args": clauses}
            body["filter-lang"] = "cql2-json"
        return body

    def _fetch(self, bbox: BBox, time_range: TimeRange | None, maxcc: float | None, priority: Priority) -> list[Scene]:
        """POST /search, following ``next`` links until ``max_items`` items."""
        self.searches += 1
        request: tuple[str, str, dict[str, Any] | None] = (
            "POST",
            f"{self.url}/search",
            self._body(bbox, time_range, maxcc, priority),
        )
        scenes: list[Scene] = []
        while len(scenes) < self.max_items:
            page = self._call(*request)
            for item in page.get("features", []):
                try:
                    scenes.append(scene_from_item(item))
                except (KeyError, ValueError, TypeError):
                    log.warning("STAC API item %r skipped: not in the expected shape", str(item.get("id"))[:80])
            follow = next((link for link in page.get("links", []) if link.get("rel") == "next"), None)
            if follow is None or not page.get("features"):
                break
            method = str(follow.get("method", "GET")).upper()
            body = follow.get("body")
            if method == "POST" and follow.get("merge") and request[2] is not None:
                body = {**request[2], **(body or {})}
            request = (method, str(follow["href"]), body if method == "POST" else None)
        return scenes[: self.max_items]

    def _call(self, method: str, url: str, body: dict[str, Any] | None) -> dict[str, Any]:
        """One API call with retries on 429/5xx; any failure becomes ``UpstreamUnavailable``."""
        if not url.startswith(self.url):
            log.warning("STAC API paging link outside %s refused", self.url)
            raise UpstreamUnavailable("the scene catalogue returned an unexpected link")
        for attempt in range(self.retries + 1):
            try:
                response = self._http.request(method, url, json=body)
            except httpx.TimeoutException:
                log.warning("STAC API %s timed out", self.url)
                raise UpstreamTimeout("the scene catalogue did not answer in time") from None
            except httpx.HTTPError as exc:
                log.warning("STAC API %s failed: %s", self.url, type(exc).__name__)
                raise UpstreamUnavailable("the scene catalogue is not reachable") from None
            if response.status_code in _RETRY_STATUS and attempt < self.retries:
                time.sleep(0.25 * (attempt + 1))
                continue
            if response.status_code != 200:
                log.warning("STAC API %s answered %d: %s", url, response.status_code, response.text[:300])
                raise UpstreamUnavailable("the scene catalogue answered with an error")
            try:
                return response.json()
            except ValueError:
                raise UpstreamUnavailable("the scene catalogue answered with an invalid document") from None
        raise UpstreamUnavailable("the scene catalogue is not reachable")  # pragma: no cover - loop returns

    def extent(self) -> tuple[BBox | None, list[datetime]]:
        """Spatial extent from the collection document (fetched once); no per-scene dates for an API.

        When the API cannot be reached the globe is assumed, and the fetch is retried a minute
        later rather than on every capabilities request.
        """
        if self._extent is None or (self._extent_retry and time.monotonic() > self._extent_retry):
            try:
                doc = self._call("GET", f"{self.url}/collections/{self.collection}", None)
                box = doc["extent"]["spatial"]["bbox"][0]
                self._extent = ((float(box[0]), float(box[1]), float(box[2]), float(box[3])), [])
                self.interval = _interval(doc)
                self._extent_retry = 0.0
            except (UpstreamUnavailable, KeyError, IndexError, TypeError, ValueError):
                log.warning("STAC API collection %s: no usable extent, assuming the globe", self.collection)
                self._extent = ((-180.0, -90.0, 180.0, 90.0), [])
                self._extent_retry = time.monotonic() + 60
        return self._extent

    def ready(self) -> bool:
        """Whether the API answers its collection document within 2 s (``/readyz``)."""
        try:
            return self._http.get(f"{self.url}/collections/{self.collection}", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def close(self) -> None:
        """Close the pooled HTTP connections."""
        self._http.close()
