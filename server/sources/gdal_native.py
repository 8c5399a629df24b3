"""GDAL functions rasterio does not expose, called through ctypes on the GDAL rasterio loaded.

- ``forget_remote_file``: GDAL's /vsicurl layer caches a file's properties, including a failed
  lookup. Measured with the fault-injecting S3 server: after one 500 (or a hang, or a truncated
  body) the same file kept failing with "HTTP response code: 500" once S3 was healthy again,
  for the life of the process. ``VSICurlPartialClearCache`` drops that state.
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
