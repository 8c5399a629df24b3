"""The one request pipeline: layer -> scenes -> readers -> mosaic -> evalscript -> encode.

Every image endpoint (XYZ today; WMS, WMTS and WCS next) builds a ``RenderRequest`` and calls
``Pipeline.render``; nothing else reads rasters or runs scripts. Per-stage timings are returned
for ``Server-Timing`` headers and logs.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import NamedTuple

import numpy as np
from rasterio.crs import CRS
from rasterio.errors import RasterioError

from server.cache.keys import composite_key, render_key
from server.cache.tile_cache import CachedImage, TileCache, content_etag
from server.catalog.layers import Layer, LayerRegistry
from server.errors import EotilerError, InvalidParameter, Overloaded, UpstreamTimeout, UpstreamUnavailable
from server.evalscript.contract import Evalscript, OutputSpec, Samples
from server.evalscript.js_script import SceneInfo, orbits
from server.evalscript.postprocess import to_sample_type
from server.models import Grid, RenderRequest, RenderResult, Scene
from server.render.composite import CompositeRequest, blend, on_background
from server.render.encode import check_format, encode
from server.settings import Settings
from server.sources.dataset_pool import DatasetPool
from server.sources.gdal_env import GdalEnvironment
from server.sources.overview_cache import OverviewCache
from server.sources.paths import HrefRefused
from server.sources.s3_gateway import S3Gateway, s3_buckets
from server.sources.scene_reader import MissingBands, read_scene
from server.upstream_breaker import CircuitBreaker

log = logging.getLogger(__name__)

# Share of the request budget kept for the script and the encoder after reads stop.
READ_MARGIN = 0.1


def _public(exc: Exception) -> str:
    """A log-safe one-line description of a read failure (GDAL messages name paths, never keys)."""
    text = exc.public_message if isinstance(exc, EotilerError) else str(exc)
    return f"{type(exc).__name__}: {text[:300]}"


def _upstream_fault(exc: Exception) -> bool:
    """A failure that says the object store is unwell (not a missing file or a refused href)."""
    if isinstance(exc, EotilerError):  # a refused href is the catalogue's doing, not the store's
        return isinstance(exc, UpstreamUnavailable) and not isinstance(exc, HrefRefused)
    return "404" not in str(exc) and "No such file" not in str(exc)


def _settle(
    breaker: CircuitBreaker | None, scenes: int, lacking: int, unreadable: int, upstream: int, timeouts: int
) -> None:
    """After a mosaic: tell the store's breaker how it did, and fail when no scene could be read.

    Scenes ``lacking`` a band were never asked of the store, so they tell the breaker nothing;
    nor do they make a request fail (the image is incomplete, the store is fine).
    """
    if breaker is not None and scenes:
        if upstream == scenes:
            breaker.failure()
        elif unreadable < scenes - lacking:
            breaker.success()
    if unreadable and unreadable == scenes:
        if timeouts:
            raise UpstreamTimeout("the data source did not answer in time")
        raise UpstreamUnavailable("no scene could be read from the data source")


@lru_cache(maxsize=4096)
def _metres_per_pixel(bbox: tuple[float, float, float, float], crs_wkt: str, width: int, height: int) -> float:
    """``Grid.ground_resolution`` memoised: every request, cached or not, is checked against its layer's floor."""
    return Grid(bbox, CRS.from_wkt(crs_wkt), width, height, crs_wkt).ground_resolution()


def scene_info(scene: Scene) -> SceneInfo:
    """What a multi-temporal script sees of a scene: date, cloud cover and product path."""
    href = next(iter(scene.assets.values()), "")
    product = href[: href.index(".SAFE") + 5] if ".SAFE" in href else href.rsplit("/", 1)[0]
    return SceneInfo(scene.datetime, scene.cloud_cover, product)


@dataclass(slots=True)
class Mosaic:
    """Input samples flattened over scenes (Sentinel Hub SIMPLE mosaicking)."""

    bands: dict[str, np.ndarray]
    filled: np.ndarray  # bool (h, w): some scene had data here
    scene_index: np.ndarray  # int16 (h, w): index into ``scenes`` of the pixel's scene, -1 none
    scenes: list[Scene]
    # scenes that could not be read, and ``<scene>:<band>`` for a band no file of the scene holds
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # scenes not read: the time budget was spent

    def add(self, valid: np.ndarray, bands: dict[str, np.ndarray], scene: Scene) -> bool:
        """Take ``scene``'s valid pixels where nothing is drawn yet; True once the grid is full."""
        take = valid & ~self.filled
        if take.any():
            for name, values in self.bands.items():
                values[take] = bands[name][take]
            self.scene_index[take] = len(self.scenes)
            self.scenes.append(scene)
            self.filled |= take
        return bool(self.filled.all())


