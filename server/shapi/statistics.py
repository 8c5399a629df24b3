"""Sentinel Hub Statistical API (``POST /api/v1/statistics``) on the one request pipeline.

``aggregation.timeRange`` is cut into intervals of ``aggregationInterval.of``; each interval is
one render per evalscript output (``Pipeline.render_data`` with the interval as TIME, mosaicked
by the request's ``mosaickingOrder``), and the statistics are computed over the raw values the
script returned. A pixel counts when its centre lies in the request geometry (every pixel for a
bbox); of those, pixels no scene covered, where the script's ``dataMask`` output is 0, or whose
value is NaN are ``noDataCount``. Intervals without any scene are left out, as Sentinel Hub does.

Why not reuse a Process API image: statistics need the script's values before any sample-type
conversion (an AUTO output would be quantised to 0..255), which ``render_data`` returns.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from server.api.tiles import PipelineDep
from server.errors import EotilerError, InvalidParameter, UpstreamTimeout
from server.evalscript.contract import Evalscript
from server.models import Grid, ImageFormat, RenderRequest, TimeRange, parse_time
from server.pipeline import Pipeline
from server.shapi import request as shr
from server.shapi.errors import sh_error_response, unexpected_error
from server.shapi.scenes import iso

router = APIRouter(prefix="/api/v1", tags=["sentinel-hub"])

MAX_INTERVALS = 1000
MAX_PERCENTILES = 100
MAX_BINS = 1000
DATA_MASK = "dataMask"
BEHAVIOURS = ("SKIP", "SHORTEN", "EXTEND")
INTERPOLATIONS = ("higher", "lower", "nearest", "linear", "midpoint")
_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class Histogram:
    """A band's histogram request: explicit edges, or a count or width between two edges."""

    bins: tuple[float, ...] | None = None
    n_bins: int | None = None
    bin_width: float | None = None
    low: float | None = None
    high: float | None = None

    def edges(self, values: np.ndarray) -> np.ndarray:
        """The bin edges for ``values`` (missing low/high edges are the values' min/max)."""
        if self.bins is not None:
            return np.asarray(self.bins, dtype=np.float64)
        low = self.low if self.low is not None else float(values.min()) if values.size else 0.0
        high = self.high if self.high is not None else float(values.max()) if values.size else 0.0
        if self.bin_width is not None:
            count = max(1, min(MAX_BINS, math.ceil((high - low) / self.bin_width - 1e-9)))
            return low + self.bin_width * np.arange(count + 1, dtype=np.float64)
        return np.linspace(low, high, (self.n_bins or 10) + 1)


@dataclass(frozen=True, slots=True)
class BandCalculation:
    """What to compute for one band beyond min/max/mean/stDev."""

    percentiles: tuple[float, ...] = ()
    interpolation: str = "higher"
    histogram: Histogram | None = None


def _per_band(spec: Any, where: str) -> dict[str, Any]:
    if spec is None:
        return {}
    if not isinstance(spec, dict) or len(spec) > 64:
        raise InvalidParameter(f"{where} must map band names (or default) to objects", parameter=where)
    return spec


