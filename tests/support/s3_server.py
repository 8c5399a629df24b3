"""A real S3 HTTP server on 127.0.0.1 (moto's server mode) holding a directory tree as a bucket.

Why a process of its own: GDAL reaches it over HTTP exactly as it reaches CDSE (``AWS_S3_ENDPOINT``,
path-style, signed requests), and a WSGI wrapper counts every request at the server, which is
what the request-count assertions and the benchmarks need. As CDSE does, it keeps HTTP/1.1
connections open between requests (``_KeepAlive``) and answers a range GET in a time that does not
grow with the object: ranges of the files it was filled with are read from those files
(``s3_disk_reads.py``, moto's own headers), everything else is moto's answer. Options:

- ``--delay-ms N`` holds each request N ms before answering (an emulated round-trip time);
- ``--require-key ID`` answers 403 ``InvalidAccessKeyId`` to requests signed with any other key
  (moto itself accepts every key), to provoke an authentication failure.

Control endpoints (S3 bucket names cannot contain ``_``, so they never collide): ``GET /_log``
returns the request log as JSON, ``POST /_log/reset`` empties it, ``POST /_fault?mode=M`` makes
every later S3 request fail (``500``, ``503``, ``hang``: no answer for 60 s, ``truncate``: half
the promised body, then the connection closes, ``drop``: the connection closes without any
answer, ``flaky``: every third request dropped) until ``POST /_fault?mode=none``; ``429xN``
answers the next N requests ``429 SlowDown`` with ``Retry-After: 1``, as CDSE does beyond its quota.
Each log entry's ``active`` is how many requests were being answered when it arrived (itself
included), so a test can see the peak concurrency a client put on the store. ``GET /_disk_reads``
tells how many keys are read from disk and how many answers were; ``POST /_disk_reads?mode=off``
sends every request to moto (``mode=on``: back), to compare the two answers. ``GET /_connections``
counts the TCP connections accepted and those open, so a test can see a client reuse one.

``S3Server`` starts the process from a test and reads the log.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx
from werkzeug.serving import WSGIRequestHandler
from werkzeug.wsgi import LimitedStream

from tests.support.s3_disk_reads import DiskReads

_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/")


class _Counting:
    """WSGI middleware: logs method, path, Range, status and body bytes of every S3 request."""

    def __init__(self, app: Any, disk: DiskReads, delay: float, require_key: str | None) -> None:
        self.app = app
        self.disk = disk
        self.delay = delay
        self.require_key = require_key
        self.log: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.fault = "none"
        self.active = 0
        self.accepted = 0
        self.open = 0

    def connected(self, change: int) -> None:
        """A client connection opened (+1) or closed (-1)."""
        with self.lock:
            self.accepted += max(change, 0)
            self.open += change

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path.startswith("/_fault"):
            self.fault = environ.get("QUERY_STRING", "").removeprefix("mode=") or "none"
            start_response("200 OK", [("Content-Length", "0")])
            return [b""]
        if path.startswith("/_log"):
            return self._control(environ, start_response)
        if path.startswith("/_disk_reads"):
            return self.disk.control(environ, start_response)
        if path.startswith("/_connections"):
            with self.lock:
                payload = json.dumps({"accepted": self.accepted, "open": self.open}).encode()
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
            return [payload]
        with self.lock:
            self.active += 1
            entry = {
                "method": environ["REQUEST_METHOD"],
                "path": path,
                "query": environ.get("QUERY_STRING", ""),
                "range": environ.get("HTTP_RANGE"),
                "status": 0,
                "bytes": 0,
                "active": self.active,
            }
            self.log.append(entry)
        try:
            if self.delay:
                time.sleep(self.delay)
            return list(self._answer(environ, start_response, entry))
        finally:
            with self.lock:
                self.active -= 1

    def _answer(self, environ: dict[str, Any], start_response: Any, entry: dict[str, Any]) -> Iterable[bytes]:
        match = _CREDENTIAL.search(environ.get("HTTP_AUTHORIZATION", ""))
        if self.require_key is not None and (match is None or match.group(1) != self.require_key):
            entry["status"] = 403
            sent = match.group(1) if match else ""
            body = (  # as AWS S3 answers, key id included: servers must not pass it on
                '<?xml version="1.0" encoding="UTF-8"?><Error><Code>InvalidAccessKeyId</Code>'
                "<Message>The AWS Access Key Id you provided does not exist in our records.</Message>"
                f"<AWSAccessKeyId>{sent}</AWSAccessKeyId></Error>"
            ).encode()
            start_response("403 Forbidden", [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))])
            entry["bytes"] = len(body)
            return [body]

        if self.fault.startswith("429x"):
            with self.lock:
                left = int(self.fault[4:])
                self.fault = f"429x{left - 1}" if left > 1 else "none"
            entry["status"] = 429
            body = b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code></Error>'
            headers = [("Content-Type", "application/xml"), ("Content-Length", str(len(body))), ("Retry-After", "1")]
            start_response("429 Too Many Requests", headers)
            return [body]
        if self.fault in ("500", "503"):
            entry["status"] = int(self.fault)
            body = b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code></Error>'
            reason = "500 Internal Server Error" if self.fault == "500" else "503 Slow Down"
            start_response(reason, [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))])
            return [body]
        if self.fault == "hang":
            time.sleep(60)
        if self.fault == "drop" or (self.fault == "flaky" and self._flip()):
            return self._dropped(environ, entry)
        if self.fault == "truncate":
            return self._truncated(environ, start_response, entry)

        def recording_start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            entry["status"] = int(status.split()[0])
            return start_response(status, headers, exc_info)

        def body() -> Iterable[bytes]:
            for chunk in self.app(environ, recording_start):
                entry["bytes"] += len(chunk)
                yield chunk

        return body()

    def _flip(self) -> bool:
        """Every third request (``flaky``)."""
        with self.lock:
            self.flaky_count = getattr(self, "flaky_count", 0) + 1
            return self.flaky_count % 3 == 1

    @staticmethod
    def _dropped(environ: dict[str, Any], entry: dict[str, Any]) -> Iterable[bytes]:
        """Close the connection without a byte of answer (a load balancer dropping it)."""
        entry["status"] = -1
        sock = environ.get("werkzeug.socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        raise ConnectionAbortedError("dropped by fault injection")

    def _truncated(self, environ: dict[str, Any], start_response: Any, entry: dict[str, Any]) -> Iterable[bytes]:
        """The real answer's status and headers, but only half its body: the client sees a short read."""
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            captured.update(status=status, headers=headers)
            return lambda data: None

        body = b"".join(self.app(environ, capture))
        entry["status"] = int(captured["status"].split()[0])
        start_response(captured["status"], captured["headers"])
        entry["bytes"] = len(body) // 2
        return [body[: len(body) // 2]]

    def _control(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        with self.lock:
            if environ["REQUEST_METHOD"] == "POST":
                self.log.clear()
            payload = json.dumps(self.log).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
        return [payload]


class _KeepAlive(WSGIRequestHandler):
    """HTTP/1.1 with persistent connections, as CDSE answers.

    werkzeug's own handler sends ``Connection: close`` with every answer (and, after it, reads
    whatever the client sent next, for 10 ms, to discard an unread body), so every client paid a
    new TCP connection per request. This one answers with a ``Content-Length`` and reads exactly
    the request's body before the next request; it closes the connection only when the client
    asks, when a body is shorter than its ``Content-Length`` (the ``truncate`` fault: the client
    must see a short read) or after an error (the ``drop`` fault has closed the socket already).
    """

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body leave at once, without waiting for an ACK

    def setup(self) -> None:
        super().setup()
        self.server.app.connected(+1)

    def finish(self) -> None:
        self.server.app.connected(-1)
        super().finish()

    def run_wsgi(self) -> None:
        environ = self.make_environ()
        if not environ.get("wsgi.input_terminated"):  # chunked bodies end by themselves
            try:
                length = int(environ.get("CONTENT_LENGTH") or 0)
            except ValueError:
                self.close_connection = True
                self.send_error(400, "bad Content-Length")
                return
            environ["wsgi.input"] = LimitedStream(self.rfile, length)
        try:
            self._answer(environ)
        except (ConnectionError, OSError):
            self.close_connection = True

    def _answer(self, environ: dict[str, Any]) -> None:
        """Call the application, send its answer, then read what is left of the request's body."""
        started: list[Any] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            started[:] = [status, headers]
            return lambda data: None

        try:
            answer = self.server.app(environ, start_response)
            try:
                body = b"".join(answer)
            finally:
                getattr(answer, "close", lambda: None)()
        except (ConnectionError, OSError):
            raise
        except Exception:  # noqa: BLE001 - a failing request must not take the server down
            self.close_connection = True
            self.send_error(500)
            return
        status, headers = started
        code, _, reason = status.partition(" ")
        self.send_response(int(code), reason)
        promised = None
        for name, value in headers:
            if name.lower() == "content-length":
                promised = int(value)
            self.send_header(name, value)
        bodiless = environ["REQUEST_METHOD"] == "HEAD" or int(code) in (204, 304) or int(code) < 200
        if promised is None and not bodiless:
            promised = len(body)
            self.send_header("Content-Length", str(promised))
        self.end_headers()
        if not bodiless:
            self.wfile.write(body)
            if len(body) != promised:
                self.close_connection = True
        if not self.close_connection:
            stream = environ["wsgi.input"]
            while stream.read(1 << 20):
                pass


def _fill(port: int, root: Path, bucket: str, key: str | None, disk: DiskReads) -> int:
    import boto3  # imported here: only the server process needs it

    client = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{port}",
        aws_access_key_id=key or "fill",
        aws_secret_access_key="fill-secret",
        region_name="us-east-1",
    )
    client.create_bucket(Bucket=bucket)
    count = 0
    for path in sorted(root.rglob("*")):
        if path.is_file():
            name = path.relative_to(root).as_posix()
            client.upload_file(str(path), bucket, name)
            disk.add(bucket, name, path, key or "fill")
            count += 1
    client.close()  # its idle connections would hold a server thread each
    return count


def main() -> None:
    """Serve ``--root`` as bucket ``--bucket`` until killed; print ``READY <port>`` once filled."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, action="append", required=True, help="directory to upload (repeatable)")
    parser.add_argument("--bucket", default="eodata")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--require-key", default=None)
    args = parser.parse_args()

    import logging

    from moto.server import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per range GET is noise

    disk = DiskReads(DomainDispatcherApplication(create_backend_app))
    app = _Counting(disk, disk, 0.0, None)
    server = make_server("127.0.0.1", args.port, app, threaded=True, request_handler=_KeepAlive)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    files = sum(_fill(server.server_port, root, args.bucket, args.require_key, disk) for root in args.root)
    app.log.clear()
    app.delay = args.delay_ms / 1000.0
    app.require_key = args.require_key
    print(f"READY {server.server_port} {files}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.shutdown()


class S3Server:
    """Start the server process from a test; read and reset its request log."""

    def __init__(
        self, *roots: Path, bucket: str = "eodata", delay_ms: float = 0.0, require_key: str | None = None
    ) -> None:
        command = [sys.executable, "-m", "tests.support.s3_server", "--bucket", bucket, "--delay-ms", str(delay_ms)]
        for root in roots:
            command += ["--root", str(root)]
        if require_key:
            command += ["--require-key", require_key]
        repo = Path(__file__).resolve().parents[2]
        env = {**os.environ, "PYTHONPATH": str(repo)}
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, cwd=repo, env=env, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline().split()
        if not line or line[0] != "READY":
            self.process.kill()
            raise RuntimeError("the S3 server did not start")
        self.port = int(line[1])
        self.files = int(line[2])
        self.endpoint = f"127.0.0.1:{self.port}"

    def env(self, key: str = "test-key", secret: str = "test-secret") -> dict[str, str]:  # noqa: S107 - test keys
        """Environment for a server under test: reach this S3 exactly as production reaches CDSE."""
        return {
            "AWS_S3_ENDPOINT": self.endpoint,
            "AWS_HTTPS": "NO",
            "AWS_VIRTUAL_HOSTING": "FALSE",
            "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": key,
            "AWS_SECRET_ACCESS_KEY": secret,
        }

    def client(self) -> Any:
        """A boto3 client of this store, for tests that replace an object (a new ETag)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=f"http://{self.endpoint}",
            aws_access_key_id="k",
            aws_secret_access_key="s",
            region_name="us-east-1",
        )

    def requests(self) -> list[dict[str, Any]]:
        """Every S3 request since the last reset."""
        return httpx.get(f"http://{self.endpoint}/_log", timeout=10).json()

    def reset(self) -> None:
        """Empty the request log."""
        httpx.post(f"http://{self.endpoint}/_log/reset", timeout=10)

    def disk_reads(self, on: bool | None = None) -> dict[str, Any]:
        """Keys read from disk and answers served so; ``on=False`` sends every request to moto."""
        if on is None:
            return httpx.get(f"http://{self.endpoint}/_disk_reads", timeout=10).json()
        mode = "on" if on else "off"
        return httpx.post(f"http://{self.endpoint}/_disk_reads?mode={mode}", timeout=10).json()

    def connections(self) -> dict[str, int]:
        """TCP connections accepted since the start (the control requests' own included) and open now."""
        return httpx.get(f"http://{self.endpoint}/_connections", timeout=10).json()

    def set_fault(self, mode: str) -> None:
        """Fail every later S3 request (modes: see the module docstring); ``none`` heals."""
        httpx.post(f"http://{self.endpoint}/_fault?mode={mode}", timeout=10)

    def stop(self) -> None:
        """Kill the process."""
        self.process.kill()
        self.process.wait(timeout=10)


if __name__ == "__main__":
    main()
