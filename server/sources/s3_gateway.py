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
- serves Sentinel-2 JPEG2000 files with a synthesized TLM marker (``jp2_index.py``): the
  tile-part index of each object is built once (walking its tile-part chain), kept in memory,
  on disk and in Redis, keyed on the object's ETag, so that later reads in any process fetch
  only the tile-parts a window needs.

GDAL reaches it as an S3 endpoint (``AWS_S3_ENDPOINT=127.0.0.1:<port>``, ``AWS_HTTPS=NO``,
``AWS_NO_SIGN_REQUEST=YES``). It runs on its own thread and event loop, in the server process
(one worker) or in the supervisor (``serve --workers N``), and only serves the configured
bucket(s) on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import contextvars
import email.utils
import hashlib
import json
import logging
import os
import re
import socket
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from pydantic import SecretStr

from server.sources.gdal_env import PRIORITY_HEADER, S3Settings
from server.sources.jp2_index import NotIndexable, TilePartIndex, build_index
from server.sources.s3_governor import Governor, QuotaWaitTimeout
from server.sources.s3_signing import sign_headers

log = logging.getLogger(__name__)
_BACKGROUND: contextvars.ContextVar[bool] = contextvars.ContextVar("eotiler_s3_background", default=False)

_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")
_PASS_HEADERS = ("content-type", "etag", "last-modified", "accept-ranges")
RETRYABLE = {429, 503}
MAX_BACKOFF = 8.0
INDEX_MEMORY = 4096  # indexes (a few KB each) kept in memory
READ_AHEAD_BYTES = 256 * 1024  # a run of small tile-parts is fetched up to this size (~13 ms at 20 MB/s)
OPEN_BYTES = 65536  # what GDAL reads at open: one upstream request learns size and ETag


@dataclass(slots=True)
class Upstream:
    """One answer of the object store, body included (range reads are bounded)."""

    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def etag(self) -> str:
        """The object's ETag as the store gave it ('' when absent)."""
        return self.headers.get("etag", "")

    def total_size(self) -> int | None:
        """The object's size from Content-Range (206) or Content-Length (200)."""
        if "content-range" in self.headers:
            total = self.headers["content-range"].rsplit("/", 1)[-1]
            return int(total) if total.isdigit() else None
        length = self.headers.get("content-length")
        return int(length) if length and length.isdigit() else None


def retry_after(value: str | None, attempt: int) -> float:
    """Seconds to wait after a 429/503: the answer's ``Retry-After`` (seconds or a date), else backoff."""
    if value:
        if value.strip().isdigit():
            return min(float(value.strip()), 60.0)
        when = email.utils.parsedate_to_datetime(value) if "," in value else None
        if when is not None:
            return max(0.0, min(when.timestamp() - time.time(), 60.0))
    return min(0.25 * 2**attempt, MAX_BACKOFF)


class _Changed(Exception):
    """The object's ETag is not the one its index was built for."""


class _Failed(Exception):
    """An upstream answer that is passed on to GDAL as it is (404, 403, 503 after retries, ...)."""

    def __init__(self, answer: Upstream) -> None:
        self.answer = answer


