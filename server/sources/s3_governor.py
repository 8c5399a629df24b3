"""Keeps the server inside an object store's per-credential quota.

CDSE's ``eodata`` allows each credential 4 concurrent connections and 2,000 requests per minute,
and answers 429 beyond. Every S3 request of the server goes through one ``Governor`` (in the S3
gateway, ``s3_gateway.py``), which waits instead of failing: for a connection slot, for room in
the sliding one-minute window, and for the pause a 429/503 ``Retry-After`` asked for. With Redis
configured the same three limits are shared by every gateway (every machine, every replica) that
uses the credential: leases and request times live in sorted sets, updated atomically by a Lua
script, and a lease expires on its own if its holder dies.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from server.redis_client import RestedRedis

log = logging.getLogger(__name__)

LEASE_SECONDS = 30.0  # default lease: longer than any one request may take; a dead holder's lapses then
POLL_SECONDS = 0.02  # how often a waiter asks Redis again while every slot is taken
# Background requests (overview builds, prefetch) start only once no request a client waits for
# has been in flight for QUIET_SECONDS, and wait for that at most YIELD_SECONDS in all: on 2 cores
# a background build decoding a whole JPEG2000 file while a cold tile was read made that tile
# 1.8 x slower (458 -> 822 ms p50, TLM file at z11).
QUIET_SECONDS = 0.3
YIELD_SECONDS = 2.0

# KEYS: leases, request times, pause; ARGV: lease id, lease milliseconds, connections, per minute.
# Returns 0 when the caller may go, else how many milliseconds to wait before asking again.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - 60000)
local pause = tonumber(redis.call('GET', KEYS[3]) or '0')
if pause > now then return pause - now end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 20 end
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  return math.max(1, tonumber(oldest[2]) + 60000 - now)
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZADD', KEYS[2], now, ARGV[1])
redis.call('PEXPIRE', KEYS[2], 61000)
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
return 0
"""
# KEYS: pause; ARGV: milliseconds. The pause only ever grows.
_PAUSE = """
local t = redis.call('TIME')
local until_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
if until_ms > tonumber(redis.call('GET', KEYS[1]) or '0') then
  redis.call('SET', KEYS[1], until_ms, 'PX', tonumber(ARGV[1]) + 1000)
end
return 0
"""


class QuotaWaitTimeout(TimeoutError):
    """The quota did not admit the request before its deadline."""


@dataclass(slots=True)
class Held:
    """One connection slot while it is held; ``linger``: seconds it stays taken after the block."""

    linger: float


@dataclass(slots=True)
class GovernorStats:
    """What ``/metrics`` shows of the governor (cumulative, this process)."""

    requests: int = 0
    throttled: int = 0  # 429 and 503 answers received
    queue_wait_seconds: float = 0.0
    in_flight: int = 0
    peak_in_flight: int = 0
    waits: collections.Counter[str] = field(default_factory=collections.Counter)


