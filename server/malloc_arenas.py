"""Bound glibc's malloc arenas in a server process (``EOTILER_MALLOC_ARENAS``, default 2).

Why: glibc gives threads up to 8 x cores arenas of their own, and memory freed into an arena
mostly stays with the process. Render threads allocate and free arrays of a few MB all the
time, so a worker's RSS kept growing to ~1.2 GB in the load soak. With two arenas the two
workers held 1.11 GB together at the end of the same soak instead of 1.69 GB, at the same
throughput and with lower p95/p99 (``benchmarks/reports/soak.json``,
``soak-glibc-arenas.json``). ``mallopt(M_ARENA_MAX)`` applies to arenas created after the call,
so it runs at start-up, before the thread pools exist. A ``MALLOC_ARENA_MAX`` in the
environment (which glibc read at process start) is left to win.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_ARENA_MAX = -8  # glibc's mallopt parameter number


def limit_arenas(count: int) -> bool:
    """Cap the arenas at ``count``; False when not applied (0, not glibc, or set by the environment)."""
    if count <= 0 or os.environ.get("MALLOC_ARENA_MAX"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(M_ARENA_MAX, count))
