"""The S3 side never counts more requests in flight than the gateway's connection limit.

A store (or a proxy in front of it) counts a request as in flight until it has sent the last
byte and done its own bookkeeping, a little after the client has read that byte. Behind
``benchmarks/quota_proxy.py`` (CDSE's limits: 4 in flight, 429 beyond; 30 ms round trip, 20 MB/s
per connection) with every connection closed after one answer (``--close-connections``), a next
request sent on a new connection at once was seen as a fifth. The gateway's governor keeps a
slot taken a few milliseconds after an answer whose connection was closed.
"""

from __future__ import annotations

import concurrent.futures
import os
from collections.abc import Iterator

import httpx
import pytest
from pydantic import SecretStr

from benchmarks.quota_proxy import Limits, QuotaProxy
from server.sources.gdal_env import S3Settings
from server.sources.s3_gateway import GatewayOptions, S3Gateway
from tests.support.s3_server import S3Server

SIZE = 6 * 1024 * 1024


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[bytes, dict[bool, QuotaProxy]]]:
    root = tmp_path_factory.mktemp("margin")
    data = os.urandom(SIZE)
    (root / "object.bin").write_bytes(data)
    s3 = S3Server(root)
    proxies = {
        keep: QuotaProxy(s3.endpoint, Limits(connections=4, rtt_ms=30, mb_per_s=20, keep_alive=keep))
        for keep in (False, True)
    }
    yield data, proxies
    for proxy in proxies.values():
        proxy.stop()
    s3.stop()


def _read_concurrently(proxy: QuotaProxy, data: bytes, linger: float | None) -> list[dict]:
    """16 clients, 64 reads of 1 MB through a gateway with 4 slots; the proxy's log of them."""
    s3 = S3Settings(
        endpoint=proxy.endpoint,
        https=False,
        region="us-east-1",
        access_key_id=SecretStr("margin-key"),
        secret_access_key=SecretStr("margin-secret"),
    )
    extra = {} if linger is None else {"linger": linger}
    gateway = S3Gateway(GatewayOptions(s3, frozenset({"eodata"}), connections=4, jp2_index=False, **extra))
    gateway.start()
    try:
        proxy.reset()
        url = f"http://{gateway.address}/eodata/object.bin"
        starts = [(i * 389_711) % (SIZE - 1_000_000) for i in range(64)]
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            answers = list(
                pool.map(
                    lambda a: httpx.get(url, headers={"Range": f"bytes={a}-{a + 999_999}"}, timeout=60),
                    starts,
                )
            )
        for start, answer in zip(starts, answers, strict=True):
            assert answer.status_code == 206 and answer.content == data[start : start + 1_000_000]
        return [entry for entry in proxy.requests() if entry["key"] == "margin-key"]
    finally:
        gateway.stop()


def test_peak_seen_by_the_store_never_exceeds_the_limit_when_connections_close(stores) -> None:
    data, proxies = stores
    for _ in range(3):  # without the margin, most rounds saw a fifth request and a 429
        log = _read_concurrently(proxies[False], data, linger=None)
        assert max(entry["active"] for entry in log) <= 4, [e for e in log if e["active"] > 4]
        assert not [entry for entry in log if entry["status"] == 429]
        assert len(log) == 64


def test_kept_alive_connections_need_no_margin(stores) -> None:
    """On connections kept open the store reads the next request after answering: 4 at most, no wait."""
    data, proxies = stores
    log = _read_concurrently(proxies[True], data, linger=None)
    assert max(entry["active"] for entry in log) == 4  # the limit was reached, never passed
    assert max(entry["sockets"] for entry in log) <= 4  # the gateway's connections stayed open
    assert not [entry for entry in log if entry["status"] == 429]
