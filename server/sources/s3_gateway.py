"""A loopback HTTP gateway between GDAL's ``/vsis3/`` and the real object store.

Why a gateway instead of GDAL talking to S3 directly: GDAL opens its own connections from every
thread of every worker process, so nothing in GDAL can keep a credential within CDSE's quota
(4 connections, 2,000 requests per minute). Every S3 request of a server goes through one
gateway, which

- admits requests through ``s3_governor.Governor`` (connection slots, a one-minute request
  window, the pause a 429/503 ``Retry-After`` asks for; shared across machines through Redis),
  and retries a 429/503 once the pause is over, within the request's time budget;
- coalesces identical range reads in flight at the same time into one upstream request;
- signs requests with the server's credentials (``s3_signing.py``), so GDAL itself holds no
  secret and reads unsigned from the gateway;
- serves Sentinel-2 JPEG2000 files with a synthesized TLM marker (``jp2_tlm_serving.py``): the
  tile-part index of each object is built once (walking its tile-part chain), kept in memory,
  on disk and in Redis (``jp2_index_store.py``), keyed on the object's ETag, so that later reads
  in any process fetch only the tile-parts a window needs.

Besides object reads it answers ``POST /_prefetch`` (a JPEG2000 window whose tile-parts the
server is about to read: ``s3_prefetch.py``) and ``GET /_stats``. A request with a query string
(GDAL lists a "directory" with ``?list-type=2&prefix=...`` now and then) is refused: a listing
reports each JPEG2000 object's stored size, which GDAL would then take for the size of the
object served with its TLM marker (larger), and it would never read the last tile-part's end.

GDAL reaches it as an S3 endpoint (``AWS_S3_ENDPOINT=127.0.0.1:<port>``, ``AWS_HTTPS=NO``,
``AWS_NO_SIGN_REQUEST=YES``). It runs in a process of its own (``s3_gateway_process.py``),
started by the server or, with ``serve --workers N``, by the supervisor for all workers, and only
serves the configured bucket(s) on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import json
import logging
import socket
import sys
import threading
import time
from typing import Any

import httpx
import uvicorn

from server.sources.gdal_env import PRIORITY_HEADER
from server.sources.jp2_index_store import IndexStore
from server.sources.jp2_tlm_serving import TlmServing
from server.sources.s3_gateway_options import GatewayOptions, options_from_json, options_to_json, s3_buckets
from server.sources.s3_governor import Governor, QuotaWaitTimeout
from server.sources.s3_link import LinkEstimate
from server.sources.s3_signing import sign_headers
from server.sources.s3_tile_part_cache import DiskTileParts
from server.sources.s3_upstream import RETRYABLE, PassedOn, Upstream, retry_after

__all__ = ["GatewayOptions", "S3Gateway", "Upstream", "options_from_json", "options_to_json", "s3_buckets"]

log = logging.getLogger(__name__)
_BACKGROUND: contextvars.ContextVar[bool] = contextvars.ContextVar("eotiler_s3_background", default=False)

_PASS_HEADERS = ("content-type", "etag", "last-modified", "accept-ranges")
PREFETCH_BODY_BYTES = 4096


class S3Gateway:
    """The ASGI application and the thread it runs on (``start`` / ``stop``)."""

    def __init__(self, options: GatewayOptions) -> None:
        self.options = options
        s3 = options.s3
        identity = hashlib.sha256(
            f"{s3.endpoint}|{s3.access_key_id.get_secret_value() if s3.access_key_id else ''}".encode()
        ).hexdigest()[:16]
        # a request holds a connection at most its timeout (plus a stall): a dead replica's slots lapse then
        lease = options.timeout + options.stall + 1.0
        self.governor = Governor(
            options.connections, options.requests_per_minute, identity, options.redis_url, lease, options.linger
        )
        self.indexes = IndexStore(options.index_dir, options.redis_url)
        disk = None
        if options.tile_part_dir is not None and options.tile_part_disk_bytes > 0:
            disk = DiskTileParts(options.tile_part_dir, options.tile_part_disk_bytes)
        self.link = LinkEstimate()
        # a chain is walked in as many segments at once as the quota has connections: the walks of
        # the bands opened together share those connections through the governor, and shorter
        # segments leave a shorter tail walked alone (three 10 m bands of a first view, same
        # session run: walk done after 2.8-3.5 s against 3.2-3.7 s with two segments a chain)
        segments = max(1, options.connections)
        self.jp2 = TlmServing(
            self.fetch,
            self.indexes,
            options.tile_part_bytes,
            disk,
            self.fetch_foreground,
            self.link.walk_window,
            segments,
            self.link.round_trip_bytes,
            _BACKGROUND.get,
        )
        self.coalesced = 0
        self._inflight: dict[tuple[str, str, str], asyncio.Task[Upstream]] = {}
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.address = ""

    @property
    def index_reads(self) -> int:
        """Upstream requests spent walking tile-part chains."""
        return self.jp2.index_reads

    # -- upstream -------------------------------------------------------------------------
    def _url_and_host(self, path: str) -> tuple[str, str, str]:
        s3 = self.options.s3
        scheme = "https" if s3.https else "http"
        if s3.virtual_hosting:
            bucket, _, key = path.lstrip("/").partition("/")
            host = f"{bucket}.{s3.endpoint}"
            return f"{scheme}://{host}/{key}", host, f"/{key}"
        return f"{scheme}://{s3.endpoint}{path}", s3.endpoint, path

    async def _send(self, method: str, path: str, byte_range: str | None) -> Upstream:
        """One upstream request through the governor, retried after 429/503 within the budget."""
        assert self._client is not None
        url, host, signed_path = self._url_and_host(path)
        deadline = time.monotonic() + self.options.budget
        s3 = self.options.s3
        for attempt in range(8):
            headers = {"range": byte_range} if byte_range else {}
            if not s3.no_sign_request and s3.access_key_id is not None and s3.secret_access_key is not None:
                headers |= sign_headers(
                    method,
                    host,
                    signed_path,
                    s3.access_key_id.get_secret_value(),
                    s3.secret_access_key.get_secret_value(),
                    s3.region,
                )
            async with self.governor.slot(deadline, background=_BACKGROUND.get()) as held:
                sent = time.monotonic()
                response = await self._client.request(method, url, headers=headers)
                if response.status_code in (200, 206):
                    self.link.observe(time.monotonic() - sent, len(response.content))
                if response.http_version == "HTTP/1.1" and response.headers.get("connection", "").lower() != "close":
                    held.linger = 0.0  # the next request on this connection reaches the store after this one ended
            answer = Upstream(
                response.status_code, {k.lower(): v for k, v in response.headers.items()}, response.content
            )
            if answer.status not in RETRYABLE:
                return answer
            wait = retry_after(answer.headers.get("retry-after"), attempt)
            await self.governor.pause(wait)
            if time.monotonic() + wait > deadline:
                return answer
            log.info("S3 answered %d: waiting %.2f s before retrying", answer.status, wait)
        return answer

    async def fetch_foreground(self, method: str, path: str, byte_range: str | None = None) -> Upstream:
        """``fetch`` at foreground priority, whatever the request being answered asked for."""
        token = _BACKGROUND.set(False)
        try:
            return await self.fetch(method, path, byte_range)
        finally:
            _BACKGROUND.reset(token)

    async def fetch(self, method: str, path: str, byte_range: str | None = None) -> Upstream:
        """``_send``, with identical requests in flight at the same time made once.

        The request runs as a task of its own: a caller that goes away (GDAL timed out) does not
        cancel it for the others waiting on the same bytes.
        """
        key = (method, path, byte_range or "")
        running = self._inflight.get(key)
        if running is not None:
            self.coalesced += 1
            return await asyncio.shield(running)
        task = asyncio.get_running_loop().create_task(self._send(method, path, byte_range))
        self._inflight[key] = task
        task.add_done_callback(lambda _: self._inflight.pop(key, None))
        return await asyncio.shield(task)

    # -- ASGI -----------------------------------------------------------------------------
    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:  # noqa: D102 - ASGI
        if scope["type"] != "http":
            return
        method = scope["method"]
        path = scope["path"]
        if path == "/_stats":  # bucket names never start with "_"
            body = json.dumps(self.stats()).encode()
            await _respond(send, Upstream(200, {"content-type": "application/json"}, body), method)
            return
        if path == "/_prefetch" and method == "POST":
            await _respond(send, await self._prefetch(scope, receive), method)
            return
        refused = method not in ("GET", "HEAD") or not self._servable(path)
        if refused or scope.get("query_string"):  # listings and sub-resources: see the module's docstring
            await _respond(send, Upstream(403, {}, b""), method)
            return
        headers = dict(scope["headers"])
        byte_range = headers[b"range"].decode("latin-1") if b"range" in headers else None
        # what this request fetches, in tasks created below too, runs at the priority it asked for
        _BACKGROUND.set(headers.get(PRIORITY_HEADER.lower().encode()) == b"background")
        try:
            answer = None
            if self.options.jp2_index and path.lower().endswith(".jp2"):
                answer = await self.jp2.serve(method, path, byte_range)
            if answer is None:
                answer = await self.fetch(method, path, byte_range)
        except PassedOn as exc:
            answer = exc.answer
        except QuotaWaitTimeout:
            answer = Upstream(503, {"retry-after": "1"}, b"")
        except httpx.TimeoutException:
            answer = Upstream(504, {}, b"")
        except httpx.HTTPError as exc:
            log.warning("S3 request failed: %s", type(exc).__name__)
            answer = Upstream(502, {}, b"")
        await _respond(send, answer, method)

    def _servable(self, path: str) -> bool:
        """Whether ``path`` names an object of a configured bucket, and nothing else (no parent
        step, no query or fragment): the one rule for reads and prefetches alike."""
        bucket = path.lstrip("/").partition("/")[0]
        plain = "/../" not in path and "?" not in path and "#" not in path
        return bucket in self.options.buckets and plain

    async def _prefetch(self, scope: dict[str, Any], receive: Any) -> Upstream:
        """``POST /_prefetch`` ``{"path": "/bucket/key.jp2", "window": [col0, row0, col1, row1]}``:
        the tile-parts of that window of a JPEG2000 object fetched now (``TlmServing.prefetch``),
        answered once they are at hand, at the priority the request asks for.

        The server sends it just before GDAL reads the window (``s3_prefetch.py``); any answer
        but 200 only means GDAL reads as it would have.
        """
        body = b""
        while len(body) <= PREFETCH_BODY_BYTES:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        try:
            asked = json.loads(body) if len(body) <= PREFETCH_BODY_BYTES else None
            target, window = asked["path"], tuple(int(v) for v in asked["window"])
            if not isinstance(target, str):
                raise TypeError("path")
        except (ValueError, TypeError, KeyError, OverflowError):
            return Upstream(400, {}, b"")
        allowed = self._servable(target) and target.lower().endswith(".jp2")
        if not allowed or len(window) != 4 or not self.options.jp2_index:
            return Upstream(403, {}, b"")
        headers = dict(scope["headers"])
        _BACKGROUND.set(headers.get(PRIORITY_HEADER.lower().encode()) == b"background")
        try:
            fetched = await self.jp2.prefetch(target, window)  # type: ignore[arg-type]
        except PassedOn as exc:
            return Upstream(exc.answer.status, {}, b"")
        except QuotaWaitTimeout:
            return Upstream(503, {"retry-after": "1"}, b"")
        except httpx.HTTPError:
            return Upstream(502, {}, b"")
        return Upstream(200, {"content-type": "application/json"}, json.dumps({"fetched": fetched}).encode())

    # -- lifecycle ------------------------------------------------------------------------
    def start(self, port: int = 0) -> str:
        """Serve on 127.0.0.1 (``port``, or a free one) on a thread of its own; returns ``host:port``.

        The server runs it in a process of its own (``s3_gateway_process.py``); a thread is for
        tests that drive the gateway with their own client.
        """
        # IPPROTO_TCP named, and TCP_NODELAY on the listener (accepted sockets inherit both):
        # asyncio only disables Nagle on sockets whose protocol is IPPROTO_TCP, and with Nagle on,
        # an answer's body waited for the client's delayed ACK of its headers (measured: +40 ms
        # on every answer after the first on a connection)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(("127.0.0.1", port))
        self.address = f"127.0.0.1:{sock.getsockname()[1]}"
        config = uvicorn.Config(self, log_level="warning", access_log=False, lifespan="off", timeout_keep_alive=60)
        self._server = uvicorn.Server(config)
        started = threading.Event()

        async def run() -> None:
            self._loop = asyncio.get_running_loop()
            limits = httpx.Limits(
                max_connections=self.options.connections, max_keepalive_connections=self.options.connections
            )
            # a store that stops sending for ``stall`` seconds is given up (504 to GDAL, which may retry)
            options = self.options
            timeout = httpx.Timeout(options.timeout, connect=min(5.0, options.timeout), read=options.stall)
            async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
                self._client = client
                await self._warm_up()
                started.set()
                assert self._server is not None
                await self._server.serve(sockets=[sock])

        self._thread = threading.Thread(target=asyncio.run, args=(run(),), name="eotiler-s3-gateway", daemon=True)
        self._thread.start()
        started.wait(10)
        deadline = time.monotonic() + 10
        while not self._server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.address

    async def _warm_up(self) -> None:
        """One unsigned HEAD of a served bucket as the gateway starts, so the first read of a
        new process does not also pay for the HTTP client's first request (measured: ~30 ms)."""
        url, _, _ = self._url_and_host(f"/{min(self.options.buckets, default='')}")
        with contextlib.suppress(httpx.HTTPError):
            assert self._client is not None
            await self._client.head(url, timeout=1.0)  # an unreachable store must not hold the start

    def stop(self) -> None:
        """Stop serving and wait for the thread."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(5)

    def stats(self) -> dict[str, float]:
        """Counters for ``/metrics`` and ``/cache/stats``."""
        s = self.governor.stats
        return {
            "requests": s.requests,
            "throttled": s.throttled,
            "queue_wait_seconds": s.queue_wait_seconds,
            "in_flight": s.in_flight,
            "peak_in_flight": s.peak_in_flight,
            "coalesced": self.coalesced,
            "index_reads": self.index_reads,
            "prefetched_tile_parts": self.jp2.prefetched,
            "round_trip_seconds": self.link.round_trip,
            "throughput_bytes_per_second": self.link.throughput,
        }


async def _respond(send: Any, answer: Upstream, method: str) -> None:
    headers = [
        (k.encode(), v.encode())
        for k, v in answer.headers.items()
        if k in (*_PASS_HEADERS, "content-range", "retry-after")
    ]
    length = answer.headers.get("content-length") if method == "HEAD" else str(len(answer.body))
    if length is not None:
        headers.append((b"content-length", length.encode()))
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if method == "HEAD" else answer.body})


def main() -> None:
    """``python -m server.sources.s3_gateway PORT``: options on stdin, ``READY`` on stdout.

    The gateway lives as long as its stdin: when the server that started it closes it, or dies,
    the gateway stops too.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per store request otherwise
    options = options_from_json(sys.stdin.readline())
    gateway = S3Gateway(options)
    print(f"READY {gateway.start(int(sys.argv[1]))}", flush=True)
    sys.stdin.read()  # until EOF
    gateway.stop()


if __name__ == "__main__":
    main()
