"""OAuth2 client credentials: the token endpoint and the tokens' checks.

Why: sentinelhub-py fetches a token before any call, so the server must issue one. Tokens are
short-lived HS256 JWTs (PyJWT) naming the client; with clients configured, ``/api/v1/*`` needs a
credential, and a token is one on every endpoint (``server/access/middleware.py`` checks them).
With no clients configured the API is open and the endpoint issues a token to any caller, so
sentinelhub-py works unchanged against the bundled sample.

The signing key is ``EOTILER_TOKEN_SECRET`` when set. Otherwise it is derived from the configured
client secrets, so every worker process (and a restart) agrees on it, and changing any client
secret revokes the tokens issued before. With no clients (an open API) nothing checks tokens and
the key is random per process.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

import jwt
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import SecretStr

from server.config.models import ClientConfig
from server.shapi.errors import ShApiError

TOKEN_PATH = "/auth/realms/main/protocol/openid-connect/token"  # Sentinel Hub's path, under this server
GATED_PREFIX = "/api/v1/"
_ISSUER = "eotiler"
_ALGORITHM = "HS256"
_MAX_FORM_BYTES = 8192

router = APIRouter(tags=["sentinel-hub"])


class TokenRefused(Exception):
    """An OAuth2 token request refused with RFC 6749 section 5.2's ``error`` code."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status, self.error, self.description = status, error, description


class TokenAuthority:
    """Issues and checks bearer tokens for the clients of the configuration."""

    def __init__(self, clients: Mapping[str, ClientConfig], secret: SecretStr | None, ttl: int) -> None:
        self.clients = dict(clients)
        self.ttl = ttl
        if secret is not None:
            self._key = secret.get_secret_value().encode()
        elif self.clients:
            material = "\n".join(f"{cid}\n{_credential_material(c)}" for cid, c in sorted(self.clients.items()))
            self._key = hmac.new(b"eotiler token signing key", material.encode(), hashlib.sha256).digest()
        else:
            self._key = secrets.token_bytes(32)

    @property
    def open(self) -> bool:
        """No clients configured: the API needs no token."""
        return not self.clients

    def issue(self, client_id: str, client_secret: str) -> dict[str, Any]:
        """A token response for valid credentials (any credentials while the API is open)."""
        if not self.open:
            client = self.clients.get(client_id)
            # compare_digest on both paths: an unknown id (or one without a secret) takes as long as a wrong secret
            known = client is not None and client.secret is not None
            expected = client.secret.get_secret_value() if known else secrets.token_urlsafe(32)  # type: ignore[union-attr]
            if not hmac.compare_digest(expected.encode(), client_secret.encode()) or not known:
                raise TokenRefused(401, "invalid_client", "Invalid client or Invalid client credentials")
        now = int(time.time())
        claims = {"iss": _ISSUER, "sub": client_id, "iat": now, "exp": now + self.ttl, "jti": uuid.uuid4().hex}
        token = jwt.encode(claims, self._key, algorithm=_ALGORITHM)
        return {"access_token": token, "token_type": "Bearer", "expires_in": self.ttl, "not-before-policy": 0}

    def verify(self, authorization: str | None) -> str:
        """The client id of a valid ``Bearer`` token; ``ShApiError`` 401 (no/bad token) or 403."""
        if not authorization or not authorization[:7].lower() == "bearer ":
            raise ShApiError(401, "a bearer token is required (Authorization: Bearer <token>)", parameter="token")
        try:
            claims = jwt.decode(
                authorization[7:].strip(),
                self._key,
                algorithms=[_ALGORITHM],
                issuer=_ISSUER,
                options={"require": ["exp", "iat", "sub", "iss"]},
            )
        except jwt.ExpiredSignatureError:
            raise ShApiError(401, "the token has expired", parameter="token") from None
        except jwt.InvalidTokenError:
            raise ShApiError(401, "the token is not valid", parameter="token") from None
        client_id = str(claims["sub"])
        if client_id not in self.clients:
            raise ShApiError(403, "the token's client is not allowed here", parameter="token")
        return client_id


def _credential_material(client: ClientConfig) -> str:
    """What the derived signing key depends on: the client's secret, else its other credentials."""
    if client.secret is not None:
        return client.secret.get_secret_value()
    return "\n".join([k.get_secret_value() for k in client.api_keys] + [client.instance_id or ""])


def _credentials(request: Request, form: dict[str, str]) -> tuple[str, str]:
    """client_id/client_secret from the form body, else from HTTP Basic (RFC 6749 section 2.3.1)."""
    header = request.headers.get("authorization", "")
    if header[:6].lower() == "basic ":
        try:
            user, _, password = base64.b64decode(header[6:].strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise TokenRefused(400, "invalid_request", "Authorization is not valid Basic credentials") from None
        return user, password
    client_id, client_secret = form.get("client_id", ""), form.get("client_secret", "")
    if not client_id or not client_secret:
        raise TokenRefused(400, "invalid_request", "client_id and client_secret are required")
    return client_id, client_secret


@router.post(TOKEN_PATH, summary="OAuth2 token (client credentials)")
async def token(request: Request) -> JSONResponse:
    """``grant_type=client_credentials`` with the client's id and secret (form body or Basic)."""
    headers = {"Cache-Control": "no-store", "Pragma": "no-cache"}
    authority: TokenAuthority = request.app.state.tokens
    try:
        if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            raise TokenRefused(400, "invalid_request", "the body must be application/x-www-form-urlencoded")
        raw = await request.body()
        if len(raw) > _MAX_FORM_BYTES:
            raise TokenRefused(400, "invalid_request", "the form is too large")
        try:
            pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, max_num_fields=20)
        except (UnicodeDecodeError, ValueError):
            raise TokenRefused(400, "invalid_request", "the form cannot be read") from None
        form = dict(pairs)
        grant = form.get("grant_type")
        if not grant:
            raise TokenRefused(400, "invalid_request", "grant_type is required")
        if grant != "client_credentials":
            raise TokenRefused(400, "unsupported_grant_type", "only grant_type=client_credentials is supported")
        client_id, client_secret = _credentials(request, form)
        return JSONResponse(authority.issue(client_id, client_secret), headers=headers)
    except TokenRefused as refused:
        if refused.status == 401:
            headers.update({"WWW-Authenticate": 'Basic realm="eotiler"'})
        body = {"error": refused.error, "error_description": refused.description}
        return JSONResponse(body, status_code=refused.status, headers=headers)
