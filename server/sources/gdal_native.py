"""GDAL functions rasterio does not expose, called through ctypes on the GDAL rasterio loaded.

- ``forget_remote_file``: GDAL's /vsicurl layer caches a file's properties, including a failed
  lookup. Measured with the fault-injecting S3 server: after one 500 (or a hang, or a truncated
  body) the same file kept failing with "HTTP response code: 500" once S3 was healthy again,
  for the life of the process. ``VSICurlPartialClearCache`` drops that state.
- ``read_file``: a whole (small) file through GDAL's virtual file systems, so metadata XML is
  fetched from ``/vsis3/`` with the same endpoint, keys and retries as the rasters.
- ``drain_network_stats``: GDAL counts its HTTP requests and bytes per file system when
  ``CPL_VSIL_NETWORK_STATS_ENABLED`` is on; the totals feed ``/metrics``. GDAL also keeps a
  per-file breakdown, so the statistics are reset each time they are read.

The library handle is the one already loaded (``dlopen`` of a loaded library returns it).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import json
import logging
import os
import threading
from typing import Any

import rasterio

log = logging.getLogger(__name__)


def _library() -> ctypes.CDLL | None:
    libs = os.path.join(os.path.dirname(os.path.dirname(rasterio.__file__)), "rasterio.libs")
    candidates = sorted(glob.glob(os.path.join(libs, "libgdal*")))  # the wheel's bundled GDAL
    found = ctypes.util.find_library("gdal")  # a system GDAL rasterio was built against
    if found:
        candidates.append(found)
    for candidate in candidates:
        try:
            library = ctypes.CDLL(candidate)
            library.VSICurlPartialClearCache  # noqa: B018 - probe: the right library has it
        except (OSError, AttributeError):
            continue
        library.VSICurlPartialClearCache.argtypes = [ctypes.c_char_p]
        library.VSICurlPartialClearCache.restype = None
        library.VSINetworkStatsGetAsSerializedJSON.argtypes = [ctypes.c_void_p]
        library.VSINetworkStatsGetAsSerializedJSON.restype = ctypes.c_void_p
        library.VSINetworkStatsReset.argtypes = []
        library.VSINetworkStatsReset.restype = None
        library.VSIFree.argtypes = [ctypes.c_void_p]
        library.VSIFree.restype = None
        library.VSIFOpenExL.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int]
        library.VSIFOpenExL.restype = ctypes.c_void_p
        library.VSIFCloseL.argtypes = [ctypes.c_void_p]
        library.VSIFCloseL.restype = ctypes.c_int
        library.VSIIngestFile.argtypes = [
            ctypes.c_void_p,
            ctypes.c_char_p,
            ctypes.POINTER(ctypes.c_void_p),
            ctypes.POINTER(ctypes.c_uint64),
            ctypes.c_int64,
        ]
        library.VSIIngestFile.restype = ctypes.c_int
        library.CPLErrorReset.argtypes = []
        library.CPLErrorReset.restype = None
        library.CPLGetLastErrorNo.argtypes = []
        library.CPLGetLastErrorNo.restype = ctypes.c_int
        library.CPLGetLastErrorMsg.argtypes = []
        library.CPLGetLastErrorMsg.restype = ctypes.c_char_p
        return library
    log.warning("GDAL's C library not found: a remote file that failed once may keep failing; no S3 metrics")
    return None


_GDAL = _library()
_STATS_LOCK = threading.Lock()


def forget_remote_file(path: str) -> None:
    """Drop GDAL's cached properties and data of ``path`` (a ``/vsi...`` path); call inside the
    request's GDAL environment, which names the endpoint."""
    if _GDAL is not None and path.startswith("/vsi"):
        _GDAL.VSICurlPartialClearCache(path.encode())


# How GDAL reports a remote file that is not there: no error at all (its directory listing or
# HEAD request found nothing) or CPLE_AWSObjectNotFound; an HTTP 404 names the code.
_NOT_FOUND_ERRORS = (0, 13)


def read_file(path: str, max_bytes: int) -> bytes | None:
    """The whole content of ``path`` (local or ``/vsi...``), ``None`` when it does not exist.

    Call inside the request's GDAL environment (endpoint and keys). Raises ``OSError`` for any
    other failure (an S3 error, a file larger than ``max_bytes``) so callers treat it like a
    failed raster read.
    """
    if not path.startswith("/vsi"):
        try:
            with open(path, "rb") as handle:
                data = handle.read(max_bytes + 1)
        except FileNotFoundError:
            return None
        if len(data) > max_bytes:
            raise OSError(f"{path.rsplit('/', 1)[-1]} is larger than {max_bytes} bytes")
        return data
    if _GDAL is None:
        raise OSError("GDAL's C library is not available to read remote metadata")
    _GDAL.CPLErrorReset()
    handle = _GDAL.VSIFOpenExL(path.encode(), b"rb", 1)
    if not handle:
        number = _GDAL.CPLGetLastErrorNo()
        message = (_GDAL.CPLGetLastErrorMsg() or b"").decode(errors="replace")
        if number in _NOT_FOUND_ERRORS or "404" in message:
            return None
        raise OSError(f"cannot open {path.rsplit('/', 1)[-1]}: {message or f'GDAL error {number}'}")
    buffer = ctypes.c_void_p()
    size = ctypes.c_uint64()
    try:
        if not _GDAL.VSIIngestFile(handle, None, ctypes.byref(buffer), ctypes.byref(size), max_bytes):
            message = (_GDAL.CPLGetLastErrorMsg() or b"").decode(errors="replace")
            raise OSError(f"cannot read {path.rsplit('/', 1)[-1]}: {message or 'read failed'}")
        return ctypes.string_at(buffer, size.value)
    finally:
        if buffer:
            _GDAL.VSIFree(buffer)
        _GDAL.VSIFCloseL(handle)


_TOTALS: dict[tuple[str, str], list[int]] = {}  # (file system, method) -> [requests, bytes]


def network_totals() -> dict[tuple[str, str], tuple[int, int]]:
    """Requests and downloaded bytes per (file system, HTTP method) since the process started.

    GDAL's own statistics are folded in and reset on each call, since GDAL also keeps a
    per-file breakdown that would grow without bound. ``("s3", "GET") -> (12, 345678)``.
    """
    if _GDAL is None:
        return {}
    with _STATS_LOCK:
        pointer = _GDAL.VSINetworkStatsGetAsSerializedJSON(None)
        try:
            text = ctypes.string_at(pointer).decode() if pointer else "{}"
        finally:
            if pointer:
                _GDAL.VSIFree(pointer)
        _GDAL.VSINetworkStatsReset()
        stats: dict[str, Any] = json.loads(text or "{}")
        for handler, data in (stats.get("handlers") or {}).items():
            name = handler.strip("/").removeprefix("vsi") or handler
            for method, numbers in (data.get("methods") or {}).items():
                total = _TOTALS.setdefault((name, method), [0, 0])
                total[0] += int(numbers.get("count", 0))
                total[1] += int(numbers.get("downloaded_bytes", 0))
        return {key: (value[0], value[1]) for key, value in _TOTALS.items()}
