"""A small STAC API on 127.0.0.1 answering ``/search`` in the CDSE item shape, for tests.

Why not a mock: the server under test reaches it over HTTP with its real client, exactly as it
reaches ``stac.dataspace.copernicus.eu/v1``: ``POST /search`` with ``collections``, ``bbox``,
``datetime``, ``limit``, ``sortby`` and a CQL2-JSON ``filter``, paged through ``next`` links
(POST with a ``token`` in the body, ``merge: true``, as stac-fastapi does). Every search body
is logged so tests can check what was asked. ``fail_with`` makes it answer an HTTP error and
``delay`` makes it slow.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _matches_filter(item: dict[str, Any], expr: dict[str, Any]) -> bool:
    """The CQL2-JSON subset CDSE users send: and/or/not and comparisons on properties."""
    op = expr["op"]
    if op == "and":
        return all(_matches_filter(item, arg) for arg in expr["args"])
    if op == "or":
        return any(_matches_filter(item, arg) for arg in expr["args"])
    if op == "not":
        return not _matches_filter(item, expr["args"][0])
    prop, value = expr["args"]
    actual = item["properties"].get(prop["property"])
    if actual is None:
        return False
    compare = {
        "=": lambda a, b: a == b,
        "<>": lambda a, b: a != b,
        "<": lambda a, b: a < b,
        "<=": lambda a, b: a <= b,
        ">": lambda a, b: a > b,
        ">=": lambda a, b: a >= b,
    }
    return compare[op](actual, value)


class StacApi:
    """Serve item JSON files (grouped by collection) until ``stop()``."""

    def __init__(self, collections: dict[str, list[Path]], page_size: int = 2) -> None:
        self.items: dict[str, list[dict[str, Any]]] = {}
        for name, files in collections.items():
            docs = [json.loads(p.read_text()) for p in files]
            self.items[name] = [d for d in docs if d.get("type") == "Feature"]
        self.page_size = page_size  # small, so paging is exercised
        self.searches: list[dict[str, Any]] = []
        self.fail_with: int | None = None
        self.attempts = 0  # every POST /search, answered or failed
        self.delay = 0.0  # seconds to wait before answering a search (a slow catalogue)
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _send(self, status: int, doc: Any) -> None:
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/geo+json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                if api.fail_with:
                    return self._send(api.fail_with, {"code": "Unavailable"})
                if self.path.rstrip("/") == "":
                    return self._send(200, {"type": "Catalog", "id": "test", "conformsTo": [], "links": []})
                parts = self.path.strip("/").split("/")
                if len(parts) == 2 and parts[0] == "collections" and parts[1] in api.items:
                    return self._send(200, api.collection(parts[1]))
                self._send(404, {"code": "NotFound"})

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                api.attempts += 1
                if api.fail_with:
                    return self._send(api.fail_with, {"code": "Unavailable"})
                if self.path != "/search":
                    return self._send(404, {"code": "NotFound"})
                api.searches.append(body)
                time.sleep(api.delay)
                self._send(200, api.search(body, f"http://127.0.0.1:{self.server.server_port}"))

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def collection(self, name: str) -> dict[str, Any]:
        """A collection document whose extent is the union of its items."""
        boxes = [i["bbox"] for i in self.items[name]]
        union = [min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)]
        return {"type": "Collection", "id": name, "extent": {"spatial": {"bbox": [union]}}, "links": []}

    def search(self, body: dict[str, Any], base: str) -> dict[str, Any]:
        """Filter, sort and page as stac-fastapi-pgstac does for the parameters we send."""
        found = [i for name in body.get("collections", []) for i in self.items.get(name, [])]
        if "bbox" in body:
            w, s, e, n = body["bbox"]
            found = [
                i for i in found if i["bbox"][0] < e and w < i["bbox"][2] and i["bbox"][1] < n and s < i["bbox"][3]
            ]
        if "datetime" in body:
            start, _, end = body["datetime"].partition("/")
            found = [
                i
                for i in found
                if (start in ("", "..") or _when(i["properties"]["datetime"]) >= _when(start))
                and (end in ("", "..") or _when(i["properties"]["datetime"]) <= _when(end))
            ]
        if "filter" in body:
            found = [i for i in found if _matches_filter(i, body["filter"])]
        for rule in reversed(body.get("sortby", [])):
            field = rule["field"].removeprefix("properties.")
            found.sort(key=lambda i, f=field: i["properties"].get(f) or 0, reverse=rule["direction"] == "desc")
        offset = int(body.get("token") or 0)
        size = min(int(body.get("limit", 10)), self.page_size)
        page = found[offset : offset + size]
        links = []
        if offset + size < len(found):
            links.append(
                {
                    "rel": "next",
                    "href": f"{base}/search",
                    "method": "POST",
                    "merge": True,
                    "body": {"token": offset + size},
                }
            )
        return {"type": "FeatureCollection", "features": page, "links": links, "numberReturned": len(page)}

    def stop(self) -> None:
        """Stop serving."""
        self.httpd.shutdown()
