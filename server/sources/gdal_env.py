"""The GDAL environment every read runs in: cloud-read tuning plus S3 endpoint and credentials.

Why a rasterio ``Session`` of our own: rasterio refuses ``AWS_ACCESS_KEY_ID`` as a plain config
option and its ``AWSSession`` needs boto3. A small session hands GDAL the endpoint and keys as
thread-local config options for the duration of one ``rasterio.Env``, so the process environment
is never mutated at request time and two threads never see each other's settings.
Credentials live only in ``pydantic.SecretStr`` values until this point, so they never reach a
``repr``, a log line or a response.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field

import rasterio
import rasterio._env as _rasterio_env
from pydantic import SecretStr
from rasterio.session import Session

PRIORITY_HEADER = "X-Eotiler-Priority"
GATEWAY_OPTION = "EOTILER_S3_GATEWAY"  # a config option GDAL ignores: the S3 gateway a read goes through
BACKGROUND_WAIT_SECONDS = 120  # GDAL's HTTP timeout and stall limit for background reads


def _proj_search_paths_set_once() -> None:
    """Make rasterio set PROJ's search paths once per process, not once per thread.

    rasterio calls ``OSRSetPROJSearchPaths`` (process-wide) the first time each thread enters a
    GDAL environment; GDAL then drops the PROJ objects it caches for every thread, and a warp
    running on another thread at that moment crashed the server (segfault in a tile read while a
    new render thread started, seen under 16 concurrent tiles). The paths never change after
    rasterio's import, so a call with the paths already set is skipped.
    """
    original = _rasterio_env.set_proj_data_search_path
    if getattr(original, "eotiler_once", False):
        return
    done: set[str] = set()
    lock = threading.Lock()

    def once(path: str) -> None:
        with lock:
            if path in done:
                return
            done.add(path)
        original(path)

    once.eotiler_once = True  # type: ignore[attr-defined]
    _rasterio_env.set_proj_data_search_path = once


_proj_search_paths_set_once()


@dataclass(frozen=True, slots=True)
class S3Settings:
    """Where the S3 bucket is and how to sign requests to it (CDSE defaults in the README)."""

    endpoint: str = "eodata.dataspace.copernicus.eu"
    https: bool = True
    virtual_hosting: bool = False
    region: str = "default"
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None
    no_sign_request: bool = False

    def options(self) -> dict[str, str]:
        """GDAL config options for ``/vsis3/`` (secrets included: only ever handed to GDAL)."""
        opts = {
            "AWS_S3_ENDPOINT": self.endpoint,
            "AWS_HTTPS": "YES" if self.https else "NO",
            "AWS_VIRTUAL_HOSTING": "TRUE" if self.virtual_hosting else "FALSE",
            "AWS_REGION": self.region,
        }
        if self.no_sign_request or self.access_key_id is None or self.secret_access_key is None:
            opts["AWS_NO_SIGN_REQUEST"] = "YES"
        else:
            opts["AWS_NO_SIGN_REQUEST"] = "NO"
            opts["AWS_ACCESS_KEY_ID"] = self.access_key_id.get_secret_value()
            opts["AWS_SECRET_ACCESS_KEY"] = self.secret_access_key.get_secret_value()
        return opts


class _S3Session(Session):
    """A rasterio session that passes our S3 settings to GDAL (no boto3 lookup of other keys)."""

    def __init__(self, s3: S3Settings) -> None:
        self._s3 = s3
        self.credentials: dict[str, str] = {}

    @classmethod
    def hascreds(cls, config: dict[str, object]) -> bool:  # noqa: D102 - rasterio's contract
        return True

    def get_credential_options(self) -> dict[str, str]:  # noqa: D102 - rasterio's contract
        return self._s3.options()


@dataclass(frozen=True, slots=True)
class GdalEnvironment:
    """GDAL options and S3 settings, entered around every read with ``env()``."""

    options: dict[str, object] = field(default_factory=dict)
    s3: S3Settings = field(default_factory=S3Settings)
    # Which endpoint and credentials this environment reads with (a digest, never the secrets):
    # open dataset handles are only shared between reads with the same identity. Computed once.
    identity: str = field(init=False)

    def __post_init__(self) -> None:
        key = self.s3.access_key_id.get_secret_value() if self.s3.access_key_id else ""
        digest = hashlib.sha256(key.encode()).hexdigest()[:12]
        # GDAL fixes a /vsicurl handle's timeouts and retries when it opens the file, so a pooled
        # handle keeps them: handles are shared only between reads with the same ones.
        waits = f"t{self.options.get('GDAL_HTTP_TIMEOUT')}r{self.options.get('GDAL_HTTP_MAX_RETRY')}"
        identity = f"{self.s3.endpoint}|{self.s3.https}|{self.s3.virtual_hosting}|{digest}|{waits}"
        object.__setattr__(self, "identity", identity)

    def within(self, seconds: float) -> GdalEnvironment:
        """This environment with S3 waits that end within ``seconds`` (a request's budget left).

        Why: a store that accepts connections and never answers would otherwise hold a render
        thread for GDAL_HTTP_TIMEOUT x (retries + 1) per request GDAL makes, long after the client
        got its answer. Each attempt is capped at the time left, a stalled transfer (no byte for
        GDAL_HTTP_LOW_SPEED_TIME) is abandoned early, and only the retries that fit are kept.
        Returns ``self`` when nothing needs shortening; the shortened values come in whole
        seconds and attempts, so reads late in their budget still share a few pooled handles.
        """
        timeout = self._seconds("GDAL_HTTP_TIMEOUT", 30)
        retries = self._seconds("GDAL_HTTP_MAX_RETRY", 0)
        left = max(1, int(seconds))
        fit_timeout = min(timeout, left)
        stall = min(self._seconds("GDAL_HTTP_LOW_SPEED_TIME", timeout), fit_timeout)
        fit_retries = min(retries, max(0, left // stall - 1))  # attempts that can each stall once
        if (fit_timeout, fit_retries) == (timeout, retries):
            return self
        options = {**self.options, "GDAL_HTTP_TIMEOUT": fit_timeout, "GDAL_HTTP_MAX_RETRY": fit_retries}
        if "GDAL_HTTP_CONNECTTIMEOUT" in options:
            options["GDAL_HTTP_CONNECTTIMEOUT"] = min(self._seconds("GDAL_HTTP_CONNECTTIMEOUT", 0), fit_timeout)
        if "GDAL_HTTP_LOW_SPEED_TIME" in options:
            options["GDAL_HTTP_LOW_SPEED_TIME"] = stall
        return GdalEnvironment(options, self.s3)

    def background(self) -> GdalEnvironment:
        """This environment for work no request waits for (overview builds, prefetch).

        Its S3 requests carry ``X-Eotiler-Priority: background``: the S3 gateway lets them use one
        connection of the quota at most, and only when the views people wait for leave it idle,
        so they may wait there for a while: their waits are ``BACKGROUND_WAIT_SECONDS``, never
        the shortened ones of the request that queued them (an overview build queued near a
        request's deadline timed out in the gateway's queue with 0 bytes received).
        """
        options = {**self.options, "GDAL_HTTP_HEADERS": f"{PRIORITY_HEADER}: background"}
        for name in ("GDAL_HTTP_TIMEOUT", "GDAL_HTTP_LOW_SPEED_TIME"):
            options[name] = max(self._seconds(name, 0), BACKGROUND_WAIT_SECONDS)
        return GdalEnvironment(options, self.s3)

    def _seconds(self, name: str, default: int) -> int:
        """An integer GDAL option (seconds or a count)."""
        return int(float(str(self.options.get(name, default))))

    def env(self, path: str = "") -> rasterio.Env:
        """A fresh ``rasterio.Env`` (thread-local GDAL config) for one read of ``path``.

        Remote (``/vsi*``) reads decode on the calling thread only (``GDAL_NUM_THREADS=1``):
        rasterio sets config options thread-locally outside the main thread, and GDAL's own
        JPEG2000 decoding threads do not inherit them, so they fetched blocks without endpoint or
        keys ("URL rejected: Malformed input") and the tile came back silently empty. The
        pipeline already reads a request's bands in parallel on its own threads.
        """
        options = self.options
        if path.startswith("/vsi"):
            options = {**options, "GDAL_NUM_THREADS": 1}
        return rasterio.Env(session=_S3Session(self.s3), **options)
