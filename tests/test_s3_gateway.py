"""The S3 gateway against a real S3 server on loopback, counting requests at the server.

The JPEG2000 files are the untouched ESA originals of the real T29UNU product (no TLM marker,
one tile-part per tile), read through GDAL ``/vsis3/`` exactly as the server reads eodata.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import pytest
import rasterio
from pydantic import SecretStr
from rasterio.windows import Window

from server.sources.gdal_env import GdalEnvironment, S3Settings
from server.sources.gdal_native import forget_remote_file
from server.sources.jp2_index import build_index
from server.sources.s3_gateway import GatewayOptions, S3Gateway
from server.sources.s3_signing import sign_headers
from tests.support.s3_server import S3Server
from tests.test_cache import RedisServer, redis_server  # noqa: F401 - the fixture

ORIGINALS = Path(__file__).resolve().parents[2] / "shared/data/sources/s2_l2a_T29UNU_20221005_N0400/original_jp2"
B04 = "T29UNU_20221005T115411_B04_60m.jp2"
B8A = "T29UNU_20221005T115411_B8A_60m.jp2"
KEY = f"originals/{B04}"
READ_OPTIONS = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "GDAL_INGESTED_BYTES_AT_OPEN": 65536,
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".jp2",
}

pytestmark = pytest.mark.skipif(not ORIGINALS.is_dir(), reason="needs the shared real ESA JPEG2000 files")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    root = tmp_path_factory.mktemp("originals")
    (root / "originals").mkdir()
    for name in (B04, B8A):
        shutil.copy(ORIGINALS / name, root / "originals" / name)
    server = S3Server(root, delay_ms=30)  # the round trip to CDSE from outside its cloud
    yield server
    server.stop()


def upstream(store: S3Server) -> S3Settings:
    return S3Settings(
        endpoint=store.endpoint,
        https=False,
        region="us-east-1",
        access_key_id=SecretStr("test-key"),
        secret_access_key=SecretStr("test-secret"),
    )


@pytest.fixture
def gateway(store: S3Server, tmp_path: Path) -> Iterator[S3Gateway]:
    gw = S3Gateway(GatewayOptions(upstream(store), frozenset({"eodata"}), index_dir=tmp_path / "index"))
    gw.start()
    yield gw
    gw.stop()


def read_window(endpoint: str, key: str, window: Window, signed: S3Settings | None = None) -> np.ndarray:
    """A cold GDAL read of ``window`` (GDAL's cache of the file dropped first)."""
    path = f"/vsis3/eodata/{key}"
    s3 = signed or S3Settings(endpoint=endpoint, https=False, region="us-east-1", no_sign_request=True)
    with GdalEnvironment(READ_OPTIONS, s3).env(path):
        forget_remote_file(path)
        with rasterio.open(path) as dataset:
            return dataset.read(1, window=window)


def expected(name: str, window: Window) -> np.ndarray:
    with rasterio.open(ORIGINALS / name) as dataset:
        return dataset.read(1, window=window)


def test_signature_matches_botocore() -> None:
    """Our SigV4 against botocore's canonical request, string to sign and signature (a fixed time)."""
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    when = datetime(2026, 12, 7, 12, 0, 0, tzinfo=UTC)
    stamp = when.strftime("%Y%m%dT%H%M%SZ")
    ours = sign_headers("GET", "eodata.example", "/eodata/Sentinel-2/a b+c.jp2", "AKID", "SECRET", "default", when)
    request = AWSRequest(method="GET", url="https://eodata.example/eodata/Sentinel-2/a%20b%2Bc.jp2")
    request.headers["X-Amz-Date"] = stamp
    request.headers["X-Amz-Content-SHA256"] = "UNSIGNED-PAYLOAD"
    request.context["timestamp"] = stamp
    auth = S3SigV4Auth(Credentials("AKID", "SECRET"), "s3", "default")
    signature = auth.signature(auth.string_to_sign(request, auth.canonical_request(request)), request)
    assert ours["authorization"].endswith(f"Signature={signature}")
    assert ours["x-amz-date"] == stamp


def test_a_directory_listing_does_not_cut_the_last_tile_part(store: S3Server, gateway: S3Gateway) -> None:
    """GDAL lists a directory now and then (``?list-type=2&prefix=...``). The gateway refuses it:
    a listing gives every object's stored size, and GDAL, taking it for the size of the object
    served with its TLM marker, never read the last tile-part's end (the bottom-right tile failed)."""
    import ctypes

    from server.sources import gdal_native

    library = gdal_native._GDAL  # noqa: SLF001 - the one loaded GDAL
    library.VSIReadDir.restype = ctypes.POINTER(ctypes.c_char_p)
    library.VSIReadDir.argtypes = [ctypes.c_char_p]
    corner = Window(1830 - 300, 1830 - 200, 300, 200)  # the last tile-parts of the file
    path = f"/vsis3/eodata/{KEY}"
    s3 = S3Settings(endpoint=gateway.address, https=False, region="us-east-1", no_sign_request=True)
    store.reset()
    with GdalEnvironment(READ_OPTIONS, s3).env(path):
        forget_remote_file(path)
        listed = library.VSIReadDir(b"/vsis3/eodata/originals/")
        if listed:
            library.CSLDestroy(listed)
        with rasterio.open(path) as dataset:
            np.testing.assert_array_equal(dataset.read(1, window=corner), expected(B04, corner))
    assert not [r for r in store.requests() if r["path"].rstrip("/") == "/eodata"]  # no listing reached the store


def test_index_gives_identical_pixels_and_few_requests(store: S3Server, gateway: S3Gateway, tmp_path: Path) -> None:
    window = Window(1500, 1400, 256, 256)
    store.reset()
    direct = read_window(store.endpoint, KEY, window, signed=upstream(store))
    without_index = len(store.requests())
    np.testing.assert_array_equal(direct, expected(B04, window))

    store.reset()
    first = read_window(gateway.address, KEY, window)  # builds the index: walks the tile-part chain once
    np.testing.assert_array_equal(first, expected(B04, window))
    assert gateway.index_reads > 0  # the walk happened here, through the store

    # 256 px windows over 2 x 2 of the file's 192 px JPEG2000 tiles, as a map tile at 60 m touches them
    for other in (Window(202, 394, 256, 256), Window(970, 1160, 256, 256)):
        store.reset()
        np.testing.assert_array_equal(read_window(gateway.address, KEY, other), expected(B04, other))
        assert len(store.requests()) <= 6, [(r["range"], r["bytes"]) for r in store.requests()]
    assert without_index > 20  # what the index saves: GDAL alone walks the chain on every cold open


def test_index_serves_a_fresh_process(store: S3Server, gateway: S3Gateway, tmp_path: Path) -> None:
    """A new process with the index on disk: the second tile costs a handful of requests."""
    read_window(gateway.address, KEY, Window(0, 0, 64, 64))  # index built and stored
    window = Window(1200, 300, 256, 256)
    code = f"""
import json, sys
from pathlib import Path
from pydantic import SecretStr
from rasterio.windows import Window
from server.sources.gdal_env import S3Settings
from server.sources.s3_gateway import GatewayOptions, S3Gateway
from tests.test_s3_gateway import read_window
s3 = S3Settings(endpoint={store.endpoint!r}, https=False, region="us-east-1",
                access_key_id=SecretStr("test-key"), secret_access_key=SecretStr("test-secret"))
gw = S3Gateway(GatewayOptions(s3, frozenset({{"eodata"}}), index_dir=Path({str(gateway.options.index_dir)!r})))
gw.start()
data = read_window(gw.address, {KEY!r}, Window({window.col_off}, {window.row_off}, 256, 256))
print(json.dumps({{"sum": int(data.astype("int64").sum()), "index_reads": gw.index_reads}}))
"""
    store.reset()
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=repo, env=env)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"sum": int(expected(B04, window).astype("int64").sum()), "index_reads": 0}
    assert 1 <= len(store.requests()) <= 6, store.requests()