def _histogram(spec: Any, where: str) -> Histogram:
    if not isinstance(spec, dict):
        raise InvalidParameter(f"{where} must be an object", parameter=where)
    bins = shr.member(spec, "bins", list, where)
    n_bins = shr.number(spec, "nBins", where, 1, MAX_BINS)
    width = shr.number(spec, "binWidth", where, 1e-12, 1e12)
    low = shr.number(spec, "lowEdge", where, -1e30, 1e30)
    high = shr.number(spec, "highEdge", where, -1e30, 1e30)
    if bins is not None:
        if not 2 <= len(bins) <= MAX_BINS + 1 or not all(
            isinstance(b, int | float) and not isinstance(b, bool) and math.isfinite(b) for b in bins
        ):
            raise InvalidParameter(f"{where}.bins must list 2 to {MAX_BINS + 1} edges", parameter=f"{where}.bins")
        if any(b >= a for a, b in zip(bins[1:], bins, strict=False)):
            raise InvalidParameter(f"{where}.bins must increase", parameter=f"{where}.bins")
        return Histogram(bins=tuple(float(b) for b in bins))
    if n_bins is not None and n_bins != int(n_bins):
        raise InvalidParameter(f"{where}.nBins must be an integer", parameter=f"{where}.nBins")
    if (n_bins is None) == (width is None):
        raise InvalidParameter(f"{where}: give one of nBins, binWidth or bins", parameter=where)
    if low is not None and high is not None and low >= high:
        raise InvalidParameter(f"{where}.lowEdge must be below highEdge", parameter=f"{where}.lowEdge")
    if width is not None and (low is None or high is None or (high - low) / width > MAX_BINS):
        raise InvalidParameter(
            f"{where}.binWidth needs lowEdge and highEdge, {MAX_BINS} bins at most", parameter=f"{where}.binWidth"
        )
    return Histogram(n_bins=int(n_bins) if n_bins else None, bin_width=width, low=low, high=high)


def _percentiles(spec: Any, where: str) -> tuple[tuple[float, ...], str]:
    if spec is None:
        return (), "higher"
    if not isinstance(spec, dict):
        raise InvalidParameter(f"{where} must be an object", parameter=where)
    ks = shr.member(spec, "k", list, where, required=True)
    if not 1 <= len(ks) <= MAX_PERCENTILES or not all(
        isinstance(k, int | float) and not isinstance(k, bool) and 0 <= k <= 100 for k in ks
    ):
        raise InvalidParameter(f"{where}.k must list 1 to {MAX_PERCENTILES} numbers from 0 to 100", parameter=where)
    method = shr.member(spec, "interpolation", str, where) or "higher"
    if method.lower() not in INTERPOLATIONS:
        raise InvalidParameter(
            f"{where}.interpolation must be one of {', '.join(INTERPOLATIONS)}", parameter=f"{where}.interpolation"
        )
    return tuple(float(k) for k in ks), method.lower()


def parse_calculations(value: Any, output_ids: tuple[str, ...]) -> dict[str, dict[str, BandCalculation]]:
    """``calculations``: per output id (or ``default``), per band name (or ``default``)."""
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > 64:
        raise InvalidParameter("calculations must map output ids to objects", parameter="calculations")
    parsed: dict[str, dict[str, BandCalculation]] = {}
    for output_id, spec in value.items():
        where = f"calculations.{str(output_id)[:64]}"
        if output_id != "default" and output_id not in output_ids:
            raise InvalidParameter(f"{where}: the evalscript has no such output", parameter=where)
        if not isinstance(spec, dict):
            raise InvalidParameter(f"{where} must be an object", parameter=where)
        statistics = _per_band(spec.get("statistics"), f"{where}.statistics")
        histograms = _per_band(spec.get("histograms"), f"{where}.histograms")
        bands: dict[str, BandCalculation] = {}
        for band in set(statistics) | set(histograms):
            stats = statistics.get(band)
            if stats is not None and not isinstance(stats, dict):
                raise InvalidParameter(f"{where}.statistics.{band} must be an object", parameter=where)
            ks, method = _percentiles((stats or {}).get("percentiles"), f"{where}.statistics.{band}.percentiles")
            hist = _histogram(histograms[band], f"{where}.histograms.{band}") if band in histograms else None
            bands[str(band)] = BandCalculation(ks, method, hist)
        parsed[str(output_id)] = bands
    return parsed


def _calculation(calcs: dict[str, dict[str, BandCalculation]], output_id: str, band: str) -> BandCalculation:
    bands = calcs.get(output_id, calcs.get("default", {}))
    return bands.get(band, bands.get("default", BandCalculation()))