class BytesLru:
    """An LRU of byte strings bounded by their total size."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._items: OrderedDict[object, bytes] = OrderedDict()

    def get(self, key: object) -> bytes | None:
        """The value, marked as recently used."""
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: object, value: bytes) -> None:
        """Keep ``value``, dropping the least recently used beyond the bound."""
        if len(value) > self.max_bytes // 4:
            return
        old = self._items.pop(key, None)
        self.size += len(value) - (len(old) if old is not None else 0)
        self._items[key] = value
        while self.size > self.max_bytes:
            _, dropped = self._items.popitem(last=False)
            self.size -= len(dropped)


class _Unindexed(Exception):
    """The object could not be read to be indexed: its answer is passed on, nothing is remembered."""

    def __init__(self, answer: Upstream) -> None:
        self.answer = answer


class IndexStore:
    """Tile-part indexes: memory, then a directory, then Redis (shared by replicas)."""

    def __init__(self, directory: Path | None, redis_url: str | None) -> None:
        self.directory = directory
        self._memory: OrderedDict[str, TilePartIndex | None] = OrderedDict()
        self._redis_url = redis_url
        self._redis: Any = None
        self._redis_broken_until = 0.0

    @staticmethod
    def _name(path: str) -> str:
        return hashlib.sha256(path.encode()).hexdigest()

    def _client(self) -> Any:
        if not self._redis_url or time.monotonic() < self._redis_broken_until:
            return None
        if self._redis is None:
            import redis

            self._redis = redis.Redis.from_url(self._redis_url, socket_timeout=1.0, socket_connect_timeout=1.0)
        return self._redis

    def _redis_failed(self, exc: Exception) -> None:
        log.warning("tile-part index store unreachable for 30 s: %s", type(exc).__name__)
        self._redis_broken_until = time.monotonic() + 30.0

    def get(self, path: str) -> TilePartIndex | None | bool:
        """From memory only (no I/O): the index, ``None`` when it needs none, ``False`` when not there."""
        if path not in self._memory:
            return False
        self._memory.move_to_end(path)
        return self._memory[path]

    def load(self, path: str) -> TilePartIndex | bool:
        """From the directory or Redis (blocking I/O: call off the event loop); ``False`` when absent."""
        data = None
        name = self._name(path)
        try:
            if self.directory is not None and (self.directory / name).is_file():
                data = (self.directory / name).read_bytes()
        except OSError as exc:
            log.warning("tile-part index directory unreadable: %s", exc)
        client = self._client() if data is None else None
        if client is not None:
            try:
                data = client.get(f"eotiler:jp2idx:{name}")
            except Exception as exc:  # noqa: BLE001 - Redis is an optional level
                self._redis_failed(exc)
        if not data:
            return False
        try:
            index = TilePartIndex.from_bytes(data)
        except ValueError:
            return False
        self.remember(path, index)
        return index

    def remember(self, path: str, index: TilePartIndex | None) -> None:
        """Keep ``index`` (``None``: the object needs none) in memory."""
        self._memory[path] = index
        self._memory.move_to_end(path)
        while len(self._memory) > INDEX_MEMORY:
            self._memory.popitem(last=False)

    def store(self, path: str, index: TilePartIndex) -> None:
        """Write ``index`` to the directory and Redis (blocking I/O); failures only cost a rebuild later."""
        data, name = index.to_bytes(), self._name(path)
        if self.directory is not None:
            tmp = self.directory / f".{name}.{os.getpid()}.{threading.get_ident()}"
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
                tmp.write_bytes(data)
                tmp.replace(self.directory / name)
            except OSError as exc:
                log.warning("tile-part index not stored on disk: %s", exc)
                tmp.unlink(missing_ok=True)
        client = self._client()
        if client is not None:
            try:
                client.set(f"eotiler:jp2idx:{name}", data, ex=30 * 24 * 3600)
            except Exception as exc:  # noqa: BLE001 - Redis is an optional level
                self._redis_failed(exc)

    def forget(self, path: str) -> None:
        """Drop ``path`` everywhere (its object changed)."""
        self._memory.pop(path, None)
        if self.directory is not None:
            with contextlib.suppress(OSError):
                (self.directory / self._name(path)).unlink(missing_ok=True)


def s3_buckets(data_roots: Iterable[str]) -> frozenset[str]:
    """The buckets that ``/vsis3/<bucket>[/...]`` data roots read from."""
    return frozenset(root.split("/")[2] for root in data_roots if root.startswith("/vsis3/") and root.split("/")[2])


@dataclass(frozen=True, slots=True)
class GatewayOptions:
    """How the gateway talks upstream and what it may serve."""

    s3: S3Settings
    buckets: frozenset[str]
    connections: int = 4
    requests_per_minute: int = 2000
    budget: float = 20.0  # seconds one request may wait for the quota and its retries
    timeout: float = 20.0  # seconds one upstream request may take
    stall: float = 5.0  # seconds without a byte from the store before a request is given up
    index_dir: Path | None = None
    redis_url: str | None = None
    jp2_index: bool = True
    tile_part_bytes: int = 256 * 1024**2  # whole JPEG2000 tile-parts kept in memory


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
        self.governor = Governor(options.connections, options.requests_per_minute, identity, options.redis_url, lease)
        self.indexes = IndexStore(options.index_dir, options.redis_url)
        self.coalesced = 0
        self.index_reads = 0  # upstream requests spent walking tile-part chains
        self._inflight: dict[tuple[str, str, str], asyncio.Task[Upstream]] = {}
        self._building: dict[str, asyncio.Future[TilePartIndex | None]] = {}
        self._part_lists: dict[tuple[str, str], list[tuple[int, int]]] = {}
        self.tile_parts = BytesLru(options.tile_part_bytes)
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.address = ""

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
            async with self.governor.slot(deadline, background=_BACKGROUND.get()):
                response = await self._client.request(method, url, headers=headers)
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

    # -- JPEG2000 tile-part indexes ---------------------------------------------------------
    async def index_for(self, path: str, opening: Upstream | None = None) -> TilePartIndex | None:
        """The index of ``path`` (built once, coalesced); ``None`` when it needs none."""
        known = self.indexes.get(path)
        if known is False:
            known = await asyncio.to_thread(self.indexes.load, path)
        if known is not False:
            return known  # type: ignore[return-value]
        building = self._building.get(path)
        if building is not None:
            return await asyncio.shield(building)
        future: asyncio.Future[TilePartIndex | None] = asyncio.get_running_loop().create_future()
        self._building[path] = future
        try:
            index = await self._build(path, opening)
            self.indexes.remember(path, index)
            if index is not None:
                await asyncio.to_thread(self.indexes.store, path, index)
            future.set_result(index)
            return index
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()
            raise
        finally:
            self._building.pop(path, None)

    async def _build(self, path: str, opening: Upstream | None) -> TilePartIndex | None:
        first = opening or await self.fetch("GET", path, f"bytes=0-{OPEN_BYTES - 1}")
        size = first.total_size()
        if first.status not in (200, 206) or size is None:
            raise _Unindexed(first)
        loop = asyncio.get_running_loop()
        cached = first.body

        def read(offset: int, length: int) -> bytes:
            if offset + length <= len(cached):
                return cached[offset : offset + length]
            answer = asyncio.run_coroutine_threadsafe(
                self.fetch("GET", path, f"bytes={offset}-{offset + length - 1}"), loop
            ).result()
            if answer.status != 206 or answer.etag != first.etag:
                raise NotIndexable("the object changed or could not be read while it was indexed")
            self.index_reads += 1
            return answer.body

        try:
            index, requests = await asyncio.to_thread(build_index, read, size, first.etag)
        except NotIndexable as exc:
            log.info("no tile-part index for %s: %s", path.rsplit("/", 1)[-1], exc)
            return None
        log.info("tile-part index of %s built with %d range reads", path.rsplit("/", 1)[-1], requests)
        return index

    async def _virtual(self, method: str, path: str, byte_range: str | None) -> Upstream | None:
        """The answer for a JPEG2000 object seen with its TLM marker; ``None``: serve it as it is.

        An object whose ETag is no longer the index's (it was replaced) is indexed again, once.
        """
        try:
            return await self._serve_virtual(method, path, byte_range)
        except _Changed:
            log.info("object %s changed: its tile-part index is rebuilt", path.rsplit("/", 1)[-1])
            self.indexes.forget(path)
            return await self._serve_virtual(method, path, byte_range)

    async def _serve_virtual(self, method: str, path: str, byte_range: str | None) -> Upstream | None:
        match = _RANGE.match(byte_range or "")
        if method == "HEAD" or match is None:
            index = await self.index_for(path)
            if index is None:
                return None
            if method == "HEAD":
                return Upstream(200, {"content-length": str(index.virtual_size), "etag": index.etag}, b"")
            match = _RANGE.match(f"bytes=0-{index.virtual_size - 1}")  # a whole-object GET: rare
        assert match is not None
        start = int(match.group(1))
        end = int(match.group(2)) if match.group(2) else None
        index = self.indexes.get(path)
        if index is False:
            index = await asyncio.to_thread(self.indexes.load, path)
        if index is False:
            opening = await self.fetch("GET", path, f"bytes=0-{OPEN_BYTES - 1}")
            index = await self.index_for(path, opening)
            if index is None:  # served as it is: the bytes just fetched answer GDAL's open
                return _slice(opening, start, end)
        elif start == 0 and index is not None:  # GDAL opens the file: is it still the object we indexed?
            probe = await self.fetch("GET", path, "bytes=0-0")
            if probe.status not in (200, 206):
                return probe
            if probe.etag != index.etag:
                raise _Changed
        if index is None:
            return None
        assert isinstance(index, TilePartIndex)
        stop = index.virtual_size - 1 if end is None else min(end, index.virtual_size - 1)
        if start > stop:
            return Upstream(416, {"content-range": f"bytes */{index.virtual_size}"}, b"")
        chunks = [
            index.prefix[first : last + 1] if from_prefix else await self._original(path, index, first, last)
            for from_prefix, first, last in index.pieces(start, stop)
        ]
        headers = {"content-range": f"bytes {start}-{stop}/{index.virtual_size}", "etag": index.etag}
        return Upstream(206, headers, b"".join(chunks))

    async def _original(self, path: str, index: TilePartIndex, first: int, last: int) -> bytes:
        """Original bytes ``first..last``, fetched a whole tile-part at a time (and kept).

        GDAL reads a tile-part in growing chunks (16 KB, 32 KB, ...), one request each; fetching
        and keeping the whole tile-part once makes a tile-part cost one request in every process.
        Bytes outside every tile-part (the final EOC marker) are fetched as asked.
        """
        parts = self._parts(path, index)
        starts = [offset for offset, _ in parts]
        spans: list[tuple[int, int, int, int]] = []  # (part offset, part length, first, last)
        position = first
        while position <= last:
            i = bisect.bisect_right(starts, position) - 1
            offset, length = parts[i] if i >= 0 else (position, last - position + 1)
            if position >= offset + length:  # past the last tile-part
                offset, length = position, last - position + 1
            end = min(last, offset + length - 1)
            spans.append((offset, length, position, end))
            position = end + 1
        # consecutive tile-parts not in memory are fetched together, one request per run, and a
        # short run reads ahead into the next tile-parts (GDAL asks for them next along a row)
        runs: list[list[tuple[int, int]]] = []
        for offset, length, _, _ in spans:
            if self.tile_parts.get((path, index.etag, offset, length)) is not None:
                continue
            if runs and runs[-1][-1][0] + runs[-1][-1][1] == offset:
                runs[-1].append((offset, length))
            else:
                runs.append([(offset, length)])
        for run in runs:
            following = bisect.bisect_right(starts, run[-1][0])
            while sum(n for _, n in run) < READ_AHEAD_BYTES and following < len(parts):
                if self.tile_parts.get((path, index.etag, *parts[following])) is not None:
                    break
                run.append(parts[following])
                following += 1
        await asyncio.gather(*(self._fetch_parts(path, index.etag, run) for run in runs))
        out = []
        for offset, length, a, b in spans:
            blob = self.tile_parts.get((path, index.etag, offset, length))
            if blob is None:  # larger than the memory bound allows: fetched for this answer only
                blob = (await self._fetch_parts(path, index.etag, [(offset, length)]))[0]
            out.append(blob[a - offset : b - offset + 1])
        return b"".join(out)

    def _parts(self, path: str, index: TilePartIndex) -> list[tuple[int, int]]:
        key = (path, index.etag)
        if key not in self._part_lists:
            if len(self._part_lists) >= INDEX_MEMORY:
                self._part_lists.pop(next(iter(self._part_lists)))
            self._part_lists[key] = index.tile_parts()
        return self._part_lists[key]

    async def _fetch_parts(self, path: str, etag: str, run: list[tuple[int, int]]) -> list[bytes]:
        """Consecutive tile-parts (or byte spans) of the original object in one request, kept in memory."""
        first, last = run[0][0], run[-1][0] + run[-1][1] - 1
        answer = await self.fetch("GET", path, f"bytes={first}-{last}")
        if answer.status in (200, 206) and answer.etag != etag:
            raise _Changed
        if answer.status != 206 or len(answer.body) != last - first + 1:
            raise _Failed(answer)
        blobs = [answer.body[offset - first : offset - first + length] for offset, length in run]
        for (offset, length), blob in zip(run, blobs, strict=True):
            self.tile_parts.put((path, etag, offset, length), blob)
        return blobs

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
        bucket = path.lstrip("/").partition("/")[0]
        if method not in ("GET", "HEAD") or bucket not in self.options.buckets or "/../" in path:
            await _respond(send, Upstream(403, {}, b""), method)
            return
        headers = dict(scope["headers"])
        byte_range = headers[b"range"].decode("latin-1") if b"range" in headers else None
        # what this request fetches, in tasks created below too, runs at the priority it asked for
        _BACKGROUND.set(headers.get(PRIORITY_HEADER.lower().encode()) == b"background")
        try:
            answer = None
            if self.options.jp2_index and path.lower().endswith(".jp2"):
                answer = await self._virtual(method, path, byte_range)
            if answer is None:
                answer = await self.fetch(method, path, byte_range)
        except (_Unindexed, _Failed) as exc:
            answer = exc.answer
        except QuotaWaitTimeout:
            answer = Upstream(503, {"retry-after": "1"}, b"")
        except httpx.TimeoutException:
            answer = Upstream(504, {}, b"")
        except httpx.HTTPError as exc:
            log.warning("S3 request failed: %s", type(exc).__name__)
            answer = Upstream(502, {}, b"")
        await _respond(send, answer, method)

    # -- lifecycle ------------------------------------------------------------------------
    def start(self, port: int = 0) -> str:
        """Serve on 127.0.0.1 (``port``, or a free one) on a thread of its own; returns ``host:port``.

        The server runs it in a process of its own (``s3_gateway_process.py``); a thread is for
        tests that drive the gateway with their own client.
        """
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
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
        """One unsigned request to the store's root as the gateway starts, so the first read of a
        new process does not also pay for the HTTP client's first request (measured: ~30 ms)."""
        url, _, _ = self._url_and_host("/")
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
        }


