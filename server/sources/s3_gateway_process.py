"""The S3 gateway in a process of its own, started and watched by the server.

Why a process and not a thread: GDAL answers Python's calls on the caller's thread, and some of
them keep the GIL for the whole read (measured: rasterio's decimated ``read`` of a tiled GeoTIFF
held it for the 16 s of its HTTP timeout). A gateway thread in the same interpreter then cannot
answer the very request GDAL waits for, and every read stalls until curl gives up. In its own
process the gateway answers whatever the readers hold.

The options, credentials included, reach it on stdin (never on the command line, which ``ps``
shows); it lives as long as its stdin, so it ends with the server even when the server is
killed. A gateway that dies is started again on the same port, so GDAL's endpoint stays valid.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import subprocess
import sys
import threading
import time

import httpx

from server.sources.s3_gateway_options import GatewayOptions, options_to_json

log = logging.getLogger(__name__)

START_SECONDS = 30.0  # a cold interpreter importing httpx and uvicorn on a loaded machine
WATCH_SECONDS = 1.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class GatewayProcess:
    """Start, watch and stop one S3 gateway process (``python -m server.sources.s3_gateway``)."""

    def __init__(self, options: GatewayOptions) -> None:
        self.options = options
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self._process: subprocess.Popen[str] | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self.restarts = 0

    def start(self) -> str:
        """Start the process and a watchdog; returns ``host:port`` once it serves."""
        self._spawn()
        threading.Thread(target=self._watch, name="eotiler-s3-gateway-watch", daemon=True).start()
        return self.address

    def _spawn(self) -> None:
        process = subprocess.Popen(
            [sys.executable, "-m", "server.sources.s3_gateway", str(self.port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(options_to_json(self.options) + "\n")
        process.stdin.flush()
        ready: list[str] = []
        reader = threading.Thread(target=lambda: ready.append(process.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(START_SECONDS)
        if not ready or not ready[0].startswith("READY"):
            process.kill()
            raise RuntimeError("the S3 gateway process did not start")
        with self._lock:
            self._process = process

    def _watch(self) -> None:
        """Start the gateway again (same port) whenever it ends on its own."""
        while not self._stopping.wait(WATCH_SECONDS):
            with self._lock:
                process = self._process
            if process is None or process.poll() is None:
                continue
            log.error("the S3 gateway exited with %s: starting it again", process.returncode)
            try:
                self._spawn()
                self.restarts += 1
            except (OSError, RuntimeError) as exc:
                log.error("the S3 gateway could not be started again: %s", exc)

    def alive(self) -> bool:
        """Whether the gateway process runs."""
        with self._lock:
            return self._process is not None and self._process.poll() is None

    def stats(self) -> dict[str, float]:
        """The gateway's counters (the last ones seen while it does not answer)."""
        try:
            self._last = httpx.get(f"http://{self.address}/_stats", timeout=1.0).json()
        except (httpx.HTTPError, ValueError):
            pass
        return self._last or {
            key: 0.0
            for key in (
                "requests",
                "throttled",
                "queue_wait_seconds",
                "in_flight",
                "peak_in_flight",
                "coalesced",
                "index_reads",
                "prefetched_tile_parts",
            )
        }

    def stop(self) -> None:
        """Close its stdin (it stops by itself), then make sure it is gone."""
        self._stopping.set()
        with self._lock:
            process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(OSError):
            assert process.stdin is not None
            process.stdin.close()
        deadline = time.monotonic() + 5
        while process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if process.poll() is None:
            process.kill()
            process.wait(5)
