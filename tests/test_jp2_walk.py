"""Tile-part chain walks that read several tile-parts at once when the link favours it.

The JPEG2000 files are ESA's untouched originals (no TLM, one tile-part per tile); the store is
the loopback S3 server with a 30 ms round trip, counting requests.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from rasterio.windows import Window

from server.sources.gdal_env import GdalEnvironment, S3Settings
from server.sources.jp2_index import WalkPolicy, build_index
from server.sources.jp2_walk import HOP_BYTES
from server.sources.s3_gateway import GatewayOptions, S3Gateway
from server.sources.s3_link import MAX_WALK_WINDOW, WALK_PARTS, LinkEstimate
from tests.support.s3_server import S3Server
from tests.test_s3_gateway import B04, ORIGINALS, READ_OPTIONS, expected, read_window, upstream

pytestmark = pytest.mark.skipif(not ORIGINALS.is_dir(), reason="needs the shared real ESA JPEG2000 files")


def reads_of(data: bytes, log: list[tuple[int, int]]):  # noqa: ANN201 - the read callable build_index takes
    def read(offset: int, length: int) -> bytes:
        log.append((offset, length))
        return data[offset : offset + length]

    return read


NAMES = sorted(p.name for p in ORIGINALS.glob("*.jp2")) if ORIGINALS.is_dir() else []


@pytest.mark.parametrize("segments", [1, 3])
@pytest.mark.parametrize("name", NAMES)
def test_spanning_walk_builds_the_same_index_and_hands_over_whole_tile_parts(name: str, segments: int) -> None:
    data = (ORIGINALS / name).read_bytes()
    hops: list[tuple[int, int]] = []
    by_hops, _ = build_index(reads_of(data, hops), len(data), '"e"')
    spans: list[tuple[int, int]] = []
    kept: dict[int, bytes] = {}
    spanning = WalkPolicy(lambda part: int(WALK_PARTS * part), kept.__setitem__, segments)
    by_spans, requests = build_index(reads_of(data, spans), len(data), '"e"', walk=spanning)

    assert by_spans == by_hops  # the same TLM marker, byte for byte
    parts = dict(by_spans.tile_parts())
    assert requests == len(spans) < len(hops)
    # a read per WALK_PARTS tile-parts, and per segment a probe and a tile-part cut at its end
    assert len(spans) <= len(parts) / WALK_PARTS + 3 * segments, (len(spans), len(parts))
    tail = max(parts) + parts[max(parts)]  # the EOC marker after the last tile-part
    assert kept.pop(tail) == data[tail:] == b"\xff\xd9"
    assert len(kept) == len(parts)  # every tile-part came whole with the walk ...
    for offset, blob in kept.items():  # ... and each is exactly the original's bytes of one tile-part
        assert parts[offset] == len(blob)
        assert blob == data[offset : offset + len(blob)]


@pytest.mark.parametrize("name", NAMES)
def test_segments_walked_at_once_by_hops_give_the_same_index(name: str) -> None:
    """Split points found by their SOT marker, each segment walked in its own thread."""
    data = (ORIGINALS / name).read_bytes()
    alone, _ = build_index(reads_of(data, []), len(data), '"e"')
    log: list[tuple[int, int]] = []
    together, _ = build_index(reads_of(data, log), len(data), '"e"', walk=WalkPolicy(segments=4))
    assert together == alone
    if len(alone.tile_parts()) >= 32:  # split: reads start in the middle before the chain gets there
        assert sum(1 for offset, _ in log if offset > len(data) // 2) > 3


def test_more_segments_than_a_file_holds_still_split_its_walk() -> None:
    """A policy asking for more segments than the file has eight tile-parts for (a store with many
    connections) walks it in as many segments as it has, not in one piece."""
    data = (ORIGINALS / B04).read_bytes()
    alone, _ = build_index(reads_of(data, []), len(data), '"e"')
    tiles = len(alone.tile_parts())
    fitting: list[tuple[int, int]] = []
    build_index(reads_of(data, fitting), len(data), '"e"', walk=WalkPolicy(segments=tiles // 8))
    many: list[tuple[int, int]] = []
    walked, _ = build_index(reads_of(data, many), len(data), '"e"', walk=WalkPolicy(segments=4 * tiles))
    assert walked == alone
    assert tiles // 8 >= 2  # the file splits at all
    assert sorted(many) == sorted(fitting)  # the same probes and segments


def test_a_false_sot_at_a_split_point_costs_time_not_a_wrong_index() -> None:
    """Bytes that look like an SOT inside packet data: the chain never lands there, so the
    segment walked from it is ignored and the chain walked on from where it is."""
    data = bytearray((ORIGINALS / B04).read_bytes())
    alone, _ = build_index(reads_of(bytes(data), []), len(data), '"e"')
    parts = alone.tile_parts()
    middle = alone.body_offset + (len(data) - 2 - alone.body_offset) // 2
    offset, length = next((o, n) for o, n in parts if o <= middle < o + n)
    fake = max(middle, offset + 64)  # inside a tile-part's packet data, where the split point's probe reads
    data[fake : fake + 10] = b"\xff\x90\x00\x0a" + (5).to_bytes(2, "big") + (10**6).to_bytes(4, "big")
    walked, _ = build_index(reads_of(bytes(data), []), len(data), '"e"', walk=WalkPolicy(segments=2))
    assert walked == alone


def test_the_link_decides_between_hops_and_spanning_reads() -> None:
    cdse = LinkEstimate(round_trip=0.040, throughput=20e6)
    assert cdse.walk_window(1_000_000) == HOP_BYTES  # a 10 m tile-part takes 50 ms to move: hop
    assert cdse.walk_window(40_000) == WALK_PARTS * 40_000  # a 60 m one takes 2 ms: span
    assert cdse.walk_window(0) == HOP_BYTES
    # the map session's proxy: 400 KB tile-parts move in 20 ms, a round trip takes 35 ms: span
    # (a tile-part costs 4 + 20 ms of a connection, where a hop costs 35)
    assert LinkEstimate(round_trip=0.035, throughput=20e6).walk_window(400_000) == WALK_PARTS * 400_000
    assert LinkEstimate(round_trip=0.035, throughput=20e6).walk_window(700_000) == HOP_BYTES
    slow = LinkEstimate(round_trip=0.120, throughput=20e6)
    assert slow.walk_window(400_000) == WALK_PARTS * 400_000
    assert slow.walk_window(4_000_000) == HOP_BYTES
    assert LinkEstimate(round_trip=1.0, throughput=1e9).walk_window(2_000_000) == MAX_WALK_WINDOW

    link = LinkEstimate(round_trip=0.040, throughput=20e6)
    for _ in range(30):
        link.observe(0.100, 16_384)  # small answers: the round trip
        link.observe(0.100 + 0.5, 5_000_000)  # large ones: 5 MB in 0.5 s beyond it
    assert link.round_trip == pytest.approx(0.100, rel=0.01)
    assert link.throughput == pytest.approx(10e6, rel=0.05)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[S3Server]:
    (tmp_path / "originals").mkdir()
    shutil.copy(ORIGINALS / B04, tmp_path / "originals" / B04)
    server = S3Server(tmp_path, delay_ms=30)
    yield server
    server.stop()


def test_tile_parts_the_walk_fetched_are_not_fetched_again(store: S3Server, tmp_path: Path) -> None:
    """After a spanning walk, reading elsewhere in the file costs the ETag check, not tile-parts."""
    gateway = S3Gateway(GatewayOptions(upstream(store), frozenset({"eodata"}), index_dir=tmp_path / "index"))
    gateway.start()
    try:
        key = f"originals/{B04}"
        first = Window(0, 0, 64, 64)
        np.testing.assert_array_equal(read_window(gateway.address, key, first), expected(B04, first))
        assert gateway.link.walk_window(30_000) > HOP_BYTES  # the loopback store: spanning reads
        # the last tile-parts too: the object's tail after them (the EOC marker) came with the walk
        for other in (Window(1500, 1400, 256, 256), Window(600, 900, 300, 200), Window(1630, 1730, 200, 100)):
            store.reset()
            np.testing.assert_array_equal(read_window(gateway.address, key, other), expected(B04, other))
            fetched = [r for r in store.requests() if r["range"] != "bytes=0-65535"]  # the open (and ETag check)
            assert not fetched, [(r["range"], r["bytes"]) for r in fetched]
    finally:
        gateway.stop()


def tlm_file(path: Path, size: int = 2048) -> Path:
    """A JPEG2000 file as GDAL writes it with ``TLM=YES`` (its own tile-part lengths), real-like pixels."""
    import rasterio

    with rasterio.open(ORIGINALS / B04) as source:
        band = source.read(1)
    data = np.tile(band, (2, 2))[:size, :size]
    transform = rasterio.transform.from_origin(499980.0, 5900040.0, 10.0, 10.0)
    profile = {"driver": "JP2OpenJPEG", "width": size, "height": size, "count": 1, "dtype": "uint16"}
    profile |= {"crs": "EPSG:32629", "transform": transform}
    options = {"QUALITY": 100, "REVERSIBLE": "YES", "RESOLUTIONS": 4, "TLM": "YES"}
    with rasterio.open(path, "w", **profile, **options) as target:
        target.write(data, 1)
    return path


def test_a_file_with_its_own_tlm_is_listed_from_it_and_served_unchanged(tmp_path: Path) -> None:
    from server.sources.jp2_walk import walk_chain

    data = tlm_file(tmp_path / "tlm.jp2").read_bytes()
    log: list[tuple[int, int]] = []
    index, requests = build_index(reads_of(data, log), len(data), '"e"')
    assert requests == len(log) <= 2  # the header only: no walk
    assert index.virtual_size == len(data) and index.prefix == data[: index.body_offset]  # served as it is
    end = len(data)  # a bare codestream or a jp2c box running to the end: its parts end 2 bytes before
    walked, _ = walk_chain(lambda o, n: data[o : o + n], len(data), index.body_offset, end, 0, WalkPolicy())
    assert [n for _, n in index.tile_parts()] == [n for _, n in walked]
    assert index.tile_parts()[0][0] == index.body_offset


def gateway_s3(gateway: S3Gateway) -> S3Settings:
    return S3Settings(endpoint=gateway.address, https=False, region="us-east-1", no_sign_request=True)


def test_a_tlm_file_through_the_gateway_is_fetched_a_tile_part_at_a_time(tmp_path: Path) -> None:
    """GDAL reads a tile-part in growing chunks, a round trip each; the gateway fetches it whole once."""
    root = tmp_path / "store"
    (root / "originals").mkdir(parents=True)
    tlm_file(root / "originals" / "tlm.jp2")
    store = S3Server(root, delay_ms=30)
    gateway = S3Gateway(GatewayOptions(upstream(store), frozenset({"eodata"}), index_dir=tmp_path / "index"))
    gateway.start()
    try:
        import rasterio

        key = "originals/tlm.jp2"
        window = Window(700, 900, 600, 500)  # across four of the file's code-stream tiles
        with rasterio.open(root / key) as local:
            want = local.read(1, window=window)
        store.reset()
        direct = read_window(store.endpoint, key, window, signed=upstream(store))
        by_gdal = len(store.requests())
        direct_log = [(r["range"], r["bytes"]) for r in store.requests()]
        store.reset()
        with GdalEnvironment(READ_OPTIONS, gateway_s3(gateway)).env(f"/vsis3/eodata/{key}"):
            with rasterio.open(f"/vsis3/eodata/{key}") as opened:  # the header only
                assert opened.width == 2048
        # the open's 64 KB answer the open: no tile-part fetched for it (the first one is 560 KB)
        assert [r["range"] for r in store.requests()] == ["bytes=0-65535"], store.requests()
        store.reset()
        served = read_window(gateway.address, key, window)
        through_gateway = len(store.requests())
        np.testing.assert_array_equal(direct, want)
        np.testing.assert_array_equal(served, want)
        assert gateway.index_reads == 0  # no walk: the file lists its tile-parts
        assert through_gateway <= by_gdal, (direct_log, [(r["range"], r["bytes"]) for r in store.requests()])
        data = (root / key).read_bytes()
        index, _ = build_index(reads_of(data, []), len(data), '"e"')
        starts = {offset for offset, _ in index.tile_parts()}
        fetched = [r["range"] for r in store.requests() if r["range"] != "bytes=0-65535"]
        assert fetched and all(int(r[6:].split("-")[0]) in starts for r in fetched), fetched  # whole tile-parts
    finally:
        gateway.stop()
        store.stop()


def test_tile_parts_are_found_after_a_box_that_holds_codestream_like_bytes() -> None:
    """The codestream is located by walking the boxes, not by searching for SOC and SIZ: a box
    before it (GeoJP2, GML) may hold those bytes."""
    import struct

    data = (ORIGINALS / B04).read_bytes()
    plain, _ = build_index(reads_of(data, []), len(data), '"e"')
    signature_and_type = 12 + struct.unpack(">I", data[12:16])[0]  # the JP2 signature box, then ftyp
    box = struct.pack(">I4s", 8 + 8, b"xml ") + b"\xff\x4f\xff\x51\x00\x29\x00\x00"
    shifted = data[:signature_and_type] + box + data[signature_and_type:]
    index, _ = build_index(reads_of(shifted, []), len(shifted), '"e"')
    assert [(offset - len(box), n) for offset, n in index.tile_parts()] == plain.tile_parts()
