"""Background threads yield the CPU to the threads answering requests.

Why: work nobody waits for yet (copies of the coarse bands into the overview cache, built while
the first view of a granule is being decoded) took its share of two cores from the decodes a
user was waiting for. On Linux a thread has its own nice value, so a background thread's
priority can be lowered without touching the request threads of the same process. Not at the
lowest priority: a thread that holds Python's GIL and gets no CPU stalls every other thread of
the process that needs the GIL, and at nice 10 the scheduler still runs it within milliseconds.
"""

from __future__ import annotations

import os
import sys
import threading

BACKGROUND_NICE = 10  # about a tenth of a request thread's CPU share when both want a core


def lower_this_thread() -> None:
    """Run the calling thread at ``BACKGROUND_NICE`` (a ``ThreadPoolExecutor`` initializer).

    Linux only: elsewhere ``setpriority`` on a thread id would name a process. Never raises.
    """
    if sys.platform != "linux":
        return
    thread = threading.get_native_id()
    try:
        if os.getpriority(os.PRIO_PROCESS, thread) < BACKGROUND_NICE:
            os.setpriority(os.PRIO_PROCESS, thread, BACKGROUND_NICE)
    except OSError:
        pass  # a sandbox without the call: background work runs as before
