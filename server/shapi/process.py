"""Sentinel Hub Process API (``POST /api/v1/process``) on the one request pipeline.

Each requested response is one ``RenderRequest`` (the request's script rendering the output the
response names) through ``Pipeline.cached``: the same render slots, request budget, tile cache
and encoders as XYZ, WMS, WMTS and WCS. What is particular to the Process API happens around it:

- a request geometry masks pixels whose centre lies outside it (no data: transparent, NaN or
  the TIFF mask), rasterised on the output grid;
- images up to ``EOTILER_MAX_IMAGE_SIZE`` per side render in strips of ``STRIP_PIXELS`` at most,
  so the reads, the mosaic and the script never hold more than one strip at once (the encoded
  image and its post-processed bands are whole);
- several responses come back as a tar (members ``<identifier>.<ext>``, as Sentinel Hub names
  them) or, when ``Accept`` asks, ``multipart/mixed``. ``userdata`` is ``{}``: the JavaScript
  runtime runs ``updateOutputMetadata`` but does not return its ``userData`` (documented).
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from server.api.tiles import PipelineDep
from server.cache.keys import render_key
from server.errors import EotilerError, InvalidFormat, InvalidParameter
from server.evalscript.contract import Evalscript
from server.models import Grid, ImageFormat, RenderRequest, RenderResult, Scene
from server.pipeline import Pipeline
from server.render.encode import check_format
from server.shapi import request as shr
from server.shapi.errors import sh_error_response, unexpected_error

router = APIRouter(prefix="/api/v1", tags=["sentinel-hub"])

# Largest strip rendered at once (pixels): a 4096 x 1024 strip of four float32 input bands and
# the float64 script values is ~200 MB at most.
STRIP_PIXELS = 4096 * 1024
MAX_RESPONSES = 16
JSON = "application/json"
TAR = "application/x-tar"
MULTIPART = "multipart/mixed"
FORMATS = {
    "image/png": ImageFormat.PNG,
    "image/jpeg": ImageFormat.JPEG,
    "image/jpg": ImageFormat.JPEG,
    "image/tiff": ImageFormat.GTIFF,
    "image/webp": ImageFormat.WEBP,
}
EXTENSIONS = {ImageFormat.PNG: "png", ImageFormat.JPEG: "jpg", ImageFormat.GTIFF: "tif", ImageFormat.WEBP: "webp"}
USERDATA = "userdata"


@dataclass(frozen=True, slots=True)
class Wanted:
    """One entry of ``output.responses``: which output, in which format."""

    identifier: str
    media: str  # a key of FORMATS, or JSON for userdata


@dataclass(frozen=True, slots=True)
class ProcessRequest:
    """A parsed Process API body."""

    data: shr.InputData
    bounds: shr.Bounds
    grid: Grid
    script: Evalscript
    responses: tuple[Wanted, ...]


@dataclass(slots=True)
class Part:
    """One rendered response: its bytes, how they are named, and what drew them."""

    identifier: str
    media: str
    content: bytes
    result: RenderResult | None = None

    @property
    def filename(self) -> str:
        """``default.tif``, ``userdata.json``: Sentinel Hub's member names."""
        ext = "json" if self.media == JSON else EXTENSIONS[FORMATS[self.media]]
        return f"{self.identifier}.{ext}"


def _media(value: Any, parameter: str) -> str:
    media = value.strip().lower() if isinstance(value, str) else None
    if media not in (*FORMATS, JSON):
        raise InvalidFormat(
            f"{parameter} must be image/png, image/jpeg, image/tiff or application/json", parameter=parameter
        )
    return media


def parse_responses(output: dict[str, Any]) -> tuple[Wanted, ...]:
    """``output.responses`` (default: one PNG of the ``default`` output)."""
    listed = shr.member(output, "responses", list, "output")
    if listed is None:
        return (Wanted("default", "image/png"),)
    if not listed or len(listed) > MAX_RESPONSES:
        raise InvalidParameter(
            f"output.responses must list 1 to {MAX_RESPONSES} responses", parameter="output.responses"
        )
    found: list[Wanted] = []
    for number, entry in enumerate(listed):
        where = f"output.responses[{number}]"
        if not isinstance(entry, dict):
            raise InvalidParameter(f"{where} must be an object", parameter=where)
        identifier = shr.member(entry, "identifier", str, where) or "default"
        fmt = shr.member(entry, "format", dict, where) or {}
        default_media = JSON if identifier == USERDATA else "image/png"
        media = _media(fmt.get("type", default_media), f"{where}.format.type")
        if (identifier == USERDATA) != (media == JSON):
            raise InvalidFormat(f"{where}: only the userdata response is application/json", parameter=where)
        if any(w.identifier == identifier for w in found):
            raise InvalidParameter(f"{where}: identifier '{identifier[:64]}' is listed twice", parameter=where)
        found.append(Wanted(identifier, media))
    return tuple(found)


