"""A quota-emulating S3 reverse proxy on 127.0.0.1: CDSE's per-credential limits in front of moto.

Why: CDSE's eodata endpoint answers ``429`` as soon as one credential has more than 4 requests in
flight (it does not queue them) or more than 2,000 requests in a minute, and every request costs
a round trip. The map-session benchmark (``benchmarks/map_session.py``) puts eotiler and TiTiler
behind the same limits, so what it measures is what a user of the real bucket sees.

What it does, per request:

- the quota key is the access key id of the SigV4 ``Authorization`` header (``Credential=<key>/``)
  or of a presigned URL (``X-Amz-Credential``); unsigned requests share one bucket-wide quota;
- a request arriving while its key already has ``--connections`` requests in flight, or after
  ``--requests-per-minute`` admitted requests in the last 60 s (sliding), gets ``429 SlowDown``
  with ``Retry-After: 1`` after one round trip; admitted requests wait ``--rtt-ms`` and are then
  forwarded byte for byte (request line and headers untouched, ``Host`` included, so a SigV4
  signature stays valid for a server that checks it) over a pooled keep-alive connection, and the
  answer is streamed back, optionally capped at ``--mb-per-s`` per connection; the client's
  connection stays open as CDSE and the test S3 server (``tests/support/s3_server.py``) keep theirs
  (a store's ``Connection: close`` is not passed on), or with ``--close-connections`` is closed
  after every answer: a store that closes its connections, where a client's next request arrives
  on a new connection while the store may still count the last one.

The log (``GET /_log``) has one entry per request: method, path, query, range, key, status, body
bytes, ``active`` (the key's requests in flight when it arrived, itself and refused ones
included: the concurrency the client put on the store), ``sockets`` (client TCP connections open then),
``start`` and ``ms``. ``POST /_log/reset`` empties the log; ``POST /_quota/reset`` forgets the
minute windows (a new session). Bucket names cannot contain ``_``, so these never shadow S3.

    python benchmarks/quota_proxy.py --upstream 127.0.0.1:9000           # prints READY <port>
    python benchmarks/quota_proxy.py --check                             # checks the limits
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.s3_server import S3Server  # noqa: E402

_CREDENTIAL = re.compile(rb"Credential=([^/,\s&]+)(?:/|%2F)")
_CHUNK = 256 * 1024
_SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)


@dataclass
class Limits:
    """The quota of one credential and the emulated network."""

    connections: int = 4
    requests_per_minute: int = 2000
    rtt_ms: float = 30.0
    mb_per_s: float = 0.0  # per connection; 0 = uncapped
    keep_alive: bool = True  # False: every client connection is closed after one answer (a closing store)


@dataclass
class _Key:
    """One credential's state: requests in flight (admitted, and all) and admissions of the last minute."""

    active: int = 0
    open: int = 0
    admitted: collections.deque[float] = field(default_factory=collections.deque)


class Quota:
    """Admission per credential: refuse beyond the connection limit or the one-minute window."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.keys: dict[str, _Key] = collections.defaultdict(_Key)

    def admit(self, key: str, now: float) -> tuple[bool, int]:
        """Whether a request of ``key`` may go upstream, and the key's requests in flight with it
        (refused ones included: they hold a connection for their round trip too)."""
        state = self.keys[key]
        state.open += 1
        while state.admitted and state.admitted[0] <= now - 60.0:
            state.admitted.popleft()
        if state.active >= self.limits.connections or len(state.admitted) >= self.limits.requests_per_minute:
            return False, state.open
        state.active += 1
        state.admitted.append(now)
        return True, state.open

    def release(self, key: str, admitted: bool) -> None:
        state = self.keys[key]
        state.open -= 1
        state.active -= admitted

    def reset(self) -> None:
        """Forget the minute windows (requests in flight stay counted until they finish)."""
        for state in self.keys.values():
            state.admitted.clear()


def _headers(head: bytes) -> tuple[list[bytes], dict[bytes, bytes]]:
    """The head's lines and its headers by lower-case name (the raw head is what is forwarded)."""
    lines = head.rstrip(b"\r\n").split(b"\r\n")
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return lines, headers