def _tile_part_reads(store: S3Server) -> list[dict]:
    """The store requests after GDAL's open (which fetches the object's first 64 KB)."""
    return [r for r in store.requests() if not (r["range"] or "").startswith("bytes=0-")]


@pytest.mark.parametrize(
    ("window", "shape", "runs"),
    [
        (Window(1500, 1400, 256, 256), (256, 256), 1),  # a map tile at 60 m: 3 x 2 tiles of 192 px
        (Window(0, 0, 1152, 768), (384, 576), 2),  # zoomed out: 6 x 4 tiles read at a resolution level
    ],
)
def test_a_prefetched_window_is_read_without_further_requests(
    store: S3Server, gateway: S3Gateway, window: Window, shape: tuple[int, int], runs: int
) -> None:
    """``POST /_prefetch`` fetches the window's tile-parts at once: requests of about a round
    trip's worth of bytes (800 KB on the gateway's starting figures, CDSE's 40 ms and 20 MB/s),
    on parallel connections, with the bytes GDAL's chunks reach around them (the first window's
    six tile-parts are a few KB; the second's 24 are 1.3 MB). GDAL's read then fetches none of
    the window's bytes; what it may still fetch is its read-ahead beyond them (a doubling chunk
    reaching further than a round trip's worth past the window)."""
    read_window(gateway.address, KEY, Window(0, 0, 16, 16))  # the index is built (and kept on disk)
    # a gateway holding the index but no tile-part (the walk above kept the ones it read)
    fresh = S3Gateway(GatewayOptions(upstream(store), frozenset({"eodata"}), index_dir=gateway.options.index_dir))
    fresh.start()
    try:
        store.reset()
        col1, row1 = window.col_off + window.width, window.row_off + window.height
        cols_rows = [window.col_off, window.row_off, col1, row1]
        answer = httpx.post(
            f"http://{fresh.address}/_prefetch", json={"path": f"/eodata/{KEY}", "window": cols_rows}, timeout=30
        )
        assert answer.status_code == 200
        fetched = _tile_part_reads(store)
        tiles = ((col1 - 1) // 192 - window.col_off // 192 + 1) * ((row1 - 1) // 192 - window.row_off // 192 + 1)
        assert answer.json() == {"fetched": tiles}
        assert len(fetched) == runs, fetched
        assert runs == 1 or max(r["active"] for r in fetched) >= 2, fetched  # at once, not one after the other

        store.reset()
        path = f"/vsis3/eodata/{KEY}"
        s3 = S3Settings(endpoint=fresh.address, https=False, region="us-east-1", no_sign_request=True)
        with GdalEnvironment(READ_OPTIONS, s3).env(path):
            forget_remote_file(path)
            with rasterio.open(path) as dataset:
                data = dataset.read(1, window=window, out_shape=shape)
        with rasterio.open(ORIGINALS / B04) as dataset:
            np.testing.assert_array_equal(data, dataset.read(1, window=window, out_shape=shape))
        original = (ORIGINALS / B04).read_bytes()
        index, _ = build_index(lambda offset, length: original[offset : offset + length], len(original), "-")
        window_end = max(offset + length for offset, length in index.tile_parts_under(tuple(cols_rows)))
        later = _tile_part_reads(store)
        assert len(later) <= 1 and all(int(r["range"][6:].split("-")[0]) > window_end for r in later), later
    finally:
        fresh.stop()


def test_prefetch_refuses_what_the_gateway_does_not_serve(gateway: S3Gateway) -> None:
    url = f"http://{gateway.address}/_prefetch"
    window = [0, 0, 10, 10]
    assert httpx.post(url, json={"path": "/other/a.jp2", "window": window}).status_code == 403
    assert httpx.post(url, json={"path": "/eodata/a.tif", "window": window}).status_code == 403
    assert httpx.post(url, json={"path": "/eodata/../x.jp2", "window": window}).status_code == 403
    assert httpx.post(url, json={"path": "/eodata/?list-type=2&prefix=a.jp2", "window": window}).status_code == 403
    assert httpx.post(url, content=b"{not json").status_code == 400
    assert httpx.post(url, json={"path": f"/eodata/{KEY}", "window": "all"}).status_code == 400
    assert httpx.post(url, json={"path": ["/eodata/a.jp2"], "window": window}).status_code == 400
    infinite = b'{"path": "/eodata/a.jp2", "window": [0, 0, Infinity, 10]}'
    assert httpx.post(url, content=infinite).status_code == 400
    assert httpx.get(url).status_code == 403


def test_a_window_the_memory_cannot_hold_is_left_to_gdal(store: S3Server, tmp_path: Path) -> None:
    """Tile-parts the memory would not keep (a blob above a quarter of its bound is dropped)
    are not prefetched: GDAL would fetch them all again."""
    options = GatewayOptions(upstream(store), frozenset({"eodata"}), index_dir=tmp_path, tile_part_bytes=64 * 1024)
    small = S3Gateway(options)
    small.start()
    try:
        read_window(small.address, KEY, Window(0, 0, 16, 16))  # the index is built
        store.reset()
        body = {"path": f"/eodata/{KEY}", "window": [0, 0, 1152, 768]}  # 24 tile-parts, 1.3 MB
        answer = httpx.post(f"http://{small.address}/_prefetch", json=body, timeout=30)
        assert answer.status_code == 200 and answer.json() == {"fetched": 0}
        assert _tile_part_reads(store) == []
    finally:
        small.stop()


def test_index_rebuilt_when_the_object_changes(store: S3Server, gateway: S3Gateway) -> None:
    window = Window(800, 800, 200, 200)
    np.testing.assert_array_equal(read_window(gateway.address, KEY, window), expected(B04, window))
    client = store.client()
    try:
        client.upload_file(str(ORIGINALS / B8A), "eodata", KEY)  # same key, new ETag, other pixels
        np.testing.assert_array_equal(read_window(gateway.address, KEY, window), expected(B8A, window))
    finally:
        client.upload_file(str(ORIGINALS / B04), "eodata", KEY)


def test_identical_concurrent_reads_make_one_request(store: S3Server) -> None:
    gw = S3Gateway(GatewayOptions(upstream(store), frozenset({"eodata"}), jp2_index=False))
    gw.start()
    try:
        url = f"http://{gw.address}/eodata/originals/{B8A}"
        store.reset()

        async def four() -> list[httpx.Response]:
            async with httpx.AsyncClient() as client:
                return await asyncio.gather(*(client.get(url, headers={"Range": "bytes=2600-9000"}) for _ in range(4)))

        answers = asyncio.run(four())
        assert all(a.status_code == 206 for a in answers)
        assert {a.content for a in answers} == {(ORIGINALS / B8A).read_bytes()[2600:9001]}
        assert len(store.requests()) == 1, store.requests()
        assert gw.coalesced == 3
    finally:
        gw.stop()


def test_connections_never_exceed_the_limit(store: S3Server, tmp_path: Path) -> None:
    gw = S3Gateway(GatewayOptions(upstream(store), frozenset({"eodata"}), connections=2, jp2_index=False))
    gw.start()
    try:
        store.reset()
        url = f"http://{gw.address}/eodata/originals/{B04}"
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            ranges = [f"bytes={i * 10000}-{i * 10000 + 9999}" for i in range(32)]
            answers = list(pool.map(lambda r: httpx.get(url, headers={"Range": r}, timeout=30), ranges))
        assert all(a.status_code == 206 for a in answers)
        seen = store.requests()
        assert len(seen) == 32
        assert max(r["active"] for r in seen) == 2  # the limit was reached, never passed
    finally:
        gw.stop()


def test_429_waits_for_retry_after_and_succeeds(store: S3Server, gateway: S3Gateway) -> None:
    url = f"http://{gateway.address}/eodata/originals/{B8A}"
    store.reset()
    store.set_fault("429x2")
    start = time.monotonic()
    answer = httpx.get(url, headers={"Range": "bytes=0-999"}, timeout=30)
    elapsed = time.monotonic() - start
    assert answer.status_code == 206 and len(answer.content) == 1000
    assert answer.content == (ORIGINALS / B8A).read_bytes()[:1000]
    assert [r["status"] for r in store.requests()][:3] == [429, 429, 206]  # then the index walk
    assert elapsed >= 2.0  # Retry-After: 1, twice
    assert gateway.governor.stats.throttled == 2


def test_request_budget_per_minute_waits_then_refuses_past_the_deadline(store: S3Server) -> None:
    options = GatewayOptions(upstream(store), frozenset({"eodata"}), requests_per_minute=3, budget=0.5, jp2_index=False)
    gw = S3Gateway(options)
    gw.start()
    try:
        store.reset()
        url = f"http://{gw.address}/eodata/originals/{B8A}"
        codes = [httpx.get(url, headers={"Range": f"bytes={i}-{i + 9}"}).status_code for i in range(4)]
        assert codes == [206, 206, 206, 503]  # the fourth would exceed 3 per minute: held, then refused
        assert len(store.requests()) == 3
    finally:
        gw.stop()


def test_only_configured_buckets_and_reads(gateway: S3Gateway) -> None:
    assert httpx.get(f"http://{gateway.address}/other-bucket/x.jp2").status_code == 403
    assert httpx.put(f"http://{gateway.address}/eodata/originals/{B04}", content=b"x").status_code == 403


def test_shared_quota_across_gateways_through_redis(store: S3Server, redis_server: RedisServer) -> None:  # noqa: F811
    redis = redis_server
    gateways = [
        S3Gateway(
            GatewayOptions(
                upstream(store), frozenset({"eodata"}), connections=2, redis_url=redis.url, jp2_index=False
            )
        )
        for _ in range(2)
    ]
    try:
        for gw in gateways:
            gw.start()
        store.reset()
        urls = [f"http://{gw.address}/eodata/originals/{B04}" for gw in gateways]
        jobs = [(urls[i % 2], f"bytes={i * 5000}-{i * 5000 + 4999}") for i in range(24)]
        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(lambda job: httpx.get(job[0], headers={"Range": job[1]}, timeout=30), jobs))
        assert all(a.status_code == 206 for a in answers)
        assert max(r["active"] for r in store.requests()) <= 2  # two gateways, one shared limit of 2
        assert all(gw.governor.stats.requests > 0 for gw in gateways)
    finally:
        for gw in gateways:
            gw.stop()


