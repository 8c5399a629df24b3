"""Authenticate every request once, before routing: who is calling, and may they call now.

Credentials, in the order they are looked at (the first one present decides; a bad one is a
401, never a fall-through to the next):

- ``Authorization: Bearer <token>`` from the token endpoint (sentinelhub-py, OAuth2 clients);
- ``Authorization: Basic`` with the client id and its secret or one of its API keys (QGIS's
  basic authentication);
- the ``X-API-Key`` header (QGIS's "API header", curl);
- ``key=`` in the query (OpenLayers, Leaflet, any URL); removed from the query before the
  request goes on, so no parameter parser, document or access log line ever sees it;
- a configuration instance id in the path: ``/ogc/wms/<id>`` (Sentinel Hub's form, also wmts,
  wcs, wfs) or ``/<id>/...`` before any path (``/<id>/layers/...`` for tiles).

The instance id leaves the path and becomes the ASGI ``root_path``, so the route is the plain
one and every URL the server builds (``url_for``, ``base_url``: TileJSON, WMTS, OGC API) starts
with ``/<id>``; a caller identified otherwise gets its instance id there too, so the URLs in its
capabilities authenticate by themselves. The caller goes to ``scope["state"]`` (``caller``,
``client_id``) and to ``clients.current_caller``, which the layer registry consults.

Refusals (401, 429) are written in the protocol's own error format: an OGC exception report
under ``/ogc``, Sentinel Hub's error shape under ``/api/v1``, ``{"detail","parameter"}`` elsewhere.
With no clients configured nothing is checked; only the instance-id path forms are rewritten.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from urllib.parse import parse_qsl, urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.access.clients import Caller, ClientRegistry, current_caller
from server.access.rate_limit import RateLimiter
from server.errors import EotilerError, Forbidden, NotAuthenticated
from server.ogc.exceptions import ows_exception_xml, wcs_exception_xml, wms_exception_xml
from server.shapi.auth import GATED_PREFIX, TOKEN_PATH, TokenAuthority
from server.shapi.errors import ShApiError, sh_error_response

API_KEY_HEADER = b"x-api-key"
KEY_PARAMETER = "key"
_OGC_SERVICES = ("wms", "wmts", "wcs", "wfs")
_WMTS_REST_SEGMENTS = 7  # {layer}/{style}/{time}/{tms}/{matrix}/{row}/{col}.{ext}
# Reachable without credentials: probes, metrics, the viewer and its assets, the API docs, the
# token endpoint (it checks the client secret itself).
_PUBLIC_PATHS = frozenset(
    {"/", "/healthz", "/readyz", "/metrics", "/docs", "/openapi.json", "/favicon.ico", TOKEN_PATH}
)
_PUBLIC_PREFIXES = ("/static/",)
_CHALLENGE = 'Bearer realm="eotiler", Basic realm="eotiler"'


class AccessMiddleware:
    """Pure ASGI: rewrite instance-id paths, identify the caller, apply its rate limit."""

    def __init__(self, app: ASGIApp, clients: ClientRegistry, tokens: TokenAuthority, limiter: RateLimiter) -> None:
        self.app = app
        self.clients = clients
        self.tokens = tokens
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:  # noqa: D102
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path_instance = self._strip_instance(scope)
        if self.clients.open or scope.get("method") == "OPTIONS" or _public(scope["path"]):
            await self.app(scope, receive, send)
            return
        try:
            caller = self._identify(scope, path_instance)
            if caller.rate_limit is not None:
                await self.limiter.admit(caller.client_id, caller.rate_limit)
        except EotilerError as error:
            await refusal(scope, error)(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state["caller"], state["client_id"] = caller, caller.client_id
        if caller.instance_id and not scope["path"].startswith((GATED_PREFIX, TOKEN_PATH)):
            scope["root_path"] = scope.get("root_path", "") + "/" + caller.instance_id
        token = current_caller.set(caller)
        try:
            await self.app(scope, receive, _private(send))
        finally:
            current_caller.reset(token)

    def _strip_instance(self, scope: Scope) -> str | None:
        """Take an instance id out of the path (in place: logs and metrics see the plain route)."""
        parts = scope["path"].split("/")  # ['', first, second, ...]
        index: int | None = None
        if len(parts) > 2 and parts[1] and self._is_instance(parts[1], parts[2] == "layers" and parts[1] != "layers"):
            index = 1
        elif len(parts) > 3 and parts[1] == "ogc" and parts[2] in _OGC_SERVICES and parts[3]:
            extra = len(parts) - 3  # segments after /ogc/<service>
            shaped = extra == 1 or (parts[2] == "wmts" and extra == _WMTS_REST_SEGMENTS + 1)
            if shaped or self.clients.by_instance(parts[3]) is not None:
                index = 3
        if index is None:
            return None
        instance = parts.pop(index)
        scope["path"] = "/".join(parts) or "/"
        raw = scope.get("raw_path")
        if raw is not None:
            raw_parts = raw.split(b"/")
            raw_parts.pop(index)
            scope["raw_path"] = b"/".join(raw_parts) or b"/"
        return instance

    def _is_instance(self, segment: str, tile_shaped: bool) -> bool:
        """A leading segment is an instance id when it is a configured one (any, on an open server's tiles)."""
        if self.clients.open:
            return tile_shaped
        return self.clients.by_instance(segment) is not None

    def _identify(self, scope: Scope, path_instance: str | None) -> Caller:
        """The caller named by the request's first credential; ``NotAuthenticated`` otherwise."""
        headers = dict(scope.get("headers", []))
        authorization = headers.get(b"authorization", b"").decode("latin-1")
        if authorization[:7].lower() == "bearer ":
            try:
                client_id = self.tokens.verify(authorization)
            except ShApiError as error:
                cls = Forbidden if error.status == 403 else NotAuthenticated
                raise cls(error.public_message, parameter=error.parameter) from None
            return self.clients.callers[client_id]
        if authorization[:6].lower() == "basic ":
            return self._basic(authorization[6:].strip())
        if b"x-api-key" in headers:
            return self._key(headers[API_KEY_HEADER].decode("latin-1"), "X-API-Key")
        query = scope.get("query_string", b"").decode("latin-1")
        pairs = parse_qsl(query, keep_blank_values=True)
        keys = [v for k, v in pairs if k.lower() == KEY_PARAMETER]
        if keys:
            scope["query_string"] = urlencode([(k, v) for k, v in pairs if k.lower() != KEY_PARAMETER]).encode()
            return self._key(keys[0], KEY_PARAMETER)
        if path_instance is not None:
            caller = self.clients.by_instance(path_instance)
            if caller is None:
                raise NotAuthenticated("the instance id in the path is not configured here", parameter="instance")
            return caller
        raise NotAuthenticated(
            "credentials are required: an instance id in the path, Authorization: Bearer <token>, "
            "X-API-Key or key=",
            parameter="key",
        )

    def _key(self, key: str, parameter: str) -> Caller:
        caller = self.clients.by_key(key.strip())
        if caller is None:
            raise NotAuthenticated(f"the {parameter} is not valid", parameter=parameter)
        return caller

    def _basic(self, encoded: str) -> Caller:
        """Client id as user name, its secret or one of its API keys as password."""
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise NotAuthenticated("Authorization is not valid Basic credentials", parameter="Authorization") from None
        client = self.clients.clients.get(user)
        candidates = [client.secret, *client.api_keys] if client is not None else []
        matches = [
            hmac.compare_digest(c.get_secret_value().encode(), password.encode()) for c in candidates if c is not None
        ]
        if client is None or not any(matches):
            raise NotAuthenticated("the Basic credentials are not valid", parameter="Authorization")
        return self.clients.callers[user]


def _private(send: Send) -> Send:
    """A client's answers may be stored by its own browser, never by a shared cache (a proxy or
    CDN would hand a header-authenticated client's tiles to anyone asking the same URL)."""

    async def send_private(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [
                (k, v.replace(b"public", b"private")) if k.lower() == b"cache-control" else (k, v)
                for k, v in message.get("headers", [])
            ]
            message = {**message, "headers": headers}
        await send(message)

    return send_private


def _public(path: str) -> bool:
    return path in _PUBLIC_PATHS or path.startswith(_PUBLIC_PREFIXES)


def refusal(scope: Scope, error: EotilerError) -> Response:
    """``error`` in the format of the protocol the path belongs to, with its HTTP headers."""
    path: str = scope["path"]
    headers = {"WWW-Authenticate": _CHALLENGE} if error.status == 401 else {}
    if error.retry_after is not None:
        headers["Retry-After"] = str(error.retry_after)
    if path.startswith(GATED_PREFIX):
        as_api = ShApiError(error.status, error.public_message, parameter=error.parameter)
        response: Response = sh_error_response(as_api)
    elif path == "/ogc" or path.startswith("/ogc/"):
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        kvp = {k.upper(): v for k, v in query}  # not ``ogc.kvp.KVP``: a refusal must not fail on a bad value
        segment = path.split("/")[2] if path.count("/") >= 2 else ""
        service = segment.upper() if segment in _OGC_SERVICES else (kvp.get("SERVICE") or "WMS").strip().upper()
        version = (kvp.get("VERSION") or kvp.get("ACCEPTVERSIONS") or "").strip()
        if service == "WMTS":
            response = ows_exception_xml(error)
        elif service == "WFS":
            response = ows_exception_xml(error, "2.0.0")
        elif service == "WCS":
            response = wcs_exception_xml(error, "1.0.0" if version.startswith("1.") else "2.0.1")
        else:
            response = wms_exception_xml(error, "1.1.1" if version == "1.1.1" else "1.3.0")
    else:
        response = JSONResponse({"detail": error.public_message, "parameter": error.parameter})
    response.status_code = error.status
    response.headers.update(headers)
    return response


def service_url(request: Request) -> str:
    """The endpoint's URL as the caller reaches it, without the query: under its instance id.

    ``request.url`` is the route's path; the instance id is the ASGI ``root_path`` (set above),
    which ``url_for`` and ``base_url`` already include and this adds.
    """
    url = request.url.replace(query=None)
    root = str(request.scope.get("root_path", ""))
    if root and not url.path.startswith(root + "/"):
        url = url.replace(path=root + url.path)
    return str(url)
