"""Range GETs of the objects the test S3 server filled from disk, answered from the file itself.

Why: moto reads the whole object for every range GET (``FakeKey.value``), so a 16 KB read of a
60 MB object costs tens of milliseconds, where CDSE answers a range in about constant time. This
WSGI layer sits between the server's request log and moto and answers from the uploaded file only
the requests whose moto answer is known in full: a signed ``GET`` without query string of a
path-style key filled from disk, with one ``Range`` (``bytes=a-b``, ``bytes=a-``, ``bytes=-n``)
that selects part of the object or none of it, and no other request headers than
``_PLAIN_HEADERS``. Its answer is moto's own answer for that object, recorded when the object was
filled: the 206 (ETag, Last-Modified, Content-Type, ...) with the range's ``Content-Length``,
``Content-Range`` and a new request id, or the 416 ``InvalidRange`` with the range asked for.

Everything else goes to moto: ``HEAD`` (moto answers it from the key's metadata, without reading
the object), whole-object reads (their body is the object anyway, and their checksum headers
depend on the request), conditional requests (``If-*``), requests with a query string (listings,
uploads, versions), unsigned ones (moto refuses them), and keys not filled from disk. Any other method on a
key (PUT, DELETE, copy, multipart, POST) takes that key off the disk for good before moto sees it,
and one on a bucket or a virtual-hosted address takes every key off: a replaced object is then
read from moto with its new bytes and ETag. A file changed on disk after the fill is not served.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")

# Request headers that do not change moto's answer to a range GET (signature, client identity,
# framing); a request with any other header (If-*, Origin, SSE-C keys, ...) goes to moto.
_PLAIN_HEADERS = frozenset(
    {
        "HTTP_HOST",
        "HTTP_RANGE",
        "HTTP_AUTHORIZATION",
        "HTTP_X_AMZ_DATE",
        "HTTP_X_AMZ_CONTENT_SHA256",
        "HTTP_X_AMZ_SECURITY_TOKEN",
        "HTTP_X_AMZ_CHECKSUM_MODE",  # a partial range carries no checksum either way
        "HTTP_X_AMZ_USER_AGENT",
        "HTTP_AMZ_SDK_INVOCATION_ID",
        "HTTP_AMZ_SDK_REQUEST",
        "HTTP_USER_AGENT",
        "HTTP_ACCEPT",
        "HTTP_ACCEPT_ENCODING",  # moto does not compress
        "HTTP_CONNECTION",
        "HTTP_KEEP_ALIVE",
    }
)

# Headers of the recorded answer that belong to one request, set anew for each range.
_PER_REQUEST = frozenset({"content-length", "content-range", "x-amzn-requestid"})


@dataclass(frozen=True)
class _Object:
    """A key filled from a file: the file as it was uploaded and moto's 206 answer for it."""

    file: Path
    size: int
    mtime_ns: int
    status: str
    headers: tuple[tuple[str, str], ...]
    unsatisfiable: tuple[str, tuple[tuple[str, str], ...], bytes]  # moto's 416 for bytes=<size>-


