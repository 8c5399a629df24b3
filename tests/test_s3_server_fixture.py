"""The test S3 server (``tests/support/s3_server.py``) answers as moto does, faster and on kept connections.

Ranges of the files it was filled with are read from those files: every answer here is compared
with moto's own answer to the same request (``disk_reads(False)`` sends everything to moto), and
the server's ``served`` count shows which answers came from disk.
"""

from __future__ import annotations

import datetime
import http.client
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import botocore.exceptions
import numpy as np
import pytest
import rasterio
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from rasterio.session import AWSSession
from rasterio.windows import Window

from tests.conftest import EODATA
from tests.support.s3_server import S3Server

COG = "Global-Mosaics/Sentinel-2/S2MSI_L3__MCQ/2020/01/01/Sentinel-2_mosaic_2020_Q1_29RKH_0_0/B04.tif"
SMALL = 3_000_000
LARGE = 9 * 1024 * 1024  # above boto3's multipart threshold: a multipart ETag
# (client Range for an object of n bytes, whether the answer is read from disk): parts of the
# object from disk; the whole object (asked for or given for a reversed range) from moto
RANGES: list[tuple[Callable[[int], str | None], bool]] = [
    (lambda n: "bytes=0-15", True),
    (lambda n: "bytes=1000-20999", True),
    (lambda n: f"bytes={n - 10}-", True),
    (lambda n: "bytes=-7", True),
    (lambda n: f"bytes=100-{n * 10}", True),
    (lambda n: "bytes=0-", False),
    (lambda n: f"bytes=0-{n - 1}", False),
    (lambda n: f"bytes=-{n}", False),
    (lambda n: "bytes=20-10", False),
    (lambda n: None, False),
]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[S3Server, Path]]:
    root = tmp_path_factory.mktemp("fixture-root")
    for name, size in (("small.bin", SMALL), ("large.bin", LARGE), ("replace/a.bin", SMALL), ("copy/b.bin", SMALL)):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(os.urandom(size))
    (root / COG).parent.mkdir(parents=True)
    (root / COG).write_bytes((EODATA / COG).read_bytes())
    server = S3Server(root)
    yield server, root
    server.stop()


def _get(client: Any, key: str, **extra: Any) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of a GET, errors included."""
    try:
        answer = client.get_object(Bucket="eodata", Key=key, **extra)
        body = answer["Body"].read()
        meta = answer["ResponseMetadata"]
    except botocore.exceptions.ClientError as error:
        body, meta = b"", error.response["ResponseMetadata"]
    return meta["HTTPStatusCode"], dict(meta["HTTPHeaders"]), body


def _both(server: S3Server, client: Any, key: str, **extra: Any) -> tuple[tuple, tuple, int]:
    """The answer with disk reads on, moto's answer to the same request, and how many were read from disk."""
    before = server.disk_reads()["served"]
    fast = _get(client, key, **extra)
    served = server.disk_reads()["served"] - before
    server.disk_reads(False)
    try:
        moto = _get(client, key, **extra)
    finally:
        server.disk_reads(True)
    return fast, moto, served


def _same(fast: tuple, moto: tuple) -> None:
    """Equal status, body and headers, but for the date and the request id (new for each answer)."""
    assert fast[0] == moto[0] and fast[2] == moto[2]
    if fast[0] < 300:  # an error's request id is in its XML body
        assert fast[1]["x-amzn-requestid"] != moto[1]["x-amzn-requestid"]
    assert {k: v for k, v in fast[1].items() if k not in ("date", "x-amzn-requestid")} == {
        k: v for k, v in moto[1].items() if k not in ("date", "x-amzn-requestid")
    }


