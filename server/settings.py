"""Environment settings (``EOTILER_*``), kept apart from the layer configuration.

Why pydantic-settings: one typed place for every knob, read from the environment or a ``.env``
file, so ``eotiler serve`` flags, the Dockerfile and tests all set the same names.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from server.resources import default_config_path
from server.sources.gdal_env import GATEWAY_OPTION, GdalEnvironment, S3Settings
from server.sources.s3_gateway import GatewayOptions

# GDAL options for cloud reads; values, reasons and the request counts measured for each in
# docs/eodata-performance.md (each removes requests per tile).
CLOUD_GDAL_OPTIONS: dict[str, object] = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",  # no LIST request per open
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.TIF,.tiff,.jp2,.xml",  # .xml: granule angles (sources/angles.py)
    "GDAL_INGESTED_BYTES_AT_OPEN": 65536,  # COG header / JP2 main header in one GET
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    "CPL_VSIL_CURL_CACHE_SIZE": 268435456,  # keeps headers and JP2 tile-part indexes hot
    "VSI_CACHE": "TRUE",
    "VSI_CACHE_SIZE": 5000000,
    "GDAL_BAND_BLOCK_CACHE": "HASHSET",
    "GDAL_HTTP_MULTIPLEX": "YES",  # HTTP/2 endpoints: parallel range GETs share one connection
    "GDAL_HTTP_TCP_KEEPALIVE": "YES",  # pooled connections survive idle periods behind NAT
    "GDAL_HTTP_RETRY_DELAY": 0.5,  # doubled by GDAL on each retry of a 429/5xx answer
    "GDAL_HTTP_CONNECTTIMEOUT": 5,
    "GDAL_HTTP_LOW_SPEED_LIMIT": 1,  # a transfer without a byte for GDAL_HTTP_LOW_SPEED_TIME is a hung store
    "CPL_VSIL_NETWORK_STATS_ENABLED": "YES",  # S3 requests and bytes for /metrics (sources/gdal_native.py)
    # GDAL_HTTP_TIMEOUT, GDAL_HTTP_LOW_SPEED_TIME and GDAL_HTTP_MAX_RETRY come from
    # EOTILER_S3_TIMEOUT / EOTILER_S3_STALL_TIMEOUT / EOTILER_S3_RETRIES and the request budget.
}


# Image pixels a server renders at once (EOTILER_RENDER_PIXELS): two 1024 px maps, the two
# FastCGI processes of a MapServer on the same machine. A render holds ~110 bytes per pixel
# (docs/memory.md), so with one or two workers this bounds the renders' memory near 230 MB
# however the requests fall on them (each worker takes at least one 1024 px map's pixels, so
# more workers hold more); tiles (65-262 kpx) still use every render slot. Statistical API
# requests take slots only.
RENDER_PIXELS = 2 * 1024 * 1024


def _env(aws_name: str) -> AliasChoices:
    """Accept ``EOTILER_S3_<NAME>`` and the ``AWS_*`` spelling GDAL users already have in their shell."""
    return AliasChoices(f"EOTILER_S3_{aws_name.removeprefix('AWS_').removeprefix('S3_')}", aws_name)


class Settings(BaseSettings):
    """Server settings; every field can be set as ``EOTILER_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="EOTILER_", extra="ignore", populate_by_name=True)

    config: Path = Field(default_factory=default_config_path)
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    workers: int = Field(default=1, ge=1, le=64, description="server processes (`eotiler serve --workers`)")
    max_scenes: int = Field(default=10, ge=1, le=100, description="scenes read per request at most")
    max_tile_scale: int = Field(default=4, ge=1, le=8)
    read_threads: int = Field(default=4, ge=1, le=32, description="parallel band reads per request")
    png_zlevel: int = Field(default=3, ge=1, le=9, description="PNG deflate level (render/encode.py: PNG_ZLEVEL)")
    max_image_size: int = Field(default=4096, ge=256, le=16384, description="largest WIDTH/HEIGHT of a map")
    extra_crs: list[str] = Field(default_factory=list, description="CRS codes advertised besides the defaults")
    log_level: str = "info"
    access_log: bool = Field(default=True, description="one JSON line per request on logger eotiler.access")
    max_url_bytes: int = Field(default=49152, ge=4096, le=1048576, description="longest path + query (414 beyond)")
    max_body_bytes: int = Field(default=1048576, ge=0, le=104857600, description="largest request body (413 beyond)")
    breaker_threshold: int = Field(default=5, ge=1, le=1000, description="failed requests in a row that open a circuit")
    breaker_cooldown: float = Field(
        default=2.0, gt=0, le=3600, description="seconds an open circuit refuses requests before it probes the upstream"
    )
    breaker_max_cooldown: float = Field(
        default=60.0, gt=0, le=3600, description="longest rest between probes: it doubles while probes fail"
    )
    js_workers: int = Field(default=2, ge=1, le=32, description="V8 worker processes for JavaScript evalscripts")
    js_timeout: float = Field(default=2.0, gt=0, le=60, description="seconds a JavaScript evalscript may run per image")
    js_heap_mb: int = Field(default=256, ge=16, le=4096, description="V8 heap limit per JavaScript evalscript")
    js_buffer_mb: int = Field(
        default=8, ge=1, le=1024, description="shared memory per V8 worker (MB); larger images run in strips"
    )
    js_shm_dir: Path | None = Field(
        default=None, description="directory of the V8 workers' shared buffers (a tmpfs; default /dev/shm)"
    )
    js_vectorize: bool = Field(
        default=True, description="run JavaScript evalscripts numpy reproduces exactly with numpy, not V8"
    )
    cache_memory_bytes: int = Field(
        default=256 * 1024 * 1024, ge=0, description="in-process tile cache bound in bytes (0: off)"
    )
    redis_url: str | None = Field(default=None, description="shared cache level, e.g. redis://127.0.0.1:6379/0")
    cache_ttl: int = Field(default=7 * 24 * 3600, ge=60, description="seconds an entry lives in Redis")
    cache_max_age: int = Field(default=3600, ge=0, description="Cache-Control max-age for a closed TIME")
    cache_max_age_open: int = Field(default=300, ge=0, description="max-age when TIME is open-ended or absent")

    # S3 (CDSE eodata by default). Read from EOTILER_S3_* or the usual AWS_* variables.
    s3_endpoint: str = Field(default="eodata.dataspace.copernicus.eu", validation_alias=_env("AWS_S3_ENDPOINT"))
    s3_https: bool = Field(default=True, validation_alias=_env("AWS_HTTPS"))
    s3_virtual_hosting: bool = Field(default=False, validation_alias=_env("AWS_VIRTUAL_HOSTING"))
    s3_region: str = Field(default="default", validation_alias=_env("AWS_REGION"))
    s3_access_key_id: SecretStr | None = Field(default=None, validation_alias=_env("AWS_ACCESS_KEY_ID"))
    s3_secret_access_key: SecretStr | None = Field(default=None, validation_alias=_env("AWS_SECRET_ACCESS_KEY"))
    s3_no_sign_request: bool = Field(default=False, validation_alias=_env("AWS_NO_SIGN_REQUEST"))
    s3_timeout: int = Field(default=30, ge=1, le=600, description="seconds one S3 request may take (GDAL_HTTP_TIMEOUT)")
    s3_stall_timeout: int = Field(
        default=5, ge=1, le=600, description="seconds without a byte from S3 before a request is retried or abandoned"
    )
    s3_retries: int = Field(default=3, ge=0, le=10, description="retries of an S3 429/5xx answer (GDAL_HTTP_MAX_RETRY)")
    dataset_handles: int = Field(
        default=32, ge=0, le=1024, description="open raster handles kept between requests per process (0: off)"
    )
    # 64 MB holds the decoded blocks consecutive GetMaps and neighbouring tiles share (a 1024 px
    # map reads 14-24 MB of them); kept VRT handles hold theirs until evicted (scene_reader.py).
    gdal_cache_mb: int = Field(default=64, ge=16, le=65536, description="GDAL block cache per process (MB)")
    malloc_arenas: int = Field(default=2, ge=0, le=64, description="glibc malloc arenas per process (0: glibc's)")
    overview_cache_dir: Path = Field(
        default_factory=lambda: Path.home() / ".cache" / "eotiler" / "overviews",
        description="local COGs of zoomed-out JPEG2000 bands",
    )
    overview_cache_bytes: int = Field(
        default=2 * 1024**3, ge=0, description="disk bound of the overview cache (0: off)"
    )
    block_cache_mb: int = Field(
        default=256, ge=0, le=65536, description="decoded JPEG2000 blocks kept in memory per process (MB, 0: off)"
    )
    block_cache_dir: Path = Field(
        default_factory=lambda: Path.home() / ".cache" / "eotiler" / "blocks",
        description="decoded JPEG2000 blocks shared by worker processes and restarts",
    )
    block_cache_disk_mb: int = Field(
        default=2048, ge=0, description="disk bound of the decoded-block directory (MB, 0: memory only)"
    )
    s3_gateway: bool = Field(
        default=True, description="every S3 read through the loopback gateway: quota, coalescing, JPEG2000 index"
    )
    s3_gateway_address: str | None = Field(
        default=None, description="host:port of a running gateway (set by `serve --workers N` for its workers)"
    )
    s3_connections: int = Field(default=4, ge=1, le=256, description="concurrent S3 connections per credential")
    s3_requests_per_minute: int = Field(default=2000, ge=1, le=10**6, description="S3 requests per credential/minute")
    jp2_index_dir: Path = Field(
        default_factory=lambda: Path.home() / ".cache" / "eotiler" / "jp2-index",
        description="tile-part indexes of JPEG2000 objects (a few KB each, keyed on path and ETag)",
    )
    s3_tile_part_cache_mb: int = Field(default=256, ge=0, le=65536, description="JPEG2000 tile-parts the gateway keeps")
    s3_tile_part_disk_mb: int = Field(
        default=1024, ge=0, le=10**7, description="JPEG2000 tile-parts kept on disk under jp2_index_dir (0: none)"
    )
    stac_timeout: float = Field(default=10.0, gt=0, le=120, description="seconds per STAC API request")
    stac_cache_ttl: int = Field(default=300, ge=0, description="seconds a STAC search result is reused")
    token_secret: SecretStr | None = Field(
        default=None, description="HS256 key of API tokens (default: derived from the configured client secrets)"
    )
    token_ttl: int = Field(default=3600, ge=60, le=86400, description="seconds an API token stays valid")
    clients_file: Path | None = Field(
        default=None, description="YAML mapping of more clients (a mounted secret), merged into the config's clients"
    )
    render_concurrency: int = Field(default=4, ge=1, le=256, description="renders running at once per process")
    render_queue: int = Field(default=32, ge=0, le=10000, description="renders waiting for a slot before 503")
    render_pixels: int = Field(
        default=RENDER_PIXELS,
        ge=0,
        description="image pixels the server renders at once, shared by its workers (0: no budget, slots only)",
    )
    request_budget: float = Field(
        default=20.0, gt=0, le=600, description="seconds a request may spend reading scenes before it stops"
    )

    @property
    def render_pixels_per_process(self) -> int:
        """This process's share of ``render_pixels`` (``render/admission.py``); at least a 1024 px
        map's pixels (so with many workers four 512 px tiles of one worker still render at once),
        unless the budget itself is smaller."""
        if self.render_pixels == 0:
            return 0
        return min(self.render_pixels, max(self.render_pixels // self.workers, 1024 * 1024))

    def secrets(self) -> list[str]:
        """Credential values that must never appear in a response or a log line."""
        values = (self.s3_access_key_id, self.s3_secret_access_key, self.token_secret)
        return [v.get_secret_value() for v in values if v is not None]

    def s3(self) -> S3Settings:
        """The object store the data lives in, and the credentials to sign requests to it."""
        return S3Settings(
            endpoint=self.s3_endpoint,
            https=self.s3_https,
            virtual_hosting=self.s3_virtual_hosting,
            region=self.s3_region,
            access_key_id=self.s3_access_key_id,
            secret_access_key=self.s3_secret_access_key,
            no_sign_request=self.s3_no_sign_request,
        )

    def gdal_environment(self, gateway: str | None = None) -> GdalEnvironment:
        """GDAL options and S3 settings applied around every read with ``rasterio.Env``.

        With a ``gateway`` (``host:port``) GDAL reads unsigned from it over plain HTTP on
        loopback; the gateway holds the credentials and talks to the store.
        """
        if gateway is None:
            return GdalEnvironment(self.gdal_options(), self.s3())
        local = S3Settings(endpoint=gateway, https=False, region=self.s3_region, no_sign_request=True)
        # A read waiting in the gateway for the quota receives no byte: that is not a stalled store
        # (the gateway detects those upstream), so GDAL's stall limit is its whole timeout.
        options = self.gdal_options()
        options["GDAL_HTTP_LOW_SPEED_TIME"] = options["GDAL_HTTP_TIMEOUT"]
        options[GATEWAY_OPTION] = gateway  # reads ask it for a window's tile-parts first (s3_prefetch.py)
        return GdalEnvironment(options, local)

    def gateway_options(self, buckets: frozenset[str]) -> GatewayOptions:
        """How the S3 gateway serves ``buckets``: quota, waits bounded by the request budget, caches."""
        timeout = float(max(1, min(self.s3_timeout, int(self.request_budget / 2))))
        return GatewayOptions(
            self.s3(),
            buckets,
            connections=self.s3_connections,
            requests_per_minute=self.s3_requests_per_minute,
            budget=timeout * 0.8,  # quota waits and 429 retries of one read end before GDAL stops waiting
            timeout=timeout,
            stall=float(self.s3_stall_timeout),
            index_dir=self.jp2_index_dir,
            redis_url=self.redis_url,
            tile_part_bytes=self.s3_tile_part_cache_mb * 1024**2,
            tile_part_dir=self.jp2_index_dir / "tile-parts",
            tile_part_disk_bytes=self.s3_tile_part_disk_mb * 1024**2,
        )

    def gdal_options(self) -> dict[str, object]:
        """``CLOUD_GDAL_OPTIONS`` with the S3 waits, bounded by the request budget.

        One S3 attempt may take at most half the budget (so a request that meets a slow store
        still has time for its other reads), and a transfer that stalls is given up after
        ``s3_stall_timeout``; ``GdalEnvironment.within`` shortens both further as a request's
        budget runs out.
        """
        timeout = max(1, min(self.s3_timeout, int(self.request_budget / 2)))
        return {
            **CLOUD_GDAL_OPTIONS,
            "GDAL_HTTP_TIMEOUT": timeout,
            "GDAL_HTTP_LOW_SPEED_TIME": min(self.s3_stall_timeout, timeout),
            "GDAL_HTTP_MAX_RETRY": self.s3_retries,
        }