def test_build_index_on_every_original() -> None:
    for path in sorted(ORIGINALS.glob("*.jp2")):
        data = path.read_bytes()
        index, _ = build_index(lambda offset, length, data=data: data[offset : offset + length], len(data), "e")
        virtual = index.prefix + data[index.body_offset :]
        with rasterio.MemoryFile(data) as a, rasterio.MemoryFile(virtual) as b:
            with a.open() as original, b.open() as indexed:
                np.testing.assert_array_equal(original.read(), indexed.read())
                assert b"\xff\x55" in index.prefix[-(len(index.prefix) - index.body_offset) :]


def test_answers_are_not_held_back_by_nagle(store: S3Server) -> None:
    """Every connection GDAL holds to the gateway has Nagle's algorithm off.

    With it on, an answer's body (written after its headers) waited for the client's delayed ACK
    of the headers: 40 ms more on every answer after the first on a kept-alive connection.
    """
    import socket

    gw = S3Gateway(GatewayOptions(upstream(store), frozenset({"eodata"}), jp2_index=False))
    gw.start()
    try:
        host, port = gw.address.split(":")
        with socket.create_connection((host, int(port))) as client:
            request = f"GET /eodata/originals/{B8A} HTTP/1.1\r\nHost: {gw.address}\r\nRange: bytes=0-99\r\n\r\n"
            client.sendall(request.encode())
            answer = b""
            while not answer.endswith((ORIGINALS / B8A).read_bytes()[:100]):
                answer += client.recv(65536)
            assert answer.startswith(b"HTTP/1.1 206")
            assert gw._server is not None
            held = [c.transport.get_extra_info("socket") for c in gw._server.server_state.connections]
            assert len(held) == 1
            assert held[0].getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        gw.stop()