@pytest.mark.parametrize(("key", "size"), [("small.bin", SMALL), ("large.bin", LARGE)])
def test_range_answers_equal_motos_own(store, key: str, size: int) -> None:
    server, root = store
    data = (root / key).read_bytes()
    client = server.client()
    for ask, from_disk in RANGES:
        header = ask(size)
        fast, moto, served = _both(server, client, key, **({"Range": header} if header else {}))
        _same(fast, moto)
        assert served == int(from_disk), header
        if fast[0] == 206:
            first, last = (int(v) for v in fast[1]["content-range"].split()[1].split("/")[0].split("-"))
            assert fast[2] == data[first : last + 1] and int(fast[1]["content-length"]) == last - first + 1
        else:
            assert fast[2] == data, header
    head = client.head_object(Bucket="eodata", Key=key, Range="bytes=5-9")["ResponseMetadata"]["HTTPHeaders"]
    assert head["etag"] == fast[1]["etag"] and head["content-range"] == f"bytes 5-9/{size}"
    assert ("-" in head["etag"]) == (size == LARGE)  # the multipart ETag moto gives, as it is


@pytest.mark.parametrize("header", ["bytes=3000000-", "bytes=4000000-10", "bytes=-0"])
def test_unsatisfiable_range_is_motos_416(store, header: str) -> None:
    server, _ = store

    def ask() -> tuple[int, bytes, dict[str, str]]:
        path = "/eodata/small.bin"
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        try:
            connection.request("GET", path, headers=_signed("GET", server.port, path, {"Range": header}))
            answer = connection.getresponse()
            return answer.status, answer.read(), {k.lower(): v for k, v in answer.getheaders() if k != "Date"}
        finally:
            connection.close()

    before = server.disk_reads()["served"]
    fast = ask()
    assert server.disk_reads()["served"] == before + 1
    server.disk_reads(False)
    try:
        moto = ask()
    finally:
        server.disk_reads(True)
    assert fast == moto and fast[0] == 416
    assert f"<RangeRequested>{header}</RangeRequested>".encode() in fast[1] and b"InvalidRange" in fast[1]


def test_conditional_requests_are_answered_as_moto_answers_them(store) -> None:
    server, _ = store
    client = server.client()
    etag = client.head_object(Bucket="eodata", Key="small.bin")["ETag"]
    future = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1)
    past = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)
    cases = [
        ({"IfMatch": etag}, 206),
        ({"IfMatch": '"0123"'}, 412),
        ({"IfNoneMatch": etag}, 304),
        ({"IfNoneMatch": '"0123"'}, 206),
        ({"IfModifiedSince": future}, 304),
        ({"IfModifiedSince": past}, 206),
        ({"IfUnmodifiedSince": past}, 412),
        ({"IfUnmodifiedSince": future}, 206),
    ]
    for condition, status in cases:
        fast, moto, _ = _both(server, client, "small.bin", Range="bytes=10-19", **condition)
        assert fast[0] == status, condition
        _same(fast, moto)


def test_a_replaced_or_copied_over_object_is_read_with_its_new_bytes_and_etag(store) -> None:
    server, root = store
    client = server.client()
    old = _get(client, "replace/a.bin", Range="bytes=10-19")
    assert old[2] == (root / "replace/a.bin").read_bytes()[10:20]
    new = os.urandom(1000)
    etag = client.put_object(Bucket="eodata", Key="replace/a.bin", Body=new)["ETag"]
    before = server.disk_reads()
    status, headers, body = _get(client, "replace/a.bin", Range="bytes=10-19")
    assert (status, body, headers["etag"]) == (206, new[10:20], etag) and etag != old[1]["etag"]
    assert headers["content-range"] == "bytes 10-19/1000"
    client.copy_object(Bucket="eodata", Key="copy/b.bin", CopySource={"Bucket": "eodata", "Key": "replace/a.bin"})
    assert _get(client, "copy/b.bin", Range="bytes=990-")[2] == new[990:]
    after = server.disk_reads()
    assert after["served"] == before["served"] and after["keys"] == before["keys"] - 1 == 3
    assert _get(client, "small.bin", Range="bytes=0-9")[0] == 206  # the other keys stay on disk
    assert server.disk_reads()["served"] == after["served"] + 1


