"""Bound glibc's malloc arenas in a server process (``EOTILER_MALLOC_ARENAS``, default 2), and
give their free pages back to the system when no render runs (``release_free_memory``).

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
import functools
import os
from collections.abc import Callable

M_ARENA_MAX = -8  # glibc's mallopt parameter number
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# Arrays below this come from the arenas, where freed ones are reused (glibc's largest automatic
# value: a 1024 px map's float64 bands, 8-24 MB, were already taken there once seen).
MMAP_THRESHOLD = 32 * 1024 * 1024
# Free memory at an arena's top kept by free(): more than a 256 px tile's arrays (numpy's peak 5-6 MB),
# as little as glibc's automatic value keeps after a 1024 px map's 8 MB arrays.
TRIM_THRESHOLD = 16 * 1024 * 1024


@functools.cache
def _glibc(function: str) -> Callable[..., int] | None:
    """A libc function by name, ``None`` where libc is not glibc (musl, macOS: nothing to tune).

    Looked up once per name: ``find_library`` runs ``ldconfig -p`` in a child process on every
    call, and ``release_free_memory`` runs each time the renders all leave (after every tile of
    a client asking one at a time).
    """
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return getattr(ctypes.CDLL(name), function)
    except (OSError, AttributeError):
        return None


def limit_arenas(count: int) -> bool:
    """Cap the arenas at ``count``; False when not applied (0, not glibc, or set by the environment)."""
    if count <= 0 or os.environ.get("MALLOC_ARENA_MAX"):
        return False
    mallopt = _glibc("mallopt")
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(M_ARENA_MAX, count))


def reuse_freed_arrays() -> bool:
    """Let freed arrays be reused by the next render (fixed mmap and trim thresholds); False
    where not applied (not glibc, or the environment sets either threshold).

    Why: glibc's automatic thresholds return a tile's freed arrays (0.25-1.5 MB each) to the
    system at each free(), so every tile maps and zeroes fresh pages for the same arrays: half
    of a 256 px NDVI tile's evalscript step (about 2 of 4 ms, under load). Fixed thresholds
    keep them in the arena while renders follow each other; ``release_free_memory`` still
    gives them back once no render runs.
    """
    if any(os.environ.get(name) for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")):
        return False
    mallopt = _glibc("mallopt")
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def release_free_memory() -> bool:
    """Return the free pages of every arena to the system (``malloc_trim``); False where not glibc.

    Why: a render's arrays (a 1024 px map: about 90 MB of 4-8 MB arrays) are freed into the
    arenas, where glibc keeps most of them: after 12 GetMaps two at a time a process held 137 MB
    free in its arenas, and ``malloc_trim`` took its resident size from 399 to 280 MB in 10 ms
    (0.4 ms when there is nothing to give back). Nothing is hidden: the pages are unmapped, and a
    later render maps fresh ones.
    """
    trim = _glibc("malloc_trim")
    if trim is None:
        return False
    trim.argtypes = [ctypes.c_size_t]
    return bool(trim(0))
