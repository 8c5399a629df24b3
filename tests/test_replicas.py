"""Three replicas cooperate through one Redis, as ``deploy/compose.yaml`` runs them.

The test starts what the compose file starts, without Docker: three ``eotiler serve`` processes
with the compose file's environment (Redis URL, S3 quota, clients file, graceful timeout),
one real ``redis-server`` and the moto S3 server holding the sample (its log counts the
requests in flight when each arrived). Then, across the three:

- a tile rendered by one is a cache HIT on the other two, with the same bytes;
- the S3 connection limit holds for all of them together (not per process);
- a client's rate limit holds for all of them together;
- stopping one (SIGTERM, as ``docker compose stop`` and Kubernetes do) loses no request of a
  client that retries on the next replica, as the compose file's nginx does.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import EODATA
from tests.support.compose import compose_environment
from tests.support.s3_server import S3Server
from tests.support.serve_process import eotiler_process
from tests.test_cache import RedisServer

LOADER_KEY = "replica-loader-key-0123456789"
METERED_KEY = "replica-metered-key-987654321"
RATE_LIMIT = 12
CACHED_TILE = "/layers/TRUE_COLOR/tiles/WebMercatorQuad/12/1947/1331.png?time=2022-10-05"
# 15 other z12 tiles over T29UNU's data, true colour: three band files each
TILES = [
    f"/layers/TRUE_COLOR/tiles/WebMercatorQuad/12/{x}/{y}.png?time=2022-10-05"
    for x in range(1946, 1950)
    for y in range(1330, 1334)
    if (x, y) != (1947, 1331)
]
LOADER = {"X-API-Key": LOADER_KEY}
S3_CONNECTIONS = 2  # per credential, for all replicas together (compose.yaml has CDSE's 4)


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    """The sample as bucket ``eodata``; 30 ms per answer, so the tiles' reads overlap in time."""
    server = S3Server(EODATA, delay_ms=30)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def replicas(
    config: Path, s3: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[list[str], list, RedisServer]]:
    """Three servers with compose.yaml's environment, pointed at this test's Redis, S3 and files."""
    if shutil.which("redis-server") is None:
        if os.environ.get("EOTILER_REQUIRE_REDIS") == "1":
            pytest.fail("redis-server is required (EOTILER_REQUIRE_REDIS=1) but not installed")
        pytest.skip("redis-server not installed")
    directory = tmp_path_factory.mktemp("replicas")
    redis = RedisServer(directory)
    redis.start()
    clients = {
        "loader": {"api_keys": [LOADER_KEY]},
        "metered": {"api_keys": [METERED_KEY], "rate_limit": RATE_LIMIT},
    }
    (directory / "clients.yaml").write_text(yaml.safe_dump(clients))
    compose = compose_environment()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "EOTILER_"))}
    env |= {k: v for k, v in compose.items() if k.startswith("EOTILER_")}
    env |= {
        **s3.env(),
        "EOTILER_HOST": "127.0.0.1",
        "EOTILER_REDIS_URL": redis.url,
        "EOTILER_CLIENTS_FILE": str(directory / "clients.yaml"),
        "EOTILER_OVERVIEW_CACHE_DIR": str(directory / "overviews"),
        "EOTILER_OVERVIEW_CACHE_BYTES": "0",  # every replica reads S3 (no local copies)
        "EOTILER_JP2_INDEX_DIR": str(directory / "jp2-index"),
        "EOTILER_GRACEFUL_TIMEOUT": "20",
        "EOTILER_S3_CONNECTIONS": str(S3_CONNECTIONS),
    }
    env.pop("EOTILER_PORT")  # each process gets its own free port
    logs = [(directory / f"replica-{i}.log").open("w") for i in range(3)]
    with ExitStack() as stack:
        started = [stack.enter_context(eotiler_process(config, env=env, output=log)) for log in logs]
        yield [url for url, _ in started], [process for _, process in started], redis
    for log in logs:
        log.close()
    redis.stop()


def drawn(answer: httpx.Response) -> bool:
    return answer.status_code == 200 and "T29UNU" in answer.headers.get("x-eotiler-scenes", "")