class Proxy:
    """The asyncio server: one task per client connection, a pool of upstream connections."""

    def __init__(self, upstream: str, limits: Limits) -> None:
        host, _, port = upstream.rpartition(":")
        self.upstream = (host, int(port))
        self.limits = limits
        self.quota = Quota(limits)
        self.log: list[dict[str, Any]] = []
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.sockets = 0
        self.epoch = time.monotonic()

    async def serve(self, port: int) -> None:
        server = await asyncio.start_server(self.client, "127.0.0.1", port, limit=1 << 20, backlog=512)
        print(f"READY {server.sockets[0].getsockname()[1]}", flush=True)
        async with server:
            await server.serve_forever()

    async def client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer requests on one client connection until it closes (HTTP/1.1 keep-alive)."""
        self.sockets += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines, headers = _headers(head)
                body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
                keep = await self.request(head, lines, headers, body, writer)
                if not keep or headers.get(b"connection", b"").lower() == b"close":
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self.sockets -= 1
            with contextlib.suppress(Exception):
                writer.close()

    async def request(
        self, head: bytes, lines: list[bytes], headers: dict[bytes, bytes], body: bytes, writer: asyncio.StreamWriter
    ) -> bool:
        """One request: control endpoint, refusal or forwarding. Whether the connection stays open."""
        method, target = lines[0].split(b" ")[:2]
        path, _, query = target.partition(b"?")
        if path.startswith((b"/_log", b"/_quota")):
            return await self.control(method, path, writer)
        match = _CREDENTIAL.search(headers.get(b"authorization", b"")) or _CREDENTIAL.search(query)
        key = match.group(1).decode() if match else "(unsigned)"
        start = time.monotonic()
        admitted, active = self.quota.admit(key, start)
        entry: dict[str, Any] = {
            "method": method.decode(),
            "path": path.decode(),
            "query": query.decode(),
            "range": headers[b"range"].decode() if b"range" in headers else None,
            "key": key,
            "status": 0,
            "bytes": 0,
            "active": active,
            "sockets": self.sockets,
            "start": round(start - self.epoch, 4),
        }
        self.log.append(entry)
        try:
            await asyncio.sleep(self.limits.rtt_ms / 1000)
            if not admitted:
                entry["status"] = 429
                writer.write(
                    b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/xml\r\nRetry-After: 1\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(_SLOW_DOWN), _SLOW_DOWN)
                )
                await writer.drain()
                return True
            return await self.forward(head, body, method == b"HEAD", writer, entry)
        finally:
            self.quota.release(key, admitted)
            entry["ms"] = round((time.monotonic() - start) * 1000, 1)

    async def forward(
        self, head: bytes, body: bytes, is_head: bool, writer: asyncio.StreamWriter, entry: dict[str, Any]
    ) -> bool:
        """Send the request unchanged upstream and stream the answer back."""
        up_reader, up_writer = await self.connection()
        reusable = False
        try:
            up_writer.write(head + body)
            await up_writer.drain()
            answer = await up_reader.readuntil(b"\r\n\r\n")
            lines, headers = _headers(answer)
            status = int(lines[0].split(b" ")[1])
            entry["status"] = status
            delimited = is_head or status in (204, 304) or 100 <= status < 200 or b"content-length" in headers
            delimited = delimited or headers.get(b"transfer-encoding", b"").lower() == b"chunked"
            if delimited and self.limits.keep_alive:
                writer.write(_keep_alive(answer))
            else:
                writer.write(_keep_alive(answer)[:-2] + b"Connection: close\r\n\r\n")
            throttle = _Throttle(self.limits.mb_per_s)
            if is_head or status in (204, 304) or 100 <= status < 200:
                reusable = True
            elif b"content-length" in headers:
                left = int(headers[b"content-length"])
                while left:
                    chunk = await up_reader.readexactly(min(_CHUNK, left))
                    left -= len(chunk)
                    entry["bytes"] += len(chunk)
                    writer.write(chunk)
                    await writer.drain()
                    await throttle.sent(len(chunk))
                reusable = True
            elif headers.get(b"transfer-encoding", b"").lower() == b"chunked":
                await self._chunked(up_reader, writer, entry, throttle)
                reusable = True
            else:  # delimited by the upstream closing: the client's connection must close too
                while chunk := await up_reader.read(_CHUNK):
                    entry["bytes"] += len(chunk)
                    writer.write(chunk)
                    await writer.drain()
                    await throttle.sent(len(chunk))
                await writer.drain()
                return False
            await writer.drain()
            reusable = reusable and headers.get(b"connection", b"").lower() != b"close"
            return self.limits.keep_alive
        finally:
            if reusable:
                self.idle.append((up_reader, up_writer))
            else:
                up_writer.close()

    @staticmethod
    async def _chunked(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, entry: dict[str, Any], throttle: _Throttle
    ) -> None:
        """Relay a chunked body as it is framed, up to the last chunk and its trailer."""
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            writer.write(size_line)
            if size == 0:
                while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
                    writer.write(line)
                writer.write(b"\r\n")
                return
            data = await reader.readexactly(size + 2)
            entry["bytes"] += size
            writer.write(data)
            await writer.drain()
            await throttle.sent(size)

    async def connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """An idle upstream connection, or a new one."""
        while self.idle:
            reader, writer = self.idle.pop()
            if not reader.at_eof() and not writer.is_closing():
                return reader, writer
            writer.close()
        return await asyncio.open_connection(*self.upstream, limit=1 << 20)

    async def control(self, method: bytes, path: bytes, writer: asyncio.StreamWriter) -> bool:
        """``/_log`` (GET: read, POST ``/_log/reset``: empty) and ``POST /_quota/reset``."""
        if method == b"POST" and path.startswith(b"/_quota"):
            self.quota.reset()
        elif method == b"POST":
            self.log = []
        payload = json.dumps(self.log if method == b"GET" else {"ok": True}).encode()
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (len(payload), payload)
        )
        await writer.drain()
        return True


def _keep_alive(head: bytes) -> bytes:
    """The answer's head without ``Connection: close``: the client's connection stays open.

    CDSE keeps a client's connections open; a store that closes one after an answer (the test
    server does after an error or a short body) must not make the proxy close the client's, or a
    client opening a new connection per request makes the proxy count the old request a moment
    after the client holds it no longer. The upstream connection is still closed when the store
    says so.
    """
    lines = head.split(b"\r\n")
    kept = [line for line in lines if line.replace(b" ", b"").lower() != b"connection:close"]
    return b"\r\n".join(kept)


class _Throttle:
    """Paces one response body to ``mb_per_s`` (a per-connection bandwidth cap; 0 = none)."""

    def __init__(self, mb_per_s: float) -> None:
        self.rate = mb_per_s * 1e6
        self.start = time.monotonic()
        self.total = 0

    async def sent(self, count: int) -> None:
        if self.rate <= 0:
            return
        self.total += count
        ahead = self.total / self.rate - (time.monotonic() - self.start)
        if ahead > 0:
            await asyncio.sleep(ahead)


class QuotaProxy:
    """Start the proxy process in front of an S3 endpoint; read and reset its log."""

    def __init__(self, upstream: str, limits: Limits | None = None) -> None:
        limits = limits or Limits()
        command = [
            sys.executable, __file__, "--upstream", upstream, "--rtt-ms", str(limits.rtt_ms),
            "--connections", str(limits.connections), "--requests-per-minute", str(limits.requests_per_minute),
            "--mb-per-s", str(limits.mb_per_s), *([] if limits.keep_alive else ["--close-connections"]),
        ]  # fmt: skip
        self.limits = limits
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        assert self.process.stdout is not None
        line = self.process.stdout.readline().split()
        if not line or line[0] != "READY":
            self.process.kill()
            raise RuntimeError("the quota proxy did not start")
        self.endpoint = f"127.0.0.1:{line[1]}"

    # The same variables as for the S3 server itself: clients reach the proxy as they reach CDSE.
    env = S3Server.env

    def requests(self) -> list[dict[str, Any]]:
        """Every request since the last reset, refused ones included."""
        return httpx.get(f"http://{self.endpoint}/_log", timeout=30).json()

    def reset(self) -> None:
        """Empty the request log (the minute windows carry on: one session spans many resets)."""
        httpx.post(f"http://{self.endpoint}/_log/reset", timeout=10)

    def reset_quota(self) -> None:
        """Forget the minute windows: the next client starts with its whole quota."""
        httpx.post(f"http://{self.endpoint}/_quota/reset", timeout=10)

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)


def summarise(log: list[dict[str, Any]]) -> dict[str, Any]:
    """Requests, MB, peak concurrency and refusals of a log (what the benchmark reports)."""
    return {
        "requests": len(log),
        "forwarded": sum(1 for e in log if e["status"] != 429),
        "mb": round(sum(e["bytes"] for e in log) / 1e6, 2),
        "peak_connections": max((e["active"] for e in log), default=0),
        "http_429": sum(1 for e in log if e["status"] == 429),
    }


def check() -> None:
    """Check the proxy against the real moto server: signed requests pass unchanged, and both limits bite."""
    import tempfile
    from concurrent.futures import ThreadPoolExecutor

    import boto3
    import botocore.config
    import botocore.exceptions

    folder = Path(tempfile.mkdtemp(prefix="quota-proxy-"))
    (folder / "object.bin").write_bytes(os.urandom(3 * _CHUNK + 17))
    s3 = S3Server(folder)
    proxies: list[QuotaProxy] = []
    try:
        proxy = QuotaProxy(s3.endpoint, Limits(connections=4, requests_per_minute=10, rtt_ms=500))
        proxies.append(proxy)
        client = boto3.client(
            "s3", endpoint_url=f"http://{proxy.endpoint}", aws_access_key_id="check-key",
            aws_secret_access_key="check-secret", region_name="us-east-1",
            config=botocore.config.Config(retries={"total_max_attempts": 1}),
        )  # fmt: skip
        whole = client.get_object(Bucket="eodata", Key="object.bin")["Body"].read()
        assert whole == (folder / "object.bin").read_bytes(), "body changed on the way"
        part = client.get_object(Bucket="eodata", Key="object.bin", Range="bytes=10-19")["Body"].read()
        assert part == whole[10:20], "range changed on the way"
        upstream = [e for e in s3.requests() if e["method"] == "GET"]
        assert [(e["path"], e["range"]) for e in upstream] == [("/eodata/object.bin", None)] + [
            ("/eodata/object.bin", "bytes=10-19")
        ], upstream
        assert {e["key"] for e in proxy.requests()} == {"check-key"}, "the signing key is the quota key"
        proxy.reset()

        def get(_: int) -> int:
            try:
                answer = client.get_object(Bucket="eodata", Key="object.bin")
                answer["Body"].read()
                return answer["ResponseMetadata"]["HTTPStatusCode"]
            except botocore.exceptions.ClientError as error:
                return error.response["ResponseMetadata"]["HTTPStatusCode"]

        with ThreadPoolExecutor(6) as pool:
            statuses = sorted(pool.map(get, range(6)))
        log = proxy.requests()
        assert statuses.count(429) == 2 and statuses.count(200) == 4, (statuses, log)
        assert max(e["active"] for e in log) == 6, log
        statuses = [get(0) for _ in range(8)]  # 2 + 4 admitted above: 4 more fit in the minute
        assert statuses == [200] * 4 + [429] * 4, statuses
        proxy.reset_quota()
        assert get(0) == 200, "a reset window admits again"
        unsigned = httpx.get(f"http://{proxy.endpoint}/eodata/object.bin", timeout=10)
        assert unsigned.status_code == 403 and proxy.requests()[-1]["key"] == "(unsigned)", "moto refuses anonymous"
        print("quota proxy: signed requests unchanged, 5th concurrent request and 11th in a minute refused")
    finally:
        for proxy in proxies:
            proxy.stop()
        s3.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", help="host:port of the S3 server")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--rtt-ms", type=float, default=30.0)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--requests-per-minute", type=int, default=2000)
    parser.add_argument("--mb-per-s", type=float, default=0.0, help="bandwidth cap per connection (0: none)")
    parser.add_argument(
        "--close-connections", action="store_true", help="close each client connection after one answer"
    )
    parser.add_argument("--check", action="store_true", help="check the limits against a moto server, then exit")
    args = parser.parse_args()
    if args.check:
        return check()
    if not args.upstream:
        parser.error("--upstream is required")
    limits = Limits(args.connections, args.requests_per_minute, args.rtt_ms, args.mb_per_s, not args.close_connections)
    asyncio.run(Proxy(args.upstream, limits).serve(args.port))


if __name__ == "__main__":
    main()