def _slice(opening: Upstream, start: int, end: int | None) -> Upstream | None:
    """The part of an answer for bytes ``0..`` that a range ``start..end`` asks for, if it has it all."""
    total = opening.total_size()
    if opening.status != 206 or total is None:
        return None
    stop = min(total - 1, end if end is not None else total - 1)
    if start > stop or stop >= len(opening.body):
        return None
    headers = {**opening.headers, "content-range": f"bytes {start}-{stop}/{total}"}
    return Upstream(206, headers, opening.body[start : stop + 1])


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


def options_to_json(options: GatewayOptions) -> str:
    """The options as one JSON line for the gateway process (secrets included: stdin only)."""
    s3 = options.s3
    fields = {
        "s3": {
            "endpoint": s3.endpoint,
            "https": s3.https,
            "virtual_hosting": s3.virtual_hosting,
            "region": s3.region,
            "access_key_id": s3.access_key_id.get_secret_value() if s3.access_key_id else None,
            "secret_access_key": s3.secret_access_key.get_secret_value() if s3.secret_access_key else None,
            "no_sign_request": s3.no_sign_request,
        },
        "buckets": sorted(options.buckets),
        "index_dir": str(options.index_dir) if options.index_dir is not None else None,
    }
    for name in ("connections", "requests_per_minute", "budget", "timeout", "stall", "redis_url", "jp2_index"):
        fields[name] = getattr(options, name)
    fields["tile_part_bytes"] = options.tile_part_bytes
    return json.dumps(fields)


def options_from_json(text: str) -> GatewayOptions:
    """The inverse of ``options_to_json``."""
    fields = json.loads(text)
    raw = fields.pop("s3")
    secrets = {k: SecretStr(raw[k]) if raw[k] else None for k in ("access_key_id", "secret_access_key")}
    s3 = S3Settings(**{**raw, **secrets})
    index_dir = fields.pop("index_dir")
    buckets = frozenset(fields.pop("buckets"))
    return GatewayOptions(s3, buckets, index_dir=Path(index_dir) if index_dir else None, **fields)


def main() -> None:
    """``python -m server.sources.s3_gateway PORT``: options on stdin, ``READY`` on stdout.

    The gateway lives as long as its stdin: when the server that started it closes it, or dies,
    the gateway stops too.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    options = options_from_json(sys.stdin.readline())
    gateway = S3Gateway(options)
    print(f"READY {gateway.start(int(sys.argv[1]))}", flush=True)
    sys.stdin.read()  # until EOF
    gateway.stop()


if __name__ == "__main__":
    main()
