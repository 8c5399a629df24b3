"""Oversized requests are refused before any parsing: URL length (414) and body size (413), as
JSON on the REST API and as an OWS exception report under /ogc. Sent over raw sockets: HTTP
client libraries refuse to send such URLs at all."""

from __future__ import annotations

import json
import socket

from lxml import etree

from server.evalscript.request_script import MAX_ENCODED_LENGTH
from server.settings import Settings

OWS = "{http://www.opengis.net/ows/1.1}"


def raw_get(url: str, target: bytes, extra: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + extra + b"\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


def test_limits_leave_room_for_the_largest_evalscript() -> None:
    assert MAX_ENCODED_LENGTH + 2048 < Settings().max_url_bytes


def test_long_url_is_a_414_json_on_rest(live_url: str) -> None:
    status, headers, body = raw_get(live_url, b"/layers/TRUE_COLOR/tiles/WebMercatorQuad/1/0/0.png?x=" + b"a" * 50_000)
    assert status == 414 and headers["content-type"] == "application/json"
    assert "longer than" in json.loads(body)["detail"]


def test_long_url_is_an_ows_exception_on_ogc(live_url: str) -> None:
    status, headers, body = raw_get(live_url, b"/ogc/wms?SERVICE=WMS&x=" + b"a" * 50_000)
    assert status == 414 and headers["content-type"] == "application/xml"
    report = etree.fromstring(body)
    assert report.tag == f"{OWS}ExceptionReport"
    assert "longer than" in report.findtext(f"{OWS}Exception/{OWS}ExceptionText")


def test_large_body_is_a_413(live_url: str) -> None:
    status, _, body = raw_get(live_url, b"/healthz", b"Content-Length: 5000000\r\n")
    assert status == 413 and "larger than" in json.loads(body)["detail"]
    status, _, _ = raw_get(live_url, b"/healthz", b"Content-Length: nonsense\r\n")
    assert status in (400, 413)


def test_beyond_the_http_parser_is_a_clean_400(live_url: str) -> None:
    status, _, body = raw_get(live_url, b"/healthz?x=" + b"a" * 200_000)
    assert status == 400 and b"Traceback" not in body
