"""The one request pipeline: layer -> scenes -> mosaic -> evalscript -> encode, through the cache.

Every image endpoint (XYZ, WMS including composites, WMTS, WCS, the map APIs, the Process
API) builds a ``RenderRequest``, a ``CompositeRequest`` of several layers or an
``OutputsRequest`` of several outputs of one script, and calls ``Pipeline.render``; nothing
else reads rasters or runs scripts. ``Pipeline`` orchestrates; the concerns live in their own
modules: admission (``render/admission.py``), the tile cache and render threads
(``cache/render_cache.py``), mosaicking (``render/mosaic.py``), store breakers
(``render/store_breakers.py``), the steps from mosaic to image (``render/draw.py``: script,
post-processing, the request geometry), strips of large images (``render/strips.py``),
compositing (``render/composite.py``), a layer's floor (``render/floor.py``) and encoding
(``render/encode.py``). Per-stage timings are returned for ``Server-Timing`` headers and logs.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import NamedTuple, overload

import numpy as np

from server.cache.keys import composite_key, render_key
from server.cache.render_cache import RenderCache
from server.cache.tile_cache import TileCache
from server.catalog.layers import Layer, LayerRegistry
from server.errors import InvalidParameter
from server.evalscript.contract import Evalscript, OutputSpec, Samples
from server.evalscript.postprocess import to_sample_type
from server.models import Grid, RenderRequest, RenderResult, Scene
from server.render.admission import Admission
from server.render.composite import CompositeRequest, blend, on_background
from server.render.draw import evaluated, output_of, samples_of, user_data_result
from server.render.encode import check_format, encode
from server.render.floor import coarser_than
from server.render.mosaic import Mosaic, SceneReads, mosaic_scenes, samples_over_time, scene_info
from server.render.outputs import USERDATA_MEDIA, OutputsRequest
from server.render.store_breakers import StoreBreakers
from server.render.strips import IN_FLIGHT, STRIP_PIXELS, Drawn, draw_strips, strips
from server.settings import Settings
from server.sources.dataset_pool import DatasetPool
from server.sources.overview_cache import OverviewCache
from server.sources.s3_gateway import s3_buckets
from server.sources.s3_gateway_process import GatewayProcess
from server.upstream_breaker import CircuitBreaker

__all__ = ["Lookup", "Mosaic", "Pipeline", "RenderedData", "scene_info"]


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
        self.gateway = self._gateway(registry, settings)
        self.gdal = settings.gdal_environment(settings.s3_gateway_address or (self.gateway and self.gateway.address))
        self.datasets = DatasetPool(settings.dataset_handles)
        self.overviews = (
            OverviewCache(settings.overview_cache_dir, settings.overview_cache_bytes)
            if settings.overview_cache_bytes > 0
            else None
        )
        pool = ThreadPoolExecutor(max_workers=settings.read_threads, thread_name_prefix="eotiler-read")
        self.reads = SceneReads(self.gdal, pool, self.overviews, self.datasets)
        self.cache = TileCache(settings.cache_memory_bytes, settings.redis_url, settings.cache_ttl)
        self.admission = Admission(
            settings.render_concurrency, settings.render_queue, pixels=settings.render_pixels_per_process
        )
        self.renders = RenderCache(self.cache, self.admission, settings.request_budget, self.max_age)
        self.breakers = StoreBreakers(settings)
        # Strips of large images, drawn while their render thread waits (render/strips.py).
        self.strip_pool = ThreadPoolExecutor(
            max_workers=settings.render_concurrency * IN_FLIGHT, thread_name_prefix="eotiler-strip"
        )
        self.strip_pixels = STRIP_PIXELS  # an image larger than this is drawn in strips of this size
        self.mosaics = 0  # mosaics made since start (each reads its scenes on one grid)
        self._count_lock = threading.Lock()

    @property
    def read_failures(self) -> int:
        """Scene reads that failed since start (``/metrics``)."""
        return self.reads.failures

    def load(self) -> tuple[int, int]:
        """Renders holding a slot, and renders waiting for one."""
        return self.admission.load()

    def circuits(self) -> dict[str, bool]:
        """Whether each upstream's circuit breaker is open: object stores and STAC APIs."""
        breakers = self.breakers.all()
        for layer in self.registry.layers.values():
            found = getattr(layer.catalogue, "breaker", None)
            if found is not None and found not in breakers:
                breakers.append(found)
        return {breaker.name: breaker.is_open for breaker in breakers}

    def breaker(self, layer: Layer) -> CircuitBreaker | None:
        """The circuit breaker of the layer's object store (remote data roots only)."""
        return self.breakers.for_root(layer.collection.data_root)

    @staticmethod
    def _gateway(registry: LayerRegistry, settings: Settings) -> GatewayProcess | None:
        """The S3 gateway this process starts: when layers read ``/vsis3/`` and no shared one runs."""
        buckets = s3_buckets(layer.collection.data_root for layer in registry.layers.values())
        if not buckets or not settings.s3_gateway or settings.s3_gateway_address:
            return None
        gateway = GatewayProcess(settings.gateway_options(buckets))
        gateway.start()
        return gateway

    def close(self) -> None:
        """Stop the reader threads (and the S3 gateway this process runs)."""
        if self.gateway is not None:
            self.gateway.stop()
        self.reads.executor.shutdown(wait=False, cancel_futures=True)
        self.strip_pool.shutdown(wait=False, cancel_futures=True)
        self.renders.close()
        if self.overviews is not None:
            self.overviews.close()
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
        return output_of(self.script(req), req.bands)

    def mosaic(
        self,
        layer: Layer,
        scenes: list[Scene],
        grid: Grid,
        script: Evalscript,
        resampling: str | None,
        deadline: float | None = None,
    ) -> Mosaic:
        """SIMPLE mosaic of ``scenes`` on ``grid`` (``render.mosaic.mosaic_scenes``); reads stop at
        ``deadline``, by default the running render's."""
        deadline = deadline or self.deadline()
        with self._count_lock:  # += is a read and a write: strips mosaic on several threads
            self.mosaics += 1
        return mosaic_scenes(layer, scenes, grid, script, resampling, deadline, self.reads, self.breaker(layer))

    def samples_over_time(
        self, layer: Layer, scenes: list[Scene], req: RenderRequest, script: Evalscript, deadline: float | None = None
    ) -> tuple[Mosaic, Samples]:
        """Multi-temporal inputs (mosaicking ORBIT or TILE): ``render.mosaic.samples_over_time``."""

        def group(members: list[Scene], by: float) -> Mosaic:
            return self.mosaic(layer, members, req.grid, script, req.resampling, by)

        return samples_over_time(layer, scenes, req, script, deadline or self.deadline(), group)

    def render_data(
        self, req: RenderRequest, scenes: list[Scene] | None = None, deadline: float | None = None
    ) -> RenderedData:
        """Render to a post-processed masked array (no encoding): for compositing and queries.
        Reads stop at ``deadline`` (by default the running render's)."""
        if self.too_coarse(req) is not None:  # nothing is read beyond the layer's floor
            return self._empty_data(req)
        return self._render_data(req, scenes, deadline)

    def _render_data(self, req: RenderRequest, scenes: list[Scene] | None, deadline: float | None) -> RenderedData:
        """``render_data`` past the floor check (a strip is checked as its whole image is)."""
        layer = self.registry.get(req.layer)
        script = self.script(req)
        timings: dict[str, float] = {}
        start = time.perf_counter()
        if scenes is None:
            scenes = self.find_scenes(layer, req)
        timings["catalogue"] = (time.perf_counter() - start) * 1000
        mark = time.perf_counter()
        mosaic, samples = self._read(layer, req, script, scenes, deadline)
        timings["read"] = (time.perf_counter() - mark) * 1000
        mark = time.perf_counter()
        data, values, mosaic.filled = evaluated(req, script, mosaic, samples)
        timings["evalscript"] = (time.perf_counter() - mark) * 1000
        return RenderedData(data, values, mosaic, timings)

    def _read(
        self, layer: Layer, req: RenderRequest, script: Evalscript, scenes: list[Scene], deadline: float | None
    ) -> tuple[Mosaic, Samples]:
        """The script's inputs on ``req``'s grid: one mosaic (SIMPLE) or samples over time."""
        if script.mosaicking == "SIMPLE":
            mosaic = self.mosaic(layer, scenes, req.grid, script, req.resampling, deadline)
            return mosaic, samples_of(mosaic)
        return self.samples_over_time(layer, scenes, req, script, deadline)

    def _drawn(self, grid: Grid, draw: Callable[[Grid], Drawn], order: list[Scene]) -> Drawn:
        """``draw`` on ``grid``, in strips when it is large (``render/strips.py``); drawn scenes
        in ``order`` (the catalogue's)."""
        return Drawn.join(draw_strips(strips(grid, self.strip_pixels), draw, self.strip_pool), order)

    @overload
    def render(
        self, req: RenderRequest | CompositeRequest, looked: Lookup | None = None, deadline: float | None = None
    ) -> RenderResult: ...

    @overload
    def render(
        self, req: OutputsRequest, looked: Lookup | None = None, deadline: float | None = None
    ) -> list[RenderResult]: ...

    def render(
        self,
        req: RenderRequest | CompositeRequest | OutputsRequest,
        looked: Lookup | None = None,
        deadline: float | None = None,
    ) -> RenderResult | list[RenderResult]:
        """Render and encode one image, through the tile cache: the entry point of every protocol.

        ``req`` is one layer, several drawn over each other (``CompositeRequest``), or several
        outputs of one script from one read (``OutputsRequest``: a result per output, then the
        userData when asked). The catalogue is always asked first (cheap): the cache key holds
        the resolved scene ids, so two TIME values that select the same scenes share one
        entry. ``looked`` is a lookup already made for ``req`` (by ``probe_memory``), so it is
        not made twice. ``deadline`` (``time.monotonic()``) is when the answer is due: a request
        budget from now by default. Large images are drawn in strips (``render/strips.py``).
        """
        if isinstance(req, CompositeRequest):
            return self._render_composite(req, deadline)
        if isinstance(req, OutputsRequest):
            return self._render_outputs(req, deadline)
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
        deadline = self.deadline()
        empty = [self.too_coarse(part) is not None for part in req.parts]  # parts beyond their floor

        def draw(grid: Grid) -> Drawn:
            rendered = [
                self._empty_data(replace(part, grid=grid))
                if none
                else self._render_data(replace(part, grid=grid), scenes, deadline)
                for part, scenes, none in zip(req.parts, found, empty, strict=True)
            ]
            if len(rendered) == 1:
                data = on_background(rendered[0].data, req.bgcolor)
            else:
                data = blend([r.data for r in rendered], req.transparent, req.bgcolor)
            return Drawn.of([data], rendered)

        drawn = self._drawn(req.first.grid, draw, [scene for scenes in found for scene in scenes])
        result = self.encode(drawn.data[0], req.first, drawn.scenes, drawn.timings)
        result.failed, result.skipped = drawn.failed, drawn.skipped
        return result

    def _render_outputs(self, req: OutputsRequest, deadline: float | None) -> list[RenderResult]:
        """Every output's image (and the userData) through the cache; what is missing is drawn from
        one read: the scenes are mosaicked once per strip, then each output is evaluated."""
        base = req.base
        coarse = self.too_coarse(base)
        if coarse is not None:
            floor = [self.floor_image(out, coarse) for out in req.outputs]
            return floor + ([RenderResult(b"{}", USERDATA_MEDIA, [], {})] if req.user_data else [])
        layer = self.registry.get(base.layer)
        for out in req.outputs:
            check_format(self.output(out), out.format)
        start = time.perf_counter()
        scenes = self.find_scenes(layer, base)
        timings = {"catalogue": (time.perf_counter() - start) * 1000}
        keys = [self.cache_key(out, layer, scenes) for out in req.outputs]
        if req.user_data:
            keys.append(render_key(base, layer, scenes, variant="userdata"))

        def produce(missing: list[int]) -> list[RenderResult]:
            return self._outputs_uncached(req, scenes, missing)

        return self.renders.cached_many(keys, base, produce, timings, deadline)

    def _outputs_uncached(self, req: OutputsRequest, scenes: list[Scene], missing: list[int]) -> list[RenderResult]:
        """The results numbered ``missing`` (outputs, then the userData as the last one)."""
        deadline = self.deadline()
        layer = self.registry.get(req.base.layer)
        script = self.script(req.base)
        wanted = [req.outputs[i] for i in missing if i < len(req.outputs)]

        def draw(grid: Grid) -> Drawn:
            mark = time.perf_counter()
            base = replace(req.base, grid=grid)
            mosaic, samples = self._read(layer, base, script, scenes, deadline)
            timings = {"read": (time.perf_counter() - mark) * 1000}
            mark = time.perf_counter()
            data = [evaluated(replace(out, grid=grid), self.script(out), mosaic, samples)[0] for out in wanted]
            timings["evalscript"] = (time.perf_counter() - mark) * 1000
            return Drawn(data, mosaic.scenes, mosaic.failed, mosaic.skipped, timings)

        drawn = self._drawn(req.base.grid, draw, scenes)
        results = []
        for out, data in zip(wanted, drawn.data, strict=True):
            result = self.encode(data, out, drawn.scenes, drawn.timings)
            result.failed, result.skipped = drawn.failed, drawn.skipped
            results.append(result)
        if len(missing) > len(wanted):  # the userData
            results.append(user_data_result(script, drawn))
        return results

    def probe_memory(self, req: RenderRequest) -> tuple[RenderResult | None, Lookup | None]:
        """The image from this process's memory cache, or the lookup to hand to ``render``.

        Never does I/O, so the HTTP layer may call it on the event loop and skip a thread hop
        for the common cached tile. Layers searched through a STAC API are not looked up here
        (their search may need the network): ``(None, None)``.
        """
        if not self.registry.get(req.layer).catalogue.enumerable or self.too_coarse(req) is not None:
            return None, None
        looked = self._lookup(req)
        return self.renders.in_memory(looked.key, req, looked.timings), looked

    def _lookup(self, req: RenderRequest) -> Lookup:
        """Scenes and cache key of ``req`` (format checked first: a bad one must not cost a search)."""
        layer = self.registry.get(req.layer)
        check_format(self.output(req), req.format)
        start = time.perf_counter()
        scenes = self.find_scenes(layer, req)
        catalogue_ms = (time.perf_counter() - start) * 1000
        return Lookup(scenes, self.cache_key(req, layer, scenes), {"catalogue": catalogue_ms})

    def cache_key(self, req: RenderRequest, layer: Layer, scenes: list[Scene]) -> str:
        """The tile-cache key of ``req`` once its scenes are known (also used by seeding)."""
        return render_key(req, layer, scenes, variant=f"zlevel={self.settings.png_zlevel}")

    def _render_uncached(self, req: RenderRequest, scenes: list[Scene]) -> RenderResult:
        deadline = self.deadline()

        def draw(grid: Grid) -> Drawn:
            on_grid = replace(req, grid=grid)
            rendered = self._render_data(on_grid, scenes, deadline)
            return Drawn.of([rendered.data], [rendered])

        drawn = self._drawn(req.grid, draw, scenes)
        result = self.encode(drawn.data[0], req, drawn.scenes, drawn.timings)
        result.failed, result.skipped = drawn.failed, drawn.skipped
        return result

    def cached(
        self,
        key: str,
        req: RenderRequest,
        produce: Callable[[], RenderResult],
        timings: dict[str, float],
        deadline: float | None = None,
    ) -> RenderResult:
        """Serve ``key`` from the tile cache, or ``produce`` it in a render slot and store it
        (``cache.render_cache.RenderCache.cached``: 504 at ``deadline``, 503 when full)."""
        return self.renders.cached(key, req, produce, timings, deadline)

    def deadline(self) -> float:
        """When the render running on this thread must be answered (a request budget from now
        outside a render thread)."""
        return self.renders.deadline()

    @contextlib.contextmanager
    def render_slot(self) -> Iterator[None]:
        """Hold a render slot for the block (admitted like a render; e.g. batch work)."""
        self.admission.admit(time.monotonic() + self.settings.request_budget)
        try:
            yield
        finally:
            self.admission.leave()

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
        # A coverage is the script's bands as they are: an alpha band only when the script made one.
        alpha = not req.coverage or self.output(req).has_alpha
        content = encode(data, req.grid, req.format, self.settings.png_zlevel, coverage=req.coverage, alpha=alpha)
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
        mosaic = Mosaic.empty(shape)
        return RenderedData(to_sample_type(values, output, mosaic.filled), values, mosaic, {})

    def too_coarse(self, req: RenderRequest) -> float | None:
        """The request's metres per pixel when it is coarser than its layer's floor, else None
        (``render/floor.py``: why a floor)."""
        return coarser_than(req.grid, self.registry.get(req.layer).config.max_meters_per_pixel)

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
        key = render_key(req, layer, [], variant=f"floor:{self.settings.png_zlevel}")
        result = self.renders.unadmitted(key, req, lambda: self.render_empty(req))
        result.max_age = self.settings.cache_max_age
        result.notice = (
            f"zoom in: {layer.id} is drawn at {limit:g} m per pixel or finer, this view has {resolution:.0f} m"
        )
        return result
