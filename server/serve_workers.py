"""Several uvicorn workers, each with its own listening socket (``SO_REUSEPORT``), and the
configuration check that runs before any worker starts (``validate``, ``validate_apart``).

Why: uvicorn's workers share one listening socket, and the kernel hands its connections to
whichever worker happens to be waiting in ``accept``: the load soak saw all 16 keep-alive
clients on one of two workers while the other idled. With one ``SO_REUSEPORT`` socket per
worker, Linux spreads connections over the workers by a hash of their addresses.

It is opt-in (``eotiler serve --workers N --reuse-port``): on the 2-core soak it cut p95/p99 by
~10-15 % but doubled the median and added a third to memory, because each worker's in-process
tile cache then sees only half the traffic. With Redis as the shared cache level that penalty
goes away.

uvicorn's own supervisor cannot give each worker a socket of its own, so this is a small one:
spawned worker processes (like uvicorn's), replaced when one dies, and on SIGTERM/SIGINT each
worker gets SIGTERM and shuts down gracefully (uvicorn's ``timeout_graceful_shutdown``). The
supervisor holds the port with a bound socket that never listens, so it receives nothing.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import uvicorn

log = logging.getLogger("eotiler.serve")
BACKLOG = 2048
RESTART_PAUSE = 1.0  # seconds between replacing a dead worker and the next check


def validate(config: Path) -> list[str]:
    """Load and smoke-test the configuration; the S3 buckets its layers read (for the gateway)."""
    from server.catalog.layers import LayerRegistry
    from server.config import load_config
    from server.evalscript import js_pool
    from server.sources.s3_gateway_options import s3_buckets

    registry = LayerRegistry(load_config(config))
    js_pool.shutdown()  # validation compiled the JavaScript layers; the workers start their own pools
    return sorted(s3_buckets(layer.collection.data_root for layer in registry.layers.values()))


def validate_apart(config: Path) -> list[str]:
    """``validate`` in a process of its own, which ends after it.

    Why: the supervisor of ``--workers N`` lives as long as the server, and what validation
    imports and builds (GDAL, numpy, every layer's script) would stay in its memory for nothing,
    ~100 MB next to each worker's own copy.
    """
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as child:
        return child.submit(validate, config).result()


def _reuse_port_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def _worker(options: dict[str, Any]) -> None:
    """One worker process: its own listening socket on the shared port, then uvicorn."""
    own = _reuse_port_socket(options["host"], options["port"])
    own.listen(BACKLOG)
    uvicorn.Server(uvicorn.Config(**options)).run(sockets=[own])


def serve(options: dict[str, Any], workers: int, graceful_timeout: float) -> None:
    """Run ``workers`` uvicorn workers with ``uvicorn.Config(**options)`` until SIGTERM/SIGINT."""
    holder = _reuse_port_socket(options["host"], options["port"])  # fails early if the port is taken
    spawn = multiprocessing.get_context("spawn")
    stopping = threading.Event()

    def start() -> BaseProcess:
        process = spawn.Process(target=_worker, args=(options,), daemon=False)
        process.start()
        return process

    def stop(signum: int, _frame: object) -> None:
        log.info("received %s: stopping the workers", signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    processes = [start() for _ in range(workers)]
    try:
        while not stopping.wait(RESTART_PAUSE):
            for i, process in enumerate(processes):
                if not process.is_alive():
                    log.warning("worker %s exited with %s: starting another", process.pid, process.exitcode)
                    processes[i] = start()
    finally:
        for process in processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + graceful_timeout + 5
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()
        holder.close()
