"""``create_app``: build configuration, layers and pipeline once, then wire the routers.

No work happens at import time, so tests build apps from fixture configurations and
``uvicorn --factory server.app:create_app`` starts one per worker.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from server import __version__, log_redaction
from server.access.clients import ClientRegistry, with_clients_file
from server.access.middleware import AccessMiddleware
from server.access.rate_limit import RateLimiter
from server.api import dates, layers, system, tiles
from server.api.errors import install_error_handlers
from server.api.http_caching import install_http_caching
from server.api.observability import Metrics, ObservabilityMiddleware, install_access_log
from server.api.request_limits import RequestLimitsMiddleware
from server.api.system import STATIC_DIR
from server.catalog.layers import LayerRegistry
from server.config import load_config
from server.evalscript import js_pool, js_script
from server.evalscript.js_pool import JsLimits
from server.malloc_arenas import limit_arenas, reuse_freed_arrays
from server.ogc import routes as ogc_routes
from server.ogc.exceptions import ows_exception_xml
from server.ogcapi import routes as ogcapi_routes
from server.pipeline import Pipeline
from server.settings import Settings
from server.shapi import auth as sh_auth
from server.shapi import catalog as sh_catalog
from server.shapi import process as sh_process
from server.shapi import statistics as sh_statistics
from server.sources import block_cache


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the FastAPI application for ``settings`` (default: from the environment)."""
    settings = settings or Settings()
    # The settings hold the S3 keys now. Left in the environment, they make rasterio build a
    # boto3 session for every rasterio.Env that rio-tiler and the encoders open (several per
    # tile); reads sign through the S3 gateway or our own GDAL session instead.
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.pop(name, None)
    limit_arenas(settings.malloc_arenas)  # before any thread pool: see server/malloc_arenas.py
    reuse_freed_arrays()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per STAC API call is noise
    install_access_log()
    config = with_clients_file(load_config(settings.config), settings.clients_file)
    clients = ClientRegistry(config.clients)
    log_redaction.install(settings.secrets() + clients.secrets())
    # GDAL's block cache defaults to 5 % of RAM per process (1.2 GB on a 24 GB machine); it is
    # sized once, at the first read, so it is bounded here at start-up, never per request.
    os.environ.setdefault("GDAL_CACHEMAX", str(settings.gdal_cache_mb))
    # GDAL reads this once, the first time it is asked: set it before any remote read.
    os.environ.setdefault("CPL_VSIL_NETWORK_STATS_ENABLED", "YES")
    js_limits = JsLimits(settings.js_timeout, settings.js_heap_mb * 1024**2, settings.js_buffer_mb * 1024**2)
    js_pool.configure(settings.js_workers, js_limits, str(settings.js_shm_dir) if settings.js_shm_dir else None)
    js_script.set_vectorize(settings.js_vectorize)
    block_cache.configure(block_cache.from_settings(settings))
    registry = LayerRegistry(config, settings)
    pipeline = Pipeline(registry, settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        pipeline.close()

    app = FastAPI(
        title="eotiler",
        version=__version__,
        description="OGC tile and map server for Copernicus Sentinel data.",
        lifespan=lifespan,
        docs_url=None,  # served by server.api.system with vendored assets (no CDN)
        redoc_url=None,
    )
    app.state.pipeline = pipeline
    app.state.settings = settings
    app.include_router(layers.router)
    app.include_router(tiles.router)
    app.include_router(dates.router)
    app.include_router(ogcapi_routes.router)  # before system's "/": it hands browsers the viewer
    app.include_router(system.router)
    app.include_router(ogc_routes.router)
    app.include_router(sh_catalog.router)
    app.include_router(sh_process.router)
    app.include_router(sh_statistics.router)
    app.include_router(sh_auth.router)
    app.state.tokens = sh_auth.TokenAuthority(registry.config.clients, settings.token_secret, settings.token_ttl)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    install_error_handlers(app)
    install_http_caching(app)
    app.state.metrics = Metrics(pipeline)
    app.add_middleware(
        AccessMiddleware, clients=clients, tokens=app.state.tokens, limiter=RateLimiter(settings.redis_url)
    )
    app.add_middleware(
        RequestLimitsMiddleware,
        max_url_bytes=settings.max_url_bytes,
        max_body_bytes=settings.max_body_bytes,
        ogc_report=ows_exception_xml,
    )
    app.add_middleware(ObservabilityMiddleware, metrics=app.state.metrics, log_requests=settings.access_log)
    return app
