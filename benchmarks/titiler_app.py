"""The TiTiler peer of ``benchmarks/bench.py``: a plain titiler.core app, as a new user would run it.

One ``TilerFactory`` under ``/cog`` (tiles, ``bbox`` parts, ``expression=`` band math), the
STAC item factory under ``/stac`` (``url=<item>&assets=B04_10m&assets=...``: each asset's href is
read as it is, which is how TiTiler serves a Sentinel-2 product's separate band files) and the
exception handlers titiler ships; no cache. Started by the harness with uvicorn and the same
worker count and GDAL options as eotiler:

    uvicorn benchmarks.titiler_app:app --workers 2
"""

from __future__ import annotations

from fastapi import FastAPI
from rio_tiler.io import STACReader
from titiler.core.errors import DEFAULT_STATUS_CODES, add_exception_handlers
from titiler.core.factory import MultiBaseTilerFactory, TilerFactory

app = FastAPI(title="TiTiler (benchmark peer)")
app.include_router(TilerFactory().router, prefix="/cog")
app.include_router(MultiBaseTilerFactory(reader=STACReader).router, prefix="/stac")
add_exception_handlers(app, DEFAULT_STATUS_CODES)


@app.get("/healthz")
def healthz() -> dict[str, str]:
    """Liveness, for the harness."""
    return {"status": "ok"}
