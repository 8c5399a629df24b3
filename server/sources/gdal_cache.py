"""Forget what GDAL remembers about one remote file after a failed read.

Why: GDAL's /vsicurl layer caches a file's properties, including a failed lookup. Measured with
the fault-injecting S3 server: after one 500 (or a hang, or a truncated body) the same file kept
failing with "HTTP response code: 500" once S3 was healthy again, for the life of the process.
rasterio does not expose ``VSICurlPartialClearCache``, so it is called through ctypes on the
GDAL library rasterio already loaded (the same handle: ``dlopen`` of a loaded library).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import logging
import os
from collections.abc import Callable

import rasterio

log = logging.getLogger(__name__)


def _load() -> Callable[[bytes], None] | None:
    libs = os.path.join(os.path.dirname(os.path.dirname(rasterio.__file__)), "rasterio.libs")
    candidates = sorted(glob.glob(os.path.join(libs, "libgdal*")))  # the wheel's bundled GDAL
    found = ctypes.util.find_library("gdal")  # a system GDAL rasterio was built against
    if found:
        candidates.append(found)
    for candidate in candidates:
        try:
            function = ctypes.CDLL(candidate).VSICurlPartialClearCache
        except (OSError, AttributeError):
            continue
        function.argtypes = [ctypes.c_char_p]
        function.restype = None
        return function
    log.warning("GDAL's VSICurlPartialClearCache not found: a remote file that failed once may keep failing")
    return None


_CLEAR = _load()


def forget_remote_file(path: str) -> None:
    """Drop GDAL's cached properties and data of ``path`` (a ``/vsi...`` path); call inside the
    request's GDAL environment, which names the endpoint."""
    if _CLEAR is not None and path.startswith("/vsi"):
        _CLEAR(path.encode())
