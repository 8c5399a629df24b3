"""The OAuth2 token endpoint and the ``/api/v1`` gate, with sentinelhub-py as the client.

A configuration with ``clients:`` closes the API: sentinelhub-py with the right secret gets a
token and searches, anything else gets 401/403 in Sentinel Hub's error shape. Tokens are checked
against real clocks and keys (PyJWT signs the forged and expired ones the tests send).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
import yaml
from oauthlib.oauth2.rfc6749.errors import InvalidClientError
from sentinelhub import DataCollection, SentinelHubCatalog, SentinelHubSession, SHConfig

from server.settings import Settings
from tests.conftest import serve, write_test_config

TOKEN_PATH = "/auth/realms/main/protocol/openid-connect/token"
SEARCH = "/api/v1/catalog/1.0.0/search"
CLIENT, SECRET = "3fa85f64-5717-4562-b3fc-2c963f66afa6", "s3cr3t-client-value-0123456789"
OTHER, OTHER_SECRET = "second-client", "another-secret-of-enough-length"
TOKEN_KEY = "test-signing-key-0123456789abcdef"


@pytest.fixture(scope="module", autouse=True)
def plain_http_oauth() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
        yield


@pytest.fixture(scope="module")
def closed_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("clients")
    raw = yaml.safe_load(write_test_config(directory).read_text())
    raw["clients"] = {CLIENT: {"secret": SECRET}, OTHER: {"secret": OTHER_SECRET}}
    path = directory / "eotiler-clients.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def closed_url(closed_config: Path) -> Iterator[str]:
    with serve(Settings(config=closed_config, token_secret=TOKEN_KEY, token_ttl=600)) as url:
        yield url


def sh_config(url: str, client_id: str = CLIENT, secret: str = SECRET) -> SHConfig:
    return SHConfig(sh_base_url=url, sh_token_url=url + TOKEN_PATH, sh_client_id=client_id, sh_client_secret=secret)


def sh_error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["status"] == status and body["error"]["code"] == code
    assert body["detail"] == body["error"]["message"]
    return body["error"]["message"]


def test_sentinelhub_with_the_right_secret_searches(closed_url: str, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.DEBUG)
    catalog = SentinelHubCatalog(config=sh_config(closed_url))
    found = catalog.search(DataCollection.SENTINEL2_L2A, time=("2015-01-01", "2030-12-31"), distinct="date")
    assert len(list(found)) == 7
    token = catalog.client.get_session().token
    claims = jwt.decode(token["access_token"], TOKEN_KEY, algorithms=["HS256"])
    assert claims["sub"] == CLIENT and claims["exp"] - claims["iat"] == 600
    assert 590 <= token["expires_at"] - time.time() <= 601  # sentinelhub-py read expires_in (whole seconds)
    server_lines = [r.getMessage() for r in caplog.records if r.name.startswith(("server", "eotiler", "uvicorn"))]
    assert server_lines  # the access log saw the calls...
    assert not [line for line in server_lines if SECRET in line or token["access_token"] in line]  # ...not the secrets


def test_wrong_or_unknown_credentials_get_no_token(closed_url: str):
    for client_id, secret in ((CLIENT, "wrong-secret-value-000000"), ("nobody", SECRET)):
        with pytest.raises(InvalidClientError):
            SentinelHubSession(config=sh_config(closed_url, client_id, secret))  # sentinelhub-py's token fetch
    response = httpx.post(closed_url + TOKEN_PATH, data={"grant_type": "password", "client_id": CLIENT})
    assert response.status_code == 400 and response.json()["error"] == "unsupported_grant_type"
    basic = httpx.post(closed_url + TOKEN_PATH, data={"grant_type": "client_credentials"}, auth=(OTHER, OTHER_SECRET))
    assert basic.status_code == 200 and basic.headers["cache-control"] == "no-store"
    assert jwt.decode(basic.json()["access_token"], TOKEN_KEY, algorithms=["HS256"])["sub"] == OTHER


def test_api_refuses_missing_bad_expired_and_foreign_tokens(closed_url: str):
    body = {"collections": ["sentinel-2-l2a"], "limit": 1}
    now = int(time.time())

    def signed(claims: dict, key: str = TOKEN_KEY) -> dict[str, str]:
        return {"Authorization": "Bearer " + jwt.encode(claims, key, algorithm="HS256")}

    good = {"iss": "eotiler", "sub": CLIENT, "iat": now, "exp": now + 60}
    with httpx.Client(base_url=closed_url) as http:
        assert http.post(SEARCH, json=body, headers=signed(good)).status_code == 200
        message = sh_error(http.post(SEARCH, json=body), 401, "COMMON_UNAUTHORIZED")
        assert "Bearer" in message
        assert http.post(SEARCH, json=body).headers["www-authenticate"].startswith("Bearer")
        sh_error(
            http.post(SEARCH, json=body, headers={"Authorization": "Bearer not.a.jwt"}), 401, "COMMON_UNAUTHORIZED"
        )
        sh_error(http.post(SEARCH, json=body, headers={"Authorization": "Basic abc"}), 401, "COMMON_UNAUTHORIZED")
        expired = {**good, "iat": now - 120, "exp": now - 60}
        assert "expired" in sh_error(http.post(SEARCH, json=body, headers=signed(expired)), 401, "COMMON_UNAUTHORIZED")
        forged = signed(good, "some-other-key-0123456789abcdef00")
        sh_error(http.post(SEARCH, json=body, headers=forged), 401, "COMMON_UNAUTHORIZED")
        unsigned = {"Authorization": "Bearer " + jwt.encode(good, None, algorithm="none")}
        sh_error(http.post(SEARCH, json=body, headers=unsigned), 401, "COMMON_UNAUTHORIZED")
        ghost = signed({**good, "sub": "removed-client"})
        sh_error(http.get("/api/v1/catalog/1.0.0/collections", headers=ghost), 403, "COMMON_INSUFFICIENT_PERMISSIONS")
        # with clients configured the OGC services need a credential too, and a token is one (issue 21)
        capabilities = {"SERVICE": "WFS", "REQUEST": "GetCapabilities"}
        assert http.get("/ogc/wfs", params=capabilities).status_code == 401
        assert http.get("/ogc/wfs", params=capabilities, headers=signed(good)).status_code == 200


def test_workers_without_a_token_secret_agree_on_the_key(closed_config: Path):
    """No EOTILER_TOKEN_SECRET: the key derives from the client secrets, so a token from one
    process is accepted by another (two servers here, as two workers would be)."""
    settings = Settings(config=closed_config)
    with serve(settings) as first, serve(settings) as second:
        catalog = SentinelHubCatalog(config=sh_config(first))
        token = catalog.client.get_session().token["access_token"]
        response = httpx.get(second + "/api/v1/catalog/1.0.0/collections", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200 and len(response.json()["collections"]) == 3
        with pytest.raises(jwt.InvalidSignatureError):
            jwt.decode(token, TOKEN_KEY, algorithms=["HS256"])  # not the other server's configured key


def test_open_api_issues_tokens_to_anyone(live_url: str):
    """The bundled sample declares no clients: any credentials get a token, and none is needed."""
    response = httpx.post(
        live_url + TOKEN_PATH, data={"grant_type": "client_credentials", "client_id": "x", "client_secret": "y"}
    )
    assert response.status_code == 200 and response.json()["token_type"] == "Bearer"
    assert response.json()["expires_in"] == Settings().token_ttl
    assert httpx.post(live_url + SEARCH, json={"collections": ["sentinel-2-l2a"]}).status_code == 200


def test_short_client_secrets_are_refused_at_start(tmp_path: Path):
    from server.config import load_config
    from server.errors import ConfigError

    raw = yaml.safe_load(write_test_config(tmp_path).read_text())
    raw["clients"] = {"c": {"secret": "short"}}
    path = tmp_path / "short.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="clients"):
        load_config(path)
    raw["clients"] = {"c": {"secret": "long-enough-secret-1"}}
    path.write_text(yaml.safe_dump(raw))
    assert load_config(path).clients["c"].secret.get_secret_value() == "long-enough-secret-1"
    assert "long-enough-secret-1" not in repr(load_config(path))  # SecretStr: never in a repr or a log

