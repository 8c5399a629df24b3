"""Cache keys for rendered images.

Why the key holds the *resolved scene ids* and not the TIME string: ``TIME=2022-10`` and
``TIME=2022-10-05`` often resolve to the same scenes, and then they must share one entry; a new
scene arriving in the catalogue changes the ids and so the key, without any invalidation step.
The layer's configuration and the script's source are hashed in, so editing either (or
sending another EVALSCRIPT) can never serve a stale image.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache

from server.catalog.layers import Layer
from server.models import RenderRequest, Scene

KEY_PREFIX = "eotiler:img"


@lru_cache(maxsize=1024)
def layer_digest(layer: Layer) -> str:
    """Hash of everything in the configuration that changes a layer's pixels (once per layer:
    layers are built once per app and hashed by identity)."""
    parts = {
        "layer": layer.config.model_dump(mode="json"),
        "collection": layer.collection.model_dump(mode="json"),
        "script": getattr(layer.evalscript, "digest", ""),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def render_key(req: RenderRequest, layer: Layer, scenes: list[Scene], variant: str = "") -> str:
    """``eotiler:img:<layer>:<hash>`` for one rendered image (``variant``: encoder options etc.)."""
    grid = req.grid
    epsg = grid.crs.to_epsg()
    parts = {
        "config": layer_digest(layer),
        "script": getattr(req.script, "digest", None),
        "crs": f"EPSG:{epsg}" if epsg else grid.crs.to_wkt(),
        "bbox": [round(v, 9) for v in grid.bbox],
        "size": [grid.width, grid.height],
        "format": req.format.value,
        "bands": req.bands,
        "coverage": req.coverage,
        "resampling": req.resampling,
        "scenes": [s.id for s in scenes],
        "variant": variant,
    }
    if req.clip is not None:  # only then: keys of unclipped images stay what they are
        parts["clip"] = hashlib.sha256(req.clip.encode()).hexdigest()
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:40]
    return f"{KEY_PREFIX}:{layer.id}:{digest}"


def composite_key(first: RenderRequest, layer: Layer, parts: list[str], transparent: bool, variant: str) -> str:
    """The key of a composite image: every part's own key (scenes included), the background and
    ``variant``, under the bottom layer's id."""
    return render_key(first, layer, [], variant=f"composite:{'|'.join(parts)}:{transparent}:{variant}")
