"""Layer discovery (JSON) and legends (PNG)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from server.api.tiles import PipelineDep
from server.catalog.layers import Layer
from server.errors import EotilerError
from server.evalscript.contract import SampleType
from server.render.legend import render_legend

router = APIRouter(tags=["layers"])


class LegendNotAvailable(EotilerError):
    """The layer has neither a legend nor a colormap."""

    status = 404


def describe(layer: Layer, base: str, detailed: bool) -> dict[str, Any]:
    """JSON description of a layer; ``detailed`` adds the scene list."""
    output = layer.evalscript.output
    visual = output.sample_type is not SampleType.FLOAT32
    info: dict[str, Any] = {
        "id": layer.id,
        "title": layer.config.title,
        "abstract": layer.config.abstract,
        "collection": layer.collection_id,
        "bounds": list(layer.bounds) if layer.bounds else None,
        "times": sorted({t.date().isoformat() for t in layer.times}),
        "default_time": layer.config.default_time,
        "priority": layer.config.priority.value,
        "maxcc": layer.config.maxcc,
        "minzoom": layer.config.minzoom,
        "maxzoom": layer.config.maxzoom,
        "output": {"bands": output.bands, "sample_type": output.sample_type.value},
        "formats": ["png", "jpg", "webp", "tif"] if visual else ["tif"],
        "tilejson": f"{base}/layers/{layer.id}/tilejson.json",
        "legend": f"{base}/layers/{layer.id}/legend.png" if layer.legend() else None,
    }
    if detailed and not layer.catalogue.enumerable:
        info["scenes"] = None  # a STAC API collection is searched per request, never listed
    elif detailed:
        info["scenes"] = [
            {
                "id": s.id,
                "datetime": s.datetime.isoformat().replace("+00:00", "Z"),
                "cloud_cover": s.cloud_cover,
                "bbox": list(s.bbox),
            }
            for s in sorted(layer.catalogue.scenes, key=lambda s: s.datetime)
        ]
    return info


@router.get("/layers", summary="All configured layers")
def list_layers(request: Request, pipeline: PipelineDep) -> dict[str, Any]:
    """Every layer with its bounds, dates, formats and links."""
    base = str(request.base_url).rstrip("/")
    return {"layers": [describe(layer, base, detailed=False) for layer in pipeline.registry.layers.values()]}


@router.get("/layers/{layer}", summary="One layer, with its scenes")
def get_layer(layer: str, request: Request, pipeline: PipelineDep) -> dict[str, Any]:
    """A layer's description plus every scene of its collection."""
    base = str(request.base_url).rstrip("/")
    return describe(pipeline.registry.get(layer), base, detailed=True)


@router.get(
    "/layers/{layer}/legend.png",
    summary="Legend image",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}},
)
def legend(layer: str, pipeline: PipelineDep) -> Response:
    """A PNG legend from the layer's legend definition or colormap."""
    definition = pipeline.registry.get(layer).legend()
    if definition is None:
        raise LegendNotAvailable(f"layer '{layer}' has no legend", parameter="layer")
    return Response(render_legend(definition), media_type="image/png")