def test_a_tile_rendered_by_one_replica_is_a_hit_on_the_others(replicas) -> None:
    urls, _, _ = replicas
    first = httpx.get(urls[0] + CACHED_TILE, headers=LOADER, timeout=60)
    assert drawn(first) and first.headers["x-cache"] == "MISS"
    for url in urls[1:]:
        again = httpx.get(url + CACHED_TILE, headers=LOADER, timeout=60)
        assert again.status_code == 200 and again.headers["x-cache"] == "HIT"
        assert again.content == first.content


def test_the_s3_connection_limit_holds_across_replicas(replicas, s3: S3Server) -> None:
    urls, _, _ = replicas
    s3.reset()
    targets = [(urls[i % 3], path) for i, path in enumerate(TILES)]
    with concurrent.futures.ThreadPoolExecutor(len(targets)) as pool:
        answers = list(pool.map(lambda t: httpx.get(t[0] + t[1], headers=LOADER, timeout=120), targets))
    seen = s3.requests()
    assert all(drawn(a) for a in answers), [(a.status_code, a.text[:200]) for a in answers if not drawn(a)]
    assert len({entry["path"] for entry in seen}) >= 3
    # each gateway on its own would allow S3_CONNECTIONS: 3 x S3_CONNECTIONS together
    assert max(entry["active"] for entry in seen) <= S3_CONNECTIONS


def test_a_clients_rate_limit_holds_across_replicas(replicas) -> None:
    urls, _, _ = replicas
    statuses = []
    for url in itertools.islice(itertools.cycle(urls), 3 * RATE_LIMIT):
        answer = httpx.get(url + "/layers", headers={"X-API-Key": METERED_KEY}, timeout=30)
        statuses.append(answer.status_code)
        if answer.status_code == 429:
            assert 1 <= int(answer.headers["retry-after"]) <= 60
    assert statuses.count(200) == RATE_LIMIT and statuses.count(429) == 2 * RATE_LIMIT, statuses


def fetch_from_any(
    urls: list[str], path: str, turn: Iterator[int], retried: list[str], lock: threading.Lock
) -> httpx.Response:
    """The next replica on a refused or reset connection; on a 503 (every render slot busy,
    which a loaded 2-core machine reaches) the next one too, pausing once all were tried."""
    deadline = time.monotonic() + 60
    attempts = 0
    while time.monotonic() < deadline:
        attempts += 1
        url = urls[next(turn) % len(urls)]
        try:
            answer = httpx.get(url + path, headers=LOADER, timeout=60)
        except httpx.TransportError:
            with lock:
                retried.append(url)
            continue
        if answer.status_code != 503:
            return answer
        if attempts % len(urls) == 0:
            time.sleep(0.2)
    raise AssertionError(f"no replica answered {path}")


def test_stopping_a_replica_loses_no_retried_request(replicas) -> None:
    """A client (the compose file's nginx) retries a refused or reset request on the next replica."""
    urls, processes, _ = replicas
    retried: list[str] = []
    answers: list[httpx.Response] = []
    lock = threading.Lock()
    turn = itertools.count()

    def fetch(path: str) -> httpx.Response:
        return fetch_from_any(urls, path, turn, retried, lock)

    def client(worker: int) -> None:
        """Tiles until the stopped replica is gone and a few rounds after, as a map session would."""
        after = 0
        for i in itertools.count():
            answer = fetch(TILES[(worker + i) % len(TILES)])
            with lock:
                answers.append(answer)
            if processes[1].poll() is not None:
                after += 1
            if after > 10 or i > 2000:
                return

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        running = [pool.submit(client, worker) for worker in range(4)]
        while len(answers) < 20:
            threading.Event().wait(0.05)
        processes[1].send_signal(signal.SIGTERM)
        for future in running:
            future.result()
    # it stopped on its own within its graceful timeout (uvicorn re-raises the signal once shut down cleanly)
    assert processes[1].wait(timeout=40) in (0, -signal.SIGTERM)
    assert all(a.status_code == 200 for a in answers), [a.status_code for a in answers if a.status_code != 200]
    assert retried and set(retried) == {urls[1]}  # requests did reach the stopped one, and were retried