class Lookup(NamedTuple):
    """What the catalogue said about a request, and its tile-cache key."""

    scenes: list[Scene]
    key: str
    timings: dict[str, float]


@dataclass(slots=True)
class RenderedData:
    """A rendered image before encoding, with what a query (GetFeatureInfo) needs."""

    data: np.ma.MaskedArray  # post-processed bands, masked where transparent
    values: np.ndarray  # raw evalscript output (bands, h, w): float32 (numpy) or float64 (JavaScript)
    mosaic: Mosaic
    timings: dict[str, float]


class Pipeline:
    """Renders images for any protocol."""

    def __init__(self, registry: LayerRegistry, settings: Settings) -> None:
        self.registry = registry
        self.settings = settings
        self._pool = ThreadPoolExecutor(max_workers=settings.read_threads, thread_name_prefix="eotiler-read")
        self.gateway = self._gateway(registry, settings)
        self.gdal = settings.gdal_environment(settings.s3_gateway_address or (self.gateway and self.gateway.address))
        self.datasets = DatasetPool(settings.dataset_handles)
        self.overviews = (
            OverviewCache(settings.overview_cache_dir, settings.overview_cache_bytes)
            if settings.overview_cache_bytes > 0
            else None
        )
        self.cache = TileCache(settings.cache_memory_bytes, settings.redis_url, settings.cache_ttl)
        self._slots = threading.BoundedSemaphore(settings.render_concurrency)
        # Renders run here, one thread per slot, while the request's thread waits at most for
        # the rest of its budget: a render stuck in GDAL keeps its slot, never the client.
        self._renders = ThreadPoolExecutor(max_workers=settings.render_concurrency, thread_name_prefix="eotiler-render")
        self._render_local = threading.local()  # the deadline of the render a render thread runs
        self._admitted = 0  # renders running or waiting for a slot
        self._admit_lock = threading.Lock()
        self._breakers: dict[str, CircuitBreaker] = {}
        self.read_failures = 0  # scene reads that failed, for /metrics (render threads add under the lock)
        self._failures_lock = threading.Lock()

    def load(self) -> tuple[int, int]:
        """Renders holding a slot, and renders waiting for one."""
        with self._admit_lock:
            admitted = self._admitted
        waiting = max(0, admitted - self.settings.render_concurrency)
        return admitted - waiting, waiting

    def circuits(self) -> dict[str, bool]:
        """Whether each upstream's circuit breaker is open: object stores and STAC APIs."""
        with self._admit_lock:
            breakers = list(self._breakers.values())
        for layer in self.registry.layers.values():
            found = getattr(layer.catalogue, "breaker", None)
            if found is not None and found not in breakers:
                breakers.append(found)
        return {breaker.name: breaker.is_open for breaker in breakers}

    def breaker(self, layer: Layer) -> CircuitBreaker | None:
        """The circuit breaker of the layer's object store (remote data roots only)."""
        root = layer.collection.data_root
        if not root.startswith("/vsi"):
            return None
        with self._admit_lock:
            found = self._breakers.get(root)
            if found is None:
                found = CircuitBreaker(
                    f"data store {root}",
                    self.settings.breaker_threshold,
                    self.settings.breaker_cooldown,
                    self.settings.breaker_max_cooldown,
                )
                self._breakers[root] = found
            return found

    @staticmethod
    def _gateway(registry: LayerRegistry, settings: Settings) -> S3Gateway | None:
        """The S3 gateway this process starts: when layers read ``/vsis3/`` and no shared one runs."""
        buckets = s3_buckets(layer.collection.data_root for layer in registry.layers.values())
        if not buckets or not settings.s3_gateway or settings.s3_gateway_address:
            return None
        gateway = S3Gateway(settings.gateway_options(buckets))
        gateway.start()
        return gateway

    def close(self) -> None:
        """Stop the reader threads (and the S3 gateway this process runs)."""
        if self.gateway is not None:
            self.gateway.stop()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._renders.shutdown(wait=False, cancel_futures=True)
        self.datasets.close()

    def find_scenes(self, layer: Layer, req: RenderRequest) -> list[Scene]:
        """Catalogue search for the request, with the layer's defaults filled in."""
        return layer.catalogue.search(
            req.grid.bbox_wgs84(),
            req.time if req.time is not None else layer.default_time,
            req.maxcc if req.maxcc is not None else layer.config.maxcc,
            req.priority or layer.config.priority,
            limit=self.settings.max_scenes,
        )

    def script(self, req: RenderRequest) -> Evalscript:
        """The script that renders ``req``: the request's EVALSCRIPT, else the layer's own."""
        return req.script if req.script is not None else self.registry.get(req.layer).evalscript

    def output(self, req: RenderRequest) -> OutputSpec:
        """The output ``req`` produces, after any band subset."""
        output = self.script(req).output
        if req.bands is None:
            return output
        return OutputSpec(len(req.bands), output.sample_type, output.id)

    def mosaic(
        self,
        layer: Layer,
        scenes: list[Scene],
        grid: Grid,
        script: Evalscript,
        resampling: str | None,
        deadline: float | None = None,
    ) -> Mosaic:
        """Fill the grid per pixel from scenes in priority order, stopping once it is full.

        A scene that cannot be read is skipped and named in ``failed``; once the request's time
        budget is spent the remaining scenes are named in ``skipped`` (the first scene is always
        read). Only when every scene failed is the request an error: 504 when a read timed out,
        502 otherwise. A scene with no file for a band the script needs is skipped too and named
        in ``failed`` as ``<scene>:<band>``: the product lacks the data, the store is not at fault.
        """
        shape = (grid.height, grid.width)
        names = script.inputs.data_bands
        mosaic = Mosaic(
            {name: np.zeros(shape, dtype=np.float32) for name in names},
            np.zeros(shape, dtype=bool),
            np.full(shape, -1, dtype=np.int16),
            [],
        )
        deadline = deadline or self.deadline()
        breaker = self.breaker(layer)
        if breaker is not None and scenes:
            breaker.check()  # a resting upstream: refuse at once
        timeouts = 0
        upstream_failures = 0
        unreadable = lacking = 0  # scenes whose read failed; scenes with no file for a band
        units = {name: script.inputs.unit(name) for name in names}
        for number, scene in enumerate(scenes):
            if number and time.monotonic() > deadline:
                mosaic.skipped = [s.id for s in scenes[number:]]
                log.warning("time budget spent: %d scene(s) not read", len(mosaic.skipped))
                break
            try:
                data = read_scene(
                    scene,
                    layer.collection,
                    names,
                    grid,
                    resampling=resampling or layer.config.resampling,
                    units=units,
                    gdal=self._gdal_within(layer, deadline),
                    executor=self._pool,
                    overviews=self.overviews,
                    pool=self.datasets,
                )
            except MissingBands as exc:
                log.warning("scene %s has no file for band(s) %s at any resolution", scene.id, ", ".join(exc.bands))
                mosaic.failed += [f"{scene.id}:{band}" for band in exc.bands]
                lacking += 1
                continue
            except (RasterioError, OSError, EotilerError) as exc:  # the data source failed
                log.warning("reading scene %s failed: %s", scene.id, _public(exc))
                mosaic.failed.append(scene.id)
                unreadable += 1
                timeouts += isinstance(exc, UpstreamTimeout) or "timed out" in str(exc)  # curl error 28
                upstream_failures += _upstream_fault(exc)
                with self._failures_lock:  # += is a read and a write: threads could lose counts
                    self.read_failures += 1
                continue
            except Exception:  # noqa: BLE001 - a bug: keep the traceback, but one scene must not sink the mosaic
                log.exception("reading scene %s failed unexpectedly", scene.id)
                mosaic.failed.append(scene.id)
                unreadable += 1
                continue
            if data is not None and mosaic.add(data.valid, data.bands, scene):
                break
        _settle(breaker, len(scenes), lacking, unreadable, upstream_failures, timeouts)
        return mosaic

    def samples_over_time(
        self, layer: Layer, scenes: list[Scene], req: RenderRequest, script: Evalscript
    ) -> tuple[Mosaic, Samples]:
        """Multi-temporal inputs (mosaicking ORBIT or TILE): one sample per day or per scene.

        Scenes are grouped first (per UTC day for ORBIT), then ``preProcessScenes`` may drop
        groups before anything is read; each group is mosaicked like SIMPLE. Arrays come back as
        (samples, h, w), with the scenes each sample describes. The returned ``Mosaic`` is the
        union, for masks, headers and GetFeatureInfo.
        """
        infos = [scene_info(scene) for scene in scenes]
        groups = orbits(infos) if script.mosaicking == "ORBIT" else [[i] for i in range(len(scenes))]
        preprocess = getattr(script, "preprocess", None)
        if groups and preprocess is not None and getattr(script, "has_preprocess", False):
            window = req.time if req.time is not None else layer.default_time
            keep = preprocess(infos, window.start if window else None, window.end if window else None)
            groups = [groups[i] for i in keep if 0 <= i < len(groups)]
        shape = (req.grid.height, req.grid.width)
        union = Mosaic({}, np.zeros(shape, dtype=bool), np.full(shape, -1, dtype=np.int16), [])
        deadline = self.deadline()
        drawn: list[tuple[list[int], Mosaic]] = []
        error: UpstreamUnavailable | None = None
        for number, group in enumerate(groups):
            members = [scenes[i] for i in group]
            if number and time.monotonic() > deadline:
                union.skipped += [s.id for g in groups[number:] for s in (scenes[i] for i in g)]
                break
            try:
                part = self.mosaic(layer, members, req.grid, script, req.resampling, deadline)
            except UpstreamUnavailable as exc:
                union.failed += [s.id for s in members]
                error = exc
                continue
            union.failed += part.failed
            union.skipped += part.skipped
            fresh = part.filled & ~union.filled
            union.scene_index[fresh] = part.scene_index[fresh] + len(union.scenes)
            union.scenes += part.scenes
            union.filled |= part.filled
            drawn.append((group, part))
        if error is not None and not drawn:
            raise error
        arrays = {
            name: np.stack([part.bands[name] for _, part in drawn]) if drawn else np.zeros((0, *shape), np.float32)
            for name in script.inputs.data_bands
        }
        arrays["dataMask"] = (
            np.stack([part.filled for _, part in drawn]).astype(np.float32)
            if drawn
            else np.zeros((0, *shape), np.float32)
        )
        return union, Samples(arrays, [infos[i] for group, _ in drawn for i in group])

    def render_data(self, req: RenderRequest, scenes: list[Scene] | None = None) -> RenderedData:
        """Render to a post-processed masked array (no encoding): for compositing and queries."""
        if self.too_coarse(req) is not None:  # nothing is read beyond the layer's floor
            return self._empty_data(req)
        layer = self.registry.get(req.layer)
        script = self.script(req)
        timings: dict[str, float] = {}
        start = time.perf_counter()
        if scenes is None:
            scenes = self.find_scenes(layer, req)
        timings["catalogue"] = (time.perf_counter() - start) * 1000
        mark = time.perf_counter()
        if script.mosaicking == "SIMPLE":
            mosaic = self.mosaic(layer, scenes, req.grid, script, req.resampling)
            samples = Samples({**mosaic.bands, "dataMask": mosaic.filled.astype(np.float32)})
        else:
            mosaic, samples = self.samples_over_time(layer, scenes, req, script)
        timings["read"] = (time.perf_counter() - mark) * 1000
        mark = time.perf_counter()
        values = script.evaluate(samples)
        output = script.output
        if req.bands is not None:
            if output.has_alpha:  # keep transparency although the alpha band is not selected
                mosaic.filled &= values[-1] > 0
            values = values[list(req.bands)]
            output = self.output(req)
        data = to_sample_type(values, output, mosaic.filled)
        timings["evalscript"] = (time.perf_counter() - mark) * 1000
        return RenderedData(data, values, mosaic, timings)

    def render(
        self, req: RenderRequest | CompositeRequest, looked: Lookup | None = None, deadline: float | None = None
    ) -> RenderResult:
        """Render and encode one image, through the tile cache: the entry point of every protocol.

        ``req`` is one layer, or several drawn over each other (``CompositeRequest``). The
        catalogue is always asked first (cheap): the cache key holds the resolved scene ids,
        so two TIME values that select the same scenes share one entry. ``looked`` is a lookup
        already made for ``req`` (by ``probe_memory``), so it is not made twice. ``deadline``
        (``time.monotonic()``) is when the answer is due: a request budget from now by default.
        """
        if isinstance(req, CompositeRequest):
            return self._render_composite(req, deadline)
        coarse = self.too_coarse(req)
        if coarse is not None:
            return self.floor_image(req, coarse)
        deadline = deadline or time.monotonic() + self.settings.request_budget
        scenes, key, timings = looked or self._lookup(req)
        return self.cached(key, req, lambda: self._render_uncached(req, scenes), timings, deadline)

    def _render_composite(self, req: CompositeRequest, deadline: float | None) -> RenderResult:
        """A composite is cached as a whole, keyed by every part's own key (scenes included)."""
        for part in req.parts:
            check_format(self.output(part), req.part_format)
        start = time.perf_counter()
        layers = [self.registry.get(part.layer) for part in req.parts]
        found = [self.find_scenes(layer, part) for layer, part in zip(layers, req.parts, strict=True)]
        timings = {"catalogue": (time.perf_counter() - start) * 1000}
        keys = [render_key(part, layer, scenes) for part, layer, scenes in zip(req.parts, layers, found, strict=True)]
        variant = f"{req.bgcolor}:{self.settings.png_zlevel}"
        key = composite_key(req.first, layers[0], keys, req.transparent, variant)
        return self.cached(key, req.first, lambda: self._composite_uncached(req, found), timings, deadline)

    def _composite_uncached(self, req: CompositeRequest, found: list[list[Scene]]) -> RenderResult:
        rendered = [self.render_data(part, scenes) for part, scenes in zip(req.parts, found, strict=True)]
        if len(rendered) == 1:
            data = on_background(rendered[0].data, req.bgcolor)
        else:
            data = blend([r.data for r in rendered], req.transparent, req.bgcolor)
        timings: dict[str, float] = {}
        scenes: list[str] = []
        for part in rendered:
            for name, value in part.timings.items():
                timings[name] = timings.get(name, 0.0) + value
            scenes += [s.id for s in part.mosaic.scenes if s.id not in scenes]
        result = self.encode(data, req.first, [], timings)
        result.scenes = scenes
        result.failed = [name for part in rendered for name in part.mosaic.failed]
        result.skipped = [name for part in rendered for name in part.mosaic.skipped]
        return result

    def probe_memory(self, req: RenderRequest) -> tuple[RenderResult | None, Lookup | None]:
        """The image from this process's memory cache, or the lookup to hand to ``render``.

        Never does I/O, so the HTTP layer may call it on the event loop and skip a thread hop
        for the common cached tile. Layers searched through a STAC API are not looked up here
        (their search may need the network): ``(None, None)``.
        """
        if not self.registry.get(req.layer).catalogue.enumerable or self.too_coarse(req) is not None:
            return None, None
        looked = self._lookup(req)
        mark = time.perf_counter()
        found = self.cache.get(looked.key, memory_only=True)
        return (None, looked) if found is None else (self._hit(found, req, looked.timings, mark), looked)

    def _lookup(self, req: RenderRequest) -> Lookup:
        """Scenes and cache key of ``req`` (format checked first: a bad one must not cost a search)."""
        layer = self.registry.get(req.layer)
        check_format(self.output(req), req.format)
        start = time.perf_counter()
        scenes = self.find_scenes(layer, req)
        catalogue_ms = (time.perf_counter() - start) * 1000
        return Lookup(scenes, self.cache_key(req, layer, scenes), {"catalogue": catalogue_ms})

    def _hit(
        self, found: tuple[CachedImage, str], req: RenderRequest, timings: dict[str, float], mark: float
    ) -> RenderResult:
        item, level = found
        timings = {**timings, f"cache-{level}": (time.perf_counter() - mark) * 1000}
        return RenderResult(
            item.content, item.media_type, item.scenes, timings, item.empty, "HIT", self.max_age(req), etag=item.etag
        )

    def cache_key(self, req: RenderRequest, layer: Layer, scenes: list[Scene]) -> str:
        """The tile-cache key of ``req`` once its scenes are known (also used by seeding)."""
        return render_key(req, layer, scenes, variant=f"zlevel={self.settings.png_zlevel}")

    def _render_uncached(self, req: RenderRequest, scenes: list[Scene]) -> RenderResult:
        rendered = self.render_data(req, scenes)
        result = self.encode(rendered.data, req, rendered.mosaic.scenes, rendered.timings)
        result.failed, result.skipped = rendered.mosaic.failed, rendered.mosaic.skipped
        return result

    def cached(
        self,
        key: str,
        req: RenderRequest,
        produce: Callable[[], RenderResult],
        timings: dict[str, float],
        deadline: float | None = None,
    ) -> RenderResult:
        """Serve ``key`` from the tile cache, or ``produce`` it and store it (XYZ, WMS, WMTS, WCS).

        ``produce`` runs on a render thread holding a render slot; this thread waits for it until
        ``deadline`` (default: a request budget from now) and then answers 504. A render that
        outlives its request keeps its slot and its place in the admission count until it ends
        (so stuck renders make the server refuse new work, never accept more than it can run),
        and a complete late image is still stored for the next request.
        """
        mark = time.perf_counter()
        found = self.cache.get(key)
        if found is not None:
            return self._hit(found, req, timings, mark)
        budget = self.settings.request_budget
        deadline = deadline or time.monotonic() + budget
        self._admit(deadline)
        # Reads stop a little before the answer is due (and never later than a budget from now),
        # so a slow request still gets its incomplete image instead of a 504.
        read_by = min(deadline, time.monotonic() + budget) - budget * READ_MARGIN
        try:
            future = self._renders.submit(self._render_in_slot, key, req, produce, read_by)
        except RuntimeError:  # the pipeline is closing
            self._leave()
            raise
        try:
            result = future.result(timeout=max(0.0, deadline - time.monotonic()))
        except FutureTimeout:
            log.warning("request budget spent: %s answered 504, its render goes on in the background", key)
            raise UpstreamTimeout(
                f"the image was not ready in time (request budget {self.settings.request_budget:g} s)"
            ) from None
        result.timings = {**timings, **{k: v for k, v in result.timings.items() if k != "catalogue"}}
        return result

    def _render_in_slot(
        self, key: str, req: RenderRequest, produce: Callable[[], RenderResult], deadline: float
    ) -> RenderResult:
        """Run on a render thread: produce (reads stop at ``deadline``), store when complete, then
        give the slot back."""
        self._render_local.deadline = deadline
        try:
            result = produce()
            result.cache = "MISS"
            if result.failed or result.skipped:
                result.max_age = 0  # incomplete: neither we nor a browser may keep it
                return result
            result.etag = content_etag(result.content)
            self.cache.put(
                key, CachedImage(result.content, result.media_type, result.scenes, result.empty, result.etag)
            )
            result.max_age = self.max_age(req)
            return result
        finally:
            self._render_local.deadline = None
            self._leave()

    def deadline(self) -> float:
        """When the render running on this thread must be answered (a request budget from now
        outside a render thread)."""
        found = getattr(self._render_local, "deadline", None)
        return found if found is not None else time.monotonic() + self.settings.request_budget

    def _gdal_within(self, layer: Layer, deadline: float) -> GdalEnvironment:
        """The GDAL environment for a read that must end by ``deadline`` (remote stores only)."""
        if not layer.collection.data_root.startswith("/vsi"):
            return self.gdal
        return self.gdal.within(deadline - time.monotonic())

    def _admit(self, deadline: float) -> None:
        """Take one of ``render_concurrency`` render slots, waiting until ``deadline`` at most.

        At most ``render_queue`` renders wait for one; beyond that, or when the wait reaches the
        deadline, ``Overloaded`` (503 + Retry-After): refused in microseconds instead of piling up
        threads, memory and S3 connections. Paired with ``_leave``.
        """
        with self._admit_lock:
            if self._admitted >= self.settings.render_concurrency + self.settings.render_queue:
                raise Overloaded("the server is busy rendering: retry shortly")
            self._admitted += 1
        if not self._slots.acquire(timeout=max(0.0, deadline - time.monotonic())):
            with self._admit_lock:
                self._admitted -= 1
            raise Overloaded("the server is busy rendering: retry shortly")

    def _leave(self) -> None:
        """Give back a slot taken by ``_admit``."""
        self._slots.release()
        with self._admit_lock:
            self._admitted -= 1

    @contextlib.contextmanager
    def render_slot(self) -> Iterator[None]:
        """Hold a render slot for the block (admitted like a render; e.g. batch work)."""
        self._admit(time.monotonic() + self.settings.request_budget)
        try:
            yield
        finally:
            self._leave()

    def max_age(self, req: RenderRequest) -> int:
        """Cache-Control max-age: short while TIME is open-ended (new scenes may still arrive)."""
        layer = self.registry.get(req.layer)
        time_range = req.time if req.time is not None else layer.default_time
        if time_range is None or time_range.end is None or time_range.end > datetime.now(UTC):
            return self.settings.cache_max_age_open
        if layer.config.cache_max_age is not None:
            return layer.config.cache_max_age
        return self.settings.cache_max_age

    def encode(
        self, data: np.ma.MaskedArray, req: RenderRequest, scenes: list[Scene], timings: dict[str, float]
    ) -> RenderResult:
        """Encode post-processed data in the request's format and time it."""
        mark = time.perf_counter()
        content = encode(data, req.grid, req.format, self.settings.png_zlevel, coverage=req.coverage)
        timings = {**timings, "encode": (time.perf_counter() - mark) * 1000}
        return RenderResult(
            content, req.format.value, [s.id for s in scenes], timings, empty=bool(np.ma.getmaskarray(data).all())
        )

    def render_empty(self, req: RenderRequest) -> RenderResult:
        """A fully transparent (or, for JPEG, black) image on the request's grid."""
        check_format(self.output(req), req.format)
        return self.encode(self._empty_data(req).data, req, [], {})

    def _empty_data(self, req: RenderRequest) -> RenderedData:
        """Nothing drawn on the request's grid: every pixel transparent, no scene."""
        output = self.output(req)
        shape = (req.grid.height, req.grid.width)
        values = np.zeros((output.bands, *shape), dtype=np.float32)
        mosaic = Mosaic({}, np.zeros(shape, dtype=bool), np.full(shape, -1, dtype=np.int16), [])
        return RenderedData(to_sample_type(values, output, mosaic.filled), values, mosaic, {})

    def too_coarse(self, req: RenderRequest) -> float | None:
        """The request's metres per pixel when it is coarser than its layer's floor, else None.

        Why a floor: a zoomed-out view covers hundreds of scenes (only ``max_scenes`` of which
        would be read, so the image is wrong anyway) and makes GDAL transform a world-sized grid
        into each scene's UTM zone, which took minutes per tile. Measured geodesically
        (``Grid.ground_resolution``), so it means the same in every CRS.
        """
        limit = self.registry.get(req.layer).config.max_meters_per_pixel
        if limit is None:
            return None
        grid = req.grid
        resolution = _metres_per_pixel(grid.bbox, grid.crs_wkt or grid.crs.to_wkt(), grid.width, grid.height)
        return resolution if resolution > limit else None

    def floor_image(self, req: RenderRequest, resolution: float) -> RenderResult:
        """The answer beyond a layer's floor: nothing is searched or read.

        Maps (XYZ, WMS, WMTS) get a fully transparent image with an ``X-Eotiler-Notice`` to zoom
        in, cacheable like any image (it depends only on the grid), so a map client zoomed out
        shows an empty layer at once instead of waiting. A coverage (WCS) is data: an empty
        GeoTIFF would read as "no data here", so it is refused with a 400 that says how.
        """
        layer = self.registry.get(req.layer)
        limit = layer.config.max_meters_per_pixel
        if req.coverage:
            raise InvalidParameter(
                f"the coverage would have {resolution:.0f} m per pixel; {layer.id} is served at {limit:g} m per "
                "pixel or finer: request a smaller area or more pixels"
            )
        notice = f"zoom in: {layer.id} is drawn at {limit:g} m per pixel or finer, this view has {resolution:.0f} m"
        key = render_key(req, layer, [], variant=f"floor:{self.settings.png_zlevel}")
        mark = time.perf_counter()
        found = self.cache.get(key)
        if found is not None:
            result = self._hit(found, req, {}, mark)
        else:
            result = self.render_empty(req)
            result.etag = content_etag(result.content)
            result.cache = "MISS"
            self.cache.put(key, CachedImage(result.content, result.media_type, [], True, result.etag))
        result.max_age = self.settings.cache_max_age
        result.notice = notice
        return result
