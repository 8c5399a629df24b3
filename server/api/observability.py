"""Request ids, structured JSON access logs and Prometheus metrics for every request.

Why pure ASGI (not ``BaseHTTPMiddleware``): it adds no task or body buffering per request, so the
cached-tile path stays cheap. Metrics are per worker process (``/metrics`` answers for the
worker that serves it); run one scrape target per worker or sum them in the scraper.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

access_log = logging.getLogger("eotiler.access")


def install_access_log() -> None:
    """One bare JSON object per line on stderr (no level or logger prefix), for log shippers."""
    if not access_log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        access_log.addHandler(handler)
        access_log.setLevel(logging.INFO)
        access_log.propagate = False


_REQUEST_ID = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")
# Path prefixes -> a bounded set of endpoint labels (never raw paths: unbounded cardinality).
_ENDPOINTS = (
    ("/layers/", "tiles", "/tiles/"),
    ("/layers/", "tilejson", "/tilejson.json"),
    ("/layers/", "legend", "/legend.png"),
    ("/layers", "layers", ""),
    ("/ogc/wms", "wms", ""),
    ("/ogc/wmts", "wmts", ""),
    ("/ogc/wcs", "wcs", ""),
    ("/ogc", "ogc", ""),
    ("/cache/", "cache", ""),
    ("/healthz", "health", ""),
    ("/readyz", "health", ""),
    ("/metrics", "metrics", ""),
    ("/static/", "static", ""),
)


def endpoint_of(path: str) -> str:
    """The metrics label of a request path."""
    for prefix, label, contains in _ENDPOINTS:
        if path.startswith(prefix) and contains in path:
            return label
    return "other"


class Metrics:
    """The server's Prometheus collectors, in a registry of their own (one per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "eotiler_requests", "HTTP requests by endpoint and status", ["endpoint", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "eotiler_request_seconds",
            "HTTP request latency by endpoint",
            ["endpoint"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.tile_cache = Counter(
            "eotiler_tile_cache", "Image responses by cache outcome (HIT/MISS)", ["outcome"], registry=self.registry
        )
        self.incomplete = Counter(
            "eotiler_incomplete_images", "Images served with failed or skipped scenes", registry=self.registry
        )


class ObservabilityMiddleware:
    """Gives each request an id (``X-Request-ID``, a client's own kept when well-formed), logs
    one JSON line when it ends and counts it."""

    def __init__(self, app: ASGIApp, metrics: Metrics, log_requests: bool) -> None:
        self.app = app
        self.metrics = metrics
        self.log_requests = log_requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:  # noqa: D102
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), "")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        start = time.perf_counter()
        seen: dict[str, object] = {"status": 500, "bytes": 0, "cache": None, "incomplete": False}

        async def send_observed(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
                headers = list(message.get("headers", []))
                for key, value in headers:
                    if key == b"x-cache":
                        seen["cache"] = value.decode("latin-1")
                    elif key in (b"x-eotiler-failed-scenes", b"x-eotiler-skipped-scenes"):
                        seen["incomplete"] = True
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            elif message["type"] == "http.response.body":
                seen["bytes"] = int(seen["bytes"]) + len(message.get("body", b""))  # type: ignore[arg-type]
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        finally:
            self._record(scope, request_id, seen, time.perf_counter() - start)

    def _record(self, scope: Scope, request_id: str, seen: dict[str, object], seconds: float) -> None:
        endpoint = endpoint_of(scope["path"])
        status = str(seen["status"])
        self.metrics.requests.labels(endpoint, status).inc()
        self.metrics.latency.labels(endpoint).observe(seconds)
        if seen["cache"]:
            self.metrics.tile_cache.labels(str(seen["cache"])).inc()
        if seen["incomplete"]:
            self.metrics.incomplete.inc()
        if self.log_requests:
            query = scope.get("query_string", b"").decode("latin-1")
            access_log.info(
                json.dumps(
                    {
                        "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
                        "request_id": request_id,
                        "method": scope["method"],
                        "path": scope["path"],
                        "query": query[:512],  # an EVALSCRIPT can be long; the id finds the rest
                        "status": seen["status"],
                        "bytes": seen["bytes"],
                        "ms": round(seconds * 1000, 2),
                        "cache": seen["cache"],
                        "endpoint": endpoint,
                    }
                )
            )