def intervals(aggregation: dict[str, Any]) -> list[tuple[datetime, datetime]]:
    """``timeRange`` cut by ``aggregationInterval`` (``[from, to)`` each), per ``lastIntervalBehavior``."""
    window = shr.member(aggregation, "timeRange", dict, "aggregation", required=True)
    start_text = shr.member(window, "from", str, "aggregation.timeRange", required=True)
    end_text = shr.member(window, "to", str, "aggregation.timeRange", required=True)
    whole = parse_time(f"{start_text}/{end_text}", "aggregation.timeRange")
    assert whole is not None and whole.start is not None and whole.end is not None
    spec = shr.member(aggregation, "aggregationInterval", dict, "aggregation", required=True)
    step = shr.period(spec.get("of"), "aggregation.aggregationInterval.of")
    behaviour = (shr.member(spec, "lastIntervalBehavior", str, "aggregation.aggregationInterval") or "SKIP").upper()
    if behaviour not in BEHAVIOURS:
        raise InvalidParameter(
            "aggregation.aggregationInterval.lastIntervalBehavior must be SKIP, SHORTEN or EXTEND",
            parameter="aggregation.aggregationInterval.lastIntervalBehavior",
        )
    start, stop = whole.start, whole.end + _MICROSECOND  # parse_time's end is inclusive
    found: list[tuple[datetime, datetime]] = []
    while start < stop:
        end = shr.add_period(start, step)
        if end > stop:
            if behaviour == "SKIP":
                break
            if behaviour == "SHORTEN":
                end = stop
        found.append((start, end))
        if len(found) > MAX_INTERVALS:
            raise InvalidParameter(
                f"aggregation: more than {MAX_INTERVALS} intervals; use a longer aggregationInterval",
                parameter="aggregation.aggregationInterval.of",
            )
        start = end
    return found


def band_statistics(values: np.ndarray, valid: np.ndarray, counted: int, calc: BandCalculation) -> dict[str, Any]:
    """Sentinel Hub's ``stats`` (and ``histogram``) of ``values[valid]``; ``counted`` = sampleCount."""
    picked = values[valid].astype(np.float64)
    stats: dict[str, Any] = {"sampleCount": counted, "noDataCount": counted - int(picked.size)}
    if picked.size:
        stats.update(
            min=float(picked.min()),
            max=float(picked.max()),
            mean=float(picked.mean()),
            stDev=float(picked.std(ddof=1)) if picked.size > 1 else 0.0,
        )
        if calc.percentiles:
            found = np.percentile(picked, calc.percentiles, method=calc.interpolation)
            stats["percentiles"] = {str(k): float(v) for k, v in zip(calc.percentiles, found, strict=True)}
    else:
        stats.update(min="NaN", max="NaN", mean="NaN", stDev="NaN")
    answer: dict[str, Any] = {"stats": stats}
    if calc.histogram is not None:
        edges = calc.histogram.edges(picked)
        low, high = edges[0], edges[-1]
        inside = picked[(picked >= low) & (picked <= high)]
        counts = np.histogram(inside, bins=edges)[0] if edges.size > 1 and high > low else np.array([inside.size])
        bins = [
            {"lowEdge": float(edges[i]), "highEdge": float(edges[min(i + 1, edges.size - 1)]), "count": int(c)}
            for i, c in enumerate(counts)
        ]
        answer["histogram"] = {
            "bins": bins,
            "overflowCount": int((picked > high).sum()),
            "underflowCount": int((picked < low).sum()),
        }
    return answer


@dataclass(frozen=True, slots=True)
class StatisticsRequest:
    """A parsed Statistical API body."""

    data: shr.InputData
    bounds: shr.Bounds
    grid: Grid
    script: Evalscript
    outputs: tuple[str, ...]  # the outputs statistics are computed for (every one but dataMask)
    intervals: list[tuple[datetime, datetime]]
    calculations: dict[str, dict[str, BandCalculation]]


