"""Ask the S3 gateway for the JPEG2000 tile-parts of a window just before GDAL reads it.

Why: GDAL decodes the code-stream tiles of a window one after the other on the reading thread,
and fetches each tile-part as it reaches it: over S3 that is one round trip per tile-part, in
sequence (a zoomed-out 256 px tile of a 10 m band needs four). The reader knows the window before
GDAL starts, so it names it to the gateway (``POST /_prefetch``), which fetches the tile-parts
concurrently within the quota and holds them; GDAL's own reads are then answered from memory.

A read goes through the gateway when its GDAL environment carries ``EOTILER_S3_GATEWAY`` (set by
``Settings.gdal_environment``); the prefetch runs at that environment's priority and within its
HTTP timeout. It is only an optimisation: any failure leaves GDAL to fetch as it would have.
"""

from __future__ import annotations

import logging
from functools import cache

import httpx
import rasterio.env
from rasterio.io import DatasetReader
from rio_tiler.utils import get_vrt_transform

from server.models import Grid
from server.sources.gdal_env import GATEWAY_OPTION, PRIORITY_HEADER

log = logging.getLogger(__name__)


@cache
def _client() -> httpx.Client:
    """One client for the process's prefetches (kept-alive connections to the gateway)."""
    return httpx.Client()


def window(path: str, cols_rows: tuple[int, int, int, int]) -> int:
    """Have the gateway fetch the tile-parts under ``cols_rows`` (``col0, row0, col1, row1`` of
    the full-resolution image, ends excluded) of ``path``; returns how many it fetched.

    Call inside the read's ``rasterio.Env``: that is where the gateway and priority are found.
    """
    if not path.startswith("/vsis3/") or not path.lower().endswith(".jp2"):
        return 0
    try:
        options = rasterio.env.getenv()
    except rasterio.env.EnvError:
        return 0
    address = options.get(GATEWAY_OPTION)
    if not address:
        return 0
    headers = {}
    if "background" in str(options.get("GDAL_HTTP_HEADERS", "")):
        headers[PRIORITY_HEADER] = "background"
    body = {"path": path.removeprefix("/vsis3"), "window": list(cols_rows)}
    try:
        timeout = float(options.get("GDAL_HTTP_TIMEOUT", 30))
        answer = _client().post(f"http://{address}/_prefetch", json=body, headers=headers, timeout=timeout)
        return int(answer.json()["fetched"]) if answer.status_code == 200 else 0
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        log.debug("prefetch of %s skipped: %s", path.rsplit("/", 1)[-1], exc)
        return 0


def grid(dataset: DatasetReader, path: str, target: Grid) -> int:
    """``window`` for the part of ``dataset`` that rio-tiler's read of ``target`` decodes."""
    from server.sources.block_read import source_window  # imported here: block_read imports this module

    if not path.startswith("/vsis3/") or not path.lower().endswith(".jp2"):
        return 0
    try:
        vrt_transform, vrt_width, vrt_height = get_vrt_transform(
            dataset, target.bbox, target.height, target.width, dst_crs=target.crs
        )
        found = source_window(dataset, target, vrt_transform, vrt_width, vrt_height)
    except Exception as exc:  # noqa: BLE001 - a hint only: the read itself reports what is wrong
        log.debug("prefetch of %s skipped: %s", path.rsplit("/", 1)[-1], exc)
        return 0
    if found is None:
        return 0
    row0, row1, col0, col1 = found
    return window(path, (col0, row0, col1, row1))