def test_background_reads_wait_for_the_foreground_to_be_quiet(tmp_path: Path) -> None:
    """A prefetch or overview build (``X-Eotiler-Priority: background``) does not start while a
    tile's read is in flight, nor right after it: the store sees it alone."""
    (tmp_path / "originals").mkdir()
    shutil.copy(ORIGINALS / B04, tmp_path / "originals" / B04)
    store = S3Server(tmp_path, delay_ms=300)  # the tile's read is surely at the store when the prefetch asks
    gw = S3Gateway(GatewayOptions(upstream(store), frozenset({"eodata"}), jp2_index=False))
    gw.start()
    try:
        url = f"http://{gw.address}/eodata/originals/{B04}"
        store.reset()

        async def both() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=30) as client:
                tile = asyncio.ensure_future(client.get(url, headers={"Range": "bytes=0-299999"}))
                while not store.requests():
                    await asyncio.sleep(0.002)
                background = {"Range": "bytes=300000-399999", "X-Eotiler-Priority": "background"}
                prefetch = asyncio.ensure_future(client.get(url, headers=background))
                return [await tile, await prefetch]

        answers = asyncio.run(both())
        assert [a.status_code for a in answers] == [206, 206]
        assert answers[1].content == (ORIGINALS / B04).read_bytes()[300000:400000]
        seen = [(r["range"], r["active"]) for r in store.requests()]
        assert seen == [("bytes=0-299999", 1), ("bytes=300000-399999", 1)]  # one after the other
        assert gw.governor.stats.waits["foreground"] == 1
    finally:
        gw.stop()
        store.stop()


