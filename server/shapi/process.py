"""Sentinel Hub Process API (``POST /api/v1/process``) on the one request pipeline.

A body becomes one ``OutputsRequest`` (``render/outputs.py``): the scenes are read and
mosaicked once, each requested output is evaluated and encoded, and ``userdata`` is what the
script's ``updateOutputMetadata`` sets. It goes through ``Pipeline.render`` like every protocol:
the same render slots, request budget, tile cache (an output's image has the key the same image
has from WCS or WMS) and encoders. A request geometry is ``RenderRequest.clip`` (pixels whose
centre lies outside it are no data: transparent, NaN or the TIFF mask), and images up to
``EOTILER_MAX_IMAGE_SIZE`` per side are drawn in strips by the pipeline (``render/strips.py``).
Several responses come back as a tar (members ``<identifier>.<ext>``, as Sentinel Hub names
them) or, when ``Accept`` asks, ``multipart/mixed``.
"""

from __future__ import annotations

import io
import tarfile
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from server.api.tiles import PipelineDep
from server.errors import EotilerError, InvalidFormat, InvalidParameter
from server.evalscript.contract import Evalscript
from server.models import Grid, ImageFormat, RenderRequest, RenderResult
from server.pipeline import Pipeline
from server.render.clip import clip_text
from server.render.encode import check_format
from server.render.outputs import OutputsRequest
from server.shapi import request as shr
from server.shapi.errors import sh_error_response, unexpected_error

router = APIRouter(prefix="/api/v1", tags=["sentinel-hub"])

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


def render_request(parsed: ProcessRequest, responses: tuple[Wanted, ...]) -> OutputsRequest:
    """The pipeline request of a Process API body: one read, an image per wanted output."""
    data, grid = parsed.data, parsed.grid
    base = RenderRequest(
        data.layer.id,
        grid,
        ImageFormat.PNG,
        time=data.time,
        maxcc=data.maxcc,
        priority=data.priority,
        script=parsed.script,
        resampling=shr.resampling(data, grid),
        clip=clip_text(parsed.bounds.geometry),
    )
    outputs = []
    for wanted in responses:
        if wanted.identifier == USERDATA:
            continue
        fmt = FORMATS[wanted.media]
        script = shr.for_output(parsed.script, wanted.identifier, "evalscript")
        # the script's bands as they are, as Sentinel Hub returns them (no alpha it did not make)
        outputs.append(replace(base, format=fmt, script=script, coverage=True))
    wants_user_data = any(wanted.identifier == USERDATA for wanted in responses)
    return OutputsRequest(base, tuple(outputs), wants_user_data)


def render(pipeline: Pipeline, parsed: ProcessRequest, responses: tuple[Wanted, ...]) -> list[Part]:
    """Every wanted response through ``Pipeline.render``, in the order they were asked for."""
    req = render_request(parsed, responses)
    for out in req.outputs:
        check_format(pipeline.output(out), out.format)
    coarse = pipeline.too_coarse(req.base)
    if coarse is not None:
        limit = parsed.data.layer.config.max_meters_per_pixel
        raise InvalidParameter(
            f"the image would have {coarse:.0f} m per pixel; {parsed.data.collection} is served at {limit:g} m "
            "per pixel or finer: request a smaller area or more pixels",
            parameter="output.width",
        )
    results = iter(pipeline.render(req))
    images = [next(results) for _ in req.outputs]
    user_data = next(results, None)
    parts = []
    for wanted in responses:
        result = user_data if wanted.identifier == USERDATA else images.pop(0)
        assert result is not None
        parts.append(Part(wanted.identifier, wanted.media, result.content, result))
    return parts


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
    parts = render(pipeline, parsed, responses)
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
