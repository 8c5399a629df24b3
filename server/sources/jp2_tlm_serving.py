"""Sentinel-2 JPEG2000 objects served with a synthesized TLM marker, a whole tile-part at a time.

ESA's JPEG2000 files carry no TLM marker, so GDAL finds a tile by walking the tile-part chain
from the start of the file, one small range read per tile-part (tens of requests per cold read
over S3). The gateway builds each object's tile-part index once (``jp2_index.py``, kept by
``jp2_index_store.py`` keyed on the ETag) and answers GDAL with a *virtual* object: the original
main header with a TLM marker added, then the original tile-parts. GDAL then seeks straight to
the tile-parts a window needs, which are fetched whole and kept (``s3_tile_part_cache.py``).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import re
import threading
from collections.abc import Awaitable, Callable

from server.sources.jp2_index import NotIndexable, TilePartIndex, WalkPolicy, build_index
from server.sources.jp2_index_store import INDEX_MEMORY, IndexStore
from server.sources.jp2_walk import HOP_BYTES
from server.sources.s3_tile_part_cache import BytesLru, DiskTileParts, EdgeBytes
from server.sources.s3_upstream import PassedOn, Upstream, slice_answer

log = logging.getLogger(__name__)

_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")
READ_AHEAD_BYTES = 256 * 1024  # a run of small tile-parts is fetched up to this size (~13 ms at 20 MB/s)
OPEN_BYTES = 65536  # what GDAL reads at open: one upstream request learns size and ETag
WALK_READ_SECONDS = 120.0  # a walk thread never waits longer for one read (a stopped loop never answers)
PREFETCH_MAX_BYTES = 64 * 1024**2  # a window needing more tile-parts is left to GDAL's own reads
EDGE_BYTES = 64 * 1024  # bytes fetched before a prefetched run at most, after it at least (GDAL's aligned chunks)
EDGE_AFTER_MAX_BYTES = 4 * 1024**2  # bytes fetched after a prefetched run, at most (``prefetch``)
EDGE_MEMORY_BYTES = 64 * 1024**2

Fetch = Callable[[str, str, str | None], Awaitable[Upstream]]


class Changed(Exception):
    """The object's ETag is not the one its index was built for."""


class FetchAbandoned(Exception):
    """A tile-part fetch others waited for was cancelled: they fetch for themselves."""


