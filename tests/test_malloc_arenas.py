"""The malloc-arena cap reaches glibc, and an explicit MALLOC_ARENA_MAX is left to win.

Its effect on memory is measured by the load soak (benchmarks/soak.py), not here.
"""

from __future__ import annotations

import ctypes.util
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from server.malloc_arenas import _glibc, limit_arenas, release_free_memory, reuse_freed_arrays


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt(M_ARENA_MAX) is glibc's")
def test_the_arena_cap_is_applied_unless_the_environment_sets_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert limit_arenas(2) is True  # glibc accepted the parameter
    assert limit_arenas(0) is False  # 0 keeps glibc's own default
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")  # glibc read it at start-up: not overridden
    assert limit_arenas(2) is False


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_releasing_memory_starts_no_process_after_the_first_time(monkeypatch: pytest.MonkeyPatch) -> None:
    # find_library runs ``ldconfig -p`` in a child process; the idle task runs after every
    # render burst, so libc is found once and kept.
    release_free_memory()  # the first call finds glibc
    lookups: list[str] = []
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: lookups.append(name))
    release_free_memory()
    assert lookups == []
    assert _glibc("malloc_trim") is not None


# A render thread allocating and freeing a 256 px tile's float64 arrays, 20 times after a warm-up;
# prints the page faults of those 20 (each new page of an array is one).
_TILES = """
import resource, sys, threading
import numpy as np
from server.malloc_arenas import limit_arenas, reuse_freed_arrays
limit_arenas(2)
if sys.argv[1] == "reuse":
    assert reuse_freed_arrays()
def tiles(count):
    for _ in range(count):
        arrays = [np.ones((256, 256)) for _ in range(12)]
        arrays.append(np.ones((3, 256, 256)))
        del arrays
def run():
    tiles(5)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    tiles(20)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
thread = threading.Thread(target=run)
thread.start()
thread.join()
"""


def _tile_page_faults(mode: str) -> int:
    root = Path(__file__).resolve().parent.parent
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES"))}
    done = subprocess.run(
        [sys.executable, "-c", _TILES, mode], cwd=root, env=env, capture_output=True, text=True, timeout=60, check=True
    )
    return int(done.stdout.strip())


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt's thresholds are glibc's")
def test_a_burst_of_tiles_reuses_its_freed_arrays_instead_of_mapping_new_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    # 20 tiles of 15 x 512 KB: 38,400 pages if each array is mapped afresh
    pages = 20 * 15 * 512 * 1024 // 4096
    assert _tile_page_faults("reuse") < pages // 20  # the arrays of the first tiles, reused
    assert _tile_page_faults("glibc") > pages // 2  # glibc's automatic thresholds: mapped again
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "1048576")  # an operator's own choice is left to win
    assert reuse_freed_arrays() is False
