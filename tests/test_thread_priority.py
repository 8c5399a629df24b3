"""Background work runs below the request threads' CPU priority (``server/thread_priority.py``)."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest

from server.sources.overview_cache import OverviewCache
from server.thread_priority import BACKGROUND_NICE, lower_this_thread

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="threads have their own nice value on Linux only")


def nice_of_this_thread() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def test_a_lowered_thread_leaves_the_others_alone() -> None:
    before = nice_of_this_thread()
    seen: list[int] = []

    def background() -> None:
        lower_this_thread()
        seen.append(nice_of_this_thread())

    thread = threading.Thread(target=background)
    thread.start()
    thread.join(10)
    assert seen == [max(before, BACKGROUND_NICE)]
    assert nice_of_this_thread() == before  # the calling thread, as every request thread, is untouched


def test_overview_builds_run_at_background_priority(tmp_path: Path) -> None:
    if nice_of_this_thread() >= BACKGROUND_NICE:
        pytest.skip("the tests already run at background priority: nothing to tell apart")
    cache = OverviewCache(tmp_path / "overviews", 64 * 1024**2)
    for executor in (cache._builder, cache._prefetcher):  # noqa: SLF001 - the threads builds run on
        assert executor.submit(nice_of_this_thread).result(10) >= BACKGROUND_NICE