def _signed(method: str, port: int, path: str, headers: dict[str, str], body: bytes = b"") -> dict[str, str]:
    request = AWSRequest(method, f"http://127.0.0.1:{port}{path}", data=body, headers=headers)
    request.context["payload_signing_enabled"] = True
    SigV4Auth(Credentials("k", "s"), "s3", "us-east-1").add_auth(request)
    return dict(request.headers.items())


def test_one_connection_serves_several_requests(store) -> None:
    """Disk reads, moto's answers and a refusal whose request body nobody read, on one TCP connection."""
    server, root = store
    data = (root / "small.bin").read_bytes()
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.connect()
        sock = connection.sock
        local = sock.getsockname()

        def ask(method: str, path: str, body: bytes = b"", **headers: str) -> tuple[int, bytes, dict[str, str]]:
            signed = _signed(method, server.port, path, headers, body)
            connection.request(method, path, body=body or None, headers=signed)
            answer = connection.getresponse()
            content = answer.read()
            assert connection.sock is sock and sock.getsockname() == local, f"{method} {path}: a new connection"
            assert answer.getheader("Connection", "").lower() != "close"
            return answer.status, content, dict(answer.getheaders())

        for start in (0, 5000, 2_000_000):
            assert ask("GET", "/eodata/small.bin", Range=f"bytes={start}-{start + 99}")[:2] == (
                206,
                data[start : start + 100],
            )
        assert ask("HEAD", "/eodata/small.bin")[2]["Content-Length"] == str(SMALL)
        assert ask("GET", "/eodata/small.bin", Range="bytes=0-")[:2] == (206, data)
        assert ask("GET", "/eodata/?list-type=2")[0] == 200
        server.set_fault("429x1")
        assert ask("PUT", "/eodata/unread.bin", body=os.urandom(70_000))[0] == 429  # body never read
        assert ask("PUT", "/eodata/written.bin", body=b"x" * 5000)[0] == 200
        assert ask("GET", "/eodata/written.bin", Range="bytes=0-9")[:2] == (206, b"x" * 10)
    finally:
        connection.close()


def test_gdal_reads_a_filled_cog_as_the_local_file(store) -> None:
    """GDAL's /vsis3/ ranges of a real Sentinel-2 COG, read from disk, give the local file's pixels,
    and GDAL's one-block reads, one after the other, share one connection."""
    server, root = store
    env = {k: v for k, v in server.env().items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    session = AWSSession(aws_access_key_id="k", aws_secret_access_key="s", region_name="us-east-1")
    options = {**env, "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR", "CPL_VSIL_CURL_CACHE_SIZE": "0"}
    blocks = [Window(0, 0, 256, 256), Window(256, 256, 248, 248), Window(0, 256, 256, 248), Window(256, 0, 100, 100)]
    server.reset()
    before = server.disk_reads()["served"]
    opened = server.connections()["accepted"]
    with rasterio.Env(session, **options), rasterio.open(f"/vsis3/eodata/{COG}") as remote:
        one_by_one = [remote.read(1, window=block) for block in blocks]
        accepted = server.connections()["accepted"] - opened - 1  # less this request's own
        whole = remote.read(1)
        overview = remote.read(1, out_shape=(126, 126))
    with rasterio.open(root / COG) as local:
        assert np.array_equal(whole, local.read(1)) and whole.std() > 0
        for block, read in zip(blocks, one_by_one, strict=True):
            assert np.array_equal(read, local.read(1, window=block))
        assert np.array_equal(overview, local.read(1, out_shape=(126, 126)))
    reads = [e for e in server.requests() if e["path"] == f"/eodata/{COG}"]
    assert len(reads) >= 5 and all(e["method"] == "GET" and e["status"] == 206 for e in reads), reads
    assert server.disk_reads()["served"] - before == len(reads)
    assert accepted == 1, (accepted, reads)
