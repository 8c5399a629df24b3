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