class TlmServing:
    """Answers GDAL's reads of JPEG2000 objects from their tile-part index (one per gateway)."""

    def __init__(
        self,
        fetch: Fetch,
        indexes: IndexStore,
        tile_part_bytes: int,
        disk: DiskTileParts | None = None,
        walk_fetch: Fetch | None = None,
        walk_window: Callable[[float], int] = lambda _: HOP_BYTES,
        walk_segments: int = 1,
        round_trip_bytes: Callable[[], int] = lambda: 0,
        background: Callable[[], bool] = lambda: False,
    ) -> None:
        """``fetch(method, path, range)``: one store request through the gateway's governor, at the
        priority of the GDAL request being answered; ``walk_fetch``: the same at foreground
        priority, for the tile-part chain walks (default ``fetch``); ``disk``: tile-parts kept
        across restarts (``None``: memory only); ``walk_window``: bytes a walk read fetches for
        a mean tile-part size (``LinkEstimate.walk_window``; default: the next header only);
        ``walk_segments``: parts of a chain walked at the same time (``jp2_walk.py``);
        ``round_trip_bytes``: what a connection moves in a round trip (``LinkEstimate``);
        ``background``: whether the request being answered runs at background priority.

        Why walks are foreground: a walk is a hundred small sequential reads that every later
        reader of the file waits for, whichever request started it; at background priority
        each read waited for the views to be quiet, and a view that then needed the file found
        its walk far from done (GDAL timed out on it).
        """
        self.fetch = fetch
        self.walk_fetch = walk_fetch or fetch
        self.walk_window = walk_window
        self.walk_segments = walk_segments
        self.round_trip_bytes = round_trip_bytes
        self.background = background
        self.indexes = indexes
        self.tile_parts = BytesLru(tile_part_bytes)
        self.disk = disk
        self.disk_hits = 0  # tile-parts answered from disk instead of the store
        self._writing: set[asyncio.Future[None]] = set()
        self.index_reads = 0  # upstream requests spent walking tile-part chains
        self._building: dict[str, asyncio.Future[TilePartIndex | None]] = {}
        self._part_lists: dict[tuple[str, str], list[tuple[int, int]]] = {}
        self._counting = threading.Lock()
        self.edges = EdgeBytes(EDGE_MEMORY_BYTES)
        # tile-parts being fetched: a read that needs one waits for that fetch instead of another
        self._pending: dict[tuple[str, str, int, int], asyncio.Future[bytes]] = {}
        self.prefetched = 0  # tile-parts fetched ahead of GDAL's reads (``prefetch``)

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
        first = opening or await self.walk_fetch("GET", path, f"bytes=0-{OPEN_BYTES - 1}")
        size = first.total_size()
        if first.status not in (200, 206) or size is None:
            raise PassedOn(first)
        loop = asyncio.get_running_loop()
        cached = first.body

        def read(offset: int, length: int) -> bytes:
            if offset + length <= len(cached):
                return cached[offset : offset + length]
            answer = asyncio.run_coroutine_threadsafe(
                self.walk_fetch("GET", path, f"bytes={offset}-{offset + length - 1}"), loop
            ).result(timeout=WALK_READ_SECONDS)
            if answer.status != 206 or answer.etag != first.etag:
                raise NotIndexable("the object changed or could not be read while it was indexed")
            with self._counting:  # the segments of a walk read from threads of their own
                self.index_reads += 1
            return answer.body

        def keep(offset: int, blob: bytes) -> None:  # a tile-part a spanning walk read held whole
            loop.call_soon_threadsafe(self._keep, path, first.etag, offset, blob)

        walk = WalkPolicy(self.walk_window, keep, self.walk_segments)
        try:
            modified = first.headers.get("last-modified", "")
            index, requests = await asyncio.to_thread(build_index, read, size, first.etag, modified, walk)
        except NotIndexable as exc:
            log.info("no tile-part index for %s: %s", path.rsplit("/", 1)[-1], exc)
            return None
        log.info("tile-part index of %s built with %d range reads", path.rsplit("/", 1)[-1], requests)
        return index

    def _keep(self, path: str, etag: str, offset: int, blob: bytes) -> None:
        """A tile-part the walk fetched, kept as if read for GDAL (memory, and disk off the loop)."""
        self.tile_parts.put((path, etag, offset, len(blob)), blob)
        self._to_disk(path, etag, [(offset, len(blob))], [blob])

    async def serve(self, method: str, path: str, byte_range: str | None) -> Upstream | None:
        """The answer for a JPEG2000 object seen with its TLM marker; ``None``: serve it as it is.

        An object whose ETag is no longer the index's (it was replaced) is indexed again, once.
        """
        try:
            return await self._serve_virtual(method, path, byte_range)
        except Changed:
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
                return Upstream(200, {"content-length": str(index.virtual_size), **_identity(index)}, b"")
            match = _RANGE.match(f"bytes=0-{index.virtual_size - 1}")  # a whole-object GET: rare
        assert match is not None
        start = int(match.group(1))
        end = int(match.group(2)) if match.group(2) else None
        found = await self._opened(path, start)
        if isinstance(found, Upstream):  # the store's answer, passed on
            return found
        index, opening = found
        if index is None:  # served as it is: the bytes just fetched (if any) answer GDAL's open
            return slice_answer(opening, start, end) if opening is not None else None
        stop = index.virtual_size - 1 if end is None else min(end, index.virtual_size - 1)
        if start > stop:
            return Upstream(416, {"content-range": f"bytes */{index.virtual_size}"}, b"")
        # the original's first bytes, when the open just fetched them, answer GDAL's open whole
        known = opening.body if opening is not None and opening.status == 206 else b""
        chunks = [
            index.prefix[first : last + 1]
            if from_prefix
            else known[first : last + 1]
            if last < len(known)
            else await self._original(path, index, first, last)
            for from_prefix, first, last in index.pieces(start, stop)
        ]
        headers = {"content-range": f"bytes {start}-{stop}/{index.virtual_size}", **_identity(index)}
        return Upstream(206, headers, b"".join(chunks))

    async def _opened(self, path: str, start: int) -> tuple[TilePartIndex | None, Upstream | None] | Upstream:
        """The object's index (``None``: served as it is) and, when fetched here, its first bytes.

        An unknown object is indexed from an opening read of its first 64 KB. GDAL opening a known
        one (a read from byte 0) gets those 64 KB read again with their ETag checked, at
        foreground priority as walks: one round trip that gates a whole overview build (at
        background priority it waited up to 2 s per open for the views to be quiet), and the
        bytes GDAL's open asks for come with it (else the first tile-part was fetched whole).
        """
        index = self.indexes.get(path)
        if index is False:
            index = await asyncio.to_thread(self.indexes.load, path)
        if index is False:
            opening = await self.fetch("GET", path, f"bytes=0-{OPEN_BYTES - 1}")
            index = await self.index_for(path, opening)
            if index is not None and opening.etag != index.etag:  # built for another version meanwhile
                raise Changed
            return index, opening
        if start != 0 or index is None:
            return index, None
        assert isinstance(index, TilePartIndex)
        opening = await self.walk_fetch("GET", path, f"bytes=0-{OPEN_BYTES - 1}")
        if opening.status not in (200, 206):
            return opening
        if opening.etag != index.etag:
            raise Changed
        return index, opening

    async def prefetch(self, path: str, window: tuple[int, int, int, int]) -> int:
        """Fetch the tile-parts of ``window`` (``col0, row0, col1, row1`` of the full-resolution
        image) that are not at hand, all at once; returns how many were fetched.

        Why: GDAL reads the tile-parts of a window one after the other, a round trip each (a
        z11 tile of a 10980 px band: 4 tile-parts, 6 sequential requests with the neighbours its
        chunks touched). The server knows the window before GDAL reads it, so the tile-parts
        are fetched concurrently (within the governor's quota) and GDAL's reads find them here.
        A window needing more than ``PREFETCH_MAX_BYTES`` (or more than the memory keeps) is
        left to GDAL. Called at the priority of the read it serves.

        How the requests are cut (``_prefetch_runs``) follows from the link: one request moves
        about a round trip's worth of bytes (``round_trip_bytes``; more would be faster on
        another connection), tile-parts between two wanted ones come along when they cost less
        than a round trip (GDAL streams over them when they are close), and each request also
        brings the bytes GDAL's aligned, doubling chunks reach around it.
        """
        try:
            index = await self.index_for(path)
            if index is None:
                return 0
            etag = index.etag
            wanted = index.tile_parts_under(window)
            # what the memory keeps (BytesLru drops a blob above a quarter of its bound): a
            # window the memory cannot hold is read by GDAL as it would be without a prefetch
            kept = self.tile_parts.max_bytes // 4
            if not wanted or sum(n for _, n in wanted) > min(PREFETCH_MAX_BYTES, kept):
                return 0
            held = await self._from_disk(path, etag, wanted)
            missing = [
                part
                for part in wanted
                if part not in held
                and self.tile_parts.get((path, etag, *part)) is None
                and (path, etag, *part) not in self._pending
            ]
            runs = self._prefetch_runs(self._parts(path, index), missing)
            reach = max(EDGE_BYTES, min(self.round_trip_bytes(), EDGE_AFTER_MAX_BYTES))
            fetches = []
            for i, run in enumerate(runs):
                first, last = run[0][0], run[-1][0] + run[-1][1] - 1
                previous_end = runs[i - 1][-1][0] + runs[i - 1][-1][1] if i else index.body_offset
                next_start = runs[i + 1][0][0] if i + 1 < len(runs) else index.size
                # GDAL's last chunk along a run reaches at most about the run's size past it
                after = min(reach, max(EDGE_BYTES, 2 * (last - first + 1)), next_start - last - 1)
                edges = (min(EDGE_BYTES, first - previous_end), after)
                fetches.append(self._fetch_parts(path, etag, run, edges))
            await asyncio.gather(*fetches)
        except Changed:
            self.indexes.forget(path)  # the next read indexes the new version
            return 0
        self.prefetched += len(missing)
        return len(missing)

    def _prefetch_runs(
        self, parts: list[tuple[int, int]], missing: list[tuple[int, int]]
    ) -> list[list[tuple[int, int]]]:
        """``missing`` (in file order) cut into requests: a run grows over the tile-parts between
        two of them while those cost less than a round trip, up to a round trip's worth of bytes
        (a single larger tile-part is a run of its own)."""
        step = max(self.round_trip_bytes(), EDGE_BYTES)
        position = {offset: i for i, (offset, _) in enumerate(parts)}
        runs: list[list[tuple[int, int]]] = []
        for part in missing:
            if runs:
                run = runs[-1]
                between = parts[position[run[-1][0]] + 1 : position[part[0]]]
                gap = sum(n for _, n in between)
                if gap <= step and part[0] + part[1] - run[0][0] <= step:
                    run.extend(between)
                    run.append(part)
                    continue
            runs.append([part])
        return runs

    async def _original(self, path: str, index: TilePartIndex, first: int, last: int) -> bytes:
        """Original bytes ``first..last``, fetched a whole tile-part at a time (and kept), or
        from a tile-part being fetched, or from a prefetch's edge bytes.

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
        etag = index.etag
        here = await self._from_disk(path, etag, [(o, n) for o, n, _, _ in spans])
        # consecutive tile-parts not in memory are fetched together, one request per run, and a
        # short run reads ahead into the next tile-parts (GDAL asks for them next along a row)
        runs: list[list[tuple[int, int]]] = []
        for offset, length, a, b in spans:
            if (offset, length) in here or self._at_hand(path, etag, offset, length, a, b):
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
        return b"".join([await self._span(path, etag, here, *span) for span in spans])

    async def _span(
        self, path: str, etag: str, here: dict[tuple[int, int], bytes], offset: int, length: int, a: int, b: int
    ) -> bytes:
        """Bytes ``a..b`` of the tile-part at ``offset``, from what is at hand, else fetched."""
        blob = here.get((offset, length)) or self.tile_parts.get((path, etag, offset, length))
        pending = self._pending.get((path, etag, offset, length))
        if blob is None and pending is not None:
            with contextlib.suppress(Exception):  # a failed prefetch: fetched below instead
                blob = await asyncio.shield(pending)
        if blob is None and (edge := self.edges.get(path, etag, a, b)) is not None:
            return edge
        if blob is None:  # not kept (beyond the memory bound), or its fetch failed: fetched for this answer
            blob = (await self._fetch_parts(path, etag, [(offset, length)]))[0]
        return blob[a - offset : b - offset + 1]

    def _at_hand(self, path: str, etag: str, offset: int, length: int, first: int, last: int) -> bool:
        """Whether bytes ``first..last`` of the tile-part at ``offset`` need no new fetch: the
        tile-part is in memory or being fetched, or a prefetch's edge holds those bytes."""
        key = (path, etag, offset, length)
        return (
            self.tile_parts.get(key) is not None
            or key in self._pending
            or self.edges.get(path, etag, first, last) is not None
        )

    async def _from_disk(self, path: str, etag: str, spans: list[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        """The tile-parts of ``spans`` not in memory that the disk has (kept in memory too)."""
        disk = self.disk
        wanted = [(o, n) for o, n in spans if self.tile_parts.get((path, etag, o, n)) is None]
        if disk is None or not wanted:
            return {}
        loaded = await asyncio.to_thread(lambda: [(o, n, disk.get((path, etag, o, n))) for o, n in wanted])
        found = {(o, n): blob for o, n, blob in loaded if blob is not None}
        for (o, n), blob in found.items():
            self.tile_parts.put((path, etag, o, n), blob)
        self.disk_hits += len(found)
        return found

    def _to_disk(self, path: str, etag: str, run: list[tuple[int, int]], blobs: list[bytes]) -> None:
        """Write fetched tile-parts to disk off the loop; the answer does not wait for it."""
        disk = self.disk
        if disk is None:
            return
        keep = [((path, etag, o, n), blob) for (o, n), blob in zip(run, blobs, strict=True)]

        def write() -> None:
            for key, blob in keep:
                disk.put(key, blob)

        writing = asyncio.ensure_future(asyncio.to_thread(write))
        self._writing.add(writing)  # held until written (the loop keeps weak references only)
        writing.add_done_callback(self._writing.discard)

    def _parts(self, path: str, index: TilePartIndex) -> list[tuple[int, int]]:
        """``(offset, length)`` of the tile-parts, then of the object's tail after them (the EOC
        marker, and any box after the codestream), which is fetched and kept like a tile-part:
        GDAL reads those last bytes once per file, and at background priority each such read
        waited for the views to be quiet."""
        key = (path, index.etag)
        if key not in self._part_lists:
            if len(self._part_lists) >= INDEX_MEMORY:
                self._part_lists.pop(next(iter(self._part_lists)))
            parts = index.tile_parts()
            tail = parts[-1][0] + parts[-1][1] if parts else index.body_offset
            if tail < index.size:
                parts.append((tail, index.size - tail))
            self._part_lists[key] = parts
        return self._part_lists[key]

    async def _fetch_parts(
        self, path: str, etag: str, run: list[tuple[int, int]], edges: tuple[int, int] = (0, 0)
    ) -> list[bytes]:
        """Consecutive tile-parts (or byte spans) of the original object in one request, kept in
        memory; ``edges``: bytes before and after the run fetched with it and kept (``EdgeBytes``).

        Reads that need one of these tile-parts meanwhile wait for this request (``_pending``),
        unless it runs at background priority: background requests wait for the views to be
        quiet, one at a time, and a view must not wait behind them.
        """
        first, last = run[0][0], run[-1][0] + run[-1][1] - 1
        before, after = (max(0, n) for n in edges)
        keys = [(path, etag, offset, length) for offset, length in run]
        loop = asyncio.get_running_loop()
        waited_for = not self.background()
        waiting = {key: loop.create_future() for key in keys if waited_for and key not in self._pending}
        self._pending.update(waiting)
        try:
            answer = await self.fetch("GET", path, f"bytes={first - before}-{last + after}")
            if answer.status in (200, 206) and answer.etag != etag:
                raise Changed
            if answer.status != 206 or len(answer.body) != last - first + 1 + before + after:
                raise PassedOn(answer)
            body = answer.body
            blobs = [body[before + offset - first : before + offset - first + length] for offset, length in run]
            for key, blob in zip(keys, blobs, strict=True):
                self.tile_parts.put(key, blob)
                if key in waiting:
                    waiting[key].set_result(blob)
            if before:
                self.edges.put(path, etag, first - before, body[:before])
            if after:
                self.edges.put(path, etag, last + 1, body[len(body) - after :])
            self._to_disk(path, etag, run, blobs)
            return blobs
        except BaseException as exc:
            failure = exc if isinstance(exc, Exception) else FetchAbandoned()  # a cancellation is this fetch's own
            for future in waiting.values():
                if not future.done():
                    future.set_exception(failure)
                    future.exception()  # retrieved: a failure nobody waited for is not logged
            raise
        finally:
            for key in waiting:
                self._pending.pop(key, None)


def _identity(index: TilePartIndex) -> dict[str, str]:
    """The original object's ETag and Last-Modified, which the virtual object answers with.

    GDAL takes a file's modification time from Last-Modified; the decoded-block cache keys
    blocks on size and that time, so without it every version of an object looked the same.
    """
    headers = {"etag": index.etag}
    if index.last_modified:
        headers["last-modified"] = index.last_modified
    return headers
