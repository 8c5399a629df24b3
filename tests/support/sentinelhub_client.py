"""sentinelhub-py pointed at a server under test, written once for every test module that drives it.

sentinelhub-py keeps one global registry of collections and refuses a second name for the same
definition, so collections are named after the server's URL; oauthlib refuses a plain-HTTP token
URL unless told, and the test servers are plain HTTP on 127.0.0.1.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from sentinelhub import DataCollection, SHConfig

TOKEN_PATH = "/auth/realms/main/protocol/openid-connect/token"  # Sentinel Hub's own token path


@pytest.fixture(scope="module", autouse=True)
def plain_http_oauth() -> Iterator[None]:
    """Let oauthlib fetch tokens over plain HTTP for the module that imports this fixture."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
        yield


def sh_config(base_url: str, client_id: str = "any-client", secret: str = "any-secret") -> SHConfig:
    """The only settings a user changes to point sentinelhub-py at eotiler."""
    return SHConfig(
        sh_base_url=base_url, sh_token_url=base_url + TOKEN_PATH, sh_client_id=client_id, sh_client_secret=secret
    )


def sentinel2_l2a_at(url: str) -> DataCollection:
    """``SENTINEL2_L2A`` whose requests go to the server at ``url`` (Process, Statistical, WFS)."""
    name = f"eotiler-s2l2a-{urlsplit(url).port}"
    return DataCollection.SENTINEL2_L2A.define_from(name, service_url=url)
