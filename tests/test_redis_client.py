"""The shared Redis helper: no client without a URL, and a rest after a failure (real sockets)."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
import redis

from server.redis_client import RestedRedis


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_no_url_no_client() -> None:
    assert RestedRedis(None, rest_seconds=1.0, what="x").client() is None


def test_a_failure_rests_the_client_then_it_comes_back(caplog: pytest.LogCaptureFixture) -> None:
    rested = RestedRedis(f"redis://127.0.0.1:{_closed_port()}", rest_seconds=0.3, what="test store", asynchronous=False)
    client = rested.client()
    assert isinstance(client, redis.Redis)
    with pytest.raises(redis.ConnectionError) as failure:
        client.ping()  # nothing listens there
    rested.failed(failure.value)
    assert rested.client() is None  # resting: callers use their local fallback without a timeout each
    assert "test store unreachable for 0.3 s: ConnectionError" in caplog.text
    time.sleep(0.35)
    assert rested.client() is client  # the same client, tried again after the rest


def test_asynchronous_client() -> None:
    import redis.asyncio

    rested = RestedRedis(f"redis://127.0.0.1:{_closed_port()}", rest_seconds=10.0, what="test store")
    client = rested.client()
    assert isinstance(client, redis.asyncio.Redis)

    async def ping() -> None:
        await client.ping()

    with pytest.raises(redis.ConnectionError):
        asyncio.run(ping())
