"""The malloc-arena cap reaches glibc, and an explicit MALLOC_ARENA_MAX is left to win.

Its effect on memory is measured by the load soak (benchmarks/soak.py), not here.
"""

from __future__ import annotations

import ctypes.util
import platform

import pytest

from server.malloc_arenas import _glibc, limit_arenas, release_free_memory


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
