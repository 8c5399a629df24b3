"""Who waits for whose tile-part fetch in the S3 gateway's JPEG2000 serving (``jp2_tlm_serving``).

A read that needs a tile-part already being fetched waits for that fetch instead of making
another, except behind a background fetch (those wait for the views to be quiet, one at a time),
and a fetch that is cancelled leaves its waiters to fetch for themselves. The store here is the
real ESA file on disk behind an in-process fetch function, so the test controls when each
answer comes: the ordering is the point, not the transport (``test_s3_gateway.py`` covers that).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from server.sources.jp2_index import build_index
from server.sources.jp2_index_store import IndexStore
from server.sources.jp2_tlm_serving import TlmServing
from server.sources.s3_upstream import Upstream

ORIGINAL = (
    Path(__file__).resolve().parents[2]
    / "shared/data/sources/s2_l2a_T29UNU_20221005_N0400/original_jp2/T29UNU_20221005T115411_B04_60m.jp2"
)
PATH = "/eodata/B04_60m.jp2"
ETAG = '"v1"'

pytestmark = pytest.mark.skipif(not ORIGINAL.is_file(), reason="needs the shared real ESA JPEG2000 file")


class Store:
    """The file's bytes by range; background requests are held until ``release``."""

    def __init__(self) -> None:
        self.data = ORIGINAL.read_bytes()
        self.background = False  # the priority of the request being answered (as the gateway's contextvar)
        self.held = asyncio.Event()
        self.requests: list[tuple[str, bool]] = []

    async def fetch(self, method: str, path: str, byte_range: str | None) -> Upstream:
        background = self.background
        self.requests.append((byte_range or "", background))
        if background:
            await self.held.wait()
        first, last = (int(v) for v in (byte_range or "").removeprefix("bytes=").split("-"))
        body = self.data[first : last + 1]
        headers = {"etag": ETAG, "content-range": f"bytes {first}-{last}/{len(self.data)}"}
        return Upstream(206, headers, body)


def serving(store: Store, tmp_path: Path) -> tuple[TlmServing, str, bytes]:
    """The serving, a range of the object as GDAL sees it (with its TLM marker) that is one
    tile-part, and that tile-part's bytes."""
    indexes = IndexStore(tmp_path, None)
    index, _ = build_index(lambda o, n: store.data[o : o + n], len(store.data), ETAG)
    indexes.remember(PATH, index)
    tlm = TlmServing(store.fetch, indexes, 64 * 1024**2, background=lambda: store.background)
    offset, length = index.tile_parts()[40]
    virtual = offset + len(index.prefix) - index.body_offset
    return tlm, f"bytes={virtual}-{virtual + length - 1}", store.data[offset : offset + length]


def test_a_view_does_not_wait_behind_a_background_fetch_of_its_tile_part(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = Store()
        tlm, wanted, part = serving(store, tmp_path)
        store.background = True
        behind = asyncio.ensure_future(tlm.serve("GET", PATH, wanted))
        await asyncio.sleep(0.05)  # the background fetch is in flight, held by the store
        store.background = False
        answer = await asyncio.wait_for(tlm.serve("GET", PATH, wanted), 5)
        assert answer is not None and answer.body == part
        assert not behind.done()  # answered while the background fetch still waits
        store.held.set()
        assert (await behind).body == answer.body

    asyncio.run(scenario())


def test_readers_of_a_cancelled_fetch_fetch_for_themselves(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = Store()
        tlm, wanted, part = serving(store, tmp_path)
        gate = asyncio.Event()
        original = store.fetch

        async def slow(method: str, path: str, byte_range: str | None) -> Upstream:
            await gate.wait()
            return await original(method, path, byte_range)

        tlm.fetch = slow
        first = asyncio.ensure_future(tlm.serve("GET", PATH, wanted))
        await asyncio.sleep(0.05)
        second = asyncio.ensure_future(tlm.serve("GET", PATH, wanted))  # waits for the first's fetch
        await asyncio.sleep(0.05)
        first.cancel()
        await asyncio.sleep(0.05)
        gate.set()
        answer = await asyncio.wait_for(second, 5)
        assert answer is not None and answer.body == part

    asyncio.run(scenario())