def test_a_walk_started_by_a_background_read_runs_at_foreground_priority(tmp_path: Path) -> None:
    """An overview build opening an unindexed JPEG2000 starts the tile-part walk that the views
    will need too: it does not wait for the views to be quiet, read after read.

    While tiles of another file keep the store busy, a background open of the ESA original (a
    walk of ~100 sequential reads) is answered in seconds; at background priority every read of
    the walk waited up to 2 s for a quiet moment that never came.
    """
    (tmp_path / "originals").mkdir()
    shutil.copy(ORIGINALS / B04, tmp_path / "originals" / B04)
    (tmp_path / "originals" / "other.bin").write_bytes(os.urandom(1 << 20))
    store = S3Server(tmp_path, delay_ms=10)
    gw = S3Gateway(GatewayOptions(upstream(store), frozenset({"eodata"}), index_dir=tmp_path / "index"))
    gw.start()
    try:
        base = f"http://{gw.address}/eodata/originals"

        async def session() -> tuple[httpx.Response, float, int]:
            async with httpx.AsyncClient(timeout=60) as client:
                done = asyncio.Event()
                views = 0

                async def view() -> None:  # foreground reads back to back, as a map being panned
                    nonlocal views
                    while not done.is_set():
                        await client.get(f"{base}/other.bin", headers={"Range": "bytes=0-4095"})
                        views += 1

                busy = [asyncio.ensure_future(view()) for _ in range(3)]
                await asyncio.sleep(0.2)
                started = time.monotonic()
                opened = await client.get(
                    f"{base}/{B04}", headers={"Range": "bytes=0-16383", "X-Eotiler-Priority": "background"}
                )
                elapsed = time.monotonic() - started
                # opened again (another build): its ETag check does not wait for the views either
                waited = gw.governor.stats.waits["foreground"]
                again = await client.get(
                    f"{base}/{B04}", headers={"Range": "bytes=0-16383", "X-Eotiler-Priority": "background"}
                )
                done.set()
                await asyncio.gather(*busy)
                assert again.content == opened.content
                assert gw.governor.stats.waits["foreground"] == waited
                return opened, elapsed, views

        opened, elapsed, views = asyncio.run(session())
        assert opened.status_code == 206 and opened.content[:4] == b"\x00\x00\x00\x0c"  # the JP2 signature box
        assert gw.jp2.index_reads > 5  # the walk ran (reads spanning several tile-parts: fewer than the hops)
        assert views > 20  # the views kept the store busy meanwhile
        assert elapsed < 15, elapsed
    finally:
        gw.stop()
        store.stop()