class DiskReads:
    """WSGI layer in front of moto: partial range GETs of filled keys read from their files."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.objects: dict[str, _Object] = {}
        self.enabled = True
        self.served = 0
        self.lock = threading.Lock()

    def add(self, bucket: str, key: str, file: Path, access_key: str) -> bool:
        """Serve ``key`` from ``file`` (just uploaded there) from now on, if moto's 206 answer for
        it can be recorded. Called after the upload, before the server is announced ready."""
        stat = file.stat()
        if stat.st_size < 2:  # no range of it is part of it
            return False
        path = f"/{bucket}/{key}"
        status, headers, body = self._moto(path, "bytes=0-0", access_key)
        names = {name.lower() for name, _ in headers}
        if not status.startswith("206") or "content-range" not in names or len(body) != 1:
            return False
        refused = self._moto(path, f"bytes={stat.st_size}-", access_key)
        if not refused[0].startswith("416") or _requested(f"bytes={stat.st_size}-") not in refused[2]:
            return False
        kept = tuple((n, v) for n, v in headers if n.lower() not in _PER_REQUEST)
        refused_headers = tuple((n, v) for n, v in refused[1] if n.lower() != "content-length")
        obj = _Object(file, stat.st_size, stat.st_mtime_ns, status, kept, (refused[0], refused_headers, refused[2]))
        with self.lock:
            self.objects[path] = obj
        return True

    def _moto(self, path: str, range_: str, access_key: str) -> tuple[str, list[tuple[str, str]], bytes]:
        """Moto's answer to a signed range GET, asked in this process (not logged, no delay)."""
        from werkzeug.test import EnvironBuilder

        authorization = (
            f"AWS4-HMAC-SHA256 Credential={access_key}/20200101/us-east-1/s3/aws4_request, "
            f"SignedHeaders=host;range, Signature={'0' * 64}"
        )
        builder = EnvironBuilder(path=quote(path), headers={"Range": range_, "Authorization": authorization})
        captured: dict[str, Any] = {}

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            captured.update(status=status, headers=headers)
            return lambda data: None

        answer = self.app(builder.get_environ(), start_response)
        try:
            body = b"".join(answer)
        finally:
            getattr(answer, "close", lambda: None)()
        return captured["status"], list(captured["headers"]), body

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"]
        if method not in ("GET", "HEAD"):
            self._forget(environ)
        elif method == "GET" and self.enabled:
            found = self._servable(environ)
            if found is not None:
                obj, begin, stop = found
                answer = self._read(obj, begin, stop) if begin <= stop else self._refusal(obj, environ["HTTP_RANGE"])
                if answer is not None:
                    status, headers, body = answer
                    start_response(status, headers)
                    with self.lock:
                        self.served += 1
                    return [body]
        return self.app(environ, start_response)

    def control(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        """``GET /_disk_reads``: whether on, keys on disk, answers served from disk;
        ``POST /_disk_reads?mode=off|on``: send every request to moto, or not."""
        if environ["REQUEST_METHOD"] == "POST":
            self.enabled = environ.get("QUERY_STRING", "") != "mode=off"
        with self.lock:
            payload = json.dumps({"enabled": self.enabled, "keys": len(self.objects), "served": self.served}).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
        return [payload]

    def _forget(self, environ: dict[str, Any]) -> None:
        """A write: its key (or, for a bucket or virtual-hosted address, every key) leaves the disk."""
        path = _path_style(environ)
        with self.lock:
            if path is not None and path.count("/") >= 2 and not path.endswith("/"):
                self.objects.pop(path, None)
            else:
                self.objects.clear()

    def _servable(self, environ: dict[str, Any]) -> tuple[_Object, int, int] | None:
        """The object and the byte range a request asks for, if moto's answer to it is known
        (``begin > stop``: a range moto refuses with 416)."""
        if environ.get("QUERY_STRING") or "HTTP_AUTHORIZATION" not in environ:
            return None
        if environ.get("CONTENT_LENGTH") not in (None, "", "0") or environ.get("CONTENT_TYPE"):
            return None
        if any(name.startswith("HTTP_") and name not in _PLAIN_HEADERS for name in environ):
            return None
        path = _path_style(environ)
        obj = self.objects.get(path) if path is not None else None
        match = _RANGE.fullmatch(environ.get("HTTP_RANGE", ""))
        if obj is None or match is None:
            return None
        last = obj.size - 1
        first, end = match.group(1), match.group(2)
        if (first and int(first) > last) or (not first and end and int(end) == 0):
            return obj, 1, 0  # beyond the end, or the last 0 bytes: moto's 416
        if first:
            begin = int(first)
            stop = last if not end else min(int(end), last)
        elif end:
            begin, stop = obj.size - min(int(end), obj.size), last
        else:  # "bytes=-": moto answers with the whole object
            return None
        if begin > stop or (begin == 0 and stop == last):
            return None  # moto's whole object for a reversed range, or a range of all of it
        return obj, begin, stop

    @staticmethod
    def _refusal(obj: _Object, range_: str) -> tuple[str, list[tuple[str, str]], bytes]:
        """Moto's 416 for this object, naming the range asked for."""
        status, headers, body = obj.unsatisfiable
        body = body.replace(_requested(f"bytes={obj.size}-"), _requested(range_))
        return status, [*headers, ("Content-Length", str(len(body)))], body

    @staticmethod
    def _read(obj: _Object, begin: int, stop: int) -> tuple[str, list[tuple[str, str]], bytes] | None:
        """Moto's answer for ``begin``-``stop`` from the file, or None if the file changed since."""
        from moto.utilities.aws_headers import gen_amzn_requestid_long

        try:
            fd = os.open(obj.file, os.O_RDONLY)
        except OSError:
            return None
        try:
            stat = os.fstat(fd)
            if stat.st_size != obj.size or stat.st_mtime_ns != obj.mtime_ns:
                return None
            parts: list[bytes] = []
            offset = begin
            while offset <= stop:
                part = os.pread(fd, stop + 1 - offset, offset)
                if not part:
                    return None
                parts.append(part)
                offset += len(part)
        finally:
            os.close(fd)
        body = b"".join(parts)
        headers = [
            *obj.headers,
            ("content-range", f"bytes {begin}-{stop}/{obj.size}"),
            ("content-length", str(len(body))),
            ("x-amzn-requestid", gen_amzn_requestid_long()),
        ]
        return obj.status, headers, body


def _requested(range_: str) -> bytes:
    """How moto's 416 names the range asked for (digits, ``bytes=`` and ``-``: nothing to escape)."""
    return f"<RangeRequested>{range_}</RangeRequested>".encode()


def _path_style(environ: dict[str, Any]) -> str | None:
    """``/bucket/key`` of a path-style request (a host that is an IP address or localhost);
    None for a virtual-hosted address, whose bucket is in the host name."""
    host = environ.get("HTTP_HOST", "")
    name = host[1 : host.find("]")] if host.startswith("[") else host.rpartition(":")[0] or host
    if name != "localhost":
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return None
    try:
        return environ.get("PATH_INFO", "").encode("latin-1").decode("utf-8")
    except UnicodeError:
        return None
