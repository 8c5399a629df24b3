"""Mosaicking: scenes in priority order -> one set of input samples for the script.

SIMPLE (Sentinel Hub's default) fills each pixel from the first scene with data there and stops
once the grid is full; ORBIT and TILE keep one sample per day or per scene. Reads stop at the
request's deadline, a scene that cannot be read is named and skipped, and the object store's
circuit breaker hears how the reads went.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np
from rasterio.errors import RasterioError

from server.catalog.layers import Layer
from server.errors import EotilerError, UpstreamTimeout, UpstreamUnavailable
from server.evalscript.contract import Evalscript, Samples
from server.evalscript.js_script import SceneInfo, orbits
from server.models import Grid, RenderRequest, Scene
from server.sources.dataset_pool import DatasetPool
from server.sources.gdal_env import GdalEnvironment
from server.sources.overview_cache import OverviewCache
from server.sources.paths import HrefRefused
from server.sources.scene_reader import MissingBands, read_scene
from server.upstream_breaker import CircuitBreaker

log = logging.getLogger(__name__)


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

    @classmethod
    def empty(cls, shape: tuple[int, int], bands: tuple[str, ...] = ()) -> Mosaic:
        """Nothing drawn yet on a grid of ``shape``: zeroed ``bands``, no scene."""
        return cls(
            {name: np.zeros(shape, dtype=np.float32) for name in bands},
            np.zeros(shape, dtype=bool),
            np.full(shape, -1, dtype=np.int16),
            [],
        )

    def add(self, valid: np.ndarray, bands: dict[str, np.ndarray], scene: Scene) -> bool:
        """Take ``scene``'s valid pixels where nothing is drawn yet; True once the grid is full."""
        take = valid & ~self.filled
        if take.all():  # the first scene covers the grid: its arrays are the mosaic, no copy
            for name, values in self.bands.items():
                self.bands[name] = bands[name].astype(values.dtype, copy=False)
            self.scene_index.fill(len(self.scenes))
            self.scenes.append(scene)
            self.filled.fill(True)
        elif take.any():
            for name, values in self.bands.items():
                np.copyto(values, bands[name], where=take)  # no gathered temporaries, unlike fancy indexing
            self.scene_index[take] = len(self.scenes)
            self.scenes.append(scene)
            self.filled |= take
        return bool(self.filled.all())


@dataclass(slots=True)
class SceneReads:
    """What reading scenes needs: the GDAL environment, the reader threads and the caches, and
    a count of failed reads for ``/metrics``."""

    gdal: GdalEnvironment
    executor: Executor
    overviews: OverviewCache | None
    datasets: DatasetPool
    failures: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def gdal_within(self, layer: Layer, deadline: float) -> GdalEnvironment:
        """The GDAL environment for a read that must end by ``deadline`` (remote stores only)."""
        if not layer.collection.data_root.startswith("/vsi"):
            return self.gdal
        return self.gdal.within(deadline - time.monotonic())

    def failed(self) -> None:
        """Count one failed scene read (render threads call this concurrently)."""
        with self._lock:  # += is a read and a write: threads could lose counts
            self.failures += 1


def _public(exc: Exception) -> str:
    """A log-safe one-line description of a read failure (GDAL messages name paths, never keys)."""
    text = exc.public_message if isinstance(exc, EotilerError) else str(exc)
    cause = exc.__cause__ if not isinstance(exc, EotilerError) else None
    if cause is not None:  # rasterio's "Read failed. See previous exception": GDAL's own message
        text = f"{text[:150]} <- {type(cause).__name__}: {str(cause)[:300]}"
    return f"{type(exc).__name__}: {text[:500]}"


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


def scene_info(scene: Scene) -> SceneInfo:
    """What a multi-temporal script sees of a scene: date, cloud cover and product path."""
    href = next(iter(scene.assets.values()), "")
    product = href[: href.index(".SAFE") + 5] if ".SAFE" in href else href.rsplit("/", 1)[0]
    return SceneInfo(scene.datetime, scene.cloud_cover, product)


def mosaic_scenes(
    layer: Layer,
    scenes: list[Scene],
    grid: Grid,
    script: Evalscript,
    resampling: str | None,
    deadline: float,
    reads: SceneReads,
    breaker: CircuitBreaker | None,
) -> Mosaic:
    """Fill the grid per pixel from scenes in priority order, stopping once it is full.

    A scene that cannot be read is skipped and named in ``failed``; once ``deadline`` has passed
    the remaining scenes are named in ``skipped`` (the first scene is always read). Only when
    every scene failed is the request an error: 504 when a read timed out, 502 otherwise. A scene
    with no file for a band the script needs is skipped too and named in ``failed`` as
    ``<scene>:<band>``: the product lacks the data, the store is not at fault.
    """
    names = script.inputs.data_bands
    mosaic = Mosaic.empty((grid.height, grid.width), names)
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
                gdal=reads.gdal_within(layer, deadline),
                executor=reads.executor,
                overviews=reads.overviews,
                pool=reads.datasets,
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
            timeouts += isinstance(exc, UpstreamTimeout) or "timed out" in _public(exc)  # curl error 28
            upstream_failures += _upstream_fault(exc)
            reads.failed()
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
    layer: Layer,
    scenes: list[Scene],
    req: RenderRequest,
    script: Evalscript,
    deadline: float,
    mosaic_group: Callable[[list[Scene], float], Mosaic],
) -> tuple[Mosaic, Samples]:
    """Multi-temporal inputs (mosaicking ORBIT or TILE): one sample per day or per scene.

    Scenes are grouped first (per UTC day for ORBIT), then ``preProcessScenes`` may drop
    groups before anything is read; each group is mosaicked like SIMPLE (``mosaic_group``).
    Arrays come back as (samples, h, w), with the scenes each sample describes. The returned
    ``Mosaic`` is the union, for masks, headers and GetFeatureInfo.
    """
    infos = [scene_info(scene) for scene in scenes]
    groups = orbits(infos) if script.mosaicking == "ORBIT" else [[i] for i in range(len(scenes))]
    preprocess = getattr(script, "preprocess", None)
    if groups and preprocess is not None and getattr(script, "has_preprocess", False):
        window = req.time if req.time is not None else layer.default_time
        keep = preprocess(infos, window.start if window else None, window.end if window else None)
        groups = [groups[i] for i in keep if 0 <= i < len(groups)]
    shape = (req.grid.height, req.grid.width)
    union = Mosaic.empty(shape)
    drawn: list[tuple[list[int], Mosaic]] = []
    error: UpstreamUnavailable | None = None
    for number, group in enumerate(groups):
        members = [scenes[i] for i in group]
        if number and time.monotonic() > deadline:
            union.skipped += [s.id for g in groups[number:] for s in (scenes[i] for i in g)]
            break
        try:
            part = mosaic_group(members, deadline)
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
        np.stack([part.filled for _, part in drawn]).astype(np.float32) if drawn else np.zeros((0, *shape), np.float32)
    )
    return union, Samples(arrays, [infos[i] for group, _ in drawn for i in group])
