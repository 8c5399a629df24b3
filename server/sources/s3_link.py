"""The object store's round trip and per-connection throughput, as the S3 gateway measures them.

Why: walking a JPEG2000 tile-part chain costs either one round trip per tile-part (reading each
SOT header alone) or the transfer of the tile-parts themselves (one read spanning several).
Which is cheaper depends on the link: CDSE seen from outside its cloud (30-60 ms, 20 MB/s per
connection) and a store next door differ by an order of magnitude, so the gateway measures
its own answers instead of assuming either.
"""

from __future__ import annotations

import threading

from server.sources.jp2_walk import HOP_BYTES

SMALL_ANSWER = 64 * 1024  # answers up to this size measure the round trip
LARGE_ANSWER = 512 * 1024  # answers from this size on measure the throughput
WALK_PARTS = 8  # tile-parts one spanning walk read reaches over
MAX_WALK_WINDOW = 8 * 1024**2  # ... and never more bytes than this in one read
_WEIGHT = 0.2  # of a new sample in the moving averages


class LinkEstimate:
    """Moving averages of the store's round trip (small answers) and throughput (large ones).

    Starts from CDSE's documented figures: 20 MB/s per connection, and a round trip of 40 ms
    (what a range request to eodata takes from outside its cloud).
    """

    def __init__(self, round_trip: float = 0.040, throughput: float = 20e6) -> None:
        self.round_trip = round_trip
        self.throughput = throughput
        self._lock = threading.Lock()  # observed on the gateway's loop, read from walk threads

    def observe(self, seconds: float, size: int) -> None:
        """One answer of ``size`` body bytes that took ``seconds`` from request to last byte."""
        with self._lock:
            if size <= SMALL_ANSWER:
                self.round_trip += _WEIGHT * (seconds - self.round_trip)
            elif size >= LARGE_ANSWER:
                transfer = max(seconds - self.round_trip, 1e-3)
                self.throughput += _WEIGHT * (size / transfer - self.throughput)

    def walk_window(self, part_bytes: float) -> int:
        """Bytes a chain-walk read fetches when tile-parts average ``part_bytes``.

        A spanning read finds ``WALK_PARTS`` tile-parts for one round trip and their transfer,
        where hops cost ``WALK_PARTS`` round trips: it holds a connection for less time per
        tile-part when one moves in less than ``1 - 1/WALK_PARTS`` of a round trip, and it brings
        the tile-parts along. The walks of a first view keep every connection of the quota
        busy, so connection time is what they wait for. Otherwise each read fetches the next
        header only. (With half a round trip as the bound, 400 KB tile-parts at 20 MB/s and a
        35-40 ms round trip flipped between the two from one run to the next.)
        """
        with self._lock:
            transfer = part_bytes / self.throughput
            if part_bytes <= 0 or transfer >= self.round_trip * (1 - 1 / WALK_PARTS):
                return HOP_BYTES
        return int(min(max(WALK_PARTS * part_bytes, HOP_BYTES), MAX_WALK_WINDOW))

    def round_trip_bytes(self) -> int:
        """Bytes one connection moves in a round trip: reading that much more with a request
        costs no more than a request of its own would later."""
        with self._lock:
            return int(self.round_trip * self.throughput)
