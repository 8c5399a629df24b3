"""Walking a JPEG2000 codestream's tile-part chain over range reads, in segments at once.

Why: a codestream without TLM says where a tile-part is only in the SOT header of the one
before it, so finding them all is a chain of dependent reads. Two things shorten it:

- how far each read reaches (``WalkPolicy.window``): the next SOT header only (a round trip per
  tile-part), or several tile-parts at once when moving their bytes costs less than the round
  trips (the caller measures its link); tile-parts a read holds whole go to ``WalkPolicy.keep``;
- segments: the bytes after the main header are split in ``WalkPolicy.segments``; a first read at
  each split point finds an SOT marker there (``0xFF90`` cannot occur inside packet data, which
  JPEG2000 bit-stuffs), and the segments are walked at the same time. The chain is still the one
  walked from the first tile-part: a segment counts only when the walk before it lands exactly on
  its first SOT (a position the chain reaches is a true tile-part; anything else is ignored and
  walked again from where the chain is), so a wrong guess costs time, never a wrong index.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

SOT = 0xFF90
EOC = 0xFFD9
HOP_BYTES = 16 * 1024  # the least a read fetches: small tile-parts (60 m bands) share one range request
MAX_TILE_PARTS = 65535 * 255  # beyond any real file: a corrupt chain is refused, not walked forever
_SOT_START = b"\xff\x90\x00\x0a"  # SOT marker and its fixed segment length (Lsot = 10)
_MIN_SEGMENT_TILE_PARTS = 8  # a file with fewer tile-parts per segment is walked in one piece
_HELD_BYTES = 64 * 1024**2  # tile-parts a segment holds until the chain reaches it, at most
_MAX_PROBE_BYTES = 8 * 1024**2  # the read that looks for an SOT at a split point, at most


class NotIndexable(ValueError):
    """The object is not a JPEG2000 file this index can help (already has TLM, or malformed)."""


@dataclass(frozen=True, slots=True)
class WalkPolicy:
    """How a chain walk reads: ``window(mean tile-part bytes)`` is how many bytes a read fetches
    (``HOP_BYTES``: the next header only); ``keep(offset, bytes)`` receives every tile-part a
    read held whole; ``segments``: parts of the chain walked at the same time."""

    window: Callable[[float], int] = lambda _: HOP_BYTES
    keep: Callable[[int, bytes], None] | None = None
    segments: int = 1


class Reader:
    """Range reads with a read-ahead window, so hops that land in bytes already fetched are free."""

    def __init__(self, read: Callable[[int, int], bytes], size: int, window: int = HOP_BYTES) -> None:
        self._read = read
        self._size = size
        self._start = 0
        self._data = b""
        self.requests = 0
        self.window = window  # bytes the next read fetches from where it starts

    @property
    def size(self) -> int:
        """Bytes of the object read."""
        return self._size

    def seed(self, start: int, data: bytes) -> None:
        """Bytes from ``start`` already read elsewhere: the first gets are answered from them."""
        self._start, self._data = start, data

    def holds(self, offset: int, length: int) -> bool:
        """Whether bytes ``offset..offset+length`` are in the last read."""
        return self._start <= offset and offset + length <= self._start + len(self._data)

    def get(self, offset: int, length: int) -> bytes:
        """Bytes ``offset..offset+length``, from the last read or a new one starting at ``offset``."""
        if offset < 0 or offset + length > self._size:
            raise NotIndexable("a marker points outside the file")
        if not self.holds(offset, length):
            want = min(max(length, self.window, HOP_BYTES), self._size - offset)
            self._data = self._read(offset, want)
            self._start = offset
            self.requests += 1
            if len(self._data) < length:
                raise NotIndexable("short read")
        return self._data[offset - self._start : offset - self._start + length]


@dataclass(slots=True)
class _Segment:
    """What one walker found from ``start``: tile-parts, where it stopped, tile-parts it held."""

    start: int
    parts: list[tuple[int, int]] = field(default_factory=list)  # (tile index, length)
    end: int = 0
    kept: list[tuple[int, bytes]] = field(default_factory=list)
    held: int = 0  # bytes in ``kept``
    requests: int = 0


def walk_chain(
    read: Callable[[int, int], bytes], size: int, first: int, end: int, tiles: int, walk: WalkPolicy
) -> tuple[list[tuple[int, int]], int]:
    """``(tile index, length)`` of every tile-part from ``first`` (the first SOT) to the codestream's
    ``end``, and the range reads made. ``tiles``: the tile count from SIZ (sizes the split points'
    reads; 0 when unknown)."""
    last = end - 2  # the EOC marker
    mean = (last - first) / tiles if tiles else 0.0
    starts = [first]
    seeds: dict[int, tuple[int, bytes]] = {}  # split point SOT -> the probe read that found it
    requests = 0
    # at most one segment per _MIN_SEGMENT_TILE_PARTS tile-parts: more connections than a file has
    # segments of that size still walk it in as many as it has
    segments = min(walk.segments, tiles // _MIN_SEGMENT_TILE_PARTS)
    if segments > 1:
        # wider than a tile-part, so an SOT falls inside (a missed one only costs the segment)
        probe = min(int(max(walk.window(mean), 3 * mean)), _MAX_PROBE_BYTES)
        points = [first + (last - first) * k // segments for k in range(1, segments)]
        with ThreadPoolExecutor(len(points)) as pool:
            found = list(pool.map(lambda at: _sot_after(read, size, at, probe, last, tiles), points))
        requests += len(points)
        seeds.update({at: (point, data) for at, point, data in found if at is not None and at > first})
        starts += sorted(seeds)
    stops = [*starts[1:], last]
    if len(starts) == 1:
        segments = [_walk(read, size, first, last, last, walk, hand_over=True)]
    else:
        with ThreadPoolExecutor(len(starts)) as pool:
            segments = list(
                pool.map(
                    lambda i: _walk(read, size, starts[i], stops[i], last, walk, i == 0, seeds.get(starts[i])),
                    range(len(starts)),
                )
            )
    chain, at = segments[0].parts, segments[0].end
    requests += sum(segment.requests for segment in segments)
    for segment in segments[1:]:
        if at != segment.start:  # the chain did not land on this split point's SOT: walk on alone
            rest = _walk(read, size, at, last, last, walk, hand_over=True)
            return chain + rest.parts, requests + rest.requests
        if segment.end < 0:  # the walk from a true tile-part broke: so does the chain
            raise NotIndexable("broken tile-part chain")
        chain, at = chain + segment.parts, segment.end
        if walk.keep is not None:
            for offset, blob in segment.kept:
                walk.keep(offset, blob)
    if not chain:
        raise NotIndexable("no tile-parts")
    return chain, requests


def _walk(
    read: Callable[[int, int], bytes],
    size: int,
    start: int,
    stop: int,
    last: int,
    walk: WalkPolicy,
    hand_over: bool,
    seed: tuple[int, bytes] | None = None,
) -> _Segment:
    """Walk from ``start`` until ``stop`` (or the EOC marker): a segment of the chain.

    Tile-parts held whole go to ``walk.keep`` at once when ``hand_over`` (this walk is on the
    chain for sure), else into the segment, handed over once the chain reaches it. ``seed``:
    ``(offset, bytes)`` read already (the probe that found ``start``).
    """
    segment = _Segment(start)
    reader = Reader(read, size)
    if seed is not None:
        reader.seed(*seed)
    try:
        _walk_into(segment, reader, stop, last, walk, hand_over)
    except NotIndexable:
        if hand_over:  # the chain itself is broken
            raise
        segment.end = -1  # a split point that was no tile-part: the chain never lands on it
    segment.requests = reader.requests
    return segment


def _walk_into(segment: _Segment, reader: Reader, stop: int, last: int, walk: WalkPolicy, hand_over: bool) -> None:
    start = offset = segment.start
    while offset < min(stop, last):
        marker, lsot, isot, psot = struct.unpack(">HHHI", reader.get(offset, 10))
        if marker == EOC:
            break
        if marker != SOT or lsot != 10:
            raise NotIndexable("broken tile-part chain")
        if psot == 0:  # the last tile-part runs to the end of the codestream
            psot = last - offset
        if psot < 14 or len(segment.parts) >= MAX_TILE_PARTS:
            raise NotIndexable("broken tile-part chain")
        segment.parts.append((isot, psot))
        reader.window = walk.window((offset + psot - start) / len(segment.parts))  # the mean tile-part so far
        if walk.keep is not None and (reader.holds(offset, psot) or psot <= reader.window):
            # a tile-part the last read cut is read whole from its start: the next read starts there
            _hold(segment, walk, hand_over, offset, reader.get(offset, psot))
        offset += psot
    segment.end = offset
    tail = reader.size - offset  # the EOC marker and any box after the codestream
    if walk.keep is not None and offset >= last and 0 < tail <= HOP_BYTES and reader.holds(offset, tail):
        _hold(segment, walk, hand_over, offset, reader.get(offset, tail))


def _hold(segment: _Segment, walk: WalkPolicy, hand_over: bool, offset: int, blob: bytes) -> None:
    """Bytes read whole: to ``walk.keep`` now when on the chain for sure, else kept in the segment
    (up to ``_HELD_BYTES``) until the chain reaches it."""
    assert walk.keep is not None
    if hand_over:
        walk.keep(offset, blob)
    elif segment.held + len(blob) <= _HELD_BYTES:
        segment.kept.append((offset, blob))
        segment.held += len(blob)


def _sot_after(
    read: Callable[[int, int], bytes], size: int, at: int, length: int, last: int, tiles: int
) -> tuple[int | None, int, bytes]:
    """The first plausible SOT marker in ``length`` bytes from ``at`` (``None``: none), with the read.

    Plausible: SOT with Lsot 10, a tile index below ``tiles``, a length that stays inside the
    codestream and, when the read holds it, another SOT or the EOC right after the tile-part.
    """
    try:
        data = read(at, min(length, size - at))
    except NotIndexable:
        return None, at, b""
    found = data.find(_SOT_START)
    while found >= 0 and found + 10 <= len(data):
        isot, psot = struct.unpack_from(">HI", data, found + 4)
        after = found + psot
        fits = psot >= 14 and at + after <= last and (tiles == 0 or isot < tiles)
        follows = after + 2 > len(data) or data[after : after + 2] in (b"\xff\x90", b"\xff\xd9")
        if fits and follows:
            return at + found, at, data
        found = data.find(_SOT_START, found + 1)
    return None, at, data
