"""V8 worker processes never outlive the server that started them.

A server killed outright (SIGKILL, the OOM killer) cannot stop its workers; a worker left behind
holds ~100 MB for ever. Each worker watches its parent and ends when the parent is gone, even in
the middle of a job.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
SETUP = "//VERSION=3\nfunction setup() { return {input: ['B04'], output: {bands: 1}}; }\n"
# A parent process that starts one worker and keeps it busy for up to 60 s (its time limit).
PARENT = textwrap.dedent(
    f"""
    import numpy as np
    from server.evalscript import js_pool
    from server.evalscript.contract import Samples
    from server.evalscript.js_pool import JsLimits
    from server.evalscript.js_script import JavaScriptEvalscript, set_vectorize

    set_vectorize(False)
    js_pool.configure(1, JsLimits(timeout=60.0))
    script = JavaScriptEvalscript({SETUP + "function evaluatePixel(s) {{ for (;;) {{}} }}"!r}, "endless", {{"B04"}})
    print("evaluating", flush=True)
    script.evaluate(Samples({{"B04": np.zeros((64, 64))}}))
    """
)


def _workers(parent: psutil.Process) -> list[psutil.Process]:
    return [p for p in parent.children() if "server.evalscript.js_worker" in " ".join(p.cmdline())]


def test_a_busy_worker_ends_soon_after_its_parent_is_killed() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    worker: psutil.Process | None = None
    try:
        assert parent.stdout is not None and parent.stdout.readline().strip() == "evaluating"
        workers = _workers(psutil.Process(parent.pid))
        assert len(workers) == 1
        worker = workers[0]
        time.sleep(0.5)  # the job is running in V8 now (its limit is 60 s)
        assert worker.is_running() and worker.status() != psutil.STATUS_ZOMBIE
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        started = time.monotonic()
        gone, _ = psutil.wait_procs([worker], timeout=10)
        assert gone, "the worker outlived its parent"
        assert time.monotonic() - started < 5.0  # the parent check runs every second
    finally:
        if parent.poll() is None:
            parent.kill()
        if worker is not None and worker.is_running():
            worker.kill()

