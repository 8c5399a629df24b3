"""Memory freed by renders goes back to the system once no render runs.

A render's arrays are freed into glibc's arenas, which keep most of them (see
``server/malloc_arenas.py``); ``Admission`` runs ``release_free_memory`` on a thread of its own
when the last render leaves. Measured here on a real process: resident memory from /proc.
"""

from __future__ import annotations

import platform
import subprocess
import sys
import threading
import time

import pytest

from server.render.admission import Admission

# 4 MB arrays with small objects between them (what a render leaves: the small ones pin the
# heap), the arrays freed, then the process's resident memory (MB) before and after
# release_free_memory. The first array is mapped on its own; freeing it raises glibc's mmap
# threshold, so the next ones come from the heap, as a server's arrays do after its first render.
FRAGMENTING = """
import numpy as np
from server.malloc_arenas import release_free_memory
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
np.ones(1 << 19).sum()
keep, big = [], []
for _ in range(50):
    big.append(np.ones(1 << 19))
    keep.append(bytearray(2048))
del big
before = rss()
release_free_memory()
print(before, rss())
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_release_free_memory_returns_freed_arrays_to_the_system():
    out = subprocess.run([sys.executable, "-c", FRAGMENTING], capture_output=True, text=True, check=True, timeout=60)
    before, after = (float(v) for v in out.stdout.split())
    assert before - after > 100, f"resident {before:.0f} MB before, {after:.0f} MB after"


def test_the_idle_task_runs_when_the_last_render_leaves_and_not_before():
    calls: list[float] = []
    ran = threading.Event()

    def on_idle() -> None:
        calls.append(time.monotonic())
        ran.set()

    admission = Admission(2, 0, on_idle=on_idle)
    deadline = time.monotonic() + 5
    admission.admit(deadline)
    admission.admit(deadline)
    admission.leave()
    time.sleep(0.2)
    assert calls == [], "a render still runs"
    admission.leave()
    assert ran.wait(5), "the last render left: the idle task ran"
    assert admission.load() == (0, 0)


def test_renders_that_follow_each_other_keep_their_memory_until_the_burst_is_over():
    # A client asking one tile at a time leaves the server idle for a few ms between tiles:
    # giving the freed arrays back then would make each tile map them afresh.
    calls: list[float] = []
    ran = threading.Event()

    def on_idle() -> None:
        calls.append(time.monotonic())
        ran.set()

    admission = Admission(2, 0, on_idle=on_idle, idle_after=2.0)
    for _ in range(20):
        admission.admit(time.monotonic() + 5)
        admission.leave()
        time.sleep(0.01)
    assert calls == [], "renders kept coming: their memory is reused"
    last = time.monotonic()
    assert ran.wait(10), "the burst is over: the idle task ran"
    assert len(calls) == 1 and calls[0] - last >= 1.5
