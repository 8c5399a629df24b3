"""Documents built from the catalogue's extent (capabilities, coverage domains), cached for as
long as that extent holds.

Why not a plain ``lru_cache``: a layer's extent is not fixed for the life of the process. A STAC
API that is down when the first capabilities request arrives gives the whole-globe stand-in, and
the catalogue asks again a minute later; a document cached under the registry alone would keep
the stand-in forever. Here each call is keyed by the *extent state* of the layers it is built
from as well (bounds, scene dates, the collection's time interval), so a changed extent builds a
new document and an unchanged one is served from memory.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from functools import lru_cache, wraps
from typing import ParamSpec, TypeVar

from server.catalog.layers import Layer, LayerRegistry

P = ParamSpec("P")
R = TypeVar("R")


def layer_extent_state(layer: Layer) -> Hashable:
    """What of the catalogue a layer's documents depend on: its lon/lat bounds, how many scene
    dates it knows and their span, and the collection's time interval (STAC API layers)."""
    bounds, times = layer.catalogue.extent()
    span = (min(times), max(times)) if times else None
    return bounds, len(times), span, getattr(layer.catalogue, "interval", None)


def extent_state(args: tuple[object, ...]) -> Hashable:
    """The extent state of every layer (or registry of layers) among ``args``."""
    state: list[Hashable] = []
    for arg in args:
        if isinstance(arg, LayerRegistry):
            # keyed by layer id too: ``layers`` is what the request's caller may see (server/access)
            state.append(tuple((lid, layer_extent_state(layer)) for lid, layer in arg.layers.items()))
        elif isinstance(arg, Layer):
            state.append(layer_extent_state(arg))
    return tuple(state)


def extent_cached(maxsize: int) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """``lru_cache`` over positional arguments plus the extent state of the layers among them."""

    def decorate(build: Callable[P, R]) -> Callable[P, R]:
        @lru_cache(maxsize=maxsize)
        def cached(_state: Hashable, *args: object) -> R:
            return build(*args)  # type: ignore[arg-type]

        @wraps(build)
        def call(*args: P.args, **kwargs: P.kwargs) -> R:
            if kwargs:
                return build(*args, **kwargs)
            return cached(extent_state(args), *args)

        call.cache_clear = cached.cache_clear  # type: ignore[attr-defined]
        return call

    return decorate
