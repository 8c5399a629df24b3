"""Run ``eotiler serve`` as a separate process, as an operator would, and wait until it answers."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

import httpx

from tests.conftest import free_port


@contextlib.contextmanager
def eotiler_process(
    config: Path,
    *args: str,
    env: dict[str, str] | None = None,
    output: IO[str] | int = subprocess.DEVNULL,
    launcher: Sequence[str] = (),
) -> Iterator[tuple[str, subprocess.Popen]]:
    """``python -m server serve --config CONFIG --port <free> ARGS``; yields (base URL, process).

    ``env`` replaces the environment (pass ``{**os.environ, ...}`` to extend it). ``launcher``
    goes before the command (e.g. ``unshare`` for a mount namespace of its own); it must end by
    exec'ing the command, so the process is the server. The process is terminated on exit
    unless the test already stopped it.
    """
    port = free_port()
    process = subprocess.Popen(
        [*launcher, sys.executable, "-m", "server", "serve", "--config", str(config), "--port", str(port), *args],
        env=env if env is not None else dict(os.environ),
        stdout=output,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(f"{url}/healthz", timeout=2)
            break
        except httpx.HTTPError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError(f"eotiler serve did not start (exit {process.poll()})") from None
            time.sleep(0.2)
    try:
        yield url, process
    finally:
        if process.poll() is None:
            process.terminate()
        process.wait(timeout=30)
