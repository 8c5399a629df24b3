"""Request ids, structured JSON access logs and Prometheus metrics for every request.

Why pure ASGI (not ``BaseHTTPMiddleware``): it adds no task or body buffering per request, so the
cached-tile path stays cheap. With several workers, ``eotiler serve`` runs prometheus-client in
multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``): every worker writes its samples to a shared
directory and ``/metrics``, whichever worker answers, reports the sum over all of them.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, cast

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.sources import block_cache
from server.sources.gdal_native import network_totals

if TYPE_CHECKING:
    from server.pipeline import Pipeline

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


def missing_bands(failed_scenes: str) -> list[str]:
    """Bands named in an ``X-Eotiler-Failed-Scenes`` value (``<scene>:<band>`` entries).

    Why from the header: the worker that answered counts at once, so ``/metrics`` summed over
    workers is exact without waiting for a sampling refresh.
    """
    return [entry.rpartition(":")[2] for entry in failed_scenes.split(",") if ":" in entry]


REFRESH_SECONDS = 5.0  # how stale the sampled gauges and GDAL's S3 counters may get


class GatewayMetrics:
    """The S3 gateway's counters as Prometheus metrics, folded in from ``S3Gateway.stats()``.

    The gateway runs in the server process (one worker) or in the supervisor (``serve --workers
    N``); either way these collectors live in that process and, in multiprocess mode, reach
    ``/metrics`` through the shared directory like every worker's own samples.
    """

    _COUNTERS = {
        "requests": ("eotiler_s3_gateway_requests", "Requests the S3 gateway made to the object store"),
        "throttled": ("eotiler_s3_throttled", "429/503 answers of the object store (the gateway waited and retried)"),
        "queue_wait_seconds": ("eotiler_s3_queue_wait_seconds", "Seconds S3 requests waited for the quota"),
        "coalesced": ("eotiler_s3_coalesced", "Range reads served by an identical request already in flight"),
        "index_reads": ("eotiler_jp2_index_reads", "Range reads spent walking JPEG2000 tile-part chains"),
        "prefetched_tile_parts": (
            "eotiler_jp2_prefetched_tile_parts",
            "JPEG2000 tile-parts fetched ahead of GDAL's reads of a window",
        ),
    }

    def __init__(self, stats: Callable[[], dict[str, float]], registry: CollectorRegistry) -> None:
        self.stats = stats
        self._seen: dict[str, float] = {}
        self._counters = {
            key: Counter(name, text, registry=registry) for key, (name, text) in self._COUNTERS.items()
        }
        self.in_flight = Gauge(
            "eotiler_s3_in_flight",
            "S3 requests the gateway has open (at most EOTILER_S3_CONNECTIONS)",
            registry=registry,
            multiprocess_mode="livesum",
        )

    def refresh(self) -> None:
        """Add what the gateway counted since the last refresh."""
        now = self.stats()
        for key, counter in self._counters.items():
            counter.inc(max(0.0, now[key] - self._seen.get(key, 0.0)))
            self._seen[key] = now[key]
        self.in_flight.set(now["in_flight"])

    def run_every(self, seconds: float) -> threading.Event:
        """Refresh on a daemon thread until the returned event is set (the supervisor's gateway)."""
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(seconds):
                self.refresh()

        threading.Thread(target=loop, name="eotiler-gateway-metrics", daemon=True).start()
        return stop


class Metrics:
    """The server's Prometheus collectors, in a registry of their own (one per app).

    Request metrics are counted as requests end. The render queue, the circuit breakers and
    GDAL's S3 request/byte counters are sampled by ``refresh`` (at each scrape, and at most
    every ``REFRESH_SECONDS`` while requests flow, so other workers' numbers stay current too).
    """

    def __init__(self, pipeline: Pipeline | None = None) -> None:
        self.pipeline = pipeline
        self.multiprocess_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
        self._refreshed = 0.0
        self._refresh_lock = threading.Lock()
        self._s3_seen: dict[tuple[str, str], tuple[int, int]] = {}
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
        self.s3_requests = Counter(
            "eotiler_s3_requests",
            "HTTP requests GDAL made (to the S3 gateway when it runs, else to the store), by file system and method",
            ["fs", "method"],
            registry=self.registry,
        )
        self.s3_bytes = Counter(
            "eotiler_s3_downloaded_bytes",
            "Bytes GDAL downloaded (from the S3 gateway when it runs, else from the store), by file system and method",
            ["fs", "method"],
            registry=self.registry,
        )
        self.read_failures = Counter(
            "eotiler_scene_read_failures",
            "Scene reads that failed (upstream errors, timeouts, missing files)",
            registry=self.registry,
        )
        self.missing_bands = Counter(
            "eotiler_missing_bands",
            "Scenes left out of an image because none of their files holds a band the script reads, by band",
            ["band"],
            registry=self.registry,
        )
        self.rendering = Gauge(
            "eotiler_renders_running", "Renders holding a slot", registry=self.registry, multiprocess_mode="livesum"
        )
        self.waiting = Gauge(
            "eotiler_renders_waiting",
            "Renders queued for a slot (queue depth)",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.circuit_open = Gauge(
            "eotiler_upstream_circuit_open",
            "1 while an upstream's circuit breaker refuses requests",
            ["upstream"],
            registry=self.registry,
            multiprocess_mode="max",
        )
        self.blocks = Counter(
            "eotiler_block_cache",
            "Decoded JPEG2000 blocks asked for, by outcome: memory, disk, waited (for another thread's decode), miss",
            ["outcome"],
            registry=self.registry,
        )
        self.block_decodes = Counter(
            "eotiler_block_decodes", "JPEG2000 blocks decoded for the decoded-block cache", registry=self.registry
        )
        self.block_memory = Gauge(
            "eotiler_block_cache_memory_bytes",
            "Bytes of decoded blocks held in memory (summed over workers)",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.block_disk = Gauge(
            "eotiler_block_cache_disk_bytes",
            "Bytes of decoded blocks in the shared disk directory",
            registry=self.registry,
            multiprocess_mode="max",
        )
        self._blocks_seen: dict[str, int] = {}
        self._failures_seen = 0
        gateway = getattr(pipeline, "gateway", None)
        self.gateway = GatewayMetrics(gateway.stats, self.registry) if gateway is not None else None

    def refresh(self, force: bool = False) -> None:
        """Sample the pipeline's gauges and fold GDAL's S3 counters in (rate-limited unless forced)."""
        now = time.monotonic()
        if self.pipeline is None or (not force and now - self._refreshed < REFRESH_SECONDS):
            return
        with self._refresh_lock:
            self._refreshed = now
            running, waiting = self.pipeline.load()
            self.rendering.set(running)
            self.waiting.set(waiting)
            for name, is_open in self.pipeline.circuits().items():
                self.circuit_open.labels(name).set(1 if is_open else 0)
            failures = self.pipeline.read_failures
            self.read_failures.inc(failures - self._failures_seen)
            self._failures_seen = failures
            for (fs, method), (count, size) in network_totals().items():
                seen_count, seen_size = self._s3_seen.get((fs, method), (0, 0))
                self.s3_requests.labels(fs, method).inc(count - seen_count)
                self.s3_bytes.labels(fs, method).inc(size - seen_size)
                self._s3_seen[(fs, method)] = (count, size)
            if self.gateway is not None:
                self.gateway.refresh()
            self._refresh_blocks()

    def _refresh_blocks(self) -> None:
        """Fold the decoded-block cache's counters in (``sources/block_cache.py``)."""
        cache = block_cache.current()
        if cache is None:
            return
        stats = cache.stats()
        delta = {key: max(0, value - self._blocks_seen.get(key, 0)) for key, value in stats.items()}
        self._blocks_seen = stats
        for label, key in (("memory", "memory_hits"), ("disk", "disk_hits"), ("waited", "waits"), ("miss", "misses")):
            self.blocks.labels(label).inc(delta[key])
        self.block_decodes.inc(delta["decodes"])
        self.block_memory.set(stats["memory_bytes"])
        self.block_disk.set(stats["disk_bytes"])

    def exposition(self) -> bytes:
        """The text format of every metric: this process's, or the sum over all workers."""
        self.refresh(force=True)
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=self.multiprocess_dir)
        return generate_latest(merged)


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
        seen: dict[str, object] = {"status": 500, "bytes": 0, "cache": None, "incomplete": False, "missing": []}

        async def send_observed(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
                headers = list(message.get("headers", []))
                for key, value in headers:
                    if key == b"x-cache":
                        seen["cache"] = value.decode("latin-1")
                    elif key in (b"x-eotiler-failed-scenes", b"x-eotiler-skipped-scenes"):
                        seen["incomplete"] = True
                        if key == b"x-eotiler-failed-scenes":  # ``<scene>:<band>``: a band no file holds
                            seen["missing"] = missing_bands(value.decode("latin-1"))
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
        self.metrics.refresh()
        endpoint = endpoint_of(scope["path"])
        status = str(seen["status"])
        self.metrics.requests.labels(endpoint, status).inc()
        self.metrics.latency.labels(endpoint).observe(seconds)
        if seen["cache"]:
            self.metrics.tile_cache.labels(str(seen["cache"])).inc()
        if seen["incomplete"]:
            self.metrics.incomplete.inc()
        for band in cast(list[str], seen["missing"]):
            self.metrics.missing_bands.labels(band).inc()
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