def test_a_restarted_gateway_reads_tile_parts_from_disk(store: S3Server, tmp_path: Path) -> None:
    """Tile-parts kept on disk: a new gateway (index and tile-parts on disk) only checks the ETag."""
    options = GatewayOptions(
        upstream(store),
        frozenset({"eodata"}),
        index_dir=tmp_path / "index",
        tile_part_dir=tmp_path / "index" / "tile-parts",
        tile_part_disk_bytes=64 * 1024**2,
    )
    window = Window(1300, 700, 256, 256)
    first = S3Gateway(options)
    first.start()
    try:
        np.testing.assert_array_equal(read_window(first.address, KEY, window), expected(B04, window))
        deadline = time.monotonic() + 10
        while first.jp2._writing and time.monotonic() < deadline:  # written off the answer's path
            time.sleep(0.05)
    finally:
        first.stop()
    assert any((tmp_path / "index" / "tile-parts").iterdir())

    again = S3Gateway(options)
    again.start()
    try:
        store.reset()
        np.testing.assert_array_equal(read_window(again.address, KEY, window), expected(B04, window))
        assert [r["range"] for r in store.requests()] == ["bytes=0-65535"], store.requests()  # the ETag check
        assert again.jp2.disk_hits >= 4
    finally:
        again.stop()


