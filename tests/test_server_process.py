"""``eotiler serve`` as a process: metrics summed over workers, and a graceful shutdown that lets
in-flight requests finish."""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support.serve_process import eotiler_process

TILE = "/layers/TRUE_COLOR/tiles/WebMercatorQuad/11/974/666.png?time=2022-10-05"


def eotiler_serve(config: Path, *args: str, **env: str):
    return eotiler_process(config, *args, env={**os.environ, "EOTILER_ACCESS_LOG": "false", **env})


def requests_total(text: str, endpoint: str) -> float:
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "eotiler_requests_total" and s.labels.get("endpoint") == endpoint
    )


def test_metrics_are_summed_over_workers(test_config: Path) -> None:
    with eotiler_serve(test_config, "--workers", "2") as (url, process):
        # the supervisor only supervises: the configuration was checked in a process of its own,
        # so neither GDAL nor the layers' scripts stay in its memory for the server's life
        supervisor_maps = Path(f"/proc/{process.pid}/maps").read_text()
        assert "libgdal" not in supervisor_maps and "mini_racer" not in supervisor_maps
        pids = set()
        for _ in range(40):
            with httpx.Client() as fresh:  # a new connection each time: both workers answer
                fresh.get(f"{url}/healthz")
                pids.add(fresh.get(f"{url}/cache/stats").json().get("pid"))
        scrapes = []
        for _ in range(6):
            with httpx.Client() as fresh:
                scrapes.append(requests_total(fresh.get(f"{url}/metrics").text, "health"))
    assert len(pids - {None}) == 2, "both workers served requests"
    # every scrape, whichever worker answered it, counts all 40 health checks
    assert all(total >= 40 for total in scrapes), scrapes


SLOW = """//VERSION=3
function setup() { return {input: ["B02", "B03", "B04", "dataMask"], output: {bands: 4}}; }
let waited = false;
function evaluatePixel(s) {
  if (!waited) { const end = Date.now() + 1500; while (Date.now() < end) {} waited = true; }
  return [2.5 * s.B04, 2.5 * s.B03, 2.5 * s.B02, s.dataMask];
}
"""


def test_sigterm_lets_in_flight_requests_finish(test_config: Path) -> None:
    with eotiler_serve(test_config, EOTILER_JS_TIMEOUT="10") as (url, process):
        result: dict[str, object] = {}

        def slow_request() -> None:
            start = time.monotonic()
            response = httpx.get(
                url + TILE.replace("?", "?evalscript=" + base64.b64encode(SLOW.encode()).decode() + "&"), timeout=30
            )
            result.update(status=response.status_code, type=response.headers.get("content-type"))
            result["seconds"] = time.monotonic() - start

        thread = threading.Thread(target=slow_request)
        thread.start()
        time.sleep(0.7)  # the request is being rendered
        process.send_signal(signal.SIGTERM)
        thread.join(timeout=30)
        code = process.wait(timeout=30)
    assert result["status"] == 200 and result["type"] == "image/png"
    assert 1.5 <= float(result["seconds"]) < 10
    assert code in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has shut down cleanly


def worker_pid(client: httpx.Client, url: str) -> int:
    response = client.get(f"{url}/cache/stats")
    assert response.status_code == 200
    return int(response.json()["pid"])


def wait_for_workers(url: str, count: int) -> set[int]:
    """PIDs answering new connections, once ``count`` distinct workers have answered."""
    pids: set[int] = set()
    deadline = time.monotonic() + 60
    while len(pids) < count and time.monotonic() < deadline:
        with httpx.Client() as fresh:
            pids.add(worker_pid(fresh, url))
    return pids


def test_keep_alive_clients_spread_over_workers_and_a_dead_worker_is_replaced(test_config: Path) -> None:
    """One SO_REUSEPORT socket per worker: long-lived connections land on both workers."""
    with eotiler_serve(test_config, "--workers", "2", "--reuse-port") as (url, process):
        first = wait_for_workers(url, 2)
        assert len(first) == 2
        clients = [httpx.Client() for _ in range(16)]
        try:
            pids = [worker_pid(client, url) for client in clients]
            assert [worker_pid(client, url) for client in clients] == pids  # each kept its connection
        finally:
            for client in clients:
                client.close()
        counts = Counter(pids)
        assert set(counts) == first and min(counts.values()) >= 2, counts  # all on one worker: p < 0.1 %
        victim = pids[0]
        os.kill(victim, signal.SIGKILL)
        replaced: set[int] = set()
        deadline = time.monotonic() + 60
        while len(replaced) < 2:  # connections to the dead worker's socket fail until it is gone
            assert time.monotonic() < deadline, replaced
            with contextlib.suppress(httpx.HTTPError), httpx.Client() as fresh:
                replaced.add(worker_pid(fresh, url))
            replaced.discard(victim)
        assert len(replaced - first) == 1  # a new worker took the dead one's place
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