def parse(pipeline: Pipeline, body: dict[str, Any]) -> StatisticsRequest:
    """Check a whole body before anything is searched or read."""
    request_input = shr.member(body, "input", dict, "", required=True)
    bounds = shr.parse_bounds(request_input)
    data = shr.parse_input_data(pipeline, request_input)
    aggregation = shr.member(body, "aggregation", dict, "", required=True)
    size = shr.parse_size(aggregation, bounds, "aggregation", pipeline.settings.max_image_size)
    script = shr.compile_script(data.layer, aggregation.get("evalscript"), "aggregation.evalscript")
    declared = shr.outputs(script)
    outputs = tuple(o for o in declared if o != DATA_MASK)
    if not outputs:
        raise InvalidParameter(
            "aggregation.evalscript declares no output but dataMask", parameter="aggregation.evalscript"
        )
    found = intervals(aggregation)
    calculations = parse_calculations(body.get("calculations"), declared)
    return StatisticsRequest(data, bounds, shr.grid(bounds, size), script, outputs, found, calculations)


def _request(parsed: StatisticsRequest, output_id: str, window: TimeRange) -> RenderRequest:
    data = parsed.data
    return RenderRequest(
        data.layer.id,
        parsed.grid,
        ImageFormat.GTIFF,
        time=window,
        maxcc=data.maxcc,
        priority=data.priority,
        script=shr.for_output(parsed.script, output_id, "aggregation.evalscript"),
        coverage=True,
        resampling=shr.resampling(data, parsed.grid),
    )


def statistics(pipeline: Pipeline, parsed: StatisticsRequest) -> dict[str, Any]:
    """Every interval with scenes: per output and band, Sentinel Hub's statistics."""
    grid = parsed.grid
    keep = shr.inside(parsed.bounds, grid)
    if keep is None:
        keep = np.ones((grid.height, grid.width), dtype=bool)
    counted = int(keep.sum())
    coarse = pipeline.too_coarse(_request(parsed, parsed.outputs[0], TimeRange(None, None)))
    if coarse is not None:
        raise InvalidParameter(
            f"the grid would have {coarse:.0f} m per pixel; request a smaller area or more pixels",
            parameter="aggregation.width",
        )
    declared = shr.outputs(parsed.script)
    deadline = time.monotonic() + pipeline.settings.request_budget
    data: list[dict[str, Any]] = []
    with pipeline.render_slot():
        for start, end in parsed.intervals:
            if time.monotonic() > deadline:
                raise UpstreamTimeout(
                    f"the statistics were not ready in time (request budget {pipeline.settings.request_budget:g} s)"
                )
            window = TimeRange(start, end - _MICROSECOND)
            first = _request(parsed, parsed.outputs[0], window)
            scenes = pipeline.find_scenes(parsed.data.layer, first)
            if not scenes:
                continue
            valid = keep.copy()
            if DATA_MASK in declared:
                masked = pipeline.render_data(_request(parsed, DATA_MASK, window), scenes)
                valid &= masked.mosaic.filled & (masked.values[0] != 0)
            outputs: dict[str, Any] = {}
            drawn = False
            for output_id in parsed.outputs:
                rendered = pipeline.render_data(_request(parsed, output_id, window), scenes)
                drawn |= bool(rendered.mosaic.scenes)
                here = valid & rendered.mosaic.filled
                bands = {}
                for number, values in enumerate(rendered.values):
                    calc = _calculation(parsed.calculations, output_id, f"B{number}")
                    bands[f"B{number}"] = band_statistics(values, here & np.isfinite(values), counted, calc)
                outputs[output_id] = {"bands": bands}
            if drawn:
                data.append({"interval": {"from": iso(start), "to": iso(end)}, "outputs": outputs})
    return {"status": "OK", "data": data}


def answer(pipeline: Pipeline, body: dict[str, Any]) -> dict[str, Any]:
    """Answer one Statistical API body."""
    return statistics(pipeline, parse(pipeline, body))


@router.post("/statistics", summary="Sentinel Hub Statistical API")
async def statistics_endpoint(request: Request, pipeline: PipelineDep) -> JSONResponse:
    """Statistics of the evalscript's outputs per aggregation interval over ``input.bounds``."""
    raw = await request.body()
    try:
        body = shr.read_body(raw)
        return JSONResponse(await run_in_threadpool(answer, pipeline, body))
    except EotilerError as error:
        return sh_error_response(error)
    except Exception:  # noqa: BLE001 - an API answers in its own error shape, never a bare 500 page
        return unexpected_error(request)