class Governor:
    """Connection slots, a sliding-window request budget and a shared pause, per credential."""

    def __init__(
        self,
        connections: int,
        per_minute: int,
        identity: str,
        redis_url: str | None = None,
        lease_seconds: float = LEASE_SECONDS,
        linger_seconds: float = 0.0,
    ) -> None:
        """``lease_seconds``: how long a shared connection slot outlives a holder that died with it.

        It must exceed the longest request (the gateway's timeout); shorter is better, since a
        replica that crashes mid-request keeps its slots from everyone until they lapse.

        ``linger_seconds``: how long a slot stays taken after its answer has been read when its
        connection was closed. The store (or a proxy in front of it) counts a request as in
        flight until it has sent the last byte and done its own bookkeeping, a little after the
        client has read that byte; a next request sent at once on a new connection can find the
        store counting one more than the client holds (measured behind the quota proxy: 5 and 6
        in flight with 4 slots). On a connection kept open the store reads the next request only
        after answering, so no margin is needed there. The caller gets its answer at once: only
        the next request waiting for the slot waits.
        """
        self._lease_ms = int(lease_seconds * 1000)
        self._linger = linger_seconds
        self._lingering: set[asyncio.Task[None]] = set()
        self.connections = connections
        self.per_minute = per_minute
        self.stats = GovernorStats()
        self._slots = asyncio.Semaphore(connections)
        self._background = asyncio.Semaphore(1)
        self._foreground = 0  # requests a client waits for, from asking for a slot to giving it back
        self._foreground_ended = 0.0
        self._recent: collections.deque[float] = collections.deque()
        self._pause_until = 0.0
        self._redis = RestedRedis(redis_url or None, rest_seconds=10.0, what="S3 quota store (local limits meanwhile)")
        prefix = f"eotiler:s3quota:{identity}"
        self._keys = (f"{prefix}:leases", f"{prefix}:requests", f"{prefix}:pause")

    async def _local_rate(self, deadline: float) -> None:
        """Room in this process's one-minute window (and past any pause)."""
        while True:
            now = time.monotonic()
            while self._recent and now - self._recent[0] >= 60.0:
                self._recent.popleft()
            wait = self._pause_until - now
            if wait <= 0 and len(self._recent) >= self.per_minute:
                wait = self._recent[0] + 60.0 - now
            if wait <= 0:
                self._recent.append(now)
                return
            if now + wait > deadline:
                raise QuotaWaitTimeout("the S3 request quota did not free up in time")
            self.stats.waits["rate"] += 1
            await asyncio.sleep(wait)

    async def _shared(self, lease: str, deadline: float) -> bool:
        """A lease from Redis when configured; False when Redis is not used for this request."""
        client = self._redis.client()
        if client is None:
            return False
        while True:
            try:
                limits = (self._lease_ms, self.connections, self.per_minute)
                wait_ms = int(await client.eval(_ACQUIRE, 3, *self._keys, lease, *limits))
            except Exception as exc:  # noqa: BLE001 - any Redis failure: local limits only
                self._redis.failed(exc)
                return False
            if wait_ms == 0:
                return True
            if time.monotonic() + wait_ms / 1000 > deadline:
                raise QuotaWaitTimeout("the shared S3 quota did not free up in time")
            self.stats.waits["shared"] += 1
            await asyncio.sleep(max(wait_ms / 1000, POLL_SECONDS))

    async def _release_shared(self, lease: str) -> None:
        client = self._redis.client()
        if client is None:
            return
        try:
            await client.zrem(self._keys[0], lease)
        except Exception as exc:  # noqa: BLE001 - the lease expires by itself
            self._redis.failed(exc)

    @asynccontextmanager
    async def slot(self, deadline: float, background: bool = False) -> AsyncIterator[Held]:
        """Hold one connection slot and one request of the budget until the block ends.

        The slot stays taken ``linger_seconds`` longer unless the holder sets ``Held.linger`` to 0
        (its connection stayed open: the store answers the next request on it only after this one).
        ``background`` requests (no client waits for them) hold at most one slot between them,
        and start only when the others have been quiet a moment (``QUIET_SECONDS``).
        Raises ``QuotaWaitTimeout`` when the deadline (``time.monotonic()``) passes first.
        """
        if background:
            async with self._background:
                await self._after_foreground(deadline)
                async with self._held(deadline) as held:
                    yield held
            return
        self._foreground += 1
        try:
            async with self._held(deadline) as held:
                yield held
        finally:
            self._foreground -= 1
            self._foreground_ended = time.monotonic()

    async def _after_foreground(self, deadline: float) -> None:
        """Wait until no foreground request has been in flight for ``QUIET_SECONDS`` (bounded)."""
        give_up = min(deadline, time.monotonic() + YIELD_SECONDS)
        waited = False
        while True:
            now = time.monotonic()
            quiet_at = self._foreground_ended + QUIET_SECONDS if self._foreground == 0 else now + POLL_SECONDS
            if quiet_at <= now or now >= give_up:
                break
            waited = True
            await asyncio.sleep(min(quiet_at, give_up) - now)
        if waited:
            self.stats.waits["foreground"] += 1

    @asynccontextmanager
    async def _held(self, deadline: float) -> AsyncIterator[Held]:
        """One connection slot and one request of the budget (see ``slot``)."""
        start = time.monotonic()
        await self._local_rate(deadline)  # a pause or a full minute holds requests before they take a slot
        try:
            await asyncio.wait_for(self._slots.acquire(), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            raise QuotaWaitTimeout("no S3 connection slot freed up in time") from None
        lease = uuid.uuid4().hex
        shared = False
        held = Held(self._linger)
        try:
            shared = await self._shared(lease, deadline)
            self.stats.queue_wait_seconds += time.monotonic() - start
            self.stats.requests += 1
            self.stats.in_flight += 1
            self.stats.peak_in_flight = max(self.stats.peak_in_flight, self.stats.in_flight)
            try:
                yield held
            finally:
                self.stats.in_flight -= 1
        finally:
            if held.linger > 0:
                task = asyncio.get_running_loop().create_task(self._release(lease, shared, held.linger))
                self._lingering.add(task)  # held until it ends (the loop keeps weak references only)
                task.add_done_callback(self._lingering.discard)
            else:
                await self._release(lease, shared, 0.0)

    async def _release(self, lease: str, shared: bool, after: float) -> None:
        """Give the connection slot (and the shared lease) back ``after`` seconds from now."""
        try:
            if after > 0:
                await asyncio.sleep(after)
        finally:
            try:
                if shared:
                    await self._release_shared(lease)
            finally:
                self._slots.release()

    async def pause(self, seconds: float) -> None:
        """Hold every request of this credential back for ``seconds`` (a 429/503 asked for it)."""
        self.stats.throttled += 1
        self._pause_until = max(self._pause_until, time.monotonic() + seconds)
        client = self._redis.client()
        if client is not None:
            try:
                await client.eval(_PAUSE, 1, self._keys[2], int(seconds * 1000))
            except Exception as exc:  # noqa: BLE001 - the local pause still holds
                self._redis.failed(exc)