def parse(pipeline: Pipeline, body: dict[str, Any]) -> ProcessRequest:
    """Check a whole body before anything is searched or read."""
    request_input = shr.member(body, "input", dict, "", required=True)
    bounds = shr.parse_bounds(request_input)
    data = shr.parse_input_data(pipeline, request_input)
    output = shr.member(body, "output", dict, "") or {}
    size = shr.parse_size(output, bounds, "output", pipeline.settings.max_image_size)
    responses = parse_responses(output)
    script = shr.compile_script(data.layer, body.get("evalscript"), "evalscript")
    for wanted in responses:
        if wanted.identifier != USERDATA:
            shr.for_output(script, wanted.identifier, "evalscript")
    return ProcessRequest(data, bounds, shr.grid(bounds, size), script, responses)


def _strips(grid: Grid) -> list[tuple[int, Grid]]:
    """The grid cut into full-width strips of at most ``STRIP_PIXELS`` (top row, strip grid)."""
    rows = max(1, STRIP_PIXELS // grid.width)
    if rows >= grid.height:
        return [(0, grid)]
    x0, y0, x1, y1 = grid.bbox
    step = (y1 - y0) / grid.height
    strips = []
    for top in range(0, grid.height, rows):
        height = min(rows, grid.height - top)
        box = (x0, y1 - (top + height) * step, x1, y1 - top * step)
        strips.append((top, Grid(box, grid.crs, grid.width, height, grid.crs_wkt)))
    return strips


def _mask_outside(data: np.ma.MaskedArray, keep: np.ndarray) -> np.ma.MaskedArray:
    """No data outside the request geometry (NaN for float values, as the pipeline marks them)."""
    values = np.array(data.data, copy=True)
    if np.issubdtype(values.dtype, np.floating):
        values[:, ~keep] = np.nan
    mask = np.ma.getmaskarray(data) | ~keep[None, :, :]
    return np.ma.MaskedArray(values, mask=mask)


def _render(pipeline: Pipeline, req: RenderRequest, scenes: list[Scene], keep: np.ndarray | None) -> RenderResult:
    """Strip by strip through ``Pipeline.render_data``, masked by the geometry, encoded once."""
    parts: list[np.ma.MaskedArray] = []
    drawn: dict[str, Scene] = {}
    failed: list[str] = []
    skipped: list[str] = []
    timings: dict[str, float] = {}
    for _, strip in _strips(req.grid):
        rendered = pipeline.render_data(replace(req, grid=strip), scenes)
        parts.append(rendered.data)
        drawn.update((s.id, s) for s in rendered.mosaic.scenes)
        failed += [f for f in rendered.mosaic.failed if f not in failed]
        skipped += [s for s in rendered.mosaic.skipped if s not in skipped]
        for stage, ms in rendered.timings.items():
            timings[stage] = timings.get(stage, 0.0) + ms
    data = parts[0] if len(parts) == 1 else np.ma.concatenate(parts, axis=1)
    if keep is not None:
        data = _mask_outside(data, keep)
    result = pipeline.encode(data, req, list(drawn.values()), timings)
    result.failed, result.skipped = failed, skipped
    return result


def render_one(pipeline: Pipeline, parsed: ProcessRequest, wanted: Wanted) -> Part:
    """One response: a render through the pipeline's cache, or ``{}`` for userdata."""
    if wanted.identifier == USERDATA:
        return Part(wanted.identifier, wanted.media, b"{}")
    data, grid = parsed.data, parsed.grid
    fmt = FORMATS[wanted.media]
    req = RenderRequest(
        data.layer.id,
        grid,
        fmt,
        time=data.time,
        maxcc=data.maxcc,
        priority=data.priority,
        script=shr.for_output(parsed.script, wanted.identifier, "evalscript"),
        coverage=fmt is ImageFormat.GTIFF,
        resampling=shr.resampling(data, grid),
    )
    check_format(pipeline.output(req), fmt)
    coarse = pipeline.too_coarse(req)
    if coarse is not None:
        limit = data.layer.config.max_meters_per_pixel
        raise InvalidParameter(
            f"the image would have {coarse:.0f} m per pixel; {data.collection} is served at {limit:g} m per pixel "
            "or finer: request a smaller area or more pixels",
            parameter="output.width",
        )
    start = time.perf_counter()
    scenes = pipeline.find_scenes(data.layer, req)
    timings = {"catalogue": (time.perf_counter() - start) * 1000}
    keep = shr.inside(parsed.bounds, grid)
    if keep is None and len(_strips(grid)) == 1:
        key = pipeline.cache_key(req, data.layer, scenes)  # the very image another protocol may have drawn
    else:
        shape = json.dumps(parsed.bounds.geometry, sort_keys=True) if keep is not None else ""
        variant = f"process:{STRIP_PIXELS}:{hashlib.sha256(shape.encode()).hexdigest()[:16]}"
        key = render_key(req, data.layer, scenes, variant=f"{variant}:{pipeline.settings.png_zlevel}")
    result = pipeline.cached(key, req, lambda: _render(pipeline, req, scenes, keep), timings)
    return Part(wanted.identifier, wanted.media, result.content, result)


def _tar(parts: list[Part]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for part in parts:
            info = tarfile.TarInfo(part.filename)
            info.size = len(part.content)
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(part.content))
    return buffer.getvalue()


def _multipart(parts: list[Part]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    chunks = []
    for part in parts:
        head = (
            f"--{boundary}\r\nContent-Type: {part.media}\r\n"
            f'Content-Disposition: form-data; name="{part.identifier}"; filename="{part.filename}"\r\n\r\n'
        )
        chunks += [head.encode("ascii", "replace"), part.content, b"\r\n"]
    chunks.append(f"--{boundary}--\r\n".encode("ascii"))
    return b"".join(chunks), f'{MULTIPART}; boundary="{boundary}"'


def accepted(header: str | None) -> list[str]:
    """Media types of an ``Accept`` header, in the client's order (parameters dropped)."""
    if not header:
        return []
    return [item.split(";")[0].strip().lower() for item in header.split(",")[:32] if item.strip()]


def choose(responses: tuple[Wanted, ...], accept: list[str]) -> tuple[tuple[Wanted, ...], str | None]:
    """Apply ``Accept``: a container (tar, multipart) for several responses or when asked for; a
    single image response takes the image type ``Accept`` names. Returns the container or None."""
    if MULTIPART in accept:
        return responses, MULTIPART
    if len(responses) > 1 or TAR in accept:
        return responses, TAR
    only = responses[0]
    if only.identifier != USERDATA:
        asked = next((media for media in accept if media in FORMATS), None)
        if asked is not None:
            return (Wanted(only.identifier, asked),), None
    return responses, None


def process(pipeline: Pipeline, body: dict[str, Any], accept: list[str]) -> Response:
    """Answer one Process API body."""
    parsed = parse(pipeline, body)
    responses, container = choose(parsed.responses, accept)
    parts = [render_one(pipeline, parsed, wanted) for wanted in responses]
    headers: dict[str, str] = {}
    drawn = [r.result for r in parts if r.result is not None]
    scenes = list(dict.fromkeys(s for r in drawn for s in r.scenes))
    if scenes:
        headers["X-Eotiler-Scenes"] = ",".join(scenes)[:2000]
    if any(r.failed or r.skipped for r in drawn):
        headers["X-Eotiler-Incomplete"] = "true"
    if container == MULTIPART:
        content, media = _multipart(parts)
        return Response(content, media_type=media, headers=headers)
    if container == TAR:
        return Response(_tar(parts), media_type=TAR, headers=headers)
    return Response(parts[0].content, media_type=parts[0].media, headers=headers)


@router.post("/process", summary="Sentinel Hub Process API")
async def process_endpoint(request: Request, pipeline: PipelineDep) -> Response:
    """Render the request's evalscript over ``input.bounds`` (bbox or geometry) on the ``output`` grid."""
    raw = await request.body()
    try:
        body = shr.read_body(raw)
        return await run_in_threadpool(process, pipeline, body, accepted(request.headers.get("accept")))
    except EotilerError as error:
        return sh_error_response(error)
    except Exception:  # noqa: BLE001 - an API answers in its own error shape, never a bare 500 page
        return unexpected_error(request)