def test_tile_parts_on_disk_stay_within_their_bound(tmp_path: Path) -> None:
    from server.sources.s3_tile_part_cache import DiskTileParts

    disk = DiskTileParts(tmp_path / "parts", max_bytes=4000)
    for i in range(10):
        disk.put(("/eodata/x.jp2", '"etag"', i * 900, 900), bytes([i]) * 900)
        time.sleep(0.01)  # distinct modification times: the oldest go first
    kept = sorted(tmp_path.joinpath("parts").iterdir())
    assert sum(f.stat().st_size for f in kept) <= 4000
    assert disk.get(("/eodata/x.jp2", '"etag"', 9 * 900, 900)) == bytes([9]) * 900  # the newest stays
    assert disk.get(("/eodata/x.jp2", '"etag"', 0, 900)) is None  # the oldest went
    assert disk.get(("/eodata/x.jp2", '"other etag"', 9 * 900, 900)) is None  # a replaced object: not there


def test_options_reach_the_gateway_process_unchanged(tmp_path: Path) -> None:
    from server.sources.s3_gateway_options import options_from_json, options_to_json

    options = GatewayOptions(
        S3Settings(endpoint="store:9000", region="eu", access_key_id=SecretStr("k"), secret_access_key=SecretStr("s")),
        frozenset({"eodata", "other"}),
        index_dir=tmp_path / "index",
        tile_part_dir=tmp_path / "index" / "tile-parts",
        tile_part_disk_bytes=5,
        linger=0.02,
    )
    assert options_from_json(options_to_json(options)) == options
    assert options_from_json(options_to_json(GatewayOptions(S3Settings(), frozenset()))) == GatewayOptions(
        S3Settings(), frozenset()
    )


def test_indexed_objects_keep_the_stores_last_modified(store: S3Server, gateway: S3Gateway) -> None:
    """GDAL sees an indexed object's Last-Modified (the decoded-block cache's version is size +
    mtime): a replaced object gets another version, also when its index is served from disk."""
    from server.sources.block_read import object_version

    client = store.client()
    path = f"/vsis3/eodata/{KEY}"

    def version_seen(through: S3Gateway = gateway) -> tuple[int, int]:
        s3 = S3Settings(endpoint=through.address, https=False, region="us-east-1", no_sign_request=True)
        with GdalEnvironment(READ_OPTIONS, s3).env(path):
            forget_remote_file(path)
            with rasterio.open(path):
                version = object_version(path)
        assert version is not None
        size, mtime = version.split("-")
        return int(size), int(mtime)

    def store_mtime() -> int:
        return int(client.head_object(Bucket="eodata", Key=KEY)["LastModified"].timestamp())

    size, mtime = version_seen()
    index = gateway.indexes.get(f"/eodata/{KEY}")
    assert index and size == index.virtual_size != (ORIGINALS / B04).stat().st_size  # the indexed object
    assert mtime == store_mtime() > 0
    restarted = S3Gateway(gateway.options)  # the index from disk: the date was kept with it
    restarted.start()
    try:
        assert version_seen(restarted) == (size, mtime)
        assert restarted.index_reads == 0
    finally:
        restarted.stop()
    offset, length = index.tile_parts()[5]
    changed = bytearray((ORIGINALS / B04).read_bytes())
    changed[offset + length // 2] ^= 0x01  # one coded bit in a tile-part: another object of the same size
    time.sleep(1.1)  # Last-Modified counts seconds
    try:
        client.put_object(Bucket="eodata", Key=KEY, Body=bytes(changed))
        again = version_seen()
        assert again == (size, store_mtime()) and again[1] > mtime
    finally:
        client.upload_file(str(ORIGINALS / B04), "eodata", KEY)


def test_an_index_stored_without_last_modified_is_built_again(tmp_path: Path) -> None:
    """Indexes stored before they kept Last-Modified are not served (GDAL would see mtime 0)."""
    from server.sources.jp2_index import TilePartIndex
    from server.sources.jp2_index_store import IndexStore

    data = (ORIGINALS / B8A).read_bytes()
    index, _ = build_index(lambda o, n: data[o : o + n], len(data), '"e"', "Mon, 05 Oct 2026 11:54:11 GMT")
    assert TilePartIndex.from_bytes(index.to_bytes()) == index
    etag = index.etag.encode()
    older = b"EOJ2IDX1" + struct.pack(">QQH", index.size, index.body_offset, len(etag)) + etag + index.prefix
    indexes = IndexStore(tmp_path, None)
    (tmp_path / indexes._name("/eodata/x.jp2")).write_bytes(older)
    assert indexes.load("/eodata/x.jp2") is False  # absent: the gateway builds it again and stores it
    indexes.store("/eodata/x.jp2", index)
    assert IndexStore(tmp_path, None).load("/eodata/x.jp2") == index
